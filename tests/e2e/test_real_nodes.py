"""The e2e tier: the model served by real pods on a real node, real traffic through its Service.

On the local provider this is the local cluster's real node (kubelet, containerd, runc, CNI,
kube-proxy, CoreDNS, the local registry), with images built here; the client is this host,
sending bounded traffic to the Service's ClusterIP through kube-proxy. The operator is the session's
process with the chart's RBAC (tests/clusterstack.py); tests/e2e/test_chart_operator.py runs the
chart's own operator pod.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from localcluster import NODE_NAME
from localcluster.kit import Cluster, Operator, condition, post_json, sample, service_url, wait_for, wait_ready
from localcluster.loadgen import Load, LoadStats

from clusterstack import ModelImages

pytestmark = pytest.mark.timeout(600)

ROWS = {"input_series": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}
SMALL = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
READY_S = 240  # image pull on a cold node plus the model server's start


def real(name: str, namespace: str, image: str, **spec: Any) -> dict[str, Any]:
    """A ModelDeployment whose pods run on the real node."""
    spec.setdefault("resources", SMALL)
    spec.setdefault("replicas", 1)
    return sample(name, namespace, kwok=False, bento={"image": image}, **spec)


def pods(cluster: Cluster, namespace: str, name: str = "iris") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = cluster.json("get", "pods", "-n", namespace, "-l", f"modeldeploy.dev/name={name}")[
        "items"
    ]
    return [p for p in found if not p["metadata"].get("deletionTimestamp")]


def no_request_lost(stats: LoadStats, what: str) -> None:
    print(f"{what}: {stats.sent} requests sent, {stats.ok} answered 2xx, {stats.server_errors} 5xx, "
          f"{stats.client_errors} other, {stats.failures} unanswered")  # fmt: skip
    assert stats.sent >= 100, f"too little traffic to judge: {stats.sent} requests"
    assert (stats.failures, stats.server_errors, stats.client_errors) == (0, 0, 0), (
        f"{what}: {stats.failures} unanswered ({stats.last_error}), {stats.server_errors} 5xx, "
        f"{stats.client_errors} other of {stats.sent}"
    )


class TestServing:
    def test_the_model_answers_through_its_service(
        self, cluster: Cluster, running: Operator, namespace: str, model_images: ModelImages
    ) -> None:
        cluster.apply(real("iris", namespace, model_images.v1))
        md = wait_ready(cluster, namespace, "iris", timeout=READY_S)
        assert md["status"]["readyReplicas"] == 1
        (pod,) = pods(cluster, namespace)
        assert pod["spec"]["nodeName"] == NODE_NAME
        (container,) = pod["status"]["containerStatuses"]
        assert container["ready"] and container["restartCount"] == 0
        assert container["image"].endswith(model_images.v1.rsplit("/", 1)[-1])
        url = service_url(cluster, "iris", namespace)
        status, answer = wait_for(lambda: post_json(f"{url}/classify", ROWS), timeout=30, what="a prediction")
        assert (status, answer) == (200, ["setosa", "virginica"])
        # The model server's own metrics, which the canary analysis reads, count it.
        with_metrics = cluster.kubectl(
            "get", "--raw", f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}:3000/proxy/metrics"
        )
        assert 'bentoml_service_request_total{endpoint="/classify",http_response_code="200"' in with_metrics.stdout

    def test_pods_run_under_the_restricted_pod_security_standard_with_a_read_only_root(
        self, cluster: Cluster, running: Operator, namespace: str, model_images: ModelImages
    ) -> None:
        cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "--overwrite")
        cluster.apply(real("iris", namespace, model_images.v1))
        wait_ready(cluster, namespace, "iris", timeout=READY_S)
        (pod,) = pods(cluster, namespace)
        name = pod["metadata"]["name"]
        who = cluster.kubectl("exec", "-n", namespace, name, "--", "id").stdout
        assert "uid=1034" in who
        written = cluster.kubectl("exec", "-n", namespace, name, "--", "sh", "-c", "echo x > /x", check=False)
        assert written.returncode != 0 and "Read-only file system" in written.stderr
        # BentoML's home and temporary files go to the writable emptyDir.
        cluster.kubectl("exec", "-n", namespace, name, "--", "sh", "-c", "echo x > /tmp/x")


class TestUpdatesLoseNoRequest:
    """A client sending bounded traffic to the Service while the model changes sees no error."""

    def _under_load(self, cluster: Cluster, namespace: str, change: dict[str, Any], done: Any) -> LoadStats:
        url = service_url(cluster, "iris", namespace)
        wait_for(lambda: post_json(f"{url}/classify", ROWS)[0] == 200, timeout=30, what="the Service answering")
        with Load([url], rate=20, duration=180, concurrency=4) as load:
            time.sleep(3)
            cluster.apply(change)
            wait_for(done, timeout=180, what="the change rolled out")
            time.sleep(3)  # requests right after the change reach the new pods only
        return load.stats[url]

    def test_a_rolling_update_to_a_new_model_version_loses_no_request(
        self, cluster: Cluster, running: Operator, namespace: str, model_images: ModelImages
    ) -> None:
        rolling = {"strategy": "Rolling"}
        cluster.apply(real("iris", namespace, model_images.v1, replicas=2, rollout=rolling))
        wait_ready(cluster, namespace, "iris", timeout=READY_S)

        def rolled_out() -> bool:
            current = pods(cluster, namespace)
            ready = [p for p in current if condition(p, "Ready").get("status") == "True"]
            images = {c["image"] for p in current for c in p["spec"]["containers"]}
            return len(current) == len(ready) == 2 and images == {model_images.v2}

        change = real("iris", namespace, model_images.v2, replicas=2, rollout=rolling)
        stats = self._under_load(cluster, namespace, change, rolled_out)
        no_request_lost(stats, "rolling update v1 -> v2")

    def test_a_canary_promotion_loses_no_request(
        self, cluster: Cluster, running: Operator, namespace: str, model_images: ModelImages
    ) -> None:
        canary = {"steps": [{"weight": 50, "pause": "5s"}]}
        cluster.apply(real("iris", namespace, model_images.v1, replicas=2, rollout=canary))
        wait_ready(cluster, namespace, "iris", timeout=READY_S)
        seen_canary = threading.Event()

        def promoted() -> bool:
            md = cluster.get("modeldeployment", "iris", namespace) or {}
            status = md.get("status") or {}
            if status.get("canary"):
                seen_canary.set()
            stable = (status.get("stable") or {}).get("bento", "")
            only_v2 = {c["image"] for p in pods(cluster, namespace) for c in p["spec"]["containers"]} == {
                model_images.v2
            }
            return seen_canary.is_set() and not status.get("canary") and stable.startswith("iris-onnx") and only_v2

        change = real("iris", namespace, model_images.v2, replicas=2, rollout=canary)
        stats = self._under_load(cluster, namespace, change, promoted)
        no_request_lost(stats, "canary v1 -> v2, promoted")


class TestGracefulTermination:
    def test_a_slow_request_started_before_a_scale_down_completes(
        self, cluster: Cluster, running: Operator, namespace: str, model_images: ModelImages
    ) -> None:
        # Longer than the preStop pause: the answer has to come after the server got SIGTERM.
        slow = [{"name": "IRIS_EXTRA_LATENCY_MS", "value": "8000"}]
        cluster.apply(real("iris", namespace, model_images.v1, replicas=2, env=slow))
        wait_ready(cluster, namespace, "iris", timeout=READY_S)
        addresses = [p["status"]["podIP"] for p in pods(cluster, namespace)]
        assert len(addresses) == 2
        answers: dict[str, tuple[int, Any]] = {}

        def ask(address: str) -> None:
            answers[address] = post_json(f"http://{address}:3000/classify", ROWS, timeout=60)

        # One slow request in flight on each pod: whichever pod the scale-down removes has one.
        threads = [threading.Thread(target=ask, args=(a,)) for a in addresses]
        for thread in threads:
            thread.start()
        time.sleep(1)
        cluster.apply(real("iris", namespace, model_images.v1, replicas=1, env=slow))
        wait_for(lambda: len(pods(cluster, namespace)) == 1, timeout=60, what="the scale-down to begin")
        for thread in threads:
            thread.join(timeout=90)
        assert answers == dict.fromkeys(addresses, (200, ["setosa", "virginica"]))


class TestProblemsAPersonCanActOn:
    def test_a_crash_looping_bento_is_reported_as_crash_loop(
        self, cluster: Cluster, running: Operator, namespace: str, model_images: ModelImages
    ) -> None:
        # The service refuses to start with a malformed setting: the container exits at once.
        broken = [{"name": "IRIS_MAX_BATCH_SIZE", "value": "many"}]
        cluster.apply(real("iris", namespace, model_images.v1, env=broken))

        def degraded() -> dict[str, Any] | None:
            md = cluster.get("modeldeployment", "iris", namespace) or {}
            cond = condition(md, "Degraded")
            return cond if cond.get("status") == "True" and cond.get("reason") == "CrashLoop" else None

        cond = wait_for(degraded, timeout=READY_S, what="Degraded: CrashLoop")
        assert "CrashLoopBackOff" in cond["message"] and "container bento" in cond["message"]
        assert running.alive

    def test_an_image_that_cannot_be_pulled_is_reported_with_its_name(
        self, cluster: Cluster, running: Operator, namespace: str, model_images: ModelImages
    ) -> None:
        missing = model_images.v1.rsplit(":", 1)[0] + ":no-such-version"
        cluster.apply(real("iris", namespace, missing))

        def degraded() -> dict[str, Any] | None:
            md = cluster.get("modeldeployment", "iris", namespace) or {}
            cond = condition(md, "Degraded")
            return cond if cond.get("status") == "True" and cond.get("reason") == "ImagePullFailed" else None

        cond = wait_for(degraded, timeout=120, what="Degraded: ImagePullFailed")
        assert missing in cond["message"], json.dumps(cond)
