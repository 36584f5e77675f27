"""What the operator counts from the statuses it writes (modeldeploy.metrics), read back from its registry."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from prometheus_client import REGISTRY

from modeldeploy import metrics
from modeldeploy.api.v1alpha1 import ModelDeploymentStatus

STABLE = {"revision": "aaa", "bento": "iris:v1"}
CANARY = {"revision": "bbb", "bento": "iris:v2"}


def status(**fields: Any) -> ModelDeploymentStatus:
    return ModelDeploymentStatus.model_validate(fields)


def sample(name: str, key: tuple[str, str], **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"namespace": key[0], "name": key[1], **labels}) or 0.0


class TestRolloutChanges:
    @pytest.mark.parametrize(
        ("old", "new", "counted"),
        [
            (
                {"stable": STABLE},
                {"stable": STABLE, "canary": CANARY},
                ("modeldeploy_rollouts_started_total", {"strategy": "Canary"}),
            ),
            (
                {"stable": STABLE, "canary": {**CANARY, "state": "Promoting", "reason": "StepsComplete"}},
                {"stable": CANARY},
                ("modeldeploy_rollouts_promoted_total", {"reason": "StepsComplete"}),
            ),
            (
                {"stable": STABLE, "canary": {**CANARY, "state": "RollingBack", "reason": "AnalysisFailed"}},
                {"stable": STABLE, "failed": {**CANARY, "reason": "AnalysisFailed"}},
                ("modeldeploy_rollouts_rolled_back_total", {"reason": "AnalysisFailed"}),
            ),
            (
                {"stable": STABLE},
                {"stable": CANARY},
                ("modeldeploy_rollouts_started_total", {"strategy": "Rolling"}),
            ),
        ],
        ids=["canary-started", "promoted", "rolled-back", "rolling-update"],
    )
    def test_a_decision_is_counted_once_by_its_reason(
        self, old: dict[str, Any], new: dict[str, Any], counted: tuple[str, dict[str, str]]
    ) -> None:
        key = ("ml", f"md-{uuid.uuid4().hex[:6]}")
        name, labels = counted
        metrics.rollout_changes(key, "Canary", status(**old), status(**new))
        assert sample(name, key, **labels) == 1
        # The same status written again (a reconcile that changed nothing) counts nothing more.
        metrics.rollout_changes(key, "Canary", status(**new), status(**new))
        assert sample(name, key, **labels) == 1
        every = ("modeldeploy_rollouts_started_total", "modeldeploy_rollouts_promoted_total")
        others = [n for n in (*every, "modeldeploy_rollouts_rolled_back_total") if n != name]
        assert all(
            not any(
                s.labels.get("name") == key[1] for f in REGISTRY.collect() if f.name + "_total" == n for s in f.samples
            )
            for n in others
        )

    def test_the_first_deploy_is_not_a_rollout(self) -> None:
        key = ("ml", f"md-{uuid.uuid4().hex[:6]}")
        metrics.rollout_changes(key, "Canary", None, status(stable=STABLE))
        assert sample("modeldeploy_rollouts_started_total", key, strategy="Rolling") == 0


class TestSeen:
    def test_odd_status_content_yields_no_series_rather_than_an_error(self) -> None:
        state = metrics.seen({"phase": "Sideways", "stable": {"revision": "aaa", "replicas": "2"}, "canary": []})
        assert state == metrics.Seen(phase=None, revisions=(metrics.Revision("stable", "aaa", 0, 0),),
                                     canary_weight=0, canary_step=0)  # fmt: skip
