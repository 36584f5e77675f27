"""Judging a canary on BentoML's own request metrics, queried from Prometheus.

BentoML exports, per endpoint (its /livez and /readyz included, which are left out here):
  bentoml_service_request_total{http_response_code=...}      a counter of finished requests
  bentoml_service_request_duration_seconds_bucket{le=...}    a histogram of their durations
The scrape configuration is expected to carry the pod's namespace and its
modeldeploy.dev/revision label onto every series (see docs/analysis.md), so one
revision's traffic can be told from another's.

A measurement covers the last `interval`. Too few requests is NoData, never a pass;
a Prometheus that cannot be reached or answers with an error is a failed check.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from modeldeploy.api.v1alpha1 import Analysis, CheckResult, ModelDeployment
from modeldeploy.model.measurement import Measurement

REQUESTS = "bentoml_service_request_total"
DURATION_BUCKETS = "bentoml_service_request_duration_seconds_bucket"
QUERY_TIMEOUT_SECONDS = 10.0
# BentoML counts its health endpoints in the request metrics; kubelet probes are not traffic.
NOT_TRAFFIC = 'endpoint!~"/(livez|readyz|healthz|metrics)"'

# query text -> the first sample's value, None when the result is empty; raises QueryError.
Query = Callable[[str], float | None]


class QueryError(Exception):
    """Prometheus could not be asked, or answered with an error."""


def http_query(address: str, timeout: float = QUERY_TIMEOUT_SECONDS) -> Query:
    """An instant query against a Prometheus HTTP API."""

    def query(promql: str) -> float | None:
        url = address.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = json.load(response)
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")[:300]
            raise QueryError(f"Prometheus at {address} answered {err.code}: {detail}") from err
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as err:
            raise QueryError(f"Prometheus at {address} could not be queried: {err}") from err
        if payload.get("status") != "success":
            raise QueryError(f"Prometheus at {address} failed the query: {payload.get('error', payload)}")
        result = payload.get("data", {}).get("result", [])
        if not result:
            return None
        return float(result[0]["value"][1])

    return query


def selector(analysis: Analysis, namespace: str, revision: str, extra: str = "") -> str:
    source = analysis.prometheus
    labels = f'{source.namespace_label}="{namespace}",{source.revision_label}="{revision}",{NOT_TRAFFIC}'
    return "{" + labels + (f",{extra}" if extra else "") + "}"


def queries(analysis: Analysis, namespace: str, revision: str) -> dict[str, str]:
    window = f"{max(1, round(analysis.interval.total_seconds()))}s"
    every = selector(analysis, namespace, revision)
    errors = selector(analysis, namespace, revision, 'http_response_code=~"5.."')
    return {
        "requests": f"sum(increase({REQUESTS}{every}[{window}]))",
        "errors": f"sum(increase({REQUESTS}{errors}[{window}]))",
        "latencyP99": (f"histogram_quantile(0.99, sum by (le) (rate({DURATION_BUCKETS}{every}[{window}])))"),
    }


def measure(analysis: Analysis, namespace: str, revision: str, query: Query) -> Measurement:
    """One measurement of a revision's last interval."""
    promql = queries(analysis, namespace, revision)
    window = analysis.interval
    try:
        requests = query(promql["requests"]) or 0.0
        errors = query(promql["errors"]) or 0.0
        latency = query(promql["latencyP99"]) if analysis.max_latency_p99 is not None else None
    except QueryError as err:
        check = CheckResult(name="prometheus", passed=False, message=str(err))
        return Measurement(revision, "Failed", f"measurement failed: {err}", (check,))

    requests_check = CheckResult(
        name="requests",
        value=round(requests, 3),
        threshold=float(analysis.min_requests),
        passed=requests >= analysis.min_requests,
        message=f"{requests:.0f} requests in {window}",
    )
    if requests < analysis.min_requests or requests <= 0:
        summary = f"{requests:.0f} requests in {window}, fewer than minRequests {analysis.min_requests}"
        return Measurement(revision, "NoData", summary, (requests_check,))

    checks = [requests_check]
    failures = []
    rate = errors / requests
    passed = rate <= analysis.max_error_rate
    checks.append(
        CheckResult(
            name="errorRate",
            value=round(rate, 6),
            threshold=analysis.max_error_rate,
            passed=passed,
            message=f"{errors:.0f} of {requests:.0f} requests failed with 5xx ({rate:.2%})",
        )
    )
    if not passed:
        failures.append(f"error rate {rate:.2%} above maxErrorRate {analysis.max_error_rate:.2%}")
    if analysis.max_latency_p99 is not None:
        limit = analysis.max_latency_p99.total_seconds()
        if latency is None or math.isnan(latency):
            checks.append(
                CheckResult(
                    name="latencyP99",
                    threshold=limit,
                    passed=False,
                    message=f"no {DURATION_BUCKETS} series for this revision",
                )
            )
            failures.append("p99 latency could not be measured")
        else:
            passed = latency <= limit
            checks.append(
                CheckResult(
                    name="latencyP99",
                    value=round(latency, 6),
                    threshold=limit,
                    passed=passed,
                    message=f"p99 {latency * 1000:.0f}ms (limit {limit * 1000:.0f}ms)",
                )
            )
            if not passed:
                failures.append(f"p99 latency {latency * 1000:.0f}ms above maxLatencyP99 {analysis.max_latency_p99}")
    if failures:
        return Measurement(revision, "Failed", f"{'; '.join(failures)} over {window}", tuple(checks))
    return Measurement(revision, "Passed", f"all checks passed over {window} ({requests:.0f} requests)", tuple(checks))


def measure_canary(md: ModelDeployment, revision: str) -> Measurement:
    """The operator's measurement of a canary revision, against its configured Prometheus."""
    analysis = md.spec.rollout.analysis
    assert analysis is not None
    return measure(analysis, md.namespace, revision, http_query(analysis.prometheus.address))
