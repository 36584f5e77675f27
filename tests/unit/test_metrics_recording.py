"""What the operator counts of its rollout decisions (modeldeploy.metrics), read back from its registry."""

from __future__ import annotations

import gc
import uuid

from prometheus_client import REGISTRY

from modeldeploy import metrics
from modeldeploy.rollout.canary import Outcome


def value(name: str, key: tuple[str, str], **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"namespace": key[0], "name": key[1], **labels})


def fresh() -> tuple[str, str]:
    return ("ml", f"md-{uuid.uuid4().hex[:6]}")


class TestRollouts:
    def test_each_decision_is_counted_by_its_reason(self) -> None:
        key = fresh()
        metrics.rollouts(key, [Outcome("started", "Canary"), Outcome("rolled_back", "ManualAbort")])
        metrics.rollouts(key, [Outcome("started", "Canary")])
        metrics.rollouts(key, [Outcome("promoted", "StepsComplete")])
        assert value("modeldeploy_rollouts_started_total", key, strategy="Canary") == 2
        assert value("modeldeploy_rollouts_rolled_back_total", key, reason="ManualAbort") == 1
        assert value("modeldeploy_rollouts_promoted_total", key, reason="StepsComplete") == 1

    def test_a_canary_start_sets_its_outcomes_and_verdicts_to_zero_so_rate_sees_the_first(self) -> None:
        key = fresh()
        metrics.rollouts(key, [Outcome("started", "Canary")])
        for reason in metrics.ROLLED_BACK_REASONS:
            assert value("modeldeploy_rollouts_rolled_back_total", key, reason=reason) == 0
        assert value("modeldeploy_rollouts_promoted_total", key, reason="ManualPromote") == 0
        assert value("modeldeploy_analysis_measurements_total", key, verdict="NoData") == 0
        assert value("modeldeploy_analysis_checks_total", key, check="errorRate", result="failed") == 0

    def test_a_rolling_update_costs_no_canary_series(self) -> None:
        key = fresh()
        metrics.rollouts(key, [Outcome("started", "Rolling")])
        assert value("modeldeploy_rollouts_started_total", key, strategy="Rolling") == 1
        assert value("modeldeploy_rollouts_rolled_back_total", key, reason="ManualAbort") is None

    def test_a_deleted_model_deployment_takes_its_series_along(self) -> None:
        key, other = fresh(), fresh()
        for k in (key, other):
            metrics.rollouts(k, [Outcome("started", "Canary"), Outcome("promoted", "StepsComplete")])
            metrics.MODELDEPLOYMENTS.update(k, metrics.seen({"phase": "Ready", "stable": {"revision": "r1"}}))
        metrics.forget(key)
        assert value("modeldeploy_rollouts_promoted_total", key, reason="StepsComplete") is None
        assert value("modeldeploy_phase", key, phase="Ready") is None
        assert value("modeldeploy_rollouts_promoted_total", other, reason="StepsComplete") == 1
        assert value("modeldeploy_phase", other, phase="Ready") == 1


class TestSeen:
    def test_odd_status_content_yields_no_series_rather_than_an_error(self) -> None:
        state = metrics.seen({"phase": "Sideways", "stable": {"revision": "aaa", "replicas": "2"}, "canary": []})
        assert state == metrics.Seen(phase=None, revisions=(metrics.Revision("stable", "aaa", 0, 0),),
                                     canary_weight=0, canary_step=0)  # fmt: skip


class TestLeader:
    def test_a_standby_says_so_and_exports_no_model_deployment_series(self) -> None:
        key = fresh()
        metrics.MODELDEPLOYMENTS.update(key, metrics.seen({"phase": "Ready", "stable": {"revision": "r1"}}))
        before = metrics.MODELDEPLOYMENTS.leading
        try:
            metrics.MODELDEPLOYMENTS.leading = lambda: False
            assert REGISTRY.get_sample_value("modeldeploy_leader") == 0
            assert value("modeldeploy_phase", key, phase="Ready") is None, "two replicas would count it twice"
            metrics.MODELDEPLOYMENTS.leading = lambda: True
            assert REGISTRY.get_sample_value("modeldeploy_leader") == 1
            assert value("modeldeploy_phase", key, phase="Ready") == 1
        finally:
            metrics.MODELDEPLOYMENTS.leading = before
            metrics.forget(key)


class TestGarbageCollection:
    def test_each_collection_is_timed_by_generation(self) -> None:
        metrics.watch_gc()
        metrics.watch_gc()  # once per process
        assert gc.callbacks.count(metrics._gc_timer) == 1

        def count(generation: str) -> float:
            return REGISTRY.get_sample_value("modeldeploy_gc_pause_seconds_count", {"generation": generation}) or 0

        full, young = count("2"), count("0")
        gc.collect()
        gc.collect(0)
        assert count("2") == full + 1
        assert count("0") >= young + 1
        total = REGISTRY.get_sample_value("modeldeploy_gc_pause_seconds_sum", {"generation": "2"})
        assert total is not None and total > 0
