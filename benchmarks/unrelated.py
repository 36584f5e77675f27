"""Cost follows the operator's own objects, not the cluster's: the same 50 ModelDeployments on a cluster
alone and on one that also holds 5,000 unrelated Deployments and 5,000 unrelated Services.
Targets: time to Ready and operator RSS within 1.2x of the alone case (the floor here).

Then churn: the unrelated Deployments are updated at a bounded rate while the operator runs; its CPU
and its reconcile latency (a replicas change of one ModelDeployment until its Deployment has it)
are measured in a quiet window and in a churning one of the same length.

    .venv/bin/python benchmarks/unrelated.py [--unrelated 5000] [--count 50]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness import Bench, bench_stack, cpu_nodes, cpu_seconds, now, rss_mib
from modeldeploy.api.v1alpha1 import API_VERSION, KIND
from modeldeploy.k8s.client import Client, resource_path
from modeldeploy.model.meta import MANAGED_BY, MANAGER
from report import Figure, below, info, print_all, within
from workload import (
    ReadyClock,
    Stream,
    Timeline,
    apply_all,
    children_of,
    create_all,
    create_namespaces,
    deployment_ready,
    patch_spec,
    ready_condition,
    small,
    unrelated,
)

NAMESPACE = "bench-own"
OTHERS = [f"others-{i}" for i in range(10)]
CHURN_RATE = 20.0  # updates per second: a busy shared cluster, bounded so the API server keeps up
WINDOW = 30.0  # seconds of each of the quiet and the churning window
SAMPLES = 60  # replicas changes per window: the figure is a ratio of two ratios of medians, each needs enough
ROUNDS = 5  # batches of ModelDeployments timed, of which the median counts: one batch is a few noisy seconds
FLOOR_NAMESPACE = "bench-floor"


@dataclass
class Run:
    ready_seconds: float
    rss_mib: float
    floor_seconds: float
    over_floor: float  # the median, over the rounds, of the operator's time over the floor's
    quiet_cpu: float = 0.0
    churn_cpu: float = 0.0
    quiet: list[Timeline] = field(default_factory=list)  # see _reconcile_latency
    churn: list[Timeline] = field(default_factory=list)
    quiet_direct: list[Timeline] = field(default_factory=list)
    churn_direct: list[Timeline] = field(default_factory=list)
    churned: int = 0


def _fill(client: Client, count: int) -> None:
    """count unrelated Deployments and Services, and wait until the controllers have caught up with them."""
    started = now()
    create_namespaces(client, OTHERS)
    objects = [obj for i in range(count) for obj in unrelated(OTHERS[i % len(OTHERS)], i)]
    create_all(client, objects, writers=16)
    settled = ReadyClock(count, lambda d: (d.get("status") or {}).get("observedGeneration", 0) >= 1)
    with Stream(client, "apps/v1", "Deployment", settled, label_selector="team=someone-else"):
        settled.wait(600)
    print(f"  {count} unrelated Deployments and Services in {now() - started:.0f}s", flush=True)


PROBE = "probe"
# The writes a reconcile of a replicas change makes, made directly: the ModelDeployment's (the user's),
# its status, then the Deployment's. Stand-ins for the first two are Deployments nobody watches.
PROBE_WRITES = ("probe-spec", "probe-status", PROBE)


def _probe(client: Client) -> None:
    """Deployments of the benchmark's own: the same writes done directly are the floor of a reconcile."""
    for name in PROBE_WRITES:
        body = unrelated(NAMESPACE, 0)[0]
        body["metadata"] |= {"name": name, "labels": {MANAGED_BY: "bench" if name == PROBE else "nobody"}}
        client.request("POST", resource_path("apps/v1", "Deployment", NAMESPACE), body=body)


# Where a reconcile's latency goes: through the operator, the spec PATCH, then until its status
# write is seen, then until the Deployment has the change; made directly, the three PATCHes, then
# until the watch shows the last.
THROUGH_STAGES = ("spec PATCH", "to its status write", "to the Deployment")
DIRECT_STAGES = ("three PATCHes", "watch delivery")


def _reconcile_latency(
    client: Client, samples: int, window: float, names: list[str]
) -> tuple[list[Timeline], list[Timeline]]:
    """Timelines (seconds) until a Deployment shows a change: a ModelDeployment's replicas (each name
    once), through the operator; and, right after each, the same three writes made directly (the API
    server's share), in the stages THROUGH_STAGES and DIRECT_STAGES."""
    seen: dict[tuple[str, str], float] = {}
    arrived = threading.Condition()

    def on_event(type_: str, obj: dict[str, object], at: float) -> None:
        meta = obj["metadata"]
        mark = meta.get("annotations", {}).get("bench/mark") if meta["name"] == PROBE else obj["spec"]["replicas"]  # type: ignore[index,attr-defined]
        with arrived:
            seen.setdefault((meta["name"], str(mark)), at)  # type: ignore[index]
            arrived.notify_all()

    def on_status(type_: str, obj: dict[str, Any], at: float) -> None:
        meta, status = obj["metadata"], obj.get("status") or {}
        if obj["spec"].get("replicas") == 2 and status.get("observedGeneration") == meta.get("generation"):
            with arrived:
                seen.setdefault((meta["name"], "status"), at)

    def wait(key: tuple[str, str]) -> float:
        with arrived:
            if not arrived.wait_for(lambda: key in seen, timeout=30):
                raise AssertionError(f"{key} never seen")
            return seen[key]

    def through_one(name: str) -> Timeline:
        started = now()
        patch_spec(client, NAMESPACE, name, {"replicas": 2})
        posted = now()
        end = wait((name, "2"))
        return Timeline.of(started, posted, seen.get((name, "status"), math.inf), end)

    def direct_one(mark: str) -> Timeline:
        started = now()
        body = {"metadata": {"annotations": {"bench/mark": mark}}}
        for name in PROBE_WRITES:
            path = resource_path("apps/v1", "Deployment", NAMESPACE, name)
            client.request("PATCH", path, body=body, content_type="application/merge-patch+json")
        written = now()
        return Timeline.of(started, written, wait((PROBE, mark)))

    through, direct = [], []
    selector = f"{MANAGED_BY} in ({MANAGER},bench)"
    with (
        Stream(client, "apps/v1", "Deployment", on_event, label_selector=selector),
        Stream(client, API_VERSION, KIND, on_status),
    ):
        for i, name in enumerate(names[:samples]):
            started = now()
            through.append(through_one(name))
            direct.append(direct_one(f"{name}-{i}"))
            time.sleep(max(0.0, window / samples - (now() - started)))
    return through, direct


def _total_ms(timelines: list[Timeline]) -> list[float]:
    return [t.total * 1000 for t in timelines]


def _stages(names: tuple[str, ...], quiet: list[Timeline], churning: list[Timeline]) -> str:
    """Median ms of each stage, quiet -> churning."""
    median = statistics.median
    parts = []
    for i, name in enumerate(names):
        q = median(t.stage(i) * 1000 for t in quiet)
        c = median(t.stage(i) * 1000 for t in churning)
        parts.append(f"{name} {q:.0f} -> {c:.0f}")
    return ", ".join(parts)


def _churn(client: Client, count: int, seconds: float, stop: threading.Event, done: list[int]) -> None:
    """Unrelated Deployments' pod templates changed at CHURN_RATE: each is a new generation and a new ReplicaSet."""
    started, i = now(), 0
    while not stop.is_set() and now() - started < seconds:
        name, namespace = f"other-{i % count}", OTHERS[i % count % len(OTHERS)]
        body = {"spec": {"template": {"metadata": {"annotations": {"bench/churn": str(i)}}}}}
        client.request(
            "PATCH",
            resource_path("apps/v1", "Deployment", namespace, name),
            body=body,
            content_type="application/merge-patch+json",
        )
        i += 1
        time.sleep(max(0.0, started + i / CHURN_RATE - now()))
    done.append(i)


def one(count: int, others: int, churn: bool) -> Run:
    nodes = cpu_nodes((count * ROUNDS * 2 + count) // 100 + 1)
    with bench_stack("--workers", "4", start_operator=False, nodes=nodes) as bench:
        client = Client.from_environment(str(bench.cluster.kubeconfig), pool_size=16)
        create_namespaces(client, [NAMESPACE])
        if others:
            _fill(client, others)
        run = _ready(bench, client, count)
        if churn:
            _measure_churn(bench, client, count, others, run)
        return run


def _ready(bench: Bench, client: Client, count: int) -> Run:
    """ROUNDS batches of count new ModelDeployments, each timed until all are Ready, each followed by a batch
    of the same children applied directly (the floor); paired, so that both see the same load."""
    bench.operator.start()
    time.sleep(3)  # started, watches established: what is measured is the reconcile, not the start
    create_namespaces(client, [FLOOR_NAMESPACE])
    through, direct = [], []
    for r in range(ROUNDS):
        bodies = [small(_md(r, i), NAMESPACE) for i in range(count)]
        for body in bodies:
            body["metadata"]["labels"] = {"bench/round": str(r)}
        through.append(_timed_batch(client, api_version=API_VERSION, kind=KIND, selector=f"bench/round={r}",
                                    ready=ready_condition, write=lambda b=bodies: create_all(client, b),
                                    count=count))  # fmt: skip
        # Labelled so that the operator's watches do not see them.
        batch = [children_of(small(_md(r, i), FLOOR_NAMESPACE)) for i in range(count)]
        for obj in (obj for children in batch for obj in children):
            obj["metadata"]["labels"][MANAGED_BY] = f"bench-floor-{r}"
        direct.append(_timed_batch(client, api_version="apps/v1", kind="Deployment",
                                   selector=f"{MANAGED_BY}=bench-floor-{r}", ready=deployment_ready,
                                   write=lambda b=batch: apply_all(client, b), count=count))  # fmt: skip
    assert bench.operator.process is not None
    return Run(
        statistics.median(through),
        rss_mib(bench.operator.process.pid),
        statistics.median(direct),
        statistics.median(t / d for t, d in zip(through, direct, strict=True)),
    )


def _timed_batch(
    client: Client,
    *,
    api_version: str,
    kind: str,
    selector: str,
    ready: Callable[[dict[str, object]], bool],
    write: Callable[[], object],
    count: int,
) -> float:
    clock = ReadyClock(count, ready)  # type: ignore[arg-type]
    with Stream(client, api_version, kind, clock, label_selector=selector):
        started = now()
        write()
        clock.wait(300)
    times = clock.times(started)
    return times[-1] if len(times) == count else float("inf")


def _md(round_: int, i: int) -> str:
    return f"r{round_}-m{i}"


def _measure_churn(bench: Bench, client: Client, count: int, others: int, run: Run) -> None:
    assert bench.operator.process is not None
    pid, names = bench.operator.process.pid, [_md(r, i) for r in range(ROUNDS) for i in range(count)]
    before = cpu_seconds(pid)
    _probe(client)
    run.quiet, run.quiet_direct = _reconcile_latency(client, SAMPLES, WINDOW, names[:SAMPLES])
    run.quiet_cpu = cpu_seconds(pid) - before
    stop, done = threading.Event(), []
    churner = threading.Thread(target=_churn, args=(client, others, WINDOW * 2, stop, done))
    churner.start()
    time.sleep(2)  # the churn is under way
    before = cpu_seconds(pid)
    run.churn, run.churn_direct = _reconcile_latency(client, SAMPLES, WINDOW, names[SAMPLES:])
    run.churn_cpu = cpu_seconds(pid) - before
    stop.set()
    churner.join()
    run.churned = done[0]


def run(count: int, others: int) -> list[Figure]:
    alone = one(count, 0, churn=False)
    crowded = one(count, others, churn=True)
    where = f"{others:,} unrelated Deployments + {others:,} Services"
    median = statistics.median
    quiet_ms, churn_ms = _total_ms(crowded.quiet), _total_ms(crowded.churn)
    quiet_direct_ms, churn_direct_ms = _total_ms(crowded.quiet_direct), _total_ms(crowded.churn_direct)
    direct = (
        f"the same three writes made directly: {median(quiet_direct_ms):.0f} ms quiet, "
        f"{median(churn_direct_ms):.0f} ms churning; stages, median ms quiet -> churning: through the operator "
        f"{_stages(THROUGH_STAGES, crowded.quiet, crowded.churn)}; directly "
        f"{_stages(DIRECT_STAGES, crowded.quiet_direct, crowded.churn_direct)}"
    )
    return [
        within(
            f"{count} ModelDeployments Ready beside {where}: time over the floor",
            crowded.over_floor,
            alone.over_floor,
            ratio=1.2,
            unit="x",
            detail=f"median of {ROUNDS} paired batches: {crowded.ready_seconds:.1f}s there, {alone.ready_seconds:.1f}s "
            f"alone; the floor (the same children applied with no operator, on each cluster) "
            f"{crowded.floor_seconds:.1f}s there, {alone.floor_seconds:.1f}s alone",
        ),
        within("operator RSS, beside them", crowded.rss_mib, alone.rss_mib, ratio=1.2, unit="MiB"),
        below(
            f"operator CPU while {crowded.churned} unrelated updates ({CHURN_RATE:g}/s)",
            crowded.churn_cpu - crowded.quiet_cpu,
            0.5,
            "s",
            f"{crowded.churn_cpu:.2f} CPU-s in {WINDOW:g}s of churn against {crowded.quiet_cpu:.2f} in a quiet "
            f"{WINDOW:g}s (the reconciles measured run in both)",
        ),
        within(
            "reconcile latency during the churn: over its writes made directly",
            median(churn_ms) / median(churn_direct_ms),
            median(quiet_ms) / median(quiet_direct_ms),
            ratio=1.2,
            unit="x",
            detail=f"replicas change -> Deployment, median of {SAMPLES}: {median(churn_ms):.0f} ms churning, "
            f"{median(quiet_ms):.0f} ms quiet (the floor); {direct}",
        ),
        info(
            "reconcile latency during the churn, max",
            max(churn_ms),
            "ms",
            f"quiet max {max(quiet_ms):.0f} ms",
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unrelated", type=int, default=5000)
    parser.add_argument("--count", type=int, default=50)
    args = parser.parse_args()
    return 0 if print_all("unrelated objects", run(args.count, args.unrelated)) else 1


if __name__ == "__main__":
    sys.exit(main())
