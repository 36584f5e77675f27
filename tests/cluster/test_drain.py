"""A node drain on the local cluster's kwok nodes: the budget keeps the model serving, a canary carries on.

`kubectl drain` evicts through the Eviction API, which the PodDisruptionBudget answers; kwok marks the
replacement pods Ready once they are scheduled, so the drain's pace is the budget's.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from localcluster.kit import Cluster, Operator, sample, wait_for, wait_ready
from modeldeploy.k8s.client import Client

V2 = {"image": "registry.example.com/iris-classifier:v2"}


def serving(pod: dict[str, Any]) -> bool:
    """Ready and not on its way out: what a Service would send requests to."""
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))
    return ready and not pod["metadata"].get("deletionTimestamp")


@dataclass
class Watch:
    """Counts a model's serving pods, by role, every 100 ms while a drain runs."""

    client: Client
    namespace: str
    name: str
    samples: list[dict[str, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def pods(self) -> list[dict[str, Any]]:
        return self.client.list("v1", "Pod", self.namespace, {"modeldeploy.dev/name": self.name})

    def run(self) -> None:
        while not self._stop.is_set():
            count: collections.Counter[str] = collections.Counter()
            for pod in self.pods():
                if serving(pod):
                    count[pod["metadata"]["labels"].get("modeldeploy.dev/role", "stable")] += 1
            self.samples.append(dict(count))
            self._stop.wait(0.1)

    def least(self, role: str | None = None) -> int:
        return min(sum(s.values()) if role is None else s.get(role, 0) for s in self.samples)

    def stop(self) -> None:
        self._stop.set()


@pytest.fixture
def watch(cluster: Cluster) -> Iterator[Any]:
    started: list[tuple[Watch, threading.Thread]] = []

    def start(namespace: str, name: str) -> Watch:
        w = Watch(Client.from_environment(str(cluster.kubeconfig)), namespace, name)
        thread = threading.Thread(target=w.run, daemon=True)
        thread.start()
        started.append((w, thread))
        return w

    yield start
    for w, thread in started:
        w.stop()
        thread.join(timeout=10)


def busiest_node(pods: list[dict[str, Any]], role: str | None = None) -> tuple[str, int]:
    nodes = collections.Counter(
        p["spec"]["nodeName"]
        for p in pods
        if serving(p) and (role is None or p["metadata"]["labels"].get("modeldeploy.dev/role") == role)
    )
    [(node, count)] = nodes.most_common(1)
    return node, count


def kwok_nodes(cluster: Cluster) -> list[str]:
    return [n["metadata"]["name"] for n in cluster.json("get", "nodes", "-l", "type=kwok")["items"]]


def drain(
    cluster: Cluster, node: str, name: str, *, timeout: str = "180s", check: bool = True, role: str | None = None
) -> str:
    """kubectl drain of the model's pods (of one role) on the node; what kubectl said (refused evictions too)."""
    selector = f"modeldeploy.dev/name={name}" + (f",modeldeploy.dev/role={role}" if role else "")
    result = cluster.kubectl(
        "drain",
        node,
        f"--pod-selector={selector}",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        f"--timeout={timeout}",
        check=False,
    )
    said = result.stdout + result.stderr
    assert result.returncode == 0 or not check, said
    return said


@pytest.fixture
def uncordon(cluster: Cluster) -> Iterator[list[str]]:
    """Nodes drained by a test, put back in service after it whatever happened."""
    nodes: list[str] = []
    yield nodes
    for node in nodes:
        cluster.kubectl("uncordon", node, check=False)


class TestDrain:
    def test_a_drain_keeps_all_but_the_budgeted_replica_serving(
        self, cluster: Cluster, running: Operator, namespace: str, watch: Any, uncordon: list[str]
    ) -> None:
        """With nowhere for replacements to go, the drain stops after one eviction; once there is, it goes on,
        one pod at a time, and all but one replica serve throughout."""
        replicas = 4
        cluster.apply(sample("drained", namespace, replicas=replicas))
        wait_ready(cluster, namespace, "drained")
        w = watch(namespace, "drained")
        wait_for(lambda: w.samples and sum(w.samples[-1].values()) == replicas, timeout=30, what="all pods counted")
        node, on_node = busiest_node(w.pods())
        assert on_node >= 2, "the budget is only put to work by two pods on one node"
        others = [n for n in kwok_nodes(cluster) if n != node]
        uncordon.extend([node, *others])
        for other in others:
            cluster.kubectl("cordon", other)

        held = drain(cluster, node, "drained", timeout="15s", check=False)
        assert "would violate the pod's disruption budget" in held, held
        assert sum(w.samples[-1].values()) == replicas - 1, "one pod evicted, its replacement Pending"

        for other in others:
            cluster.kubectl("uncordon", other)
        started = time.monotonic()
        drain(cluster, node, "drained")
        took = time.monotonic() - started
        wait_for(lambda: sum(w.samples[-1].values()) == replicas, timeout=60, what="every replica serving elsewhere")
        w.stop()
        print(
            f"\ndrain of {node} ({on_node} of {replicas} pods): held after one eviction while nothing could take "
            f"its pods, then done in {took:.1f}s; {len(w.samples)} samples, fewest serving {w.least()}"
        )
        assert w.least() == replicas - 1, "the budget allows one pod out at a time"
        assert all(p["spec"]["nodeName"] != node for p in w.pods() if serving(p))
        wait_ready(cluster, namespace, "drained")

    def test_a_canary_carries_on_through_a_drain_of_its_node(
        self, cluster: Cluster, running: Operator, namespace: str, watch: Any, uncordon: list[str]
    ) -> None:
        """Late in a long step (past progressDeadline since the step began), a canary pod is evicted and its
        replacement cannot be placed for a while: the walk waits for it (CanaryScaling) and goes on once it is
        Ready; it does not roll back."""
        rollout = {"steps": [{"weight": 50, "pause": "1h"}], "progressDeadline": "30s"}
        cluster.apply(sample("canary", namespace, replicas=4, rollout=rollout))
        wait_ready(cluster, namespace, "canary")
        cluster.apply(sample("canary", namespace, replicas=4, rollout=rollout, bento=V2))

        def at_step() -> dict[str, Any] | None:
            status = (cluster.get("modeldeployment", "canary", namespace) or {}).get("status", {})
            return status if status.get("canary", {}).get("stepReadyAt") else None

        ready_at = wait_for(at_step, timeout=60, what="the canary's step Ready")["canary"]["stepReadyAt"]
        time.sleep(32)  # past the progressDeadline, counted from the step's start
        w = watch(namespace, "canary")
        wait_for(lambda: w.samples and w.samples[-1].get("canary", 0) == 2, timeout=30, what="canary pods counted")
        node, _ = busiest_node(w.pods(), "canary")
        others = [n for n in kwok_nodes(cluster) if n != node]
        uncordon.extend([node, *others])
        # Nowhere for the replacement to go at first: the operator sees the canary short of Ready for a while.
        for other in others:
            cluster.kubectl("cordon", other)
        # The drain reaches the canary's pod first (with the whole model, which pod the budget lets go first is
        # chance).
        drain(cluster, node, "canary", timeout="10s", check=False, role="canary")

        def scaling() -> dict[str, Any] | None:
            status = (cluster.get("modeldeployment", "canary", namespace) or {}).get("status", {})
            assert status.get("canary", {}).get("state") == "Progressing", f"rolled back: {status.get('failed')}"
            progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
            return status if progressing["reason"] == "CanaryScaling" else None

        wait_for(scaling, timeout=30, what="the walk waiting for the evicted canary pod (CanaryScaling)")
        for other in others:
            cluster.kubectl("uncordon", other)
        drain(cluster, node, "canary")

        def ready_again() -> dict[str, Any] | None:
            status = (cluster.get("modeldeployment", "canary", namespace) or {}).get("status", {})
            canary = status.get("canary", {})
            assert canary.get("state") == "Progressing", f"the drain stopped the canary: {status.get('failed')}"
            return status if canary.get("stepReadyAt") not in (None, ready_at) else None

        again = wait_for(ready_again, timeout=60, what="the step Ready again with the replacement canary pods")
        w.stop()
        assert again["canary"]["state"] == "Progressing"
        assert "failed" not in again, again.get("failed")
        assert w.least() >= 3, "the budget covers the canary's pods and the stable's alike"
