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
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from modeldeploy.analysis.http import Answer, HttpError, Limits, get
from modeldeploy.api.v1alpha1 import Analysis, Baseline, CheckResult, ModelDeployment
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


@dataclass(frozen=True)
class Window:
    """What one revision served over the window: requests, 5xx among them, and its p99 (None: not asked)."""

    requests: float
    errors: float
    latency: float | None

    @property
    def rate(self) -> float:
        return self.errors / self.requests if self.requests > 0 else 0.0


def _window(analysis: Analysis, namespace: str, revision: str, query: Query, *, latency: bool) -> Window:
    promql = queries(analysis, namespace, revision)
    return Window(
        requests=query(promql["requests"]) or 0.0,
        errors=query(promql["errors"]) or 0.0,
        latency=query(promql["latencyP99"]) if latency else None,
    )


def _measurable(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def measure(
    analysis: Analysis, namespace: str, revision: str, query: Query, *, stable: str | None = None
) -> Measurement:
    """One measurement of a revision's last interval; with analysis.baseline, against `stable`'s same window."""
    window = analysis.interval
    baseline = analysis.baseline if stable is not None else None
    ratio = baseline.max_latency_p99_ratio if baseline is not None else None
    try:
        canary = _window(
            analysis, namespace, revision, query, latency=analysis.max_latency_p99 is not None or ratio is not None
        )
        base = _window(analysis, namespace, stable, query, latency=ratio is not None) if stable and baseline else None
    except QueryError as err:
        check = CheckResult(name="prometheus", passed=False, message=str(err))
        return Measurement(revision, "Failed", f"measurement failed: {err}", (check,))

    requests = canary.requests
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
    failures: list[str] = []
    compared = base is not None and base.requests >= max(analysis.min_requests, 1)
    if baseline is not None and base is not None and compared:
        _against_stable(canary, base, baseline, checks, failures)
    else:
        if baseline is not None and base is not None:
            # No baseline to compare with (the stable revision served too little): the absolute limits.
            checks.append(
                CheckResult(
                    name="baseline",
                    value=round(base.requests, 3),
                    threshold=float(analysis.min_requests),
                    passed=True,
                    message=(
                        f"the stable revision served {base.requests:.0f} requests, fewer than minRequests: "
                        "judged on maxErrorRate and maxLatencyP99"
                    ),
                )
            )
        _absolute(analysis, canary, checks, failures)
    if failures:
        return Measurement(revision, "Failed", f"{'; '.join(failures)} over {window}", tuple(checks))
    against = " against the stable revision" if compared else ""
    summary = f"all checks passed{against} over {window} ({requests:.0f} requests)"
    return Measurement(revision, "Passed", summary, tuple(checks))


def _error_check(canary: Window, limit: float, passed: bool, extra: str = "") -> CheckResult:
    return CheckResult(
        name="errorRate",
        value=round(canary.rate, 6),
        threshold=round(limit, 6),
        passed=passed,
        message=f"{canary.errors:.0f} of {canary.requests:.0f} requests failed with 5xx ({canary.rate:.2%}){extra}",
    )


def _absolute(analysis: Analysis, canary: Window, checks: list[CheckResult], failures: list[str]) -> None:
    rate = canary.rate
    passed = rate <= analysis.max_error_rate
    checks.append(_error_check(canary, analysis.max_error_rate, passed))
    if not passed:
        failures.append(f"error rate {rate:.2%} above maxErrorRate {analysis.max_error_rate:.2%}")
    if analysis.max_latency_p99 is None:
        return
    limit = analysis.max_latency_p99.total_seconds()
    latency = canary.latency
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
        return
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


def _against_stable(
    canary: Window, stable: Window, baseline: Baseline, checks: list[CheckResult], failures: list[str]
) -> None:
    limit = stable.rate + baseline.max_error_rate_increase
    passed = canary.rate <= limit
    margin = f"+{baseline.max_error_rate_increase * 100:g} points"
    checks.append(_error_check(canary, limit, passed, f"; stable {stable.rate:.2%}, allowed {margin}"))
    if not passed:
        failures.append(
            f"error rate {canary.rate:.2%} above the stable revision's {stable.rate:.2%} {margin} ({limit:.2%})"
        )
    ratio = baseline.max_latency_p99_ratio
    if ratio is None:
        return
    if not _measurable(canary.latency) or not _measurable(stable.latency):
        which = "canary" if not _measurable(canary.latency) else "stable revision"
        checks.append(
            CheckResult(name="latencyP99", passed=False, message=f"no {DURATION_BUCKETS} series for the {which}")
        )
        failures.append("p99 latency could not be compared")
        return
    assert canary.latency is not None and stable.latency is not None
    bound = stable.latency * ratio
    passed = canary.latency <= bound
    checks.append(
        CheckResult(
            name="latencyP99",
            value=round(canary.latency, 6),
            threshold=round(bound, 6),
            passed=passed,
            message=f"p99 {canary.latency * 1000:.0f}ms; stable {stable.latency * 1000:.0f}ms, allowed x{ratio:g}",
        )
    )
    if not passed:
        failures.append(
            f"p99 latency {canary.latency * 1000:.0f}ms above {ratio:g}x the stable revision's "
            f"{stable.latency * 1000:.0f}ms"
        )


async def measure_canary_async(md: ModelDeployment, revision: str, limits: Limits | None = None) -> Measurement:
    """The operator's measurement of a canary revision: its queries sent at once, then judged."""
    analysis = md.spec.rollout.analysis
    assert analysis is not None
    stable = baseline_of(md, revision)
    ratio = analysis.baseline.max_latency_p99_ratio if analysis.baseline is not None else None

    def asked(of: str, latency: bool) -> list[str]:
        promql = queries(analysis, md.namespace, of)
        return [promql["requests"], promql["errors"], *([promql["latencyP99"]] if latency else [])]

    wanted = asked(revision, analysis.max_latency_p99 is not None or (stable is not None and ratio is not None))
    if stable is not None:
        wanted += asked(stable, ratio is not None)
    results = await asyncio.gather(
        *(fetch(analysis.prometheus.address, promql, limits) for promql in wanted), return_exceptions=True
    )
    answers = dict(zip(wanted, results, strict=True))
    return measure(analysis, md.namespace, revision, _answered(answers), stable=stable)


def baseline_of(md: ModelDeployment, revision: str) -> str | None:
    """The stable revision a canary is compared with, when its analysis asks for a baseline."""
    analysis = md.spec.rollout.analysis
    stable = md.status.stable if md.status is not None else None
    if analysis is None or analysis.baseline is None or stable is None or stable.revision == revision:
        return None
    return stable.revision


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
