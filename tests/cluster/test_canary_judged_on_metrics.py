"""The whole loop: the operator judges a canary on a real Prometheus scraping real `bentoml serve` processes.

The local cluster's pods are simulated by kwok, so the model servers run beside it on
loopback, one per revision, and Prometheus scrapes them with the labels its Kubernetes
relabelling would give the pods (namespace, modeldeploy_dev_revision). The operator
knows nothing of this: it queries Prometheus by revision, as in a real cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from localcluster.kit import Cluster, Operator, condition, event_reasons, sample, wait_for
from localcluster.loadgen import Load
from localcluster.prometheus import Prometheus
from localcluster.realstack import BentoServer, BentoStore, serving

pytestmark = [pytest.mark.bento, pytest.mark.prometheus, pytest.mark.timeout(300)]

RATE = 15  # requests per second to each model server
LOAD_LIMIT_S = 240
V2 = {"image": "registry.example.com/iris-classifier:v2"}


@dataclass
class Servers:
    stable: BentoServer
    healthy: BentoServer
    failing: BentoServer
    load: Load


@pytest.fixture(scope="module")
def servers(
    prometheus: Prometheus, bento_store: BentoStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Servers]:
    v1, v2 = bento_store.bento("v1"), bento_store.bento("v2")
    root = tmp_path_factory.mktemp("model-servers")
    stable = BentoServer(v1, root / "stable")
    healthy = BentoServer(v2, root / "healthy")
    failing = BentoServer(v2, root / "failing", {"IRIS_FAULT_RATE": "0.3"})
    with (
        serving([stable, healthy, failing]),
        Load([stable.url, healthy.url, failing.url], rate=RATE, duration=LOAD_LIMIT_S) as load,
    ):
        yield Servers(stable, healthy, failing, load)


def analysed(namespace: str, prometheus: Prometheus, **spec: Any) -> dict[str, Any]:
    rollout = {
        "steps": [{"weight": 50, "pause": "10s"}],
        "analysis": {
            "prometheus": {"address": prometheus.url},
            "interval": "10s",
            "failureLimit": 2,
            "minRequests": 30,
            "maxErrorRate": 0.05,
            "noDataTimeout": "2m",
        },
    }
    return sample("iris", namespace, rollout=rollout, **spec)


def deploy_and_start_canary(
    cluster: Cluster, namespace: str, prometheus: Prometheus, stable: BentoServer, canary: BentoServer
) -> str:
    cluster.apply(analysed(namespace, prometheus))

    def ready() -> dict[str, Any] | None:
        md = cluster.get("modeldeployment", "iris", namespace)
        return md if md and condition(md, "Ready").get("status") == "True" else None

    v1 = wait_for(ready, timeout=60, what="v1 Ready")["status"]["stable"]["revision"]
    cluster.apply(analysed(namespace, prometheus, bento=V2))
    canary_status = wait_for(
        lambda: (cluster.get("modeldeployment", "iris", namespace) or {}).get("status", {}).get("canary"),
        timeout=60,
        what="the canary",
    )
    prometheus.scrape_revisions(namespace, {v1: stable.address, canary_status["revision"]: canary.address})
    return str(canary_status["revision"])


def test_healthy_canary_is_promoted_on_real_metrics(
    cluster: Cluster, running: Operator, namespace: str, prometheus: Prometheus, servers: Servers
) -> None:
    v2 = deploy_and_start_canary(cluster, namespace, prometheus, servers.stable, servers.healthy)

    def measured() -> dict[str, Any] | None:
        canary = (cluster.get("modeldeployment", "iris", namespace) or {}).get("status", {}).get("canary")
        return canary if canary and canary["analysis"].get("verdict") == "Passed" else None

    judged = wait_for(measured, timeout=90, what="a passed measurement")
    checks = {c["name"]: c for c in judged["analysis"]["checks"]}
    assert checks["errorRate"]["value"] == 0
    assert checks["requests"]["value"] >= 30

    def promoted() -> dict[str, Any] | None:
        md = cluster.get("modeldeployment", "iris", namespace) or {}
        status = md.get("status", {})
        return status if "canary" not in status and status.get("stable", {}).get("revision") == v2 else None

    final = wait_for(promoted, timeout=90, what="promotion")
    assert "failed" not in final
    reasons = event_reasons(cluster, namespace)
    assert "Promoted" in reasons
    assert "AnalysisFailed" not in reasons


def test_failing_canary_is_rolled_back_with_the_measurement(
    cluster: Cluster, running: Operator, namespace: str, prometheus: Prometheus, servers: Servers
) -> None:
    v2 = deploy_and_start_canary(cluster, namespace, prometheus, servers.stable, servers.failing)

    def rolled_back() -> dict[str, Any] | None:
        status = (cluster.get("modeldeployment", "iris", namespace) or {}).get("status", {})
        return status if "canary" not in status and status.get("failed") else None

    final = wait_for(rolled_back, timeout=120, what="the rollback")
    failed = final["failed"]
    assert failed["revision"] == v2
    assert failed["reason"] == "AnalysisFailed"
    assert "error rate" in failed["message"]
    assert "above maxErrorRate 5.00%" in failed["message"]
    assert final["stable"]["revision"] != v2
    md = cluster.get("modeldeployment", "iris", namespace)
    assert md is not None
    assert condition(md, "Degraded")["reason"] == "RolledBack"
    reasons = event_reasons(cluster, namespace)
    assert reasons.count("AnalysisFailed") == 2
    assert "RolledBack" in reasons
    # Client-side truth: the canary server really failed about 30% of what it got.
    assert servers.load.stats[servers.failing.url].error_rate == pytest.approx(0.3, abs=0.02)
