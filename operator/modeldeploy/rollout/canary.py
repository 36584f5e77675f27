"""The canary's walk through its steps: readiness, pauses, analysis, promotion and rollback.

Pure, like the planner that extends it: the time is the observation's, and what it decides is
written into the canary's status (and events, and when to look again).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal, NamedTuple

from modeldeploy.api.timestamp import whole_seconds
from modeldeploy.api.v1alpha1 import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    CanaryStatus,
    FailedRevision,
    ModelDeployment,
    RevisionStatus,
)
from modeldeploy.model.observed import Observed
from modeldeploy.model.revision import steps_hash
from modeldeploy.rollout.conditions import Event, child_problems
from modeldeploy.routing import TrafficRouter

# Rollback reasons that are not the canary's fault: the revision is not recorded as failed.
NOT_A_FAILURE = frozenset({"SpecReverted", "Superseded"})
# While waiting on pods the machine has nothing timed to do; child events wake it, this is a backstop.
WAIT_RECHECK = timedelta(seconds=30)
# A child the cluster would not take is tried again this often (its cause is outside the operator's view).
HELD_RECHECK = timedelta(seconds=15)


class Outcome(NamedTuple):
    """A rollout decision, for the operator's counters: a revision started (reason Canary or Rolling), a canary
    promoted or rolled back (the reason it was)."""

    kind: Literal["started", "promoted", "rolled_back"]
    reason: str


class CanaryWalk:
    def __init__(
        self,
        md: ModelDeployment,
        observed: Observed,
        router: TrafficRouter,
        *,
        stable: RevisionStatus | None,
        canary: CanaryStatus | None,
        failed: FailedRevision | None,
    ) -> None:
        self.md = md
        self.spec = md.spec
        self.obs = observed
        self.now = observed.now
        # What status records of `now`: whole seconds, as it reads back after a round trip.
        self.stamp = whole_seconds(observed.now)
        self.router = router
        self.stable = stable
        self.canary = canary
        self.failed = failed
        self.events: list[Event] = []
        self.outcomes: list[Outcome] = []
        self.waits: list[timedelta] = []
        # Set when the canary is about to go: its route weight is 0 from this reconcile on.
        self.draining = False
        # Children the last reconcile could not write (status says which): no step is passed without them.
        self.held = child_problems(md.status)

    # -- helpers -------------------------------------------------------------------

    def _event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def _wait(self, delta: timedelta) -> None:
        self.waits.append(max(delta, timedelta(seconds=1)))

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

    def canary_replicas(self, step: int) -> int:
        weight = self.spec.rollout.steps[step].weight
        return self.router.canary_replicas(self.capacity, weight, autoscaled=self.autoscaled)

    def canary_ready(self) -> int:
        if self.canary is None or self.obs.canary is None:
            return 0
        return self.obs.canary.ready_at(self.canary.revision)

    def stable_ready(self) -> int:
        if self.stable is None or self.obs.stable is None:
            return 0
        return self.obs.stable.ready_at(self.stable.revision)

    # -- the walk ----------------------------------------------------------------------

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
            annotations = self.md.metadata.annotations
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
        self.canary.state = "Promoting"
        self.canary.reason = reason
        self.canary.message = message
        self._event("Normal", "Promoting", f"promoting canary {self.canary.revision}: {message}")

    def _follow_steps(self, canary: CanaryStatus) -> None:
        """Steps edited mid-canary restart the walk at the first new step (as Argo Rollouts does with its
        currentStepHash): a step index means nothing in a list it was not counted in. A canary from an
        operator that kept no hash adopts the current steps."""
        steps = self.spec.rollout.steps
        current = steps_hash(steps)
        if canary.steps_hash not in (None, current):
            self._event(
                "Normal",
                "StepsChanged",
                f"canary {canary.revision}: spec.rollout.steps changed at step {canary.step + 1}; the walk restarts "
                f"at step 1/{len(steps)} ({steps[0].weight}% of traffic)",
            )
            canary.step = 0
            canary.step_started_at = self.stamp
            canary.step_ready_at = None
            canary.analysis.measurements = 0
        canary.steps_hash = current
        canary.step = min(canary.step, len(steps) - 1)
        canary.step_weight = steps[canary.step].weight

    def _progress(self, canary: CanaryStatus) -> None:
        rollout = self.spec.rollout
        steps = rollout.steps
        self._follow_steps(canary)
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
            if canary.step_ready_at is not None:
                # Ready in this step, then a pod lost (evicted by a drain, its node gone): its replacement gets a
                # whole progressDeadline, counted from now, not from a step start that may be long past.
                canary.step_started_at = self.stamp
            canary.step_ready_at = None
            deadline = (canary.step_started_at or self.stamp) + rollout.progress_deadline
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
            canary.step_ready_at = self.stamp

        if rollout.analysis is not None:
            self._judge(canary)
            if canary.state != "Progressing":
                return
        if rollout.paused:
            return
        pause_end = canary.step_ready_at + steps[canary.step].pause
        if self.now < pause_end:
            self._wait(pause_end - self.now)
            return
        if rollout.analysis is not None and not self._passed_this_step(canary):
            return  # _judge asked to be woken for the next measurement
        if self.held:
            # A step is only as good as the children that make it: a refused route, say, sent the canary
            # none of its traffic. The walk waits for every child to be taken.
            self._wait(HELD_RECHECK)
            return
        if canary.step + 1 < len(steps):
            canary.step += 1
            canary.step_weight = steps[canary.step].weight
            canary.step_started_at = self.stamp
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

    @staticmethod
    def _passed_this_step(canary: CanaryStatus) -> bool:
        result = canary.analysis
        if result.verdict != "Passed" or result.last_measured_at is None or canary.step_ready_at is None:
            return False
        return result.last_measured_at >= canary.step_ready_at

    def _judge(self, canary: CanaryStatus) -> None:
        analysis = self.spec.rollout.analysis
        assert analysis is not None
        measured = self.obs.measurement
        result = canary.analysis
        if measured is not None and measured.revision == canary.revision:
            result.measurements += 1
            result.last_measured_at = self.stamp
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
                    result.waiting_for_data_since = self.stamp
                    self._event("Normal", "WaitingForData", f"canary {canary.revision}: {measured.summary}")
                if self.now - result.waiting_for_data_since >= analysis.no_data_timeout:
                    self._begin_rollback(
                        "NoData",
                        f"{measured.summary}, for longer than noDataTimeout {analysis.no_data_timeout}",
                    )
                    return
            else:
                result.waiting_for_data_since = None
        since = canary.step_ready_at or self.stamp
        if result.last_measured_at:
            since = max(since, result.last_measured_at)
        self._wait(since + analysis.interval - self.now)

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
            self.outcomes.append(Outcome("promoted", canary.reason or "StepsComplete"))
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
                at=self.stamp,
            )
            self._event(
                "Warning",
                "RolledBack",
                f"canary {canary.revision} ({canary.bento}) rolled back ({reason}: {canary.message}); "
                f"stable {self.stable.revision} ({self.stable.bento}) serves all traffic",
            )
        else:
            self._event("Normal", "CanaryRemoved", f"canary {canary.revision} removed: {canary.message}")
        self.outcomes.append(Outcome("rolled_back", reason))
        self.canary = None

    def _still_routed(self, canary: CanaryStatus) -> bool:
        """With a router that drains: take the canary's weight to 0 first, remove it in a later reconcile."""
        self.draining = True
        if self.router.drain is None or canary.weight == 0:
            return False
        self._wait(self.router.drain)
        return True
