"""The rollout state machine, driven reconcile by reconcile with an injected clock.

`World` plays the cluster: it keeps the ModelDeployment (status round-tripped through
JSON, as the API server stores it) and the Deployments, and "runs" the Deployment
controller by making planned pods Ready, or not, as a test says. Every reconcile is a
fresh call of the pure `plan`, so every step is also a restart of the operator.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from modeldeploy.api.v1alpha1 import CheckResult, ModelDeployment
from modeldeploy.model.measurement import Measurement
from modeldeploy.model.observed import DeploymentState, Observed, PodProblem
from modeldeploy.model.revision import RevisionPlan, template_of
from modeldeploy.rollout.plan import Plan, analysis_due, plan

from factories import IMAGE_V2, md_body

T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
ANALYSIS = {
    "prometheus": {"address": "http://prometheus:9090"},
    "interval": "30s",
    "failureLimit": 2,
    "minRequests": 50,
    "noDataTimeout": "2m",
}


def passed(revision: str) -> Measurement:
    check = CheckResult(name="errorRate", value=0.0, threshold=0.01, passed=True)
    return Measurement(revision, "Passed", "all checks passed", (check,))


def failed(revision: str) -> Measurement:
    check = CheckResult(name="errorRate", value=0.3, threshold=0.01, passed=False)
    return Measurement(revision, "Failed", "error rate 30.00% above maxErrorRate 1.00%", (check,))


def no_data(revision: str) -> Measurement:
    return Measurement(revision, "NoData", "3 requests in 30s, fewer than minRequests 50")


@dataclass
class World:
    body: dict[str, Any]
    now: datetime = T0
    deployments: dict[str, DeploymentState] = field(default_factory=dict)
    # (role, revision) -> whether its pods become Ready; Ready by default.
    ready: Callable[[str, str], bool] = lambda role, revision: True
    problems: tuple[PodProblem, ...] = ()
    missing: tuple[str, ...] = ()
    gateway_api: bool = True
    # Optional kinds besides the HTTPRoute that the cluster does not serve (a ScaledObject without KEDA).
    unserved: frozenset[str] = frozenset()
    measure: Callable[[str], Measurement] | None = None
    events: list[tuple[str, str]] = field(default_factory=list)
    last: Plan | None = None
    measured: list[str] = field(default_factory=list)
    outcomes: list[tuple[str, str]] = field(default_factory=list)

    @property
    def md(self) -> ModelDeployment:
        return ModelDeployment.model_validate(self.body)

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.body.get("status") or {})

    def observed(self) -> Observed:
        return Observed(
            now=self.now,
            stable=self.deployments.get("iris"),
            canary=self.deployments.get("iris-canary"),
            pod_problems=self.problems,
            missing_references=self.missing,
            unserved=(frozenset() if self.gateway_api else frozenset({"HTTPRoute"})) | self.unserved,
        )

    def reconcile(self) -> Plan:
        model = self.md
        observed = self.observed()
        revision = analysis_due(model, observed)
        if revision is not None and self.measure is not None:
            self.measured.append(revision)
            observed = Observed(**{**observed.__dict__, "measurement": self.measure(revision)})
        result = plan(model, observed)
        # The status goes through JSON, as it does through the API server.
        self.body["status"] = json.loads(json.dumps(result.status.wire()))
        self.events += [(e.reason, e.message) for e in result.events]
        self.outcomes += [tuple(o) for o in result.outcomes]
        self._run_deployments(result)
        self.last = result
        return result

    def _run_deployments(self, result: Plan) -> None:
        """The Deployment controller, instantly: desired replicas become Ready unless told otherwise."""
        wanted = {"iris": result.stable, "iris-canary": result.canary}
        for name, revision_plan in wanted.items():
            if revision_plan is None:
                self.deployments.pop(name, None)
                continue
            self.deployments[name] = self._deployment(name, revision_plan)

    def _deployment(self, name: str, p: RevisionPlan) -> DeploymentState:
        previous = self.deployments.get(name)
        replicas = p.replicas
        if replicas is None:  # the HorizontalPodAutoscaler's: keep the count, at least its minimum
            scaling = self.md.spec.autoscaling
            assert scaling is not None
            replicas = max(previous.spec_replicas if previous else 1, scaling.min_replicas)
        ready = replicas if self.ready(p.role, p.revision) else 0
        return DeploymentState(
            name=name,
            revision=p.revision,
            generation=1,
            observed_generation=1,
            spec_replicas=replicas,
            replicas=replicas,
            updated_replicas=replicas,
            ready_replicas=ready,
            available_replicas=ready,
        )

    def settle(self, seconds: float = 0, times: int = 2) -> Plan:
        """Let time pass, then reconcile until the cluster caught up (act, pods react, observe)."""
        self.now += timedelta(seconds=seconds)
        result = self.reconcile()
        for _ in range(times):
            result = self.reconcile()
        return result

    def set_spec(self, **spec: Any) -> None:
        fresh = md_body(**spec)
        self.body["spec"] = fresh["spec"]
        self.body["metadata"]["generation"] += 1

    def annotate(self, key: str, value: str) -> None:
        self.body["metadata"].setdefault("annotations", {})[key] = value

    def reasons(self) -> list[str]:
        return [reason for reason, _ in self.events]

    def condition(self, type_: str) -> dict[str, Any]:
        return next(c for c in self.status["conditions"] if c["type"] == type_)


def world(**spec: Any) -> World:
    w = World(body=md_body(**spec))
    w.settle()
    return w


def revision_of(**spec: Any) -> str:
    return template_of(ModelDeployment.model_validate(md_body(**spec)).spec).revision


class TestFirstDeployment:
    def test_deploys_stable_and_becomes_ready(self) -> None:
        w = World(body=md_body())
        first = w.reconcile()
        assert first.stable is not None and first.stable.replicas == 2
        assert first.canary is None
        assert w.status["phase"] == "Pending"
        w.reconcile()
        assert w.status["phase"] == "Ready"
        assert w.condition("Ready")["status"] == "True"
        assert w.status["stable"]["revision"] == revision_of()
        assert w.status["url"] == "http://iris.ml.svc:3000"
        assert w.reasons() == ["Deploying"]

    def test_missing_reference_blocks_with_an_actionable_reason(self) -> None:
        w = World(body=md_body(), missing=("Secret ml/s3-creds (named in spec.bento.store.secretRef) does not exist",))
        result = w.reconcile()
        assert result.stable is None
        degraded = w.condition("Degraded")
        assert degraded["status"] == "True"
        assert degraded["reason"] == "MissingReference"
        assert "Secret ml/s3-creds" in degraded["message"]
        assert w.status["phase"] == "Failed"
        w.missing = ()
        w.settle()
        assert w.status["phase"] == "Ready"

    def test_unschedulable_pods_show_the_schedulers_words(self) -> None:
        w = World(body=md_body(resources={"gpu": {"count": 4}}), ready=lambda role, rev: False)
        w.problems = (
            PodProblem(
                "stable",
                "Unschedulable",
                "pod iris-x cannot be scheduled: 0/3 nodes: Insufficient nvidia.com/gpu",
                False,
            ),
        )
        w.settle()
        assert w.condition("Degraded")["reason"] == "Unschedulable"
        assert "Insufficient nvidia.com/gpu" in w.condition("Ready")["message"]
        assert w.status["phase"] == "Failed"


class TestCanaryWalk:
    def test_steps_pauses_promotion(self) -> None:
        steps = [{"weight": 25, "pause": "1m"}, {"weight": 50, "pause": "2m"}]
        w = world(replicas=4, rollout={"steps": steps})
        old, new = revision_of(replicas=4), revision_of(replicas=4, bento={"image": IMAGE_V2})
        w.set_spec(replicas=4, rollout={"steps": steps}, bento={"image": IMAGE_V2})

        result = w.settle()
        assert w.status["canary"]["revision"] == new
        assert w.status["stable"]["revision"] == old
        assert w.status["canary"]["step"] == 0
        assert result.canary is not None and result.canary.replicas == 1
        assert result.stable is not None and result.stable.replicas == 3  # one stable pod per Ready canary pod
        assert w.status["canary"]["weight"] == 25
        assert w.status["phase"] == "Progressing"
        assert w.condition("Ready")["status"] == "False"
        assert "approximate" in w.condition("Progressing")["message"]

        w.settle(59)
        assert w.status["canary"]["step"] == 0, "the pause is not over"
        w.settle(2)
        assert w.status["canary"]["step"] == 1
        assert w.last is not None and w.last.canary is not None and w.last.canary.replicas == 2
        assert w.status["canary"]["weight"] == 50

        w.settle(121)
        assert "canary" not in w.status
        assert w.status["stable"]["revision"] == new
        assert w.status["phase"] == "Ready"
        assert w.last is not None and w.last.stable is not None and w.last.stable.replicas == 4
        assert w.reasons() == ["Deploying", "CanaryStarted", "StepAdvanced", "Promoting", "Promoted"]

    def test_pause_counts_from_when_canary_pods_are_ready(self) -> None:
        w = world(rollout={"steps": [{"weight": 50, "pause": "1m"}], "progressDeadline": "10m"})
        pods_ready = False
        w.ready = lambda role, rev: role == "stable" or pods_ready
        w.set_spec(
            bento={"image": IMAGE_V2}, rollout={"steps": [{"weight": 50, "pause": "1m"}], "progressDeadline": "10m"}
        )
        w.settle(0)
        w.settle(300)
        assert w.status["canary"].get("stepReadyAt") is None
        assert w.condition("Progressing")["reason"] == "CanaryScaling"
        assert w.last is not None and w.last.stable is not None and w.last.stable.replicas == 2, "stable keeps capacity"
        pods_ready = True
        w.settle(1)
        w.settle(59)
        assert w.status["canary"]["state"] == "Progressing"
        w.settle(2)
        assert "canary" not in w.status

    def test_restart_resumes_from_status_alone(self) -> None:
        w = world(rollout={"steps": [{"weight": 10, "pause": "1m"}, {"weight": 60, "pause": "1m"}]})
        w.set_spec(
            bento={"image": IMAGE_V2}, rollout={"steps": [{"weight": 10, "pause": "1m"}, {"weight": 60, "pause": "1m"}]}
        )
        w.settle()
        w.settle(61)
        saved = json.loads(json.dumps(w.body))
        # A new operator process: nothing but the object and the cluster.
        restarted = World(body=saved, now=w.now, deployments=dict(w.deployments))
        restarted.settle(61)
        assert "canary" not in restarted.status
        assert restarted.reasons() == ["Promoting", "Promoted"]

    def test_spec_change_during_canary_replaces_it(self) -> None:
        w = world()
        w.set_spec(bento={"image": IMAGE_V2})
        w.settle()
        w.set_spec(bento={"image": "registry.example.com/iris_classifier:v3"})
        w.settle()
        assert w.status["canary"]["bento"] == "iris_classifier:v3"
        assert w.status["canary"]["step"] == 0
        assert "CanaryReplaced" in w.reasons()

    def test_spec_reverted_during_canary_removes_it_without_failing_it(self) -> None:
        w = world()
        w.set_spec(bento={"image": IMAGE_V2})
        w.settle()
        w.set_spec()
        w.settle(times=2)
        assert "canary" not in w.status
        assert "failed" not in w.status
        assert w.status["phase"] == "Ready"
        assert "CanaryRemoved" in w.reasons()

    def test_rolling_strategy_replaces_stable_in_place(self) -> None:
        w = world(rollout={"strategy": "Rolling"})
        w.set_spec(bento={"image": IMAGE_V2}, rollout={"strategy": "Rolling"})
        result = w.settle()
        assert result.canary is None
        assert w.status["stable"]["revision"] == revision_of(bento={"image": IMAGE_V2}, rollout={"strategy": "Rolling"})
        assert "RollingUpdate" in w.reasons()
        assert w.status["phase"] == "Ready"


class TestStepsEditedMidCanary:
    """The documented rule: any edit of spec.rollout.steps during a canary restarts its walk at the first new step."""

    old_steps: ClassVar[list[dict[str, Any]]] = [{"weight": 10, "pause": "1m"}, {"weight": 50, "pause": "1m"}]
    new_steps: ClassVar[list[dict[str, Any]]] = [
        {"weight": 20, "pause": "1m"},
        {"weight": 40, "pause": "1m"},
        {"weight": 60, "pause": "1m"},
    ]

    def at_second_step(self) -> World:
        w = world(replicas=10, rollout={"steps": self.old_steps})
        w.set_spec(replicas=10, bento={"image": IMAGE_V2}, rollout={"steps": self.old_steps})
        w.settle()
        w.settle(61)
        assert w.status["canary"]["step"] == 1
        return w

    def test_the_walk_restarts_at_the_first_new_step(self) -> None:
        w = self.at_second_step()
        w.set_spec(replicas=10, bento={"image": IMAGE_V2}, rollout={"steps": self.new_steps})
        result = w.settle()
        canary = w.status["canary"]
        assert (canary["step"], canary["stepWeight"]) == (0, 20)
        assert result.canary is not None and result.canary.replicas == 2
        assert "StepsChanged" in w.reasons()
        assert "at step 1/3 (20% of traffic)" in dict(w.events)["StepsChanged"]
        for _ in range(3):
            w.settle(61)
        assert "canary" not in w.status, "promoted after the three new steps"
        assert w.reasons().count("StepAdvanced") == 1 + 2

    def test_unchanged_steps_never_restart_the_walk(self) -> None:
        w = self.at_second_step()
        w.set_spec(replicas=10, bento={"image": IMAGE_V2}, rollout={"steps": self.old_steps, "paused": True})
        w.settle()
        assert w.status["canary"]["step"] == 1
        assert "StepsChanged" not in w.reasons()

    def test_a_canary_recorded_without_a_steps_hash_adopts_the_current_steps(self) -> None:
        w = self.at_second_step()
        del w.body["status"]["canary"]["stepsHash"]  # as an operator before the hash wrote it
        w.settle()
        assert w.status["canary"]["step"] == 1
        assert w.status["canary"]["stepsHash"]
        assert "StepsChanged" not in w.reasons()


class TestUnreadableStoredTemplate:
    def test_the_rollout_stops_with_a_reason_and_the_children_are_left_alone(self) -> None:
        w = world()
        w.body["status"]["stable"]["template"]["resources"] = {"requests": {"cpu": "lots"}}
        w.set_spec(bento={"image": IMAGE_V2})
        result = w.reconcile()
        assert result.leave_children
        assert result.stable is None and result.canary is None
        degraded = w.condition("Degraded")
        assert degraded["reason"] == "UnreadableTemplate"
        assert "status.stable.template" in degraded["message"]
        assert "'lots' is not a Kubernetes quantity" in degraded["message"]
        assert w.condition("Ready")["status"] == "False"
        assert w.status["phase"] == "Degraded", "the stable pods still serve"
        assert "canary" not in w.status
        assert w.status["stable"]["revision"] == revision_of()

    def test_an_unreadable_canary_template_holds_the_canary_where_it_is(self) -> None:
        w = world()
        w.set_spec(bento={"image": IMAGE_V2})
        w.settle()
        step_started = w.status["canary"]["stepStartedAt"]
        w.body["status"]["canary"]["template"] = {"bento": "not an object"}
        w.settle(600)
        assert w.last is not None and w.last.leave_children
        assert w.status["canary"]["state"] == "Progressing"
        assert w.status["canary"]["stepStartedAt"] == step_started
        assert w.condition("Degraded")["reason"] == "UnreadableTemplate"


class TestAnalysis:
    def steps(self) -> dict[str, Any]:
        return {"steps": [{"weight": 20, "pause": "1m"}, {"weight": 50, "pause": "1m"}], "analysis": ANALYSIS}

    def test_healthy_canary_passes_every_step_and_is_promoted(self) -> None:
        w = world(rollout=self.steps())
        w.measure = passed
        w.set_spec(bento={"image": IMAGE_V2}, rollout=self.steps())
        for _ in range(12):
            w.settle(30)
        assert "canary" not in w.status
        assert w.status["stable"]["bento"] == "iris_classifier:v2"
        assert w.measured, "the canary was measured"
        assert set(w.measured) == {revision_of(bento={"image": IMAGE_V2}, rollout=self.steps())}

    def test_step_waits_for_a_passing_measurement(self) -> None:
        w = world(rollout=self.steps())
        w.set_spec(bento={"image": IMAGE_V2}, rollout=self.steps())
        w.settle()
        w.settle(120)  # pause long over, but never measured
        assert w.status["canary"]["step"] == 0

    def test_failures_roll_back_after_failure_limit(self) -> None:
        w = world(rollout=self.steps())
        w.measure = failed
        w.set_spec(bento={"image": IMAGE_V2}, rollout=self.steps())
        w.settle()
        w.settle(31)
        assert w.status["canary"]["analysis"]["failures"] == 1
        assert w.status["canary"]["state"] == "Progressing"
        w.settle(31)
        assert "canary" not in w.status
        failure = w.status["failed"]
        assert failure["reason"] == "AnalysisFailed"
        assert "error rate 30.00%" in failure["message"]
        assert w.condition("Degraded")["reason"] == "RolledBack"
        assert w.status["phase"] == "Degraded"
        assert w.reasons().count("AnalysisFailed") == 2
        assert "RolledBack" in w.reasons()

    def test_rolled_back_revision_is_not_retried_until_the_spec_changes(self) -> None:
        w = world(rollout=self.steps())
        w.measure = failed
        w.set_spec(bento={"image": IMAGE_V2}, rollout=self.steps())
        for _ in range(4):
            w.settle(31)
        assert "canary" not in w.status
        for _ in range(3):
            w.settle(600)
        assert "canary" not in w.status
        assert w.reasons().count("CanaryStarted") == 1
        w.set_spec(bento={"image": "registry.example.com/iris_classifier:v3"}, rollout=self.steps())
        w.settle()
        assert w.status["canary"]["bento"] == "iris_classifier:v3"
        assert "failed" not in w.status

    def test_no_data_waits_then_fails_after_the_bound(self) -> None:
        w = world(rollout=self.steps())
        w.measure = no_data
        w.set_spec(bento={"image": IMAGE_V2}, rollout=self.steps())
        w.settle()
        w.settle(31)
        assert w.status["canary"]["analysis"]["verdict"] == "NoData"
        assert w.condition("Progressing")["reason"] == "WaitingForData"
        w.settle(60)
        assert w.status["canary"]["step"] == 0, "no promotion on no data"
        w.settle(70)
        assert w.status["failed"]["reason"] == "NoData"

    def test_an_unreachable_prometheus_is_a_failure(self) -> None:
        def unreachable(revision: str) -> Measurement:
            check = CheckResult(name="prometheus", passed=False, message="connection refused")
            return Measurement(revision, "Failed", "measurement failed: connection refused", (check,))

        w = world(rollout=self.steps())
        w.measure = unreachable
        w.set_spec(bento={"image": IMAGE_V2}, rollout=self.steps())
        for _ in range(3):
            w.settle(31)
        assert w.status["failed"]["reason"] == "AnalysisFailed"
        assert "connection refused" in w.status["failed"]["message"]

    def test_measurements_are_spaced_by_the_interval(self) -> None:
        w = world(rollout=self.steps())
        w.measure = passed
        w.set_spec(bento={"image": IMAGE_V2}, rollout=self.steps())
        w.settle()
        for _ in range(10):
            w.settle(5)
        assert len(w.measured) == 1


class TestRollbackCauses:
    def test_crash_loop_rolls_back_at_once_stable_first(self) -> None:
        w = world(replicas=4, rollout={"steps": [{"weight": 50, "pause": "5m"}]})
        w.set_spec(replicas=4, bento={"image": IMAGE_V2}, rollout={"steps": [{"weight": 50, "pause": "5m"}]})
        w.settle()
        assert w.last is not None and w.last.stable is not None and w.last.stable.replicas == 2
        w.problems = (
            PodProblem("canary", "CrashLoop", "container bento of pod iris-canary-x: CrashLoopBackOff", True),
        )
        stable_ready = False
        w.ready = lambda role, rev: role == "canary" or stable_ready
        result = w.reconcile()
        assert w.status["canary"]["state"] == "RollingBack"
        assert result.stable is not None and result.stable.replicas == 4, "stable scaled back up first"
        assert result.canary is not None, "the canary stays until stable is Ready again"
        w.reconcile()
        assert "canary" in w.status
        stable_ready = True
        w.reconcile()
        w.reconcile()
        assert "canary" not in w.status
        assert w.status["failed"]["reason"] == "CanaryFailed"

    def test_canary_not_ready_within_deadline(self) -> None:
        rollout = {"steps": [{"weight": 50, "pause": "1m"}], "progressDeadline": "5m"}
        w = world(rollout=rollout)
        w.ready = lambda role, rev: role == "stable"
        w.set_spec(bento={"image": IMAGE_V2}, rollout=rollout)
        w.settle()
        w.settle(299)
        assert w.status["canary"]["state"] == "Progressing"
        w.settle(2)
        assert w.status["failed"]["reason"] == "CanaryNotReady"
        assert "0/1 canary pods Ready after progressDeadline 5m" in w.status["failed"]["message"]

    def test_a_canary_pod_lost_late_in_a_step_gets_a_full_deadline_to_come_back(self) -> None:
        """A drain evicts a Ready canary pod after the step has run longer than progressDeadline: the walk
        waits for the pod again (CanaryScaling) with a fresh deadline instead of rolling back at once."""
        rollout = {"steps": [{"weight": 50, "pause": "1h"}, {"weight": 100}], "progressDeadline": "5m"}
        w = world(rollout=rollout)
        w.set_spec(bento={"image": IMAGE_V2}, rollout=rollout)
        w.settle()
        w.settle(20 * 60)
        assert w.status["canary"]["stepReadyAt"] is not None
        w.ready = lambda role, rev: role == "stable"  # the canary pod evicted, its replacement not Ready yet
        w.settle(1)
        assert w.status["canary"]["state"] == "Progressing"
        assert w.condition("Progressing")["reason"] == "CanaryScaling"
        w.settle(299)
        assert w.status["canary"]["state"] == "Progressing"
        w.settle(2)
        assert w.status["failed"]["reason"] == "CanaryNotReady", "a pod that never comes back still rolls back"

    def test_abort_annotation_for_this_canary(self) -> None:
        w = world()
        w.set_spec(bento={"image": IMAGE_V2})
        w.settle()
        w.annotate("modeldeploy.dev/abort", "some-other-revision")
        w.settle()
        assert w.status["canary"]["state"] == "Progressing", "an annotation for another revision is ignored"
        w.annotate("modeldeploy.dev/abort", w.status["canary"]["revision"])
        w.settle(times=2)
        assert w.status["failed"]["reason"] == "ManualAbort"
        assert "ManualAbort" in w.reasons()
        # What the operator counts: decided and ended in one reconcile, still with the reason it had.
        assert w.outcomes == [("started", "Canary"), ("rolled_back", "ManualAbort")]


class TestManualControl:
    def test_promote_annotation_skips_remaining_steps(self) -> None:
        w = world(rollout={"steps": [{"weight": 10, "pause": "1h"}, {"weight": 50, "pause": "1h"}]})
        w.set_spec(
            bento={"image": IMAGE_V2}, rollout={"steps": [{"weight": 10, "pause": "1h"}, {"weight": 50, "pause": "1h"}]}
        )
        w.settle()
        w.annotate("modeldeploy.dev/promote", w.status["canary"]["revision"])
        w.settle(times=2)
        assert "canary" not in w.status
        assert w.status["stable"]["bento"] == "iris_classifier:v2"
        assert "ManualPromote" in w.reasons()
        assert w.outcomes == [("started", "Canary"), ("promoted", "ManualPromote")]

    def test_pause_holds_and_resume_continues(self) -> None:
        steps = [{"weight": 10, "pause": "1m"}, {"weight": 50, "pause": "1m"}]
        w = world(rollout={"steps": steps})
        w.set_spec(bento={"image": IMAGE_V2}, rollout={"steps": steps, "paused": True})
        w.settle()
        w.settle(600)
        assert w.status["canary"]["step"] == 0
        assert w.condition("Progressing")["reason"] == "CanaryPaused"
        w.set_spec(bento={"image": IMAGE_V2}, rollout={"steps": steps})
        w.settle()
        assert w.status["canary"]["step"] == 1
        assert w.reasons()[-3:] == ["Paused", "Resumed", "StepAdvanced"]


class TestTrafficRouting:
    gateway: ClassVar[dict[str, Any]] = {"trafficRouting": "GatewayAPI", "gateway": {"parentRefs": [{"name": "gw"}]}}

    def test_gateway_weights_are_exact_and_only_to_ready_pods(self) -> None:
        rollout = {**self.gateway, "steps": [{"weight": 10, "pause": "1m"}, {"weight": 40, "pause": "1m"}]}
        w = world(replicas=4, rollout=rollout)
        canary_ready = False
        w.ready = lambda role, rev: role == "stable" or canary_ready
        w.set_spec(replicas=4, bento={"image": IMAGE_V2}, rollout=rollout)
        result = w.settle()
        assert result.route_weight == 0, "no traffic to pods that are not Ready"
        assert result.stable is not None and result.stable.replicas == 4, "stable keeps its size"
        canary_ready = True
        result = w.settle()
        assert result.route_weight == 10
        assert w.status["canary"]["weight"] == 10
        assert "exact weights" in w.condition("Progressing")["message"]

    def test_missing_gateway_api_is_degraded_from_the_first_deployment(self) -> None:
        w = World(body=md_body(rollout=self.gateway), gateway_api=False)
        result = w.settle()
        assert result.stable is not None, "the stable revision still serves through its Service"
        assert w.condition("Degraded")["reason"] == "GatewayAPIMissing"
        assert w.condition("Ready")["status"] == "False"
        w.gateway_api = True
        w.settle()
        assert w.condition("Ready")["status"] == "True"

    def test_missing_gateway_api_holds_the_canary_with_a_reason(self) -> None:
        w = world(rollout=self.gateway)
        w.gateway_api = False
        w.set_spec(bento={"image": IMAGE_V2}, rollout=self.gateway)
        w.settle()
        assert "canary" not in w.status
        assert w.condition("Degraded")["reason"] == "GatewayAPIMissing"
        assert "install the Gateway API CRDs" in w.condition("Degraded")["message"]

    def test_rollback_sends_traffic_back_before_removing_the_canary(self) -> None:
        rollout = {**self.gateway, "steps": [{"weight": 30, "pause": "10m"}]}
        w = world(replicas=2, rollout=rollout)
        w.set_spec(replicas=2, bento={"image": IMAGE_V2}, rollout=rollout)
        w.settle()
        assert w.last is not None and w.last.route_weight == 30
        w.annotate("modeldeploy.dev/abort", w.status["canary"]["revision"])
        result = w.reconcile()
        assert result.route_weight == 0
        assert result.canary is not None, "the canary outlives its traffic"
        assert w.status["canary"]["state"] == "RollingBack"
        assert w.status["canary"]["weight"] == 0
        result = w.settle(5)
        assert result.canary is None
        assert w.status["failed"]["reason"] == "ManualAbort"

    def test_promotion_drains_the_canary_route_before_removing_it(self) -> None:
        rollout = {**self.gateway, "steps": [{"weight": 30, "pause": "1m"}]}
        w = world(replicas=2, rollout=rollout)
        w.set_spec(replicas=2, bento={"image": IMAGE_V2}, rollout=rollout)
        w.settle()
        w.now += timedelta(seconds=61)
        weights = []
        for _ in range(4):
            result = w.reconcile()
            weights.append((result.route_weight, result.canary is not None))
        assert (0, True) in weights, weights
        assert weights[-1] == (0, False)


class TestAutoscaled:
    def test_canary_sized_beside_the_autoscaled_stable(self) -> None:
        spec = {"autoscaling": {"minReplicas": 4, "maxReplicas": 10}, "resources": {"requests": {"cpu": "1"}}}
        w = world(**spec)
        assert w.last is not None and w.last.stable is not None and w.last.stable.replicas is None
        w.set_spec(**spec, bento={"image": IMAGE_V2}, rollout={"steps": [{"weight": 20, "pause": "1m"}]})
        result = w.settle()
        assert result.stable is not None and result.stable.replicas is None, "the autoscaler owns the stable size"
        assert result.canary is not None and result.canary.replicas == 1  # 1/(4+1) = 20%
        assert w.status["canary"]["weight"] == 20


@pytest.mark.parametrize(
    ("replicas", "weight", "canary", "stable"),
    [(1, 10, 1, 0), (2, 10, 1, 1), (4, 25, 1, 3), (4, 50, 2, 2), (10, 10, 1, 9), (10, 100, 10, 0), (3, 34, 2, 1)],
)
def test_replicas_routing_approximates_weight_and_keeps_capacity(
    replicas: int, weight: int, canary: int, stable: int
) -> None:
    rollout = {"steps": [{"weight": weight, "pause": "1h"}]}
    w = world(replicas=replicas, rollout=rollout)
    w.set_spec(replicas=replicas, bento={"image": IMAGE_V2}, rollout=rollout)
    result = w.settle()
    assert result.canary is not None and result.canary.replicas == canary
    assert result.stable is not None and result.stable.replicas == stable
    assert canary + stable == replicas


class TestKstatusConditions:
    """Reconciling while the operator works towards Ready, Stalled when only a person can move it; never both,
    neither when Ready (docs/gitops.md)."""

    @staticmethod
    def flags(w: World) -> tuple[str, str, str, str]:
        reconciling, stalled = w.condition("Reconciling"), w.condition("Stalled")
        return reconciling["status"], reconciling["reason"], stalled["status"], stalled["reason"]

    def test_ready_is_neither(self) -> None:
        assert self.flags(world()) == ("False", "Reconciled", "False", "NotStalled")

    def test_a_canary_at_its_step_is_reconciling_with_readys_reason(self) -> None:
        w = world(rollout={"steps": [{"weight": 50, "pause": "1h"}]})
        w.set_spec(bento={"image": IMAGE_V2}, rollout={"steps": [{"weight": 50, "pause": "1h"}]})
        w.settle()
        assert self.flags(w) == ("True", w.condition("Ready")["reason"], "False", "NotStalled")
        assert w.condition("Reconciling")["message"] == w.condition("Ready")["message"]

    def test_a_missing_reference_is_degraded_but_waited_for(self) -> None:
        w = World(body=md_body(), missing=("ConfigMap ml/c (named in spec.env[0]) does not exist",))
        w.settle()
        assert w.condition("Degraded")["status"] == "True"
        assert self.flags(w) == ("True", "MissingReference", "False", "NotStalled")

    def test_a_rolled_back_revision_is_stalled_until_the_spec_changes(self) -> None:
        w = world()
        w.set_spec(bento={"image": IMAGE_V2})
        w.settle()
        w.annotate("modeldeploy.dev/abort", w.status["canary"]["revision"])
        w.settle()
        assert self.flags(w) == ("False", "Stalled", "True", "RolledBack")
        assert w.condition("Stalled")["message"].startswith(f"revision {w.status['failed']['revision']}")
        # Replicas are not the revision: the rolled-back one is still asked for.
        w.set_spec(bento={"image": IMAGE_V2}, replicas=3)
        w.settle()
        assert w.condition("Stalled")["reason"] == "RolledBack"
        w.set_spec(bento={"image": IMAGE_V2.replace(":v2", ":v3")})
        w.settle()
        assert self.flags(w)[:3] == ("True", w.condition("Ready")["reason"], "False")

    def test_a_spec_the_operator_cannot_use_is_stalled(self) -> None:
        from modeldeploy.api.v1alpha1 import ModelDeploymentStatus
        from modeldeploy.rollout.conditions import invalid_spec

        status = invalid_spec(ModelDeploymentStatus(), 3, ["spec.bento.runtimeImage: required with tag"], T0)
        by_type = {c.type: c for c in status.conditions}
        assert (by_type["Stalled"].status, by_type["Stalled"].reason) == ("True", "InvalidSpec")
        assert (by_type["Reconciling"].status, by_type["Reconciling"].reason) == ("False", "Stalled")
        assert by_type["Stalled"].observed_generation == 3
