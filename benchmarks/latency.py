"""apply -> children: a ModelDeployment is created through the API; the clock stops when a watch of
Deployments sees the operator's Deployment for it. Target: p99 < 100 ms, max < 500 ms.

The floor, measured first on the same cluster: the same API work with no operator, done by the
benchmark itself (create the ModelDeployment, write its status, apply its Deployment), timed to the
same watch event. What the operator adds is the difference.

    .venv/bin/python benchmarks/latency.py [--samples 500]
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample as PromSample

from harness import bench_stack, now
from localcluster.process import free_ports
from modeldeploy.api.v1alpha1 import API_VERSION
from modeldeploy.k8s.client import Client
from modeldeploy.model.meta import MANAGED_BY, MANAGER
from report import Figure, below, info, print_all
from workload import Stream, Timeline, children_of, create, create_namespaces, percentile, small

NAMESPACE = "bench-latency"
FLOOR_NAMESPACE = "bench-latency-floor"
# Between two applies: a user's pace, not a load test (the cold start is the load test).
PAUSE = 0.05


def by_hand(client: Client, name: str) -> float:
    """What the operator's first reconcile sends, sent straight: the floor of apply -> Deployment.

    When the POST returned: the status and the Deployment follow it here, as the operator's would.
    """
    body = small(name, FLOOR_NAMESPACE)
    created = client.request("POST", f"/apis/{API_VERSION}/namespaces/{FLOOR_NAMESPACE}/modeldeployments", body=body)
    posted = now()
    client.replace_status(created, {"phase": "Progressing", "observedGeneration": 1})
    body["metadata"]["uid"] = created["metadata"]["uid"]
    client.apply(children_of(body)[0])
    return posted


def by_operator(client: Client, name: str) -> float:
    create(client, small(name, NAMESPACE))
    return now()


# The stages of one sample's Timeline, between the timestamps the benchmark takes itself: started, the
# POST returned, the ModelDeployment seen ADDED on a watch, its first status seen, its Deployment seen ADDED.
STAGES = (
    "the create (POST round trip)",
    "watch delivery of the new object",
    "first status written (the operator's decision; by hand for the floor)",
    "Deployment applied and seen",
)


@dataclass
class Sample:
    name: str
    at: float  # seconds since the first sample started
    timeline: Timeline

    @property
    def latency(self) -> float:
        return self.timeline.total

    def stage(self, i: int) -> float:
        return self.timeline.stage(i)


def measure(client: Client, namespace: str, samples: int, act: Callable[[Client, str], float]) -> list[Sample]:
    """Each sample's timeline: apply -> Deployment, in stages (`act` returns when its POST returned)."""
    seen: dict[tuple[str, str], float] = {}
    arrived = threading.Condition()

    def recorder(kind: str) -> Callable[[str, dict[str, Any], float], None]:
        def on_event(type_: str, obj: dict[str, Any], at: float) -> None:
            if obj["metadata"]["namespace"] != namespace or type_ == "DELETED":
                return
            with arrived:
                name = obj["metadata"]["name"]
                seen.setdefault((kind, name), at)
                if kind == "ModelDeployment" and obj.get("status"):
                    seen.setdefault(("status", name), at)
                arrived.notify_all()

        return on_event

    out: list[Sample] = []
    with (
        Stream(client, "apps/v1", "Deployment", recorder("Deployment"), label_selector=f"{MANAGED_BY}={MANAGER}"),
        Stream(client, API_VERSION, "ModelDeployment", recorder("ModelDeployment")),
    ):
        first = now()
        for i in range(samples):
            name = f"lat-{i}"
            started = now()
            posted = act(client, name)
            with arrived:
                if not arrived.wait_for(lambda n=name: ("Deployment", n) in seen, timeout=30):  # type: ignore[misc]
                    raise AssertionError(f"no Deployment for {name} within 30 s")
                marks = [seen.get((kind, name), math.inf) for kind in ("ModelDeployment", "status", "Deployment")]
            out.append(Sample(name, started - first, Timeline.of(started, posted, *marks)))
            time.sleep(PAUSE)
    return out


def where_the_tail_goes(samples: list[Sample]) -> str:
    """The slowest 1%, stage by stage: which part of apply -> Deployment the outliers spend."""
    tail = sorted(samples, key=lambda s: -s.latency)[: max(1, len(samples) // 100)]
    parts = []
    for i, stage in enumerate(STAGES):
        parts.append(f"{stage} {sum(s.stage(i) for s in tail) / len(tail) * 1000:.0f} ms")
    return f"slowest {len(tail)}, mean of each stage: " + ", ".join(parts)


SLOW = 0.05  # seconds: what counts as a slow reconcile, queue wait or pause in the operator's own figures


def over(families: dict[str, list[PromSample]], name: str, labels: dict[str, str] | None = None) -> tuple[int, int]:
    """(observations, of them over SLOW) of one histogram of the operator's /metrics, summed over series."""
    total = slow = 0.0
    for sample in families.get(name, []):
        if labels and any(sample.labels.get(k) != v for k, v in labels.items()):
            continue
        if sample.name == f"{name}_count":
            total += sample.value
        elif sample.name == f"{name}_bucket" and float(sample.labels["le"]) == SLOW:
            slow -= sample.value
    return int(total), int(total + slow)


def inside_the_operator(address: str) -> str:
    """What the operator's own histograms say of its run: reconciles, queue waits and GC pauses over SLOW."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    families = {family.name: family.samples for family in text_string_to_metric_families(text)}
    ms = f"{SLOW * 1000:.0f} ms"
    reconciles, slow_reconciles = over(families, "modeldeploy_reconcile_duration_seconds")
    waits, slow_waits = over(families, "modeldeploy_workqueue_wait_duration_seconds")
    full, slow_full = over(families, "modeldeploy_gc_pause_seconds", {"generation": "2"})
    young, slow_young = over(families, "modeldeploy_gc_pause_seconds", {"generation": "0"})
    return (
        f"inside the operator: {reconciles} reconciles, {slow_reconciles} over {ms}; {waits} queue waits, "
        f"{slow_waits} over {ms}; {full} full garbage collections, {slow_full} over {ms}; {young} young ones, "
        f"{slow_young} over {ms}"
    )


def run(samples: int, workers: str = "4") -> list[Figure]:
    port = free_ports(1)[0]
    # The operator watches its own namespace only, so the floor's ModelDeployments are nobody's.
    args = ("--workers", workers, "--namespace", NAMESPACE, "--metrics-address", f"127.0.0.1:{port}")
    with bench_stack(*args, start_operator=False) as bench:
        client = Client.from_environment(str(bench.cluster.kubeconfig), pool_size=4)
        create_namespaces(client, [NAMESPACE, FLOOR_NAMESPACE])
        floor = measure(client, FLOOR_NAMESPACE, samples, by_hand)
        bench.operator.start()
        time.sleep(3)  # the operator's watches are established
        measured = measure(client, NAMESPACE, samples, by_operator)
        inside = inside_the_operator(f"127.0.0.1:{port}")
    ms, floor_ms = [s.latency * 1000 for s in measured], [s.latency * 1000 for s in floor]
    slowest = sorted(measured, key=lambda s: -s.latency)[:5]
    slow = ", ".join(
        f"{s.name} {s.latency * 1000:.0f} ms at {s.at:.0f}s ("
        + " + ".join(f"{s.stage(i) * 1000:.0f}" for i in range(len(STAGES)))
        + ")"
        for s in slowest
    )

    def judged(name: str, q: float | None, limit: float | None, detail: str = "") -> Figure:
        value, base = (max(ms), max(floor_ms)) if q is None else (percentile(ms, q), percentile(floor_ms, q))
        figure = info(name, value, "ms", detail) if limit is None else below(name, value, limit, "ms", detail)
        return replace(figure, floor=base)

    return [
        judged("apply -> Deployment p50", 0.5, None, f"n={len(ms)}, seen through a watch"),
        judged("apply -> Deployment p99", 0.99, 100, f"operator: {where_the_tail_goes(measured)}; {inside}"),
        info("apply -> Deployment p99 of the floor: where it goes", percentile(floor_ms, 0.99), "ms",
             f"floor: {where_the_tail_goes(floor)}"),
        judged("apply -> Deployment max", None, 500, f"slowest (stages in ms, as above): {slow}"),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=500)
    args = parser.parse_args()
    return 0 if print_all("apply -> children", run(args.samples)) else 1


if __name__ == "__main__":
    sys.exit(main())
