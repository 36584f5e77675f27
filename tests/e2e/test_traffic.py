"""Real traffic: weights measured at the pods, and canaries judged on what Prometheus scraped from them.

The Gateway is Traefik (the local cluster's Gateway API implementation) on a loopback port; the
Service is reached at its ClusterIP through kube-proxy. What reached which revision is counted
from the pods' own BentoML request counters, read before and after a bounded burst. Prometheus
(3.x) runs in the cluster and discovers the pods with the scrape job of docs/analysis.md.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from localcluster import LocalCluster, addons
from localcluster.kit import (
    Cluster,
    Operator,
    condition,
    event_reasons,
    post_json,
    request_counts,
    sample,
    served_by_role,
    service_url,
    wait_for,
    wait_ready,
)
from localcluster.loadgen import Load, LoadStats

from clusterstack import TEST_CLUSTER_DIR, ModelImages

pytestmark = pytest.mark.timeout(600)

BURST = 1000  # requests per measured step
TOLERANCE = 5  # percentage points between the measured share and the weight
SMALL = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
ROWS = {"input_series": [[5.1, 3.5, 1.4, 0.2]]}


@pytest.fixture(scope="session")
def gateway(cluster: Cluster) -> addons.Gateway:
    if cluster.provider != "local":
        pytest.skip("the Gateway of these tests is the local cluster's Traefik")
    return addons.ensure_gateway(LocalCluster(TEST_CLUSTER_DIR))


@pytest.fixture(scope="session")
def prometheus(cluster: Cluster) -> addons.ClusterPrometheus:
    if cluster.provider != "local":
        pytest.skip("the Prometheus of these tests is the local cluster's")
    info = LocalCluster(TEST_CLUSTER_DIR).info()
    assert info is not None
    return addons.ensure_prometheus(info)


def real(namespace: str, image: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("resources", SMALL)
    # These tests count where requests go, not how fast they come back: BentoML's batcher sheds a request
    # it cannot answer within its max latency (503 "process is overloaded"), which on two cores shared with
    # the whole cluster happens under a burst. A ceiling of 10 s keeps shedding out of what is counted.
    env = [{"name": "IRIS_MAX_LATENCY_MS", "value": "10000"}, *spec.pop("env", [])]
    return sample("iris", namespace, kwok=False, bento={"image": image}, env=env, **spec)


def gateway_routing(gateway: addons.Gateway, host: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "trafficRouting": "GatewayAPI",
        "gateway": {"parentRefs": [gateway.parent_ref], "hostnames": [host]},
        "steps": steps,
    }


def at_step(cluster: Cluster, namespace: str, step: int) -> dict[str, Any]:
    """The canary's status once step `step` holds with its pods Ready (its pause running)."""

    def holding() -> dict[str, Any] | None:
        canary = ((cluster.get("modeldeployment", "iris", namespace) or {}).get("status") or {}).get("canary") or {}
        return canary if canary.get("step") == step and canary.get("stepReadyAt") else None

    return wait_for(holding, timeout=180, what=f"the canary holding step {step + 1}")


def settled(cluster: Cluster, namespace: str) -> bool:
    """Every pod of the ModelDeployment Ready, none coming or going: the set a burst is counted on."""
    pods = cluster.json("get", "pods", "-n", namespace, "-l", "modeldeploy.dev/name=iris")["items"]
    wanted = sum(d["spec"]["replicas"] for d in cluster.json("get", "deployments", "-n", namespace)["items"])
    ready = [
        p for p in pods if condition(p, "Ready").get("status") == "True" and not p["metadata"].get("deletionTimestamp")
    ]
    return len(pods) == len(ready) == wanted


def burst(cluster: Cluster, namespace: str, url: str, **load: Any) -> tuple[dict[str, float], LoadStats]:
    """BURST requests at URL; what each role served meanwhile, by the pods' own counters."""
    before = request_counts(cluster, namespace, "iris")
    with Load([url], rate=150, duration=40, max_requests=BURST, concurrency=6, **load) as sent:
        sent.join(timeout=45)
    after = request_counts(cluster, namespace, "iris")
    stats = sent.stats[url]
    assert (stats.sent, stats.ok) == (BURST, BURST), f"the burst: {stats}, unexpected answers {stats.unexpected}"
    return served_by_role(before, after), stats


def canary_share(served: dict[str, float]) -> float:
    total = sum(served.values())
    assert total >= BURST, f"the pods counted {total} requests of a burst of {BURST}: {served}"
    return 100.0 * served.get("canary", 0.0) / total


# The first step is held (spec.rollout.paused) while it is measured, then released; the second step's pause
# outlasts its measurement, after which the test ends.
MEASURED_STEPS = [{"weight": 10, "pause": "1s"}, {"weight": 50, "pause": "60s"}]


class TestTrafficSplit:
    def test_gateway_weights_measured_at_the_pods_match_each_step_and_are_exact(
        self, cluster: Cluster, running: Operator, namespace: str, model_images: ModelImages, gateway: addons.Gateway
    ) -> None:
        host = f"iris.{namespace}.example"
        rollout = gateway_routing(gateway, host, MEASURED_STEPS)
        cluster.apply(real(namespace, model_images.v1, replicas=2, rollout=rollout))
        wait_ready(cluster, namespace, "iris", timeout=240)
        url = f"http://{gateway.address}"
        wait_for(lambda: post_json_via(url, host)[0] == 200, timeout=60, what="the route programmed in the Gateway")
        cluster.apply(real(namespace, model_images.v2, replicas=2, rollout=rollout | {"paused": True}))
        shares = []
        for step, weight in enumerate((10, 50)):
            if step == 1:  # measured at the first step: on to the second
                cluster.apply(real(namespace, model_images.v2, replicas=2, rollout=rollout))
            canary = at_step(cluster, namespace, step)
            assert canary["weight"] == weight
            programmed = {"iris": 100 - weight, "iris-canary": weight}
            wait_for(
                lambda want=programmed: gateway.weights(namespace, "iris") == want,
                timeout=30,
                what=f"Traefik programmed at {weight}%",
            )
            wait_for(lambda: settled(cluster, namespace), timeout=120, what="the pods settled")
            served, _ = burst(cluster, namespace, url, headers={"Host": host}, keepalive=False)
            share = canary_share(served)
            shares.append(round(share, 1))
            assert abs(share - weight) <= TOLERANCE, (
                f"step {step + 1}: {share:.1f}% reached the canary, weight {weight}"
            )
            md = cluster.get("modeldeployment", "iris", namespace) or {}
            assert "exact weights" in condition(md, "Progressing")["message"]
        print(f"gateway: canary share measured at the pods per step {shares} for weights [10, 50]")

    def test_replicas_routing_approximates_and_status_says_what_is_measured(
        self, cluster: Cluster, running: Operator, namespace: str, model_images: ModelImages
    ) -> None:
        rollout = {"steps": [{"weight": 25, "pause": "1s"}, {"weight": 50, "pause": "60s"}]}
        cluster.apply(real(namespace, model_images.v1, replicas=4, rollout=rollout))
        wait_ready(cluster, namespace, "iris", timeout=240)
        url = service_url(cluster, "iris", namespace)
        cluster.apply(real(namespace, model_images.v2, replicas=4, rollout=rollout | {"paused": True}))
        measured = []
        for step in (0, 1):
            if step == 1:
                cluster.apply(real(namespace, model_images.v2, replicas=4, rollout=rollout))
            canary = at_step(cluster, namespace, step)
            wait_for(lambda: settled(cluster, namespace), timeout=120, what="the pods settled")
            # A connection per request: kube-proxy picks an endpoint for each one.
            served, _ = burst(cluster, namespace, url, keepalive=False)
            share = canary_share(served)
            md = cluster.json("get", "modeldeployment", "iris", "-n", namespace)
            status_weight = md["status"]["canary"]["weight"]
            measured.append((round(share, 1), status_weight))
            assert abs(share - status_weight) <= TOLERANCE, f"measured {share:.1f}%, status says {status_weight}%"
            assert "approximate" in condition(md, "Progressing")["message"]
            assert canary["stepWeight"] in (25, 50)
        print(f"replicas: (measured canary share, status weight) per step {measured}")


def post_json_via(url: str, host: str) -> tuple[int, Any]:
    """A POST through the Gateway with the route's Host header (0 while nothing answers)."""
    try:
        return post_json(f"{url}/classify", ROWS, timeout=10, headers={"Host": host})
    except OSError:
        return 0, None


ANALYSIS_STEPS = [{"weight": 50, "pause": "15s"}]


def analysed(prometheus: addons.ClusterPrometheus, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "steps": steps,
        "analysis": {
            "prometheus": {"address": prometheus.url},
            "interval": "6s",
            "failureLimit": 2,
            "minRequests": 20,
            "maxErrorRate": 0.05,
            "maxLatencyP99": "1s",
            "noDataTimeout": "90s",
        },
    }


def ended(cluster: Cluster, namespace: str, seen: dict[str, Any]) -> Callable[[], dict[str, Any] | None]:
    """The status once a canary came and went; SEEN keeps the last analysis the canary's status showed."""

    def check() -> dict[str, Any] | None:
        status = (cluster.get("modeldeployment", "iris", namespace) or {}).get("status") or {}
        if status.get("canary"):
            seen["analysis"] = status["canary"].get("analysis") or {}
            return None
        return status if "analysis" in seen else None

    return check


class TestCanaryJudgedOnRealPods:
    """The analysis reads what Prometheus discovered and scraped from the real pods; under bounded
    load a healthy canary is promoted and a failing one rolled back, and no request is lost."""

    @pytest.mark.parametrize("routing", ["Replicas", "GatewayAPI"])
    @pytest.mark.parametrize("fault", [0.0, 0.3], ids=["healthy-promoted", "failing-rolled-back"])
    def test_canary(
        self,
        *,
        cluster: Cluster,
        running: Operator,
        namespace: str,
        model_images: ModelImages,
        prometheus: addons.ClusterPrometheus,
        gateway: addons.Gateway,
        routing: str,
        fault: float,
    ) -> None:
        host = f"iris.{namespace}.example"
        rollout = analysed(prometheus, ANALYSIS_STEPS)
        if routing == "GatewayAPI":
            rollout |= gateway_routing(gateway, host, ANALYSIS_STEPS)
        cluster.apply(real(namespace, model_images.v1, replicas=1, rollout=rollout))
        wait_ready(cluster, namespace, "iris", timeout=240)
        if routing == "GatewayAPI":
            url, client = f"http://{gateway.address}", {"headers": {"Host": host}}
            wait_for(lambda: post_json_via(url, host)[0] == 200, timeout=60, what="the route programmed")
        else:
            # Replicas routing splits connections, not requests: a keep-alive connection stays with
            # the pod it was opened to. The clients here open one per request.
            url, client = service_url(cluster, "iris", namespace), {"keepalive": False}
            wait_for(lambda: post_json(f"{url}/classify", ROWS)[0] == 200, timeout=30, what="the Service answering")
        env = [{"name": "IRIS_FAULT_RATE", "value": str(fault)}] if fault else []
        with Load([url], rate=20, duration=240, concurrency=4, **client) as load:
            cluster.apply(real(namespace, model_images.v2, replicas=1, rollout=rollout, env=env))
            seen: dict[str, Any] = {}
            status = wait_for(ended(cluster, namespace, seen), timeout=200, what="the canary to end", interval=0.5)
        stats = load.stats[url]
        print(
            f"{routing} canary, fault rate {fault}: {stats.sent} requests, {stats.ok} 2xx, "
            f"{stats.server_errors} 5xx ({stats.injected_errors} injected by the canary), {stats.failures} unanswered"
        )
        assert stats.sent >= 100
        # No request lost: every answer came, and every 5xx is one the failing canary chose to give.
        assert stats.failures == 0, stats.last_error
        assert stats.server_errors == stats.injected_errors
        reasons = event_reasons(cluster, namespace)
        if fault:
            assert status["failed"]["reason"] == "AnalysisFailed", status.get("failed")
            assert "error rate" in status["failed"]["message"]
            assert "above maxErrorRate 5.00%" in status["failed"]["message"]
            assert status["stable"]["bento"] == "iris-classifier:v1"
            assert stats.injected_errors > 0
            md = cluster.get("modeldeployment", "iris", namespace) or {}
            assert condition(md, "Degraded")["reason"] == "RolledBack"
            assert reasons.count("AnalysisFailed") == 2, reasons  # failureLimit 2
            assert "RolledBack" in reasons
        else:
            assert status.get("failed") is None
            assert status["stable"]["bento"] == "iris-onnx:v1"
            assert stats.server_errors == 0
            # The measurement that let it through, as the canary's status showed it.
            checks = {c["name"]: c for c in seen["analysis"].get("checks", [])}
            assert seen["analysis"].get("verdict") == "Passed", seen
            assert checks["errorRate"]["value"] == 0 and checks["requests"]["value"] >= 20, checks
            assert "Promoted" in reasons and "AnalysisFailed" not in reasons


def get_via(url: str, host: str, path: str) -> tuple[int, str]:
    """A GET through the Gateway with a Host header (0 while nothing answers)."""
    request = urllib.request.Request(f"{url}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, ""
    except OSError:
        return 0, ""


class TestExposed:
    def test_the_ui_and_api_answer_through_the_gateway_at_status_url(
        self, cluster: Cluster, running: Operator, namespace: str, model_images: ModelImages, gateway: addons.Gateway
    ) -> None:
        host = f"iris.{namespace}.example"
        port = int(gateway.address.rpartition(":")[2])
        expose = {"hostname": host, "parentRefs": [gateway.parent_ref], "port": port}
        cluster.apply(real(namespace, model_images.v1, replicas=2, expose=expose))
        md = wait_ready(cluster, namespace, "iris", timeout=240)
        assert md["status"]["url"] == f"http://{host}:{port}/"
        route = cluster.json("get", "httproute", "iris", "-n", namespace)
        assert route["spec"]["hostnames"] == [host]
        assert route["spec"]["rules"][0]["backendRefs"] == [
            {"group": "", "kind": "Service", "name": "iris", "port": 3000, "weight": 1}
        ]
        url = f"http://{gateway.address}"

        def ui() -> str | None:
            code, page = get_via(url, host, "/")
            return page if code == 200 else None

        page = wait_for(ui, timeout=60, what="the model's UI through the Gateway")
        assert "swagger-ui" in page, page[:500]
        code, answer = post_json_via(url, host)
        assert (code, answer) == (200, ["setosa"])
        # Another host is not this model's: the Gateway has no route for it.
        assert get_via(url, f"other.{namespace}.example", "/")[0] == 404
