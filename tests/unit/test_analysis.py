"""Verdicts from measured values; the real Prometheus is exercised in tests/unit/test_canary_analysis.py."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from modeldeploy.analysis.prometheus import QueryError, baseline_of, measure, queries
from modeldeploy.api.v1alpha1 import Analysis

from factories import md


def analysis(**extra: object) -> Analysis:
    return Analysis.model_validate(
        {"prometheus": {"address": "http://127.0.0.1:9"}, "interval": "30s", "minRequests": 100, **extra}
    )


def answers(requests: float | None, errors: float | None, p99: float | None = None) -> Callable[[str], float | None]:
    def query(promql: str) -> float | None:
        if promql.startswith("histogram_quantile"):
            return p99
        return errors if "http_response_code" in promql else requests

    return query


class TestQueries:
    def test_select_the_revision_and_namespace_over_the_interval(self) -> None:
        q = queries(analysis(), "ml", "7e2b44")
        assert q["requests"] == (
            "sum(increase(bentoml_service_request_total"
            '{namespace="ml",modeldeploy_dev_revision="7e2b44",endpoint!~"/(livez|readyz|healthz|metrics)"}[30s]))'
        )
        assert 'http_response_code=~"5.."' in q["errors"]
        assert "bentoml_service_request_duration_seconds_bucket" in q["latencyP99"]
        assert q["latencyP99"].startswith("histogram_quantile(0.99, sum by (le) (rate(")

    def test_label_names_follow_the_scrape_configuration(self) -> None:
        a = analysis(prometheus={"address": "http://p:9090", "revisionLabel": "revision", "namespaceLabel": "ns"})
        assert '{ns="ml",revision="r1",' in queries(a, "ml", "r1")["requests"]


class TestVerdicts:
    def test_healthy(self) -> None:
        m = measure(analysis(), "ml", "r1", answers(500, 2))
        assert m.verdict == "Passed"
        assert [c.name for c in m.checks] == ["requests", "errorRate"]
        assert all(c.passed for c in m.checks)

    def test_too_many_errors(self) -> None:
        m = measure(analysis(), "ml", "r1", answers(400, 100))
        assert m.verdict == "Failed"
        assert "error rate 25.00% above maxErrorRate 1.00%" in m.summary
        assert m.checks[1].value == pytest.approx(0.25)

    @pytest.mark.parametrize("requests", [None, 0.0, 99.0])
    def test_too_little_traffic_is_no_data_never_a_pass(self, requests: float | None) -> None:
        m = measure(analysis(), "ml", "r1", answers(requests, 0))
        assert m.verdict == "NoData"
        assert "fewer than minRequests 100" in m.summary

    def test_zero_min_requests_still_needs_one_request(self) -> None:
        assert measure(analysis(minRequests=0), "ml", "r1", answers(0, 0)).verdict == "NoData"

    def test_slow(self) -> None:
        m = measure(analysis(maxLatencyP99="500ms"), "ml", "r1", answers(500, 0, 0.8))
        assert m.verdict == "Failed"
        assert "p99 latency 800ms above maxLatencyP99 500ms" in m.summary

    def test_latency_that_cannot_be_measured_fails(self) -> None:
        for missing in (None, math.nan):
            m = measure(analysis(maxLatencyP99="500ms"), "ml", "r1", answers(500, 0, missing))
            assert m.verdict == "Failed"

    def test_prometheus_errors_fail_the_measurement(self) -> None:
        def broken(promql: str) -> float | None:
            raise QueryError("Prometheus at http://127.0.0.1:9 could not be queried: connection refused")

        m = measure(analysis(), "ml", "r1", broken)
        assert m.verdict == "Failed"
        assert m.checks[0].name == "prometheus"
        assert "connection refused" in m.summary

    def test_unreachable_prometheus_over_real_http(self) -> None:
        from modeldeploy.analysis.http import Limits
        from modeldeploy.analysis.prometheus import http_query

        # Port 9 (discard) on loopback: nothing listens there.
        m = measure(analysis(), "ml", "r1", http_query("http://127.0.0.1:9", Limits(connect=2)))
        assert m.verdict == "Failed"
        assert "could not be queried" in m.summary


def test_measurement_belongs_to_the_revision() -> None:
    assert measure(analysis(), md().namespace, "abc", answers(500, 0)).revision == "abc"


def by_revision(windows: dict[str, tuple[float, float, float | None]]) -> Callable[[str], float | None]:
    """Answers per revision: {revision: (requests, errors, p99)}."""

    def query(promql: str) -> float | None:
        [(requests, errors, p99)] = [w for rev, w in windows.items() if f'modeldeploy_dev_revision="{rev}"' in promql]
        if promql.startswith("histogram_quantile"):
            return p99
        return errors if "http_response_code" in promql else requests

    return query


class TestBaseline:
    """analysis.baseline: the canary against the stable revision's same window."""

    def test_a_canary_no_worse_than_a_failing_stable_passes(self) -> None:
        # Both above maxErrorRate (the cluster, not the canary): absolute limits would fail it.
        a = analysis(maxErrorRate=0.01, baseline={"maxErrorRateIncrease": 0.02})
        m = measure(
            a, "ml", "canary", by_revision({"canary": (500, 40, None), "stable": (1000, 70, None)}), stable="stable"
        )
        assert m.verdict == "Passed", m
        assert m.summary.startswith("all checks passed against the stable revision")
        [error] = [c for c in m.checks if c.name == "errorRate"]
        assert error.threshold == pytest.approx(0.09)
        assert "stable 7.00%, allowed +2 points" in error.message

    def test_a_canary_worse_than_stable_by_more_than_the_margin_fails(self) -> None:
        a = analysis(maxErrorRate=0.5, baseline={"maxErrorRateIncrease": 0.01})
        m = measure(
            a, "ml", "canary", by_revision({"canary": (500, 50, None), "stable": (500, 10, None)}), stable="stable"
        )
        assert m.verdict == "Failed"
        assert "error rate 10.00% above the stable revision's 2.00% +1 points (3.00%)" in m.summary

    def test_p99_ratio_replaces_the_absolute_latency_limit(self) -> None:
        a = analysis(maxLatencyP99="100ms", baseline={"maxLatencyP99Ratio": 1.5})
        slow_cluster = by_revision({"canary": (500, 0, 0.4), "stable": (500, 0, 0.3)})
        assert measure(a, "ml", "canary", slow_cluster, stable="stable").verdict == "Passed"
        slower_canary = by_revision({"canary": (500, 0, 0.5), "stable": (500, 0, 0.3)})
        m = measure(a, "ml", "canary", slower_canary, stable="stable")
        assert m.verdict == "Failed"
        assert "p99 latency 500ms above 1.5x the stable revision's 300ms" in m.summary

    def test_no_stable_p99_is_a_failed_comparison(self) -> None:
        a = analysis(baseline={"maxLatencyP99Ratio": 2})
        m = measure(
            a, "ml", "canary", by_revision({"canary": (500, 0, 0.1), "stable": (500, 0, math.nan)}), stable="stable"
        )
        assert m.verdict == "Failed"
        assert "no bentoml_service_request_duration_seconds_bucket series for the stable revision" in str(m.checks)

    def test_a_stable_with_too_little_traffic_falls_back_to_the_absolute_limits(self) -> None:
        a = analysis(maxErrorRate=0.01, baseline={"maxErrorRateIncrease": 0.5})
        m = measure(
            a, "ml", "canary", by_revision({"canary": (500, 40, None), "stable": (20, 0, None)}), stable="stable"
        )
        assert m.verdict == "Failed"
        assert "above maxErrorRate 1.00%" in m.summary
        assert any(c.name == "baseline" and "fewer than minRequests" in c.message for c in m.checks)

    def test_the_canary_without_requests_is_no_data_whatever_the_stable(self) -> None:
        a = analysis(baseline={})
        m = measure(a, "ml", "canary", by_revision({"canary": (3, 0, None), "stable": (900, 0, None)}), stable="stable")
        assert m.verdict == "NoData"

    def test_without_baseline_the_stable_is_not_asked(self) -> None:
        asked: list[str] = []

        def query(promql: str) -> float | None:
            asked.append(promql)
            return 500.0 if "http_response_code" not in promql else 0.0

        assert measure(analysis(), "ml", "canary", query, stable="stable").verdict == "Passed"
        assert all('revision="canary"' in q for q in asked), asked

    def test_the_baseline_is_the_status_stable_revision(self) -> None:
        body = md(rollout={"analysis": {"prometheus": {"address": "http://p:9090"}, "baseline": {}}}).wire()
        body["status"] = {"stable": {"revision": "r1", "bento": "iris:v1"}}
        model = md().model_validate(body)
        assert baseline_of(model, "r2") == "r1"
        assert baseline_of(model, "r1") is None
        assert baseline_of(md(), "r2") is None
