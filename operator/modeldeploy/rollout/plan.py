"""The rollout state machine: status + observation + clock -> what should run, and the next status.

A revision is the hash of the pod-affecting spec. The stable revision serves; when the
spec's revision differs from it, the Rolling strategy moves the stable Deployment to it
in place, the Canary strategy starts a canary Deployment beside it and walks the steps:

    Progressing --(last step passed | promote annotation)--> Promoting --(stable rolled out)--> done
         |
         +--(analysis failed | pods failed | not Ready in time | abort annotation)--> RollingBack
                                                       --(stable fully Ready again)--> done, revision recorded as failed

Everything the machine needs to continue lives in the object's status, so an operator
restarted at any point picks up where it was. How traffic is split is the spec's traffic
router's business (modeldeploy.routing); what the status says is modeldeploy.rollout.conditions'.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from pydantic import ValidationError

from modeldeploy.api.errors import describe
from modeldeploy.api.v1alpha1 import (
    AnalysisStatus,
    CanaryStatus,
    ModelDeployment,
    ModelDeploymentStatus,
    RevisionStatus,
)
from modeldeploy.model.observed import Observed
from modeldeploy.model.revision import RevisionPlan, RevisionTemplate, steps_hash, template_of
from modeldeploy.rollout import conditions
from modeldeploy.rollout.canary import CanaryWalk, Outcome
from modeldeploy.rollout.conditions import Event
from modeldeploy.rollout.config import PlanConfig
from modeldeploy.routing import router_for

# Nothing watches referenced ConfigMaps, ServiceAccounts or claims; a rollout waiting for one looks again this often.
REFERENCE_RECHECK = timedelta(seconds=15)


@dataclass(frozen=True)
class Plan:
    stable: RevisionPlan | None
    canary: RevisionPlan | None
    # Percent of traffic for the canary where the router sets it exactly (an HTTPRoute's canary backend).
    route_weight: int
    status: ModelDeploymentStatus
    # What status was computed from; the reconciler adds the children the API server refused.
    facts: conditions.Facts
    events: tuple[Event, ...] = ()
    # The rollout decisions taken (started, promoted, rolled back), for the operator's metrics.
    outcomes: tuple[Outcome, ...] = ()
    requeue_after: timedelta | None = None
    # The plan cannot say what the children should be (a stored template it cannot read): apply nothing,
    # remove nothing, until a person decides.
    leave_children: bool = False


def analysis_due(md: ModelDeployment, observed: Observed) -> str | None:
    """The canary revision to measure now, if a measurement is due (taken before `plan`)."""
    analysis = md.spec.rollout.analysis
    canary = md.status.canary if md.status else None
    if analysis is None or canary is None or canary.state != "Progressing" or canary.step_ready_at is None:
        return None
    since = canary.step_ready_at
    if canary.analysis.last_measured_at:
        since = max(since, canary.analysis.last_measured_at)
    if observed.now < since + analysis.interval:
        return None
    return canary.revision


def plan(md: ModelDeployment, observed: Observed, config: PlanConfig | None = None) -> Plan:
    return _Planner(md, observed, config or PlanConfig()).run()


class _Planner(CanaryWalk):
    def __init__(self, md: ModelDeployment, observed: Observed, config: PlanConfig) -> None:
        old = md.status or ModelDeploymentStatus()
        super().__init__(
            md,
            observed,
            router_for(md),
            stable=old.stable.model_copy(deep=True) if old.stable else None,
            canary=old.canary.model_copy(deep=True) if old.canary else None,
            failed=old.failed.model_copy(deep=True) if old.failed else None,
        )
        self.template = template_of(self.spec, config.default_runtime_image)
        self.revision = self.template.revision
        self.holds: list[tuple[str, str]] = []

    def _revision_status(self, template: RevisionTemplate) -> RevisionStatus:
        return RevisionStatus(revision=template.revision, bento=template.bento.display, template=template.wire())

    # -- the machine ------------------------------------------------------------------

    def run(self) -> Plan:
        unreadable = self._unreadable_template()
        if unreadable is not None:
            self.holds.append(unreadable)
            return self._finish(leave_children=True)
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

    def _unreadable_template(self) -> tuple[str, str] | None:
        """A stored template this operator cannot read: rendering the spec's under its revision would roll the
        new spec out unseen, so the rollout stops here with a reason instead."""
        for role, revision in (("stable", self.stable), ("canary", self.canary)):
            if revision is None:
                continue
            try:
                RevisionTemplate.model_validate(revision.template)
            except ValidationError as err:
                return (
                    "UnreadableTemplate",
                    f"status.{role}.template (revision {revision.revision}) cannot be read by this operator "
                    f"({'; '.join(describe(err))}); the children are left as they are: run the operator version "
                    f"that wrote it, or remove status.{role} to deploy the spec afresh",
                )
        return None

    def _blockers(self) -> list[tuple[str, str]]:
        held = self.router.hold(self.obs.unserved)
        if held is not None:
            self.holds.append(held)
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
            self.outcomes.append(Outcome("started", "Rolling"))
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
        if self.router.hold(self.obs.unserved) is not None:
            if superseded:
                self._begin_rollback("Superseded", "the canary's traffic routing is unavailable")
            return
        if blockers:
            if superseded:
                self._begin_rollback("Superseded", f"revision {self.revision} replaces the canary")
            return
        if canary is not None and canary.revision == self.revision:
            return
        self._start_canary(canary)

    def _start_canary(self, replaced: CanaryStatus | None) -> None:
        assert self.stable is not None
        steps = self.spec.rollout.steps
        if replaced is not None:
            self._event("Normal", "CanaryReplaced", f"canary {replaced.revision} replaced by revision {self.revision}")
        self.canary = CanaryStatus(
            revision=self.revision,
            bento=self.template.bento.display,
            template=self.template.wire(),
            step=0,
            step_weight=steps[0].weight,
            steps_hash=steps_hash(steps),
            started_at=self.stamp,
            step_started_at=self.stamp,
            analysis=AnalysisStatus(),
        )
        self.outcomes.append(Outcome("started", "Canary"))
        self._event(
            "Normal",
            "CanaryStarted",
            f"canary {self.revision} ({self.canary.bento}) started beside stable {self.stable.revision} "
            f"({self.stable.bento}): step 1/{len(steps)} at {steps[0].weight}% of traffic",
        )

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
        if canary.state != "Progressing":
            return n, canary_n
        return self.router.stable_replicas(n, canary_ready=self.canary_ready(), canary_replicas=canary_n), canary_n

    def _route_weight(self) -> int:
        """For an exact router: the highest step weight whose canary pods are all Ready, 0 once the canary is
        on its way out. An approximate router sets no weight: its pods are the split."""
        canary = self.canary
        if not self.router.exact or canary is None or canary.state == "RollingBack" or self.draining:
            return 0
        ready = self.canary_ready()
        steps = self.spec.rollout.steps
        weights = [
            steps[i].weight for i in range(min(canary.step, len(steps) - 1) + 1) if self.canary_replicas(i) <= ready
        ]
        return max(weights, default=0)

    def _finish(self, *, leave_children: bool = False) -> Plan:
        stable_replicas, canary_replicas = (None, None) if leave_children else self._replicas()
        stable_plan = canary_plan = None
        if self.stable is not None and not leave_children:
            stable_plan = RevisionPlan("stable", self.stable.revision, self._template(self.stable), stable_replicas)
        if self.canary is not None and not leave_children:
            canary_plan = RevisionPlan("canary", self.canary.revision, self._template(self.canary), canary_replicas)
        route_weight = 0 if leave_children else self._route_weight()

        obs = self.obs
        if self.stable is not None and obs.stable is not None:
            self.stable.replicas = obs.stable.replicas
            self.stable.ready_replicas = obs.stable.ready_replicas
        if self.canary is not None:
            self.canary.replicas = obs.canary.replicas if obs.canary else 0
            self.canary.ready_replicas = obs.canary.ready_replicas if obs.canary else 0
            if not leave_children:
                self.canary.weight = self.router.weight(
                    route_weight=route_weight,
                    stable_ready=obs.stable.ready_replicas if obs.stable else 0,
                    canary_ready=self.canary.ready_replicas,
                )

        facts = conditions.Facts(
            md=self.md,
            observed=obs,
            stable=self.stable,
            canary=self.canary,
            failed=self.failed,
            holds=tuple(self.holds),
            desired_revision=self.revision,
            capacity=self.capacity,
            apply_problems=() if leave_children else self.held,
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
            status=conditions.status(facts),
            facts=facts,
            events=tuple(self.events),
            outcomes=tuple(self.outcomes),
            requeue_after=min(self.waits) if self.waits else None,
            leave_children=leave_children,
        )

    @staticmethod
    def _template(status: RevisionStatus) -> RevisionTemplate:
        return RevisionTemplate.model_validate(status.template)
