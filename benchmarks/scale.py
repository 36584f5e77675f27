"""Reconcile latency and scale on the local cluster.

1. apply -> children: a ModelDeployment is created through the API; the clock stops when the
   watch of Deployments sees its Deployment. Target: p99 under 300 ms.
2. cold start at scale: N ModelDeployments (default 1,000) exist before the operator starts;
   the clock runs from its start until every one is Ready. Target: under 60 s, with the
   operator's memory (peak RSS) under 250 MB.

    .venv/bin/python benchmarks/scale.py [--latency-samples 100] [--count 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from harness import Bench, bench_stack, cpu_nodes, now, peak_rss_mib, rss_mib
from localcluster.kit import sample, wait_for
from modeldeploy.api.v1alpha1 import API_VERSION, KIND
from modeldeploy.k8s.client import Client, resource_path


def small(name: str, namespace: str) -> dict[str, Any]:
    body = sample(name, namespace, replicas=1)
    body["spec"]["resources"] = {"requests": {"cpu": "10m", "memory": "16Mi"}}
    return body


def create_namespace(client: Client, name: str) -> None:
    client.request(
        "POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    wait_for(
        lambda: client.get("v1", "ServiceAccount", name, "default") is not None, timeout=30, what=f"{name}/default"
    )


def create(client: Client, body: dict[str, Any]) -> None:
    client.request("POST", resource_path(API_VERSION, KIND, body["metadata"]["namespace"]), body=body)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def apply_latency(bench: Bench, client: Client, samples: int) -> list[float]:
    """Create ModelDeployments one at a time; time until the operator's Deployment appears (watch)."""
    namespace = "bench-latency"
    create_namespace(client, namespace)
    seen: dict[str, float] = {}
    cond = threading.Condition()
    stop = threading.Event()

    def watch() -> None:
        from kubernetes import watch as k8s_watch
        from kubernetes.client import AppsV1Api

        apps = AppsV1Api(client.api)
        w = k8s_watch.Watch()
        for event in w.stream(apps.list_namespaced_deployment, namespace, timeout_seconds=600):
            if event["type"] == "ADDED":
                with cond:
                    seen.setdefault(event["object"].metadata.name, now())
                    cond.notify_all()
            if stop.is_set():
                w.stop()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(1)  # the watch is established
    latencies = []
    for i in range(samples):
        name = f"lat-{i}"
        started = now()
        create(client, small(name, namespace))
        with cond:
            if not cond.wait_for(lambda n=name: n in seen, timeout=30):  # type: ignore[misc]
                raise AssertionError(f"no Deployment for {name} within 30 s")
        latencies.append(seen[name] - started)
        time.sleep(0.05)
    stop.set()
    return latencies


def cold_start(bench: Bench, client: Client, count: int, namespaces: int = 10) -> dict[str, float]:
    names = [f"scale-{i % namespaces}" for i in range(namespaces)]
    for ns in names:
        create_namespace(client, ns)
    bodies = [small(f"m{i}", names[i % namespaces]) for i in range(count)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda b: create(client, b), bodies))
    print(f"  {count} ModelDeployments created; starting the operator", flush=True)

    operator = bench.operator
    ready_at: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        """Record when each ModelDeployment first reports Ready: a watch costs the API server far less than polling."""
        from kubernetes import watch as k8s_watch
        from kubernetes.client import CustomObjectsApi

        api = CustomObjectsApi(client.api)
        w = k8s_watch.Watch()
        for event in w.stream(
            api.list_cluster_custom_object, "modeldeploy.dev", "v1alpha1", "modeldeployments", timeout_seconds=900
        ):
            obj = event["object"]
            conditions = obj.get("status", {}).get("conditions", [])
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                ready_at.setdefault(f"{obj['metadata']['namespace']}/{obj['metadata']['name']}", now())
            if len(ready_at) >= count:
                done.set()
                w.stop()

    threading.Thread(target=watch, daemon=True).start()
    time.sleep(2)  # the watch's initial listing is done
    started = now()
    operator.start()
    assert operator.process is not None
    pid = operator.process.pid
    peak = 0.0
    while not done.wait(1) and now() - started < 600:
        peak = max(peak, peak_rss_mib(pid))
    peak = max(peak, peak_rss_mib(pid))
    times = sorted(t - started for t in ready_at.values())
    for mark in (0.1, 0.5, 0.9):
        index = int(mark * count) - 1
        print(f"  {int(mark * 100)}% Ready after {times[index]:.1f}s" if index < len(times) else "", flush=True)
    return {
        "seconds": times[-1] if times else float("nan"),
        "ready": len(times),
        "peak_rss_mib": peak,
        "rss_after_mib": rss_mib(pid),
    }


def cluster_floor(bench: Bench, client: Client, count: int, namespaces: int = 10) -> float:
    """The same children, applied straight to the API server with no operator: how fast this cluster goes.

    Renders what the operator would for each ModelDeployment, applies it with server-side apply
    from 8 threads, and times until every Deployment has its pod Ready.
    """
    from modeldeploy.api.v1alpha1 import ModelDeployment
    from modeldeploy.k8s.children import render_children
    from modeldeploy.model.observed import Observed
    from modeldeploy.rollout.plan import plan

    names = [f"floor-{i}" for i in range(namespaces)]
    for ns in names:
        create_namespace(client, ns)
    objects = []
    for i in range(count):
        model = ModelDeployment.model_validate(small(f"m{i}", names[i % namespaces]))
        result = plan(model, Observed(now=datetime.now(UTC)))
        objects.append(render_children(model, result.stable, result.canary))
    ready: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        from kubernetes import watch as k8s_watch
        from kubernetes.client import AppsV1Api

        w = k8s_watch.Watch()
        for event in w.stream(AppsV1Api(client.api).list_deployment_for_all_namespaces, timeout_seconds=900):
            dep = event["object"]
            if dep.metadata.namespace.startswith("floor-") and (dep.status.ready_replicas or 0) >= 1:
                ready.add(f"{dep.metadata.namespace}/{dep.metadata.name}")
            if len(ready) >= count:
                done.set()
                w.stop()

    threading.Thread(target=watch, daemon=True).start()
    time.sleep(2)
    started = now()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda children: [client.apply(o) for o in children], objects))
    done.wait(600)
    return now() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--workers", default="4", help="the operator's reconcile workers")
    args = parser.parse_args()
    ok = True
    with bench_stack("--workers", args.workers) as bench:
        client = Client.from_environment(str(bench.cluster.kubeconfig), pool_size=16)
        print("apply -> children (Deployment created), through a watch:")
        lat = apply_latency(bench, client, args.latency_samples)
        p50, p99 = statistics.median(lat) * 1000, percentile(lat, 0.99) * 1000
        print(f"  n={len(lat)} p50={p50:.0f}ms p99={p99:.0f}ms max={max(lat) * 1000:.0f}ms  (target p99 < 300ms)")
        ok &= p99 < 300
    # 110 pods per node, as kubelets default to: enough nodes for one pod per ModelDeployment.
    nodes = cpu_nodes(args.count // 100 + 1)
    with bench_stack("--workers", args.workers, start_operator=False, nodes=nodes) as bench:
        client = Client.from_environment(str(bench.cluster.kubeconfig), pool_size=16)
        print(f"cold start with {args.count} ModelDeployments:")
        result = cold_start(bench, client, args.count)
        print(
            f"  all {int(result['ready'])} Ready after {result['seconds']:.1f}s (target < 60s); "
            f"operator peak RSS {result['peak_rss_mib']:.0f} MiB, {result['rss_after_mib']:.0f} MiB after "
            "(target < 250 MB)"
        )
        ok &= result["ready"] == args.count and result["seconds"] < 60 and result["peak_rss_mib"] < 250
    with bench_stack(start_operator=False, nodes=nodes) as bench:
        client = Client.from_environment(str(bench.cluster.kubeconfig), pool_size=16)
        floor = cluster_floor(bench, client, args.count)
        print(
            f"  floor: the same {args.count} Deployments and Services applied with no operator are all Ready "
            f"after {floor:.1f}s on this cluster; the operator adds {result['seconds'] - floor:.1f}s"
        )
    print("targets met" if ok else "targets NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
