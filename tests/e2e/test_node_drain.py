"""A drain of the real node, with a model's pods on it and a client sending it traffic.

The local cluster has one real node, so an evicted model pod has nowhere else to run: the drain takes
the one pod the model's PodDisruptionBudget allows, the API server refuses the eviction of the last
serving pod for as long as the replacement cannot be scheduled, and the client through the Service
sees no error. Draining several real nodes in turn (pods moving) is tests/cluster/test_drain.py's, on
kwok nodes, where a canary in progress is also drained.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_real_nodes import READY_S, no_request_lost, real

from localcluster import NODE_NAME
from localcluster.kit import Cluster, Operator, condition, service_url, wait_for, wait_ready
from localcluster.loadgen import Load
from modeldeploy.k8s.client import Client

from clusterstack import ModelImages

pytestmark = pytest.mark.timeout(600)

DRAIN_TIMEOUT_S = 25


def serving(pod: dict[str, Any]) -> bool:
    return condition(pod, "Ready").get("status") == "True" and not pod["metadata"].get("deletionTimestamp")


@pytest.fixture
def uncordoned(cluster: Cluster) -> Iterator[None]:
    """The real node is schedulable again after the test, whatever happened in it."""
    yield
    cluster.kubectl("uncordon", NODE_NAME, check=False)


def test_a_drain_of_the_real_node_keeps_the_budgeted_pod_serving_and_loses_no_request(
    cluster: Cluster, running: Operator, namespace: str, model_images: ModelImages, uncordoned: None
) -> None:
    cluster.apply(real("iris", namespace, model_images.v1, replicas=2))
    wait_ready(cluster, namespace, "iris", timeout=READY_S)
    budget = cluster.json("get", "poddisruptionbudget", "iris", "-n", namespace)
    assert budget["spec"]["maxUnavailable"] == 1
    client = Client.from_environment(str(cluster.kubeconfig))
    selector = {"modeldeploy.dev/name": "iris"}
    samples: list[int] = []  # serving pods, every 100 ms while the drain runs
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            current = client.list("v1", "Pod", namespace, selector)
            samples.append(sum(1 for p in current if serving(p)))
            stop.wait(0.1)

    url = service_url(cluster, "iris", namespace)
    sampler = threading.Thread(target=sample, daemon=True)
    with Load([url], rate=20, duration=DRAIN_TIMEOUT_S + 30, concurrency=4) as load:
        time.sleep(2)
        sampler.start()
        started = time.monotonic()
        drain = cluster.kubectl(
            "drain", NODE_NAME, "--pod-selector=modeldeploy.dev/name=iris", "--delete-emptydir-data",
            "--ignore-daemonsets", f"--timeout={DRAIN_TIMEOUT_S}s", check=False,
        )  # fmt: skip
        drained_for = time.monotonic() - started
        time.sleep(2)
        stop.set()
        sampler.join(timeout=10)
    stats = load.stats[url]
    after = client.list("v1", "Pod", namespace, selector)
    least = min(samples, default=0)
    print(f"\ndrain of {NODE_NAME}: exit {drain.returncode} after {drained_for:.0f}s; {len(samples)} samples, "
          f"least serving {least}; "
          f"pods after: {sorted((p['metadata']['name'], p['status'].get('phase')) for p in after)}")  # fmt: skip
    assert drain.returncode != 0, "the drain cannot finish: the budget keeps the last pod"
    assert "disruption budget" in drain.stderr, drain.stderr[-2000:]
    assert len(samples) >= DRAIN_TIMEOUT_S, f"the sampler took {len(samples)} samples: it stopped early"
    assert least >= 1, "the budget kept one pod serving at every sample"
    live = [p for p in after if not p["metadata"].get("deletionTimestamp")]
    assert sum(1 for p in live if serving(p)) == 1
    assert [p["status"].get("phase") for p in live if not serving(p)] == ["Pending"], "the replacement waits"
    no_request_lost(stats, f"drain of {NODE_NAME}")

    # Uncordoned, the replacement runs and the model is whole again.
    cluster.kubectl("uncordon", NODE_NAME)
    wait_for(
        lambda: sum(1 for p in client.list("v1", "Pod", namespace, selector) if serving(p)) == 2,
        timeout=READY_S,
        what="two pods serving after the uncordon",
    )
    wait_ready(cluster, namespace, "iris", timeout=60)
