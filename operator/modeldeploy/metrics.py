"""The operator's own metrics, served on /metrics (prometheus_client), all in this module.

Names follow the Prometheus conventions (base units, `_total` counters, `_seconds` durations) under
the `modeldeploy_` prefix. What is recorded where:

- the reconcile (`handlers/reconciler.py`): its duration, its errors by reason, the rollouts it
  started, promoted and rolled back (the plan's outcomes, once its status is written), the analysis
  measurements it judged;
- the work queue (`handlers/queue.py`): adds, depth and wait time by lane, retries;
- the API client (`k8s/client.py`, through its `on_response` hook): requests by verb, resource and
  code, and their latency (kopf's own watches are not counted: they use their own connections);
- the process (`watch_gc`, installed with the metrics server): Python's garbage-collection pauses by
  generation, which stop every reconcile and watch of the operator while they run;
- the ModelDeployments as the watch sees them (`handlers/operator.py`): phase, replicas and ready
  replicas by revision, the canary's weight and step, collected when scraped, so a deleted object's
  series go with it.

docs/metrics.md lists every series; the dashboards under dashboards/ query them.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from modeldeploy.model.measurement import Measurement
from modeldeploy.rollout.canary import Outcome

Key = tuple[str, str]
PHASES = ("Pending", "Progressing", "Ready", "Degraded", "Failed")
# The values the per-ModelDeployment counters of a canary can take, all set to 0 when a canary starts: a
# counter's series that first appears at 1 is invisible to increase() and rate(), so a dashboard would miss
# the first promotion, rollback or verdict of each kind. Only ModelDeployments that canary pay for them.
STRATEGIES = ("Canary", "Rolling")
PROMOTED_REASONS = ("StepsComplete", "ManualPromote")
ROLLED_BACK_REASONS = (
    "AnalysisFailed",
    "CanaryNotReady",
    "CanaryFailed",
    "NoData",
    "ManualAbort",
    "Superseded",
    "SpecReverted",
)
VERDICTS = ("Passed", "Failed", "NoData")
CHECKS = ("requests", "errorRate", "latencyP99")
RESULTS = ("passed", "failed")

RECONCILE_DURATION = Histogram(
    "modeldeploy_reconcile_duration_seconds",
    "Time one reconcile of one ModelDeployment took, from its read to its last write.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_ERRORS = Counter(
    "modeldeploy_reconcile_errors_total",
    "Reconciles that failed, by reason: the API server's status reason, or the error's type.",
    ["reason"],
)
QUEUE_ADDS = Counter("modeldeploy_workqueue_adds_total", "Keys queued for a reconcile, by lane.", ["lane"])
QUEUE_WAIT = Histogram(
    "modeldeploy_workqueue_wait_duration_seconds",
    "Time a key waited in the work queue before a worker took it, by the lane it was taken from.",
    ["lane"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
QUEUE_RETRIES = Counter(
    "modeldeploy_workqueue_retries_total", "Reconciles that raised and were queued again with backoff."
)
API_REQUESTS = Counter(
    "modeldeploy_api_requests_total",
    "Requests the operator sent to the Kubernetes API server, by HTTP verb, resource and status code "
    "('error' when no answer came).",
    ["verb", "resource", "code"],
)
API_DURATION = Histogram(
    "modeldeploy_api_request_duration_seconds",
    "Latency of the operator's requests to the Kubernetes API server, by HTTP verb.",
    ["verb"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
GC_PAUSE = Histogram(
    "modeldeploy_gc_pause_seconds",
    "Python garbage-collection pauses of the operator process, by generation (2: a full collection).",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
ROLLOUTS_STARTED = Counter(
    "modeldeploy_rollouts_started_total",
    "New revisions the operator began to roll out, by strategy (Canary, Rolling).",
    ["namespace", "name", "strategy"],
)
ROLLOUTS_PROMOTED = Counter(
    "modeldeploy_rollouts_promoted_total",
    "Canaries promoted to stable, by reason (StepsComplete, ManualPromote).",
    ["namespace", "name", "reason"],
)
ROLLOUTS_ROLLED_BACK = Counter(
    "modeldeploy_rollouts_rolled_back_total",
    "Canaries rolled back, by reason (AnalysisFailed, CanaryNotReady, CanaryFailed, NoData, ManualAbort, "
    "Superseded, SpecReverted).",
    ["namespace", "name", "reason"],
)
ANALYSIS_MEASUREMENTS = Counter(
    "modeldeploy_analysis_measurements_total",
    "Canary analysis measurements judged, by verdict (Passed, Failed, NoData).",
    ["namespace", "name", "verdict"],
)
ANALYSIS_CHECKS = Counter(
    "modeldeploy_analysis_checks_total",
    "Checks of canary analysis measurements, by check (requests, errorRate, latencyP99) and result (passed, failed).",
    ["namespace", "name", "check", "result"],
)


def serve(address: str) -> tuple[str, int]:
    """Serve /metrics on HOST:PORT from a thread of its own; the address it listens on (port 0 picks one)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--metrics-address {address!r}: give HOST:PORT, e.g. 0.0.0.0:8081")
    server, _thread = start_http_server(int(port), addr=host.strip("[]"))
    bound = server.server_address
    return str(bound[0]), int(bound[1])


def watch_gc() -> None:
    """Time every garbage collection into GC_PAUSE (once per process; a second call adds nothing)."""
    if _gc_timer in gc.callbacks:
        return
    for generation in ("0", "1", "2"):
        GC_PAUSE.labels(generation)
    gc.callbacks.append(_gc_timer)


_gc_started = [0.0]


def _gc_timer(phase: str, info: Mapping[str, Any]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    elif _gc_started[0]:
        GC_PAUSE.labels(str(info["generation"])).observe(time.perf_counter() - _gc_started[0])


# -- recording ---------------------------------------------------------------------------


def api_response(verb: str, resource: str, code: int, seconds: float) -> None:
    """One answer (or none: code 0) of the API server to the operator."""
    API_REQUESTS.labels(verb, resource, str(code) if code else "error").inc()
    API_DURATION.labels(verb).observe(seconds)


def reconcile_failed(reason: str) -> None:
    RECONCILE_ERRORS.labels(reason).inc()


def _canary_series(key: Key) -> Iterator[tuple[Counter, tuple[str, ...]]]:
    namespace, name = key
    for strategy in STRATEGIES:
        yield ROLLOUTS_STARTED, (namespace, name, strategy)
    for reason in PROMOTED_REASONS:
        yield ROLLOUTS_PROMOTED, (namespace, name, reason)
    for reason in ROLLED_BACK_REASONS:
        yield ROLLOUTS_ROLLED_BACK, (namespace, name, reason)
    for verdict in VERDICTS:
        yield ANALYSIS_MEASUREMENTS, (namespace, name, verdict)
    for check in CHECKS:
        for result in RESULTS:
            yield ANALYSIS_CHECKS, (namespace, name, check, result)


# Per ModelDeployment: the (counter, label values) it has series of, so that they go with it.
_LABELLED: dict[Key, set[tuple[Counter, tuple[str, ...]]]] = {}
_LABELLED_LOCK = threading.Lock()


def _series(key: Key, counter: Counter, *labels: str) -> Counter:
    with _LABELLED_LOCK:
        _LABELLED.setdefault(key, set()).add((counter, labels))
    return counter.labels(*labels)


def forget(key: Key) -> None:
    """The ModelDeployment is gone: its series go too."""
    MODELDEPLOYMENTS.forget(key)
    with _LABELLED_LOCK:
        labelled = _LABELLED.pop(key, set())
    for counter, labels in labelled:
        with contextlib.suppress(KeyError):
            counter.remove(*labels)


def rollouts(key: Key, outcomes: Iterable[Outcome]) -> None:
    """Count the rollout decisions of a plan whose status was written: started, promoted, rolled back."""
    namespace, name = key
    for outcome in outcomes:
        if outcome.kind == "started":
            if outcome.reason == "Canary":
                for counter, labels in _canary_series(key):
                    _series(key, counter, *labels)  # at 0, unless counted before
            _series(key, ROLLOUTS_STARTED, namespace, name, outcome.reason).inc()
        elif outcome.kind == "promoted":
            _series(key, ROLLOUTS_PROMOTED, namespace, name, outcome.reason).inc()
        else:
            _series(key, ROLLOUTS_ROLLED_BACK, namespace, name, outcome.reason).inc()


def measured(key: Key, measurement: Measurement) -> None:
    """A canary measurement the reconcile judged."""
    namespace, name = key
    _series(key, ANALYSIS_MEASUREMENTS, namespace, name, measurement.verdict).inc()
    for check in measurement.checks:
        _series(key, ANALYSIS_CHECKS, namespace, name, check.name, "passed" if check.passed else "failed").inc()


# -- state collected when scraped -----------------------------------------------------------


@dataclass(frozen=True)
class Revision:
    role: str  # stable | canary
    revision: str
    replicas: int
    ready_replicas: int


@dataclass(frozen=True)
class Seen:
    """What a ModelDeployment's status says, as far as its metrics go."""

    phase: str | None
    revisions: tuple[Revision, ...]
    canary_weight: int
    canary_step: int  # 1-based; 0 with no canary


def seen(status: Mapping[str, Any] | None) -> Seen:
    """From the status of a raw object (as the watch delivers it): never raises on odd content."""
    status = status if isinstance(status, Mapping) else {}
    revisions = []
    for role in ("stable", "canary"):
        rev = status.get(role)
        if isinstance(rev, Mapping) and rev.get("revision"):
            revisions.append(
                Revision(role, str(rev["revision"]), _int(rev.get("replicas")), _int(rev.get("readyReplicas")))
            )
    canary = status.get("canary") if isinstance(status.get("canary"), Mapping) else None
    phase = status.get("phase")
    return Seen(
        phase=phase if phase in PHASES else None,
        revisions=tuple(revisions),
        canary_weight=_int(canary.get("weight")) if canary else 0,
        canary_step=_int(canary.get("step")) + 1 if canary else 0,
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class ModelDeployments(Collector):
    """The ModelDeployments the operator watches, as their status says; what the dashboards' replica,
    weight and step panels show."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[Key, Seen] = {}
        self.queue_depth: Callable[[], Mapping[str, int]] | None = None
        # Whether this replica holds the leader Lease. A standby watches the same objects but exports none
        # of their series: two replicas would otherwise each report every ModelDeployment, and a dashboard's
        # sum would count it twice.
        self.leading: Callable[[], bool] | None = None

    def update(self, key: Key, state: Seen) -> None:
        with self._lock:
            self._seen[key] = state

    def forget(self, key: Key) -> None:
        with self._lock:
            self._seen.pop(key, None)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # collected on each scrape; nothing to check at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        leading = self.leading() if self.leading is not None else True
        leader = GaugeMetricFamily("modeldeploy_leader", "1 while this replica holds the leader Lease, else 0.")
        leader.add_metric([], 1.0 if leading else 0.0)
        yield leader
        if not leading:
            return
        with self._lock:
            items = sorted(self._seen.items())
        keys = ["namespace", "name"]
        phase = GaugeMetricFamily(
            "modeldeploy_phase",
            "1 for the phase the ModelDeployment's status is in, 0 for the others.",
            labels=[*keys, "phase"],
        )
        replicas = GaugeMetricFamily(
            "modeldeploy_replicas",
            "Model server pods of a revision (role stable or canary).",
            labels=[*keys, "role", "revision"],
        )
        ready = GaugeMetricFamily(
            "modeldeploy_ready_replicas", "Ready model server pods of a revision.", labels=[*keys, "role", "revision"]
        )
        weight = GaugeMetricFamily(
            "modeldeploy_canary_weight", "Percent of traffic the canary receives now; 0 with no canary.", labels=keys
        )
        step = GaugeMetricFamily(
            "modeldeploy_canary_step", "The canary's current step, counted from 1; 0 with no canary.", labels=keys
        )
        for (namespace, name), state in items:
            if state.phase is not None:
                for p in PHASES:
                    phase.add_metric([namespace, name, p], 1.0 if p == state.phase else 0.0)
            for rev in state.revisions:
                replicas.add_metric([namespace, name, rev.role, rev.revision], rev.replicas)
                ready.add_metric([namespace, name, rev.role, rev.revision], rev.ready_replicas)
            weight.add_metric([namespace, name], state.canary_weight)
            step.add_metric([namespace, name], state.canary_step)
        yield from (phase, replicas, ready, weight, step)
        if self.queue_depth is not None:
            depth = GaugeMetricFamily(
                "modeldeploy_workqueue_depth", "Keys waiting in the work queue, by lane.", labels=["lane"]
            )
            for lane, n in self.queue_depth().items():
                depth.add_metric([lane], n)
            yield depth


MODELDEPLOYMENTS = ModelDeployments()
REGISTRY.register(MODELDEPLOYMENTS)
