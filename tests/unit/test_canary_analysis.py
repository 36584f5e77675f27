"""Canary analysis against a real Prometheus scraping real `bentoml serve` processes.

Two versions of the iris bento are built (v1, v2) and served as revisions of one
ModelDeployment in namespace "ml":

  stable  v1, healthy                         25 req/s of POST /classify
  canary  v2, IRIS_FAULT_RATE=0.3             25 req/s: exactly 3 in 10 answer 500
  slow    v2, IRIS_EXTRA_LATENCY_MS=300       25 req/s, each >= 300 ms
  idle    v1, healthy                         no traffic, only /readyz probes

Prometheus is given them as Kubernetes pod discovery would find them (``__meta_kubernetes_*``
labels: the pod's namespace, its ``modeldeploy.dev/revision`` label, its ``prometheus.io/*``
annotations; through a file_sd file, as Debian's build has no Kubernetes discovery), runs
the relabel rules of docs/analysis.md unchanged, and scrapes every second. Once the load
has run for longer than the analysis interval, ``measure()`` is asked about each revision
through the operator's own ``http_query``. The servers, Prometheus and the load are shared
by the module (about 30 s in all).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.loadgen import Load
from localcluster.prometheus import Prometheus, Target
from localcluster.realstack import BentoServer, BentoStore, free_port, serving
from modeldeploy.analysis.http import Limits
from modeldeploy.analysis.prometheus import http_query, measure, measure_canary
from modeldeploy.api.v1alpha1 import Analysis
from modeldeploy.model.measurement import Measurement

from factories import md

pytestmark = [pytest.mark.bento, pytest.mark.prometheus, pytest.mark.timeout(240)]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "analysis.md"
NAMESPACE = "ml"
INTERVAL = "10s"
INTERVAL_S = 10.0
RATE = 25.0  # requests per second to each loaded server
FAULT_RATE = 0.3
EXTRA_LATENCY_MS = 300
LOAD_LIMIT_S = 60.0  # the load's upper bound; the module stops it when its tests are done
MIN_REQUESTS = 50

STABLE, CANARY, SLOW, IDLE = "rev-v1", "rev-v2-faulty", "rev-v2-slow", "rev-v1-idle"


def documented_relabel_configs() -> list[dict[str, Any]]:
    """The relabel_configs of the scrape job in docs/analysis.md."""
    for block in re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.DOTALL):
        config = yaml.safe_load(block)
        if isinstance(config, dict) and "scrape_configs" in config:
            [job] = config["scrape_configs"]
            assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
            return list(job["relabel_configs"])
    raise AssertionError(f"no scrape_configs in {DOCS}")


def discovered_pod(server: BentoServer, revision: str, *, annotated: bool = True) -> Target:
    """SERVER as Kubernetes pod discovery finds its pod: container port 3000, the real port in the annotation."""
    labels = {
        "__meta_kubernetes_namespace": NAMESPACE,
        "__meta_kubernetes_pod_name": f"iris-{revision}",
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_container_init": "false",
        "__meta_kubernetes_pod_label_modeldeploy_dev_revision": revision,
        "__meta_kubernetes_pod_annotation_prometheus_io_port": str(server.port),
        "__meta_kubernetes_pod_annotation_prometheus_io_path": "/metrics",
    }
    if annotated:
        labels["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] = "true"
    return "127.0.0.1:3000", labels


@dataclass(frozen=True)
class Stack:
    prometheus: Prometheus
    urls: dict[str, str]  # revision -> server URL
    load: Load

    def analysis(self, **extra: object) -> Analysis:
        return Analysis.model_validate(
            {
                "prometheus": {"address": self.prometheus.url},
                "interval": INTERVAL,
                "minRequests": MIN_REQUESTS,
                "maxErrorRate": 0.05,
                **extra,
            }
        )

    def measure(
        self, revision: str, namespace: str = NAMESPACE, stable: str | None = None, **analysis: object
    ) -> Measurement:
        spec = self.analysis(**analysis)
        return measure(spec, namespace, revision, http_query(spec.prometheus.address), stable=stable)


def check(m: Measurement, name: str) -> float:
    """The measured value of the check NAME."""
    [found] = [c for c in m.checks if c.name == name]
    assert found.value is not None, m
    return found.value


@pytest.fixture(scope="module")
def stack(prometheus_bin: str, bento_store: BentoStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    v1, v2 = bento_store.bento("v1"), bento_store.bento("v2")
    root = tmp_path_factory.mktemp("servers")
    servers = {
        STABLE: BentoServer(v1, root / "stable"),
        CANARY: BentoServer(v2, root / "canary", {"IRIS_FAULT_RATE": str(FAULT_RATE)}),
        SLOW: BentoServer(v2, root / "slow", {"IRIS_EXTRA_LATENCY_MS": str(EXTRA_LATENCY_MS)}),
        IDLE: BentoServer(v1, root / "idle"),
    }
    prometheus = Prometheus(
        tmp_path_factory.mktemp("prometheus"), binary=prometheus_bin, relabel_configs=documented_relabel_configs()
    )
    with prometheus, serving(list(servers.values())):
        pods = [discovered_pod(server, revision) for revision, server in servers.items()]
        # A pod without the prometheus.io/scrape annotation is not scraped.
        pods.append(discovered_pod(servers[IDLE], "rev-not-annotated", annotated=False))
        prometheus.set_targets(pods)
        for revision, server in servers.items():
            target = prometheus.wait_for_target(
                server.address, {"namespace": NAMESPACE, "modeldeploy_dev_revision": revision}
            )
            assert target["labels"]["pod"] == f"iris-{revision}"
        assert len(prometheus.targets()) == len(servers)

        urls = {revision: server.url for revision, server in servers.items()}
        loaded = [urls[STABLE], urls[CANARY], urls[SLOW]]
        # 300 ms a request: 12 connections keep 25 req/s going to the slow one.
        with (
            Load(loaded, rate=RATE, duration=LOAD_LIMIT_S, concurrency=12) as load,
            Load([urls[IDLE]], rate=2, duration=LOAD_LIMIT_S, path="/readyz", payload=None, concurrency=1),
        ):
            # A full interval of load, then until Prometheus holds 8 scrapes of it in the window.
            time.sleep(max(0.0, INTERVAL_S + 1 - load.elapsed))
            prometheus.wait_for(
                f'min(count_over_time(bentoml_service_request_total{{endpoint="/classify"}}[{INTERVAL}]))',
                lambda samples: samples >= 8,
            )
            yield Stack(prometheus, urls, load)


def test_healthy_revision_passes(stack: Stack) -> None:
    m = stack.measure(STABLE)
    assert m.verdict == "Passed", m
    assert m.summary.startswith("all checks passed over 10s")
    # 25 req/s over 10 s; increase() extrapolates to the window's edges.
    assert 0.8 * RATE * INTERVAL_S <= check(m, "requests") <= 1.2 * RATE * INTERVAL_S
    assert check(m, "errorRate") == 0
    client = stack.load.stats[stack.urls[STABLE]]
    assert (client.server_errors, client.client_errors, client.failures) == (0, 0, 0)


def test_failing_revision_fails_on_its_error_rate(stack: Stack) -> None:
    m = stack.measure(CANARY)
    assert m.verdict == "Failed", m
    rate = check(m, "errorRate")
    assert rate == pytest.approx(FAULT_RATE, abs=0.03)
    assert f"error rate {rate:.2%} above maxErrorRate 5.00% over 10s" in m.summary
    # What the clients saw: the fault injection is exact (3 in every 10 on one worker).
    assert stack.load.stats[stack.urls[CANARY]].error_rate == pytest.approx(FAULT_RATE, abs=0.01)
    # The same revision passes a threshold above its error rate.
    assert stack.measure(CANARY, maxErrorRate=0.4).verdict == "Passed"


def test_revision_without_traffic_is_no_data(stack: Stack) -> None:
    m = stack.measure(IDLE)
    assert m.verdict == "NoData", m
    assert m.summary == f"0 requests in 10s, fewer than minRequests {MIN_REQUESTS}"
    # Its readiness probes reached Prometheus; they are not traffic.
    probes = stack.prometheus.query_value(
        f'sum(increase(bentoml_service_request_total{{modeldeploy_dev_revision="{IDLE}",endpoint="/readyz"}}[10s]))'
    )
    assert probes is not None and probes > 0


def test_revision_is_selected_by_namespace_and_label(stack: Stack) -> None:
    assert stack.measure(STABLE, namespace="other").verdict == "NoData"
    assert stack.measure("rev-unknown").verdict == "NoData"
    assert stack.measure("rev-not-annotated").verdict == "NoData"


def test_p99_above_max_latency_fails(stack: Stack) -> None:
    m = stack.measure(SLOW, maxLatencyP99="100ms")
    assert m.verdict == "Failed", m
    p99 = check(m, "latencyP99")
    # Every request takes 300 ms and a little: on an idle machine all fall in BentoML's (0.25 s, 0.5 s]
    # bucket and linear interpolation puts the p99 near its top; on a busy one (CI beside other work) some
    # land in the next buckets. Never below the sleep.
    assert p99 >= 0.3
    assert f"p99 latency {p99 * 1000:.0f}ms above maxLatencyP99 100ms over 10s" in m.summary
    assert check(m, "errorRate") == 0
    client = stack.load.stats[stack.urls[SLOW]]
    assert (client.latency_quantile(0.5) or 0) >= EXTRA_LATENCY_MS / 1000
    assert client.failures == 0


def test_max_latency_tells_fast_from_slow(stack: Stack) -> None:
    # 250 ms is a bucket boundary; the healthy server answers in a few ms.
    assert stack.measure(STABLE, maxLatencyP99="250ms").verdict == "Passed"
    assert stack.measure(SLOW, maxLatencyP99="250ms").verdict == "Failed"


def test_operator_entry_point_reads_the_model_deployment(stack: Stack) -> None:
    deployment = md(
        namespace=NAMESPACE,
        rollout={
            "analysis": {"prometheus": {"address": stack.prometheus.url}, "interval": INTERVAL, "minRequests": 50}
        },
    )
    assert measure_canary(deployment, STABLE).verdict == "Passed"
    failed = measure_canary(deployment, CANARY)
    assert failed.verdict == "Failed"
    assert "above maxErrorRate 1.00%" in failed.summary


def test_unreachable_prometheus_fails() -> None:
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    spec = Analysis.model_validate({"prometheus": {"address": address}, "interval": INTERVAL})
    m = measure(spec, NAMESPACE, STABLE, http_query(address, Limits(connect=5)))
    assert m.verdict == "Failed"
    assert m.summary.startswith(f"measurement failed: Prometheus at {address} could not be queried")
    assert [(c.name, c.passed) for c in m.checks] == [("prometheus", False)]


def test_against_the_stable_revision_a_slower_or_failing_canary_is_caught(stack: Stack) -> None:
    """analysis.baseline on what the real servers served: the slow and the faulty canary each fail against
    the healthy stable, with no absolute latency limit set and an error limit that lets 30% through."""
    baseline = {"maxErrorRateIncrease": 0.02, "maxLatencyP99Ratio": 2}
    slow = stack.measure(SLOW, stable=STABLE, baseline=baseline, maxErrorRate=0.5)
    assert slow.verdict == "Failed", slow
    assert "above 2x the stable revision's" in slow.summary
    assert check(slow, "latencyP99") >= 0.3
    faulty = stack.measure(CANARY, stable=STABLE, baseline=baseline, maxErrorRate=0.5)
    assert faulty.verdict == "Failed", faulty
    assert "above the stable revision's 0.00% +2 points" in faulty.summary


def test_against_a_stable_that_fails_as_much_a_canary_passes(stack: Stack) -> None:
    """Both above maxErrorRate (as when the cluster, not the canary, is at fault): the absolute limit fails
    the canary, the comparison with a baseline failing as much does not (the same faulty server as both)."""
    assert stack.measure(CANARY, maxErrorRate=0.05).verdict == "Failed"
    m = stack.measure(CANARY, stable=CANARY, baseline={"maxErrorRateIncrease": 0.02}, maxErrorRate=0.05)
    assert m.verdict == "Passed", m
    assert m.summary.startswith("all checks passed against the stable revision")
