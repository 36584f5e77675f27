"""Status a person can read: conditions, phase and counts, computed in this one place from the facts.

The facts are what was observed, what the rollout decided and which children the API server
refused; a spec the operator cannot use has its own status here too. Conditions follow the
Kubernetes convention (meta.SetStatusCondition): a condition's lastTransitionTime changes only
when its status does.

Besides Ready, Available, Progressing and Degraded, status carries the two conditions of the kstatus
conventions (sigs.k8s.io/cli-utils, read by Flux health checks, `helm --wait` and kpt): `Reconciling`
is True while the operator works towards Ready, `Stalled` is True when it cannot get there by itself
(a person must change something). At most one of them is True, and neither when Ready is: kstatus
reads Current, InProgress and Failed from them (docs/gitops.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple

from modeldeploy.api.timestamp import whole_seconds
from modeldeploy.api.v1alpha1 import (
    CanaryStatus,
    Condition,
    FailedRevision,
    ModelDeployment,
    ModelDeploymentStatus,
    RevisionStatus,
)
from modeldeploy.model.observed import Observed
from modeldeploy.model.scaling import SCALED_OBJECT_API_VERSION, SCALED_OBJECT_KIND, uses_keda
from modeldeploy.routing import router_for
from modeldeploy.routing.gateway import ROUTE_API_VERSION, ROUTE_KIND

CONDITION_TYPES = ("Ready", "Available", "Progressing", "Degraded", "Reconciling", "Stalled")

# Degraded reasons no waiting ends: the spec must change (a rolled-back revision is not tried again, a spec
# the operator cannot use stays unusable), or a person must act (a Deployment past its progress deadline,
# a stored template this operator cannot read). Other problems may pass by themselves (a missing Secret
# appears, a pod's image is pushed, a refused child is retried): those are Reconciling.
STALLING = frozenset({"InvalidSpec", "NotAllowed", "RolledBack", "ProgressDeadlineExceeded", "UnreadableTemplate"})

Problem = tuple[str, str]  # (reason, message)

# Reasons of children the cluster did not take: while one stands, the rollout holds where it is (a
# step whose route was refused sends the canary no traffic, and passing it would judge nothing).
CHILD_PROBLEMS = frozenset({"ChildRejected", "NameConflict", "ChildKindNotServed"})


class Verdict(NamedTuple):
    ok: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Facts:
    """Everything status is computed from."""

    md: ModelDeployment
    observed: Observed
    stable: RevisionStatus | None
    canary: CanaryStatus | None
    failed: FailedRevision | None
    # What keeps the rollout from going on (a missing reference, routing the cluster lacks, ...).
    holds: tuple[Problem, ...]
    desired_revision: str
    capacity: int
    stable_rolled_out: bool
    # Children the API server refused to take.
    apply_problems: tuple[Problem, ...] = ()

    @property
    def pods(self) -> int:
        return sum(d.replicas for d in (self.observed.stable, self.observed.canary) if d is not None)

    @property
    def ready(self) -> int:
        return sum(d.ready_replicas for d in (self.observed.stable, self.observed.canary) if d is not None)


def status(facts: Facts) -> ModelDeploymentStatus:
    md = facts.md
    old = md.status or ModelDeploymentStatus()
    available = _available(facts)
    progressing = _progressing(facts, old)
    degraded = _degraded(facts)
    ready = _ready(facts, available, progressing, degraded)
    stalled = _stalled(degraded)
    reconciling = _reconciling(ready, stalled)
    now = whole_seconds(facts.observed.now)
    generation = md.metadata.generation
    verdicts = (ready, available, progressing, degraded, reconciling, stalled)
    return ModelDeploymentStatus(
        observed_generation=generation,
        phase=_phase(ready, degraded, facts.ready),
        conditions=[
            _condition(old.conditions, type_, verdict, now, generation)
            for type_, verdict in zip(CONDITION_TYPES, verdicts, strict=True)
        ],
        url=_url(facts) if facts.stable is not None else None,
        replicas=facts.pods,
        ready_replicas=facts.ready,
        stable=facts.stable,
        canary=facts.canary,
        failed=facts.failed,
    )


def _in_cluster_url(md: ModelDeployment) -> str:
    return f"http://{md.name}.{md.namespace}.svc:{md.spec.service.port}"


def _url(facts: Facts) -> str:
    """Where users call the model: through the Gateway when exposed (and the cluster serves routes)."""
    expose = facts.md.spec.expose
    if expose is not None and ROUTE_KIND not in facts.observed.unserved:
        return expose.url
    return _in_cluster_url(facts.md)


def _unexposed(facts: Facts) -> list[Problem]:
    md = facts.md
    if md.spec.expose is None or ROUTE_KIND not in facts.observed.unserved:
        return []
    if router_for(md).hold(facts.observed.unserved) is not None:
        return []  # the router's own hold says it (GatewayAPIMissing)
    return [
        (
            "ExposeUnavailable",
            f"spec.expose needs {ROUTE_KIND} ({ROUTE_API_VERSION}), which this cluster does not serve: install "
            f"the Gateway API CRDs; meanwhile the model serves in-cluster only, at {_in_cluster_url(md)}",
        )
    ]


def _unscaled(facts: Facts) -> list[Problem]:
    if not uses_keda(facts.md) or SCALED_OBJECT_KIND not in facts.observed.unserved:
        return []
    return [
        (
            "KEDAMissing",
            f"autoscaling.metrics names a request metric, which needs KEDA ({SCALED_OBJECT_KIND} "
            f"{SCALED_OBJECT_API_VERSION}), and this cluster does not serve it: install KEDA, or autoscale on cpu "
            "or memory; meanwhile the stable Deployment keeps the replicas it has",
        )
    ]


def invalid_spec(
    old: ModelDeploymentStatus,
    generation: int | None,
    problems: Sequence[str],
    now: datetime,
    reason: str = "InvalidSpec",
) -> ModelDeploymentStatus:
    """A spec the API server let through but the operator cannot use (InvalidSpec) or may not (NotAllowed);
    what runs is left as it was."""
    verdict = Verdict(False, reason, "; ".join(problems))
    stamp = whole_seconds(now)
    stalled = verdict._replace(ok=True)
    conditions = [
        _condition(old.conditions, "Ready", verdict, stamp, generation),
        _condition(old.conditions, "Degraded", verdict._replace(ok=True), stamp, generation),
        _condition(old.conditions, "Reconciling", _reconciling(verdict, stalled), stamp, generation),
        _condition(old.conditions, "Stalled", stalled, stamp, generation),
    ]
    return old.model_copy(update={"phase": "Failed", "observed_generation": generation, "conditions": conditions})


def reconcile_error(
    old: ModelDeploymentStatus, generation: int | None, cause: str, now: datetime
) -> ModelDeploymentStatus:
    """A reconcile that failed: said in Degraded, the rest of status as the last reconcile left it (what
    runs has not changed); the next reconcile that succeeds computes all of it again."""
    verdict = Verdict(True, "ReconcileError", cause)
    degraded = _condition(old.conditions, "Degraded", verdict, whole_seconds(now), generation)
    # In its place: a list in another order is another status, and would be written again.
    conditions = [degraded if c.type == "Degraded" else c for c in old.conditions]
    if all(c.type != "Degraded" for c in old.conditions):
        conditions.append(degraded)
    return old.model_copy(update={"conditions": conditions})


def with_reconcile_error(old: ModelDeploymentStatus | None, new: ModelDeploymentStatus) -> ModelDeploymentStatus:
    """The new status, still saying the last reconcile failed (if it did and nothing worse is wrong now): a
    reconcile records its plan before it acts, and only the act tells whether the failure is over."""
    failed = next((c for c in (old.conditions if old else []) if c.type == "Degraded"), None)
    current = next((c for c in new.conditions if c.type == "Degraded"), None)
    if failed is None or failed.reason != "ReconcileError" or (current is not None and current.status == "True"):
        return new
    return new.model_copy(update={"conditions": [failed if c.type == "Degraded" else c for c in new.conditions]})


def child_problems(old: ModelDeploymentStatus | None) -> tuple[Problem, ...]:
    """The children the last reconcile could not write, as its status says (so they hold across restarts)."""
    degraded = next((c for c in (old.conditions if old else []) if c.type == "Degraded"), None)
    if degraded is None or degraded.status != "True" or degraded.reason not in CHILD_PROBLEMS:
        return ()
    return ((degraded.reason, degraded.message),)


def _condition(
    old: Sequence[Condition], type_: str, verdict: Verdict, now: datetime, generation: int | None
) -> Condition:
    status: Literal["True", "False"] = "True" if verdict.ok else "False"
    previous = next((c for c in old if c.type == type_), None)
    since = previous.last_transition_time if previous is not None and previous.status == status else now
    return Condition(
        type=type_,
        status=status,
        reason=verdict.reason,
        message=verdict.message,
        last_transition_time=since,
        observed_generation=generation,
    )


def _available(facts: Facts) -> Verdict:
    """Enough Ready pods to serve."""
    ready, capacity = facts.ready, facts.capacity
    if facts.stable is None:
        return Verdict(False, "NoRevision", "nothing is deployed yet")
    if capacity == 0:
        return Verdict(False, "ScaledToZero", "replicas is 0")
    if ready >= capacity:
        return Verdict(True, "MinimumReplicasAvailable", f"{ready}/{capacity} replicas Ready")
    return Verdict(False, "ReplicasNotReady", f"{ready}/{capacity} replicas Ready")


def _progressing(facts: Facts, old: ModelDeploymentStatus) -> Verdict:
    """A revision on its way in (or out)."""
    stable, canary = facts.stable, facts.canary
    if canary is not None:
        return _canary_progress(facts, canary)
    if stable is None:
        return Verdict(False, "Waiting", "nothing can be deployed yet")
    if facts.stable_rolled_out:
        return Verdict(False, "Complete", f"revision {stable.revision} ({stable.bento}) serves all traffic")
    first = old.stable is None or (old.stable.revision == stable.revision and not old.stable.ready_replicas)
    return Verdict(
        True, "NewRevision" if first else "RollingUpdate", f"revision {stable.revision} ({stable.bento}) rolling out"
    )


def _canary_progress(facts: Facts, canary: CanaryStatus) -> Verdict:
    if canary.state == "Promoting":
        return Verdict(True, "Promoting", f"canary {canary.revision} ({canary.bento}) is becoming the stable revision")
    if canary.state == "RollingBack":
        return Verdict(True, "RollingBack", f"rolling back canary {canary.revision}: {canary.reason}: {canary.message}")
    rollout = facts.md.spec.rollout
    split = router_for(facts.md).split(canary_ready=canary.ready_replicas, ready=facts.ready)
    where = (
        f"canary {canary.revision} ({canary.bento}) step {canary.step + 1}/{len(rollout.steps)}: "
        f"{canary.weight}% of traffic for a {canary.step_weight}% step ({split})"
    )
    if canary.paused:
        return Verdict(True, "CanaryPaused", f"{where}; paused by spec.rollout.paused")
    if canary.step_ready_at is None:
        return Verdict(True, "CanaryScaling", f"{where}; waiting for canary pods to be Ready")
    if canary.analysis.verdict == "NoData":
        return Verdict(True, "WaitingForData", f"{where}; too few requests to judge")
    return Verdict(True, "CanaryAnalysis" if rollout.analysis else "CanaryPause", where)


def _degraded(facts: Facts) -> Verdict:
    """Something a person should act on."""
    if facts.apply_problems:
        # A child the API server refuses comes first: what else is wrong may follow from it.
        return _worst(facts.apply_problems)
    problems = [
        *facts.holds,
        *_rolled_back(facts),
        *((p.reason, p.message) for p in facts.observed.pod_problems),
        *_unexposed(facts),
        *_unscaled(facts),
    ]
    for dep in (facts.observed.stable, facts.observed.canary):
        if dep is not None and dep.replica_failure:
            problems.append(("ReplicaFailure", f"deployment {dep.name}: {dep.replica_failure}"))
        if dep is not None and dep.progress_deadline_exceeded and facts.canary is None:
            problems.append(("ProgressDeadlineExceeded", f"deployment {dep.name} made no progress in time"))
    return _worst(problems) if problems else Verdict(False, "Healthy", "no problems seen")


def _worst(problems: Sequence[Problem]) -> Verdict:
    return Verdict(True, problems[0][0], "; ".join(message for _, message in problems))


def _rolled_back(facts: Facts) -> list[Problem]:
    failed, stable = facts.failed, facts.stable
    if failed is None or failed.revision != facts.desired_revision:
        return []
    serving = f"{stable.revision} ({stable.bento})" if stable else "nothing"
    return [
        (
            "RolledBack",
            f"revision {failed.revision} ({failed.bento}) was rolled back ({failed.reason}: {failed.message}); "
            f"{serving} keeps serving; change the spec to try again",
        )
    ]


def _ready(facts: Facts, available: Verdict, progressing: Verdict, degraded: Verdict) -> Verdict:
    if available.ok and not progressing.ok and not degraded.ok:
        bento = facts.md.spec.bento.display
        return Verdict(True, "Ready", f"{bento} serves with {facts.ready}/{facts.capacity} replicas Ready")
    if degraded.ok:
        return degraded._replace(ok=False)
    if progressing.ok:
        return progressing._replace(ok=False)
    return available


def _stalled(degraded: Verdict) -> Verdict:
    if degraded.ok and degraded.reason in STALLING:
        return degraded
    return Verdict(False, "NotStalled", "nothing keeps the operator from going on by itself")


def _reconciling(ready: Verdict, stalled: Verdict) -> Verdict:
    """Working towards Ready: whatever Ready waits for, unless only a person can end the wait."""
    if ready.ok:
        return Verdict(False, "Reconciled", ready.message)
    if stalled.ok:
        return Verdict(False, "Stalled", stalled.message)
    return ready._replace(ok=True)


Phase = Literal["Pending", "Progressing", "Ready", "Degraded", "Failed"]


def _phase(ready: Verdict, degraded: Verdict, ready_pods: int) -> Phase:
    if ready.ok:
        return "Ready"
    if degraded.ok:
        return "Degraded" if ready_pods > 0 else "Failed"
    return "Pending" if ready_pods == 0 else "Progressing"


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post about the ModelDeployment: a decision, or a condition that changed."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def transitions(old: ModelDeploymentStatus, new: ModelDeploymentStatus) -> list[Event]:
    """Events for conditions that changed."""
    before = {c.type: c for c in old.conditions}
    out: list[Event] = []
    for cond in new.conditions:
        prev = before.get(cond.type)
        if cond.type == "Ready":
            if cond.status == "True" and (prev is None or prev.status != "True"):
                out.append(Event("Normal", "Ready", cond.message))
            elif cond.status != "True" and prev is not None and prev.status == "True":
                out.append(Event("Warning", "NotReady", f"{cond.reason}: {cond.message}"))
        elif (
            cond.type == "Degraded"
            and cond.status == "True"
            and (prev is None or prev.status != "True" or prev.reason != cond.reason)
        ):
            out.append(Event("Warning", cond.reason, cond.message))
    return out
