"""apply -> children: a ModelDeployment is created through the API; the clock stops when a watch of
Deployments sees the operator's Deployment for it. Target: p99 < 100 ms, max < 500 ms.

The floor, measured first on the same cluster: the same API work with no operator, done by the
benchmark itself (create the ModelDeployment, write its status, apply its Deployment), timed to the
same watch event. What the operator adds is the difference.

    .venv/bin/python benchmarks/latency.py [--samples 500]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from harness import bench_stack, now
from modeldeploy.api.v1alpha1 import API_VERSION
from modeldeploy.k8s.client import Client
from modeldeploy.model.meta import MANAGED_BY, MANAGER
from report import Figure, below, info, print_all
from workload import Stream, children_of, create, create_namespaces, percentile, small

NAMESPACE = "bench-latency"
FLOOR_NAMESPACE = "bench-latency-floor"
# Between two applies: a user's pace, not a load test (the cold start is the load test).
PAUSE = 0.05


def by_hand(client: Client, name: str) -> None:
    """What the operator's first reconcile sends, sent straight: the floor of apply -> Deployment."""
    body = small(name, FLOOR_NAMESPACE)
    created = client.request("POST", f"/apis/{API_VERSION}/namespaces/{FLOOR_NAMESPACE}/modeldeployments", body=body)
    client.replace_status(created, {"phase": "Progressing", "observedGeneration": 1})
    body["metadata"]["uid"] = created["metadata"]["uid"]
    client.apply(children_of(body)[0])


def measure(
    client: Client, namespace: str, samples: int, act: Callable[[Client, str], None]
) -> tuple[list[float], list[tuple[float, str, float]]]:
    """Latencies in seconds, and the slowest samples as (seconds since the first, name, latency)."""
    seen: dict[str, float] = {}
    arrived = threading.Condition()

    def on_event(type_: str, obj: dict[str, object], at: float) -> None:
        if type_ == "ADDED" and obj["metadata"]["namespace"] == namespace:  # type: ignore[index]
            with arrived:
                seen.setdefault(obj["metadata"]["name"], at)  # type: ignore[index]
                arrived.notify_all()

    latencies: list[float] = []
    when: list[tuple[float, str, float]] = []
    with Stream(client, "apps/v1", "Deployment", on_event, label_selector=f"{MANAGED_BY}={MANAGER}"):
        first = now()
        for i in range(samples):
            name = f"lat-{i}"
            started = now()
            act(client, name)
            with arrived:
                if not arrived.wait_for(lambda n=name: n in seen, timeout=30):  # type: ignore[misc]
                    raise AssertionError(f"no Deployment for {name} within 30 s")
            latencies.append(seen[name] - started)
            when.append((started - first, name, seen[name] - started))
            time.sleep(PAUSE)
    return latencies, sorted(when, key=lambda w: -w[2])[:5]


def run(samples: int, workers: str = "4") -> list[Figure]:
    # The operator watches its own namespace only, so the floor's ModelDeployments are nobody's.
    with bench_stack("--workers", workers, "--namespace", NAMESPACE, start_operator=False) as bench:
        client = Client.from_environment(str(bench.cluster.kubeconfig), pool_size=4)
        create_namespaces(client, [NAMESPACE, FLOOR_NAMESPACE])
        floor, _ = measure(client, FLOOR_NAMESPACE, samples, by_hand)
        bench.operator.start()
        time.sleep(3)  # the operator's watches are established
        lat, slowest = measure(client, NAMESPACE, samples, lambda c, name: create(c, small(name, NAMESPACE)))
    ms, floor_ms = [x * 1000 for x in lat], [x * 1000 for x in floor]
    slow = ", ".join(f"{name} {ms:.0f} ms at {at:.0f}s" for at, name, ms in ((a, n, x * 1000) for a, n, x in slowest))

    def judged(name: str, q: float | None, limit: float | None, detail: str = "") -> Figure:
        value, base = (max(ms), max(floor_ms)) if q is None else (percentile(ms, q), percentile(floor_ms, q))
        figure = info(name, value, "ms", detail) if limit is None else below(name, value, limit, "ms", detail)
        return replace(figure, floor=base)

    return [
        judged("apply -> Deployment p50", 0.5, None, f"n={len(ms)}, seen through a watch"),
        judged("apply -> Deployment p99", 0.99, 100),
        judged("apply -> Deployment max", None, 500, f"slowest: {slow}"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=500)
    args = parser.parse_args()
    return 0 if print_all("apply -> children", run(args.samples)) else 1


if __name__ == "__main__":
    sys.exit(main())
