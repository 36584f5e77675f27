"""Autoscaling real pods on the real node: cpu through metrics-server and a HorizontalPodAutoscaler, requests per
second through KEDA (its operator and metrics API server) reading BentoML's metrics in the cluster's Prometheus.

Each test loads the model through its Service (bounded in rate and time, loopback to the node's pods), waits
for at least 3 replicas (the KEDA one then rolls a canary out, still under load), stops the load and waits
for 1 again. The scale-down window is set short
(autoscaling.scaleDownStabilization) so the way back takes a minute, not the default five.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from localcluster import LocalCluster, addons, autoscaling
from localcluster.kit import Cluster, Operator, post_json, sample, service_url, wait_for, wait_ready
from localcluster.loadgen import Load, LoadStats

from clusterstack import TEST_CLUSTER_DIR, ModelImages

pytestmark = pytest.mark.timeout(600)

ROWS = {"input_series": [[5.1, 3.5, 1.4, 0.2]]}
# cpu requests small enough that a modest load is well above the target; the same for every test.
RESOURCES = {"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


@pytest.fixture(scope="module")
def scalers(cluster: Cluster) -> addons.ClusterPrometheus:
    """metrics-server and KEDA in the local cluster, and its Prometheus (KEDA's source)."""
    if cluster.provider != "local":
        pytest.skip("metrics-server, KEDA and Prometheus of these tests are the local cluster's")
    info = LocalCluster(TEST_CLUSTER_DIR).info()
    assert info is not None
    # Applied together, then waited for: their pods start side by side.
    autoscaling.ensure_metrics_server(info, wait=False)
    autoscaling.ensure_keda(info, wait=False)
    prometheus = addons.ensure_prometheus(info)
    autoscaling.wait_metrics_server(info)
    autoscaling.wait_keda(info)
    return prometheus


def autoscaled(namespace: str, image: str, **scaling: Any) -> dict[str, Any]:
    body = sample(
        "iris",
        namespace,
        kwok=False,
        bento={"image": image},
        resources=RESOURCES,
        autoscaling={"minReplicas": 1, "maxReplicas": 4, "scaleDownStabilization": "15s", **scaling},
        # The canary below walks while the autoscaler moves the stable size.
        rollout={"steps": [{"weight": 50, "pause": "10s"}]},
        # These tests count replicas, not latency: no request is shed when the machine is busy.
        env=[{"name": "IRIS_MAX_LATENCY_MS", "value": "10000"}],
    )
    return body


def replicas(cluster: Cluster, namespace: str) -> int:
    return int(cluster.json("get", "deployment", "iris", "-n", namespace)["spec"].get("replicas") or 0)


def scale_up_and_down(
    cluster: Cluster, namespace: str, rate: float, while_up: Callable[[], object] | None = None
) -> tuple[int, float, float, LoadStats]:
    """Load until >= 3 replicas (then, still under load, WHILE_UP), then none until 1: (most replicas seen,
    seconds up, seconds down, what the client saw)."""
    url = service_url(cluster, "iris", namespace)
    wait_for(lambda: post_json(f"{url}/classify", ROWS)[0] == 200, timeout=30, what="the Service answering")
    most = 1
    with Load([url], rate=rate, duration=400, concurrency=8, keepalive=False) as load:

        def up() -> int | None:
            nonlocal most
            most = max(most, replicas(cluster, namespace))
            return most if most >= 3 else None

        wait_for(up, timeout=280, what="3 replicas or more under load", interval=2)
        went_up = load.elapsed
        if while_up is not None:
            while_up()
            most = max(most, replicas(cluster, namespace))
        load.stop()
    stats = load.stats[url]
    assert stats.failures == 0 and stats.server_errors == 0, f"{stats} {stats.unexpected}"
    stopped = time.monotonic()
    wait_for(lambda: replicas(cluster, namespace) == 1 or None, timeout=240, what="back to 1 replica", interval=2)
    return most, went_up, time.monotonic() - stopped, stats


class TestAutoscaling:
    def test_cpu_scales_the_pods_up_under_load_and_down_after(
        self, cluster: Cluster, running: Operator, namespace: str, model_images: ModelImages, scalers: Any
    ) -> None:
        cluster.apply(autoscaled(namespace, model_images.v1, metrics=[{"type": "cpu", "target": 50}]))
        wait_ready(cluster, namespace, "iris", timeout=240)
        hpa = cluster.json("get", "hpa", "iris", "-n", namespace)
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        most, up, down, _ = scale_up_and_down(cluster, namespace, rate=60)
        print(f"cpu (HPA): 1 -> {most} replicas in {up:.0f}s under load, back to 1 in {down:.0f}s after it")

    def test_requests_per_second_scale_through_keda_while_a_canary_walks(
        self, cluster: Cluster, running: Operator, namespace: str, model_images: ModelImages, scalers: Any
    ) -> None:
        prometheus = {"address": scalers.in_cluster_url}
        metrics = [{"type": "requestsPerSecond", "target": 5}]
        cluster.apply(autoscaled(namespace, model_images.v1, metrics=metrics, prometheus=prometheus))
        wait_ready(cluster, namespace, "iris", timeout=240)
        scaled = cluster.json("get", "scaledobject", "iris", "-n", namespace)
        assert scaled["spec"]["triggers"][0]["type"] == "prometheus"
        # KEDA's own HorizontalPodAutoscaler; the operator made none.
        hpas = cluster.json("get", "hpa", "-n", namespace)["items"]
        assert [h["metadata"]["name"] for h in hpas] == ["keda-hpa-iris"], hpas
        # Under load it scales up; a canary then walks while KEDA moves the stable size: promoted, no request lost;
        # the load stopped, it scales down again.

        def canary() -> None:
            cluster.apply(autoscaled(namespace, model_images.v2, metrics=metrics, prometheus=prometheus))

            def promoted() -> dict[str, Any] | None:
                md = cluster.get("modeldeployment", "iris", namespace) or {}
                status = md.get("status") or {}
                done = status.get("stable", {}).get("bento") == "iris-onnx:v1" and not status.get("canary")
                return status if done else None

            wait_for(promoted, timeout=180, what="the canary promoted while autoscaled", interval=1)

        most, up, down, stats = scale_up_and_down(cluster, namespace, rate=20, while_up=canary)
        print(f"canary under KEDA: {stats.sent} requests, {stats.ok} 2xx, {stats.failures} unanswered")
        print(f"requestsPerSecond (KEDA): 1 -> {most} replicas in {up:.0f}s under load, back to 1 in {down:.0f}s")
