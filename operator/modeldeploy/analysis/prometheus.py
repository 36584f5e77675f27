"""Judging a canary on BentoML's own request metrics, queried from Prometheus.

BentoML exports, per endpoint (its /livez and /readyz included, which are left out here):
  bentoml_service_request_total{http_response_code=...}      a counter of finished requests
  bentoml_service_request_duration_seconds_bucket{le=...}    a histogram of their durations
The scrape configuration is expected to carry the pod's namespace and its
modeldeploy.dev/revision label onto every series (see docs/analysis.md), so one
revision's traffic can be told from another's.

A measurement covers the last `interval`. Too few requests is NoData, never a pass;
a Prometheus that cannot be reached or answers with an error is a failed check. The address is the
author's: answers that are not a Prometheus API response are summarised, never quoted (analysis.http
has the rest of what keeps the query from being used against the cluster).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from modeldeploy.analysis.http import Answer, HttpError, Limits, get
from modeldeploy.api.v1alpha1 import Analysis, CheckResult, ModelDeployment
from modeldeploy.model.measurement import Measurement

REQUESTS = "bentoml_service_request_total"
DURATION_BUCKETS = "bentoml_service_request_duration_seconds_bucket"
# BentoML counts its health endpoints in the request metrics; kubelet probes are not traffic.
NOT_TRAFFIC = 'endpoint!~"/(livez|readyz|healthz|metrics)"'
# Prometheus's own error types: only an answer naming one of these is quoted (its message, cut short).
PROMETHEUS_ERRORS = frozenset(
    {"bad_data", "timeout", "canceled", "execution", "internal", "unavailable", "not_found", "not_acceptable"}
)
QUOTED = 200

# query text -> the first sample's value, None when the result is empty; raises QueryError.
Query = Callable[[str], float | None]


class QueryError(Exception):
    """Prometheus could not be asked, or did not answer as Prometheus does."""


def query_url(address: str, promql: str) -> str:
    """The instant-query URL under a Prometheus base URL (its path a prefix, as behind a proxy)."""
    return address.rstrip("/") + "/api/v1/query?" + urlencode({"query": promql})


async def fetch(address: str, promql: str, limits: Limits | None = None) -> float | None:
    """One instant query: its first sample's value, None for an empty result."""
    try:
        answer = await get(query_url(address, promql), limits)
    except HttpError as err:
        raise QueryError(f"Prometheus at {address} could not be queried: {err}") from err
    return _value(address, answer)


def _summary(answer: Answer) -> str:
    kind = answer.content_type.split(";", 1)[0].strip() or "no content type"
    return f"HTTP {answer.status}, {kind}, {len(answer.body)} bytes"


def _value(address: str, answer: Answer) -> float | None:
    """The sample of a Prometheus API answer. Anything else is summarised, never quoted: the address is
    the author's, and what answers there (another service, a redirect) must not reach status or events."""
    payload: Any = None
    if answer.content_type.split(";", 1)[0].strip() == "application/json":
        try:
            payload = json.loads(answer.body)
        except ValueError:
            payload = None
    if not isinstance(payload, dict) or payload.get("status") not in ("success", "error"):
        raise QueryError(f"{address} did not answer as a Prometheus API ({_summary(answer)})")
    if payload["status"] == "error":
        kind = payload.get("errorType")
        if kind in PROMETHEUS_ERRORS and isinstance(payload.get("error"), str):
            raise QueryError(f"Prometheus at {address} refused the query: {kind}: {payload['error'][:QUOTED]}")
        raise QueryError(f"{address} did not answer as a Prometheus API ({_summary(answer)})")
    try:
        data = payload["data"]
        if data["resultType"] == "scalar":
            return float(data["result"][1])
        result = data["result"]
        if data["resultType"] != "vector" or not isinstance(result, list):
            raise ValueError(data["resultType"])
        return float(result[0]["value"][1]) if result else None
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise QueryError(f"{address} answered with no instant vector ({_summary(answer)})") from err


def http_query(address: str, limits: Limits | None = None) -> Query:
    """A synchronous instant query, for tools and tests; the operator queries on its own loop (measure_async)."""

    def query(promql: str) -> float | None:
        return asyncio.run(fetch(address, promql, limits))

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


async def measure_canary_async(md: ModelDeployment, revision: str, limits: Limits | None = None) -> Measurement:
    """The operator's measurement of a canary revision: its queries sent at once, then judged."""
    analysis = md.spec.rollout.analysis
    assert analysis is not None
    wanted = list(queries(analysis, md.namespace, revision).values())
    if analysis.max_latency_p99 is None:
        wanted = wanted[:2]
    results = await asyncio.gather(
        *(fetch(analysis.prometheus.address, promql, limits) for promql in wanted), return_exceptions=True
    )
    answers = dict(zip(wanted, results, strict=True))
    return measure(analysis, md.namespace, revision, _answered(answers))


def _answered(answers: Mapping[str, float | BaseException | None]) -> Query:
    def query(promql: str) -> float | None:
        answer = answers.get(promql)
        if isinstance(answer, QueryError):
            raise answer
        if isinstance(answer, BaseException):
            raise QueryError(f"the query failed: {type(answer).__name__}") from answer
        return answer

    return query


def measure_canary(md: ModelDeployment, revision: str) -> Measurement:
    """The measurement of a canary revision, synchronously (tools and tests)."""
    return asyncio.run(measure_canary_async(md, revision))
