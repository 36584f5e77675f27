"""Status a person can read: conditions, phase and counts, computed from what is observed.

Conditions follow the Kubernetes convention (meta.SetStatusCondition): a condition's
lastTransitionTime changes only when its status does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from modeldeploy.api.v1alpha1.types import (
    CanaryStatus,
    Condition,
    FailedRevision,
    ModelDeployment,
    ModelDeploymentStatus,
    RevisionStatus,
)
from modeldeploy.rollout.clock import timestamp
from modeldeploy.rollout.observed import Observed

CONDITION_TYPES = ("Ready", "Available", "Progressing", "Degraded")


def _set(
    *,
    out: dict[str, Condition],
    old: Sequence[Condition],
    type_: str,
    ok: bool,
    reason: str,
    message: str,
    now: str,
    gen: int | None,
) -> None:
    status = "True" if ok else "False"
    previous = next((c for c in old if c.type == type_), None)
    since = previous.last_transition_time if previous and previous.status == status else now
    out[type_] = Condition(
        type=type_, status=status, reason=reason, message=message, last_transition_time=since, observed_generation=gen
    )


def status(
    *,
    md: ModelDeployment,
    observed: Observed,
    stable: RevisionStatus | None,
    canary: CanaryStatus | None,
    failed: FailedRevision | None,
    holds: Sequence[tuple[str, str]],
    desired_revision: str,
    capacity: int,
    stable_rolled_out: bool,
) -> ModelDeploymentStatus:
    old = md.status or ModelDeploymentStatus()
    now = timestamp(observed.now)
    generation = md.metadata.get("generation")
    stable_obs, canary_obs = observed.stable, observed.canary
    pods = (stable_obs.replicas if stable_obs else 0) + (canary_obs.replicas if canary_obs else 0)
    ready = (stable_obs.ready_replicas if stable_obs else 0) + (canary_obs.ready_replicas if canary_obs else 0)
    bento = md.spec.bento.display

    # Available: enough Ready pods to serve.
    if stable is None:
        available = (False, "NoRevision", "nothing is deployed yet")
    elif capacity == 0:
        available = (False, "ScaledToZero", "replicas is 0")
    elif ready >= capacity:
        available = (True, "MinimumReplicasAvailable", f"{ready}/{capacity} replicas Ready")
    else:
        available = (False, "ReplicasNotReady", f"{ready}/{capacity} replicas Ready")

    # Progressing: a revision on its way in (or out).
    steps = md.spec.rollout.steps
    if canary is not None and canary.state == "Promoting":
        progressing = (True, "Promoting", f"canary {canary.revision} ({canary.bento}) is becoming the stable revision")
    elif canary is not None and canary.state == "RollingBack":
        progressing = (True, "RollingBack", f"rolling back canary {canary.revision}: {canary.reason}: {canary.message}")
    elif canary is not None:
        split = (
            "exact weights through the HTTPRoute"
            if md.spec.rollout.traffic_routing == "GatewayAPI"
            else f"approximate: {canary.ready_replicas} of {ready} Ready pods are canary pods"
        )
        where = (
            f"canary {canary.revision} ({canary.bento}) step {canary.step + 1}/{len(steps)}: "
            f"{canary.weight}% of traffic for a {canary.step_weight}% step ({split})"
        )
        if canary.paused:
            progressing = (True, "CanaryPaused", f"{where}; paused by spec.rollout.paused")
        elif canary.step_ready_at is None:
            progressing = (True, "CanaryScaling", f"{where}; waiting for canary pods to be Ready")
        elif canary.analysis.verdict == "NoData":
            progressing = (True, "WaitingForData", f"{where}; too few requests to judge")
        else:
            progressing = (True, "CanaryAnalysis" if md.spec.rollout.analysis else "CanaryPause", where)
    elif stable is not None and not stable_rolled_out:
        first = old.stable is None or (old.stable.revision == stable.revision and not old.stable.ready_replicas)
        progressing = (
            True,
            "NewRevision" if first else "RollingUpdate",
            f"revision {stable.revision} ({stable.bento}) rolling out",
        )
    elif stable is not None:
        progressing = (False, "Complete", f"revision {stable.revision} ({stable.bento}) serves all traffic")
    else:
        progressing = (False, "Waiting", "nothing can be deployed yet")

    # Degraded: something a person should act on.
    problems: list[tuple[str, str]] = list(holds)
    if failed is not None and failed.revision == desired_revision:
        serving = f"{stable.revision} ({stable.bento})" if stable else "nothing"
        problems.append(
            (
                "RolledBack",
                f"revision {failed.revision} ({failed.bento}) was rolled back ({failed.reason}: {failed.message}); "
                f"{serving} keeps serving; change the spec to try again",
            )
        )
    problems += [(p.reason, p.message) for p in observed.pod_problems]
    for dep in (stable_obs, canary_obs):
        if dep is not None and dep.replica_failure:
            problems.append(("ReplicaFailure", f"deployment {dep.name}: {dep.replica_failure}"))
        if dep is not None and dep.progress_deadline_exceeded and canary is None:
            problems.append(("ProgressDeadlineExceeded", f"deployment {dep.name} made no progress in time"))
    if problems:
        degraded = (True, problems[0][0], "; ".join(m for _, m in problems))
    else:
        degraded = (False, "Healthy", "no problems seen")

    is_ready = available[0] and not progressing[0] and not degraded[0]
    if is_ready:
        ready_cond = (True, "Ready", f"{bento} serves with {ready}/{capacity} replicas Ready")
    elif degraded[0]:
        ready_cond = (False, degraded[1], degraded[2])
    elif progressing[0]:
        ready_cond = (False, progressing[1], progressing[2])
    else:
        ready_cond = (False, available[1], available[2])

    conditions: dict[str, Condition] = {}
    for type_, (ok, reason, message) in zip(
        CONDITION_TYPES, (ready_cond, available, progressing, degraded), strict=True
    ):
        _set(
            out=conditions,
            old=old.conditions,
            type_=type_,
            ok=ok,
            reason=reason,
            message=message,
            now=now,
            gen=generation,
        )

    if is_ready:
        phase = "Ready"
    elif degraded[0]:
        phase = "Degraded" if ready > 0 else "Failed"
    elif ready == 0:
        phase = "Pending"
    else:
        phase = "Progressing"

    port = md.spec.service.port
    return ModelDeploymentStatus(
        observed_generation=generation,
        phase=phase,
        conditions=[conditions[t] for t in CONDITION_TYPES],
        url=f"http://{md.name}.{md.namespace}.svc:{port}" if stable is not None else None,
        replicas=pods,
        ready_replicas=ready,
        stable=stable,
        canary=canary,
        failed=failed,
    )


EventType = Literal["Normal", "Warning"]


def transitions(old: ModelDeploymentStatus, new: ModelDeploymentStatus) -> list[tuple[EventType, str, str]]:
    """Events for conditions that changed: (type, reason, message)."""
    before = {c.type: c for c in old.conditions}
    out: list[tuple[EventType, str, str]] = []
    for cond in new.conditions:
        prev = before.get(cond.type)
        if cond.type == "Ready":
            if cond.status == "True" and (prev is None or prev.status != "True"):
                out.append(("Normal", "Ready", cond.message))
            elif cond.status != "True" and prev is not None and prev.status == "True":
                out.append(("Warning", "NotReady", f"{cond.reason}: {cond.message}"))
        elif (
            cond.type == "Degraded"
            and cond.status == "True"
            and (prev is None or prev.status != "True" or prev.reason != cond.reason)
        ):
            out.append(("Warning", cond.reason, cond.message))
    return out
