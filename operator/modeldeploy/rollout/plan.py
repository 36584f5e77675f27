"""The rollout state machine: status + observation + clock -> what should run, and the next status.

A revision is the hash of the pod-affecting spec. The stable revision serves; when the
spec's revision differs from it, the Rolling strategy moves the stable Deployment to it
in place, the Canary strategy starts a canary Deployment beside it and walks the steps:

    Progressing --(last step passed | promote annotation)--> Promoting --(stable rolled out)--> done
         |
         +--(analysis failed | pods failed | not Ready in time | abort annotation)--> RollingBack
                                                       --(stable fully Ready again)--> done, revision recorded as failed

Everything the machine needs to continue lives in the object's status, so an operator
restarted at any point picks up where it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from modeldeploy.api.duration import parse_duration
from modeldeploy.api.v1alpha1.revision import RevisionPlan, RevisionTemplate, template_of
from modeldeploy.api.v1alpha1.types import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    AnalysisStatus,
    CanaryStatus,
    FailedRevision,
    ModelDeployment,
    ModelDeploymentStatus,
    RevisionStatus,
)
from modeldeploy.rollout import conditions
from modeldeploy.rollout.clock import parse_timestamp, timestamp
from modeldeploy.rollout.observed import Observed

# Rollback reasons that are not the canary's fault: the revision is not recorded as failed.
NOT_A_FAILURE = frozenset({"SpecReverted", "Superseded"})
# While waiting on pods the machine has nothing timed to do; child events wake it, this is a backstop.
WAIT_RECHECK = timedelta(seconds=30)
# Nothing watches referenced Secrets or ConfigMaps; a rollout waiting for one looks again this often.
REFERENCE_RECHECK = timedelta(seconds=15)
# With an HTTPRoute, the canary's weight goes to 0 in one reconcile and the canary goes in a later one,
# this long after, so the gateway has taken the new weights before the canary's pods terminate.
ROUTE_DRAIN = timedelta(seconds=5)


@dataclass(frozen=True)
class PlanConfig:
    """Operator settings that change what is planned."""

    default_runtime_image: str | None = None


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    stable: RevisionPlan | None
    canary: RevisionPlan | None
    # Exact percent of traffic for the canary backend of an HTTPRoute.
    route_weight: int
    status: ModelDeploymentStatus
    events: tuple[Event, ...] = ()
    requeue_after: timedelta | None = None
    notes: tuple[str, ...] = field(default=())


def analysis_due(md: ModelDeployment, observed: Observed) -> str | None:
    """The canary revision to measure now, if a measurement is due (taken before `plan`)."""
    analysis = md.spec.rollout.analysis
    canary = md.status.canary if md.status else None
    if analysis is None or canary is None or canary.state != "Progressing" or canary.step_ready_at is None:
        return None
    since = parse_timestamp(canary.step_ready_at)
    if canary.analysis.last_measured_at:
        since = max(since, parse_timestamp(canary.analysis.last_measured_at))
    if observed.now < since + parse_duration(analysis.interval):
        return None
    return canary.revision


def plan(md: ModelDeployment, observed: Observed, config: PlanConfig | None = None) -> Plan:
    return _Planner(md, observed, config or PlanConfig()).run()


class _Planner:
    def __init__(self, md: ModelDeployment, observed: Observed, config: PlanConfig) -> None:
        self.md = md
        self.spec = md.spec
        self.obs = observed
        self.now = observed.now
        self.old = md.status or ModelDeploymentStatus()
        self.template = template_of(self.spec, config.default_runtime_image)
        self.revision = self.template.revision
        self.stable = self.old.stable.model_copy(deep=True) if self.old.stable else None
        self.canary = self.old.canary.model_copy(deep=True) if self.old.canary else None
        self.failed = self.old.failed.model_copy(deep=True) if self.old.failed else None
        self.events: list[Event] = []
        self.waits: list[timedelta] = []
        self.holds: list[tuple[str, str]] = []
        self.notes: list[str] = []
        # Set when the canary is about to go: its route weight is 0 from this reconcile on.
        self.draining = False

    # -- helpers -------------------------------------------------------------------

    def _event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def _wait(self, delta: timedelta) -> None:
        self.waits.append(max(delta, timedelta(seconds=1)))

    def _revision_status(self, template: RevisionTemplate) -> RevisionStatus:
        return RevisionStatus(revision=template.revision, bento=template.bento.display, template=template.wire())

    def _template(self, status: RevisionStatus) -> RevisionTemplate:
        """The stored template of a revision; the spec's when the stored one cannot be read."""
        try:
            template = RevisionTemplate.model_validate(status.template)
        except ValueError:
            self.notes.append(f"status template of revision {status.revision} unreadable; using the spec's")
            return self.template
        return template

    @property
    def autoscaled(self) -> bool:
        return self.spec.autoscaling is not None

    @property
    def capacity(self) -> int:
        """Replicas the model serves with: spec.replicas, or what the autoscaler has set."""
        if self.spec.autoscaling is not None:
            if self.obs.stable is not None:
                return max(self.obs.stable.spec_replicas, self.spec.autoscaling.min_replicas)
            return self.spec.autoscaling.min_replicas
        return self.spec.replicas

    @property
    def exact_routing(self) -> bool:
        return self.spec.rollout.traffic_routing == "GatewayAPI"

    def canary_replicas(self, step: int) -> int:
        """Canary pods for a step: its share of the capacity, at least one."""
        weight = self.spec.rollout.steps[step].weight
        n = self.capacity
        if self.autoscaled and not self.exact_routing:
            # The autoscaler owns the stable size, so the canary is added beside it.
            share = n if weight >= 50 else math.ceil(n * weight / (100 - weight))
        else:
            share = math.ceil(n * weight / 100)
        return min(max(share, 1), max(n, 1))

    def canary_ready(self) -> int:
        if self.canary is None or self.obs.canary is None:
            return 0
        return self.obs.canary.ready_at(self.canary.revision)

    def stable_ready(self) -> int:
        if self.stable is None or self.obs.stable is None:
            return 0
        return self.obs.stable.ready_at(self.stable.revision)

    # -- the machine ------------------------------------------------------------------

    def run(self) -> Plan:
        if self.failed is not None and self.failed.revision != self.revision:
            self.failed = None  # the spec moved on: a rolled-back revision may be tried again later
        blockers = self._blockers()

        if self.stable is None:
            if not blockers:
                self.stable = self._revision_status(self.template)
                self._event("Normal", "Deploying", f"deploying revision {self.revision} ({self.stable.bento})")
        elif self.stable.revision != self.revision:
            self._new_revision(blockers)
        elif self.canary is not None and self.canary.state == "Progressing":
            self._begin_rollback(
                "SpecReverted", f"the spec is back to the stable revision {self.revision}; the canary is removed"
            )

        if self.canary is not None:
            self._advance_canary()
        return self._finish()

    def _blockers(self) -> list[tuple[str, str]]:
        if self.exact_routing and not self.obs.gateway_api:
            # The stable revision still serves through its Service; no canary starts without its route.
            self.holds.append(
                (
                    "GatewayAPIMissing",
                    "trafficRouting is GatewayAPI but this cluster does not serve HTTPRoute "
                    "(gateway.networking.k8s.io/v1): install the Gateway API CRDs or use trafficRouting: Replicas",
                )
            )
        found = []
        if self.obs.missing_references:
            found.append(
                (
                    "MissingReference",
                    "revision {} waits for {}".format(self.revision, "; ".join(self.obs.missing_references)),
                )
            )
        self.holds.extend(found)
        if found:
            self._wait(REFERENCE_RECHECK)
        return found

    def _new_revision(self, blockers: list[tuple[str, str]]) -> None:
        assert self.stable is not None
        canary = self.canary
        if canary is not None and canary.state != "Progressing":
            return  # a promotion or rollback finishes first; the new revision comes after
        if self.spec.rollout.strategy == "Rolling" or self.capacity == 0:
            if blockers:
                return
            if canary is not None:
                self._event("Normal", "CanaryDropped", f"canary {canary.revision} dropped: rolling update instead")
                self.canary = None
            previous = self.stable.revision
            self.stable = self._revision_status(self.template)
            self._event(
                "Normal",
                "RollingUpdate",
                f"rolling update from revision {previous} to {self.revision} ({self.stable.bento})",
            )
            return
        superseded = canary is not None and canary.revision != self.revision
        if self.failed is not None and self.failed.revision == self.revision:
            if superseded:
                self._begin_rollback("Superseded", f"the spec now asks for rolled-back revision {self.revision}")
            return
        if self.exact_routing and not self.obs.gateway_api:
            if superseded:
                self._begin_rollback("Superseded", "the canary's traffic routing is unavailable")
            return
        if blockers:
            if superseded:
                self._begin_rollback("Superseded", f"revision {self.revision} replaces the canary")
            return
        if canary is not None and canary.revision == self.revision:
            return
        steps = self.spec.rollout.steps
        if canary is not None:
            self._event("Normal", "CanaryReplaced", f"canary {canary.revision} replaced by revision {self.revision}")
        self.canary = CanaryStatus(
            revision=self.revision,
            bento=self.template.bento.display,
            template=self.template.wire(),
            step=0,
            step_weight=steps[0].weight,
            started_at=timestamp(self.now),
            step_started_at=timestamp(self.now),
            analysis=AnalysisStatus(),
        )
        self._event(
            "Normal",
            "CanaryStarted",
            f"canary {self.revision} ({self.canary.bento}) started beside stable {self.stable.revision} "
            f"({self.stable.bento}): step 1/{len(steps)} at {steps[0].weight}% of traffic",
        )

    def _begin_rollback(self, reason: str, message: str) -> None:
        assert self.canary is not None
        self.canary.state = "RollingBack"
        self.canary.reason = reason
        self.canary.message = message
        kind: Literal["Normal", "Warning"] = "Normal" if reason in NOT_A_FAILURE else "Warning"
        self._event(kind, "RollingBack", f"rolling back canary {self.canary.revision}: {reason}: {message}")

    def _advance_canary(self) -> None:
        canary = self.canary
        assert canary is not None
        assert self.stable is not None
        if canary.state == "Progressing":
            annotations = self.md.metadata.get("annotations") or {}
            if annotations.get(ABORT_ANNOTATION) == canary.revision:
                self._event("Warning", "ManualAbort", f"abort of canary {canary.revision} requested by annotation")
                self._begin_rollback("ManualAbort", f"aborted with the {ABORT_ANNOTATION} annotation")
            elif annotations.get(PROMOTE_ANNOTATION) == canary.revision:
                self._event("Normal", "ManualPromote", f"promotion of canary {canary.revision} requested by annotation")
                self._start_promotion("ManualPromote", f"promoted with the {PROMOTE_ANNOTATION} annotation")
            else:
                self._progress(canary)
        if canary.state == "Promoting":
            self._promote(canary)
        elif canary.state == "RollingBack":
            self._roll_back(canary)

    def _start_promotion(self, reason: str, message: str) -> None:
        assert self.canary is not None
        assert self.stable is not None
        self.canary.state = "Promoting"
        self.canary.reason = reason
        self.canary.message = message
        self._event("Normal", "Promoting", f"promoting canary {self.canary.revision}: {message}")

    def _progress(self, canary: CanaryStatus) -> None:
        rollout = self.spec.rollout
        steps = rollout.steps
        canary.step = min(canary.step, len(steps) - 1)  # the steps may have been shortened
        canary.step_weight = steps[canary.step].weight
        if rollout.paused != canary.paused:
            canary.paused = rollout.paused
            self._event(
                "Normal",
                "Paused" if rollout.paused else "Resumed",
                f"canary {canary.revision} {'paused' if rollout.paused else 'resumed'} at step {canary.step + 1}",
            )

        fatal = [p for p in self.obs.pod_problems if p.role == "canary" and p.fatal]
        if fatal:
            self._begin_rollback("CanaryFailed", fatal[0].message)
            return
        need = self.canary_replicas(canary.step)
        ready = self.canary_ready()
        if ready < need:
            canary.step_ready_at = None
            deadline = parse_timestamp(canary.step_started_at or timestamp(self.now)) + parse_duration(
                rollout.progress_deadline
            )
            if self.now >= deadline:
                why = [p.message for p in self.obs.pod_problems if p.role == "canary"]
                detail = f": {why[0]}" if why else ""
                self._begin_rollback(
                    "CanaryNotReady",
                    f"{ready}/{need} canary pods Ready after progressDeadline {rollout.progress_deadline}{detail}",
                )
                return
            self._wait(min(deadline - self.now, WAIT_RECHECK))
            return
        if canary.step_ready_at is None:
            canary.step_ready_at = timestamp(self.now)

        if rollout.analysis is not None:
            self._judge(canary)
            if canary.state != "Progressing":
                return
        if rollout.paused:
            return
        pause_end = parse_timestamp(canary.step_ready_at) + parse_duration(steps[canary.step].pause)
        if self.now < pause_end:
            self._wait(pause_end - self.now)
            return
        if rollout.analysis is not None and not self._passed_this_step(canary):
            return  # _judge asked to be woken for the next measurement
        if canary.step + 1 < len(steps):
            canary.step += 1
            canary.step_weight = steps[canary.step].weight
            canary.step_started_at = timestamp(self.now)
            canary.step_ready_at = None
            canary.analysis.measurements = 0
            self._event(
                "Normal",
                "StepAdvanced",
                f"canary {canary.revision} at step {canary.step + 1}/{len(steps)}: {canary.step_weight}% of traffic",
            )
            self._wait(timedelta(seconds=1))
        else:
            self._start_promotion("StepsComplete", f"all {len(steps)} steps passed")

    def _passed_this_step(self, canary: CanaryStatus) -> bool:
        result = canary.analysis
        if result.verdict != "Passed" or result.last_measured_at is None or canary.step_ready_at is None:
            return False
        return parse_timestamp(result.last_measured_at) >= parse_timestamp(canary.step_ready_at)

    def _judge(self, canary: CanaryStatus) -> None:
        analysis = self.spec.rollout.analysis
        assert analysis is not None
        interval = parse_duration(analysis.interval)
        measured = self.obs.measurement
        result = canary.analysis
        if measured is not None and measured.revision == canary.revision:
            result.measurements += 1
            result.last_measured_at = timestamp(self.now)
            result.checks = list(measured.checks)
            result.verdict = measured.verdict
            if measured.verdict == "Failed":
                result.failures += 1
                result.waiting_for_data_since = None
                self._event(
                    "Warning",
                    "AnalysisFailed",
                    f"canary {canary.revision} measurement failed ({result.failures}/{analysis.failure_limit}): "
                    f"{measured.summary}",
                )
                if result.failures >= analysis.failure_limit:
                    self._begin_rollback("AnalysisFailed", measured.summary)
                    return
            elif measured.verdict == "NoData":
                if result.waiting_for_data_since is None:
                    result.waiting_for_data_since = timestamp(self.now)
                    self._event("Normal", "WaitingForData", f"canary {canary.revision}: {measured.summary}")
                waited = self.now - parse_timestamp(result.waiting_for_data_since)
                if waited >= parse_duration(analysis.no_data_timeout):
                    self._begin_rollback(
                        "NoData",
                        f"{measured.summary}, for longer than noDataTimeout {analysis.no_data_timeout}",
                    )
                    return
            else:
                result.waiting_for_data_since = None
        since = parse_timestamp(canary.step_ready_at or timestamp(self.now))
        if result.last_measured_at:
            since = max(since, parse_timestamp(result.last_measured_at))
        self._wait(since + interval - self.now)

    def _promote(self, canary: CanaryStatus) -> None:
        assert self.stable is not None
        if self.stable.revision != canary.revision:
            self.stable = RevisionStatus(revision=canary.revision, bento=canary.bento, template=canary.template)
        stable = self.obs.stable
        if stable is not None and stable.rolled_out(canary.revision) and stable.spec_replicas >= self.capacity:
            if self._still_routed(canary):
                return
            self._event(
                "Normal",
                "Promoted",
                f"canary {canary.revision} ({canary.bento}) promoted: it is the stable revision and serves all traffic",
            )
            self.canary = None
        else:
            self._wait(WAIT_RECHECK)

    def _roll_back(self, canary: CanaryStatus) -> None:
        assert self.stable is not None
        if self.stable_ready() < max(self.capacity, 1) and self.capacity > 0:
            self._wait(WAIT_RECHECK)
            return
        if self._still_routed(canary):
            return
        reason = canary.reason or "RolledBack"
        if reason not in NOT_A_FAILURE:
            self.failed = FailedRevision(
                revision=canary.revision,
                bento=canary.bento,
                reason=reason,
                message=canary.message or "",
                at=timestamp(self.now),
            )
            self._event(
                "Warning",
                "RolledBack",
                f"canary {canary.revision} ({canary.bento}) rolled back ({reason}: {canary.message}); "
                f"stable {self.stable.revision} ({self.stable.bento}) serves all traffic",
            )
        else:
            self._event("Normal", "CanaryRemoved", f"canary {canary.revision} removed: {canary.message}")
        self.canary = None

    def _still_routed(self, canary: CanaryStatus) -> bool:
        """With an HTTPRoute: take the canary's weight to 0 first, remove it in a later reconcile."""
        self.draining = True
        if not self.exact_routing or canary.weight == 0:
            return False
        self._wait(ROUTE_DRAIN)
        return True

    # -- the outcome ---------------------------------------------------------------------

    def _replicas(self) -> tuple[int | None, int | None]:
        """Desired (stable, canary) replicas; None for stable when the autoscaler owns it."""
        n = self.capacity
        canary = self.canary
        if canary is None:
            return (None if self.autoscaled else n), None
        canary_n = self.canary_replicas(canary.step)
        if self.obs.canary is not None and canary.state != "Progressing":
            # Promoting or rolling back: the canary keeps its size until it is removed.
            canary_n = max(self.obs.canary.spec_replicas, 1)
        if self.autoscaled:
            return None, canary_n
        if self.exact_routing or canary.state != "Progressing":
            return n, canary_n
        # Replicas routing: the stable gives up one pod per Ready canary pod, never before.
        return max(n - min(self.canary_ready(), canary_n), 0), canary_n

    def _route_weight(self) -> int:
        """The HTTPRoute weight: the highest step weight whose canary pods are all Ready."""
        canary = self.canary
        if canary is None or canary.state == "RollingBack" or self.draining:
            return 0
        ready = self.canary_ready()
        weights = [
            self.spec.rollout.steps[i].weight
            for i in range(min(canary.step, len(self.spec.rollout.steps) - 1) + 1)
            if self.canary_replicas(i) <= ready
        ]
        return max(weights, default=0)

    def _finish(self) -> Plan:
        stable_replicas, canary_replicas = self._replicas()
        stable_plan = None
        if self.stable is not None:
            stable_plan = RevisionPlan("stable", self.stable.revision, self._template(self.stable), stable_replicas)
        canary_plan = None
        if self.canary is not None:
            canary_plan = RevisionPlan("canary", self.canary.revision, self._template(self.canary), canary_replicas)
        route_weight = self._route_weight()

        obs = self.obs
        if self.stable is not None and obs.stable is not None:
            self.stable.replicas = obs.stable.replicas
            self.stable.ready_replicas = obs.stable.ready_replicas
        if self.canary is not None:
            canary_obs = obs.canary
            self.canary.replicas = canary_obs.replicas if canary_obs else 0
            self.canary.ready_replicas = canary_obs.ready_replicas if canary_obs else 0
            if self.exact_routing:
                self.canary.weight = route_weight
            else:
                ready_total = (obs.stable.ready_replicas if obs.stable else 0) + self.canary.ready_replicas
                self.canary.weight = round(100 * self.canary.ready_replicas / ready_total) if ready_total else 0

        status = conditions.status(
            md=self.md,
            observed=obs,
            stable=self.stable,
            canary=self.canary,
            failed=self.failed,
            holds=self.holds,
            desired_revision=self.revision,
            capacity=self.capacity,
            stable_rolled_out=(
                self.stable is not None
                and obs.stable is not None
                and obs.stable.rolled_out(self.stable.revision)
                and (stable_replicas is None or obs.stable.spec_replicas == stable_replicas)
            ),
        )
        return Plan(
            stable=stable_plan,
            canary=canary_plan,
            route_weight=route_weight,
            status=status,
            events=tuple(self.events),
            requeue_after=min(self.waits) if self.waits else None,
            notes=tuple(self.notes),
        )
