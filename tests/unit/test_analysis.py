"""Verdicts from measured values; the real Prometheus is exercised in tests/unit/test_canary_analysis.py."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from modeldeploy.analysis.prometheus import QueryError, measure, queries
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
