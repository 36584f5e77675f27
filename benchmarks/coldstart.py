"""Cold start: N ModelDeployments (default 1,000) exist before the operator starts; the clock runs from
its start until every one reports Ready. Targets: within 1.15x of the floor, the first Ready within a
few seconds, peak RSS under 250 MB; the API requests per ModelDeployment are counted.

The floor, on a fresh cluster of the same size in the same run: the very children the operator
would make, applied straight from 8 threads, timed until every Deployment has its pods Ready.

    .venv/bin/python benchmarks/coldstart.py [--count 1000]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter

from harness import MachineCpu, bench_stack, cpu_nodes, cpu_seconds, now, peak_rss_mib, requests_logged
from modeldeploy.api.v1alpha1 import API_VERSION, KIND
from modeldeploy.k8s.client import Client
from modeldeploy.model.meta import MANAGED_BY, MANAGER
from report import Figure, below, info, print_all, within
from workload import (
    ReadyClock,
    Stream,
    apply_all,
    children_of,
    create_all,
    create_namespaces,
    deployment_ready,
    ready_condition,
    small,
)

NAMESPACES = 10
# A few seconds: the operator's own start (Python, kopf, the first listing) and one reconcile.
FIRST_READY_LIMIT = 5.0
TIMEOUT = 900.0


def bodies(count: int, prefix: str) -> list[dict[str, object]]:
    return [small(f"m{i}", f"{prefix}-{i % NAMESPACES}") for i in range(count)]


def floor(count: int, workers: str, cpu: MachineCpu) -> list[float]:
    """Seconds until each Deployment was Ready, the children applied with no operator."""
    with bench_stack("--workers", workers, start_operator=False, nodes=cpu_nodes(count // 100 + 1)) as bench:
        client = Client.from_environment(str(bench.cluster.kubeconfig), pool_size=16)
        create_namespaces(client, [f"floor-{i}" for i in range(NAMESPACES)])
        objects = [children_of(body) for body in bodies(count, "floor")]
        clock = ReadyClock(count, deployment_ready)
        with Stream(client, "apps/v1", "Deployment", clock, label_selector=f"{MANAGED_BY}={MANAGER}"), cpu:
            started = now()
            apply_all(client, objects)
            clock.wait(TIMEOUT)
        return clock.times(started)


def with_operator(count: int, workers: str, cpu: MachineCpu) -> tuple[list[float], float, Counter[str], float, float]:
    """Seconds until each ModelDeployment was Ready from the operator's start; peak RSS; requests; reconciles;
    the operator's CPU seconds."""
    with bench_stack("--workers", workers, start_operator=False, nodes=cpu_nodes(count // 100 + 1)) as bench:
        client = Client.from_environment(str(bench.cluster.kubeconfig), pool_size=16)
        create_namespaces(client, [f"scale-{i}" for i in range(NAMESPACES)])
        create_all(client, bodies(count, "scale"))
        clock = ReadyClock(count, ready_condition)
        with Stream(client, API_VERSION, KIND, clock), cpu:
            started = now()
            bench.operator.start()
            assert bench.operator.process is not None
            pid = bench.operator.process.pid
            peak = 0.0
            while not clock.wait(1) and now() - started < TIMEOUT:
                peak = max(peak, peak_rss_mib(pid))
            peak = max(peak, peak_rss_mib(pid))
            used = cpu_seconds(pid)
        bench.operator.stop()
        logged = requests_logged(bench.operator.logs())
        reconciles = _reconciles(bench.operator.logs())
        return clock.times(started), peak, logged[-1] if logged else Counter(), reconciles, used


def _reconciles(text: str) -> float:
    found = re.findall(r"stopping after (\d+) reconciles", text)
    return float(found[-1]) if found else float("nan")


def run(count: int, workers: str = "4") -> list[Figure]:
    floor_cpu, operator_cpu = MachineCpu(), MachineCpu()
    base = floor(count, workers, floor_cpu)
    times, peak, sent, reconciles, used = with_operator(count, workers, operator_cpu)
    if len(times) < count or len(base) < count:
        return [Figure("cold start: ModelDeployments Ready", len(times), "", f"all {count}", False, len(base))]
    per_md = sum(sent.values()) / count
    breakdown = ", ".join(f"{what} {n / count:.2f}" for what, n in sent.most_common())
    marks = "; ".join(f"{int(q * 100)}% at {times[int(q * count) - 1]:.1f}s" for q in (0.1, 0.5, 0.9))
    marks += f"; machine CPU busy {operator_cpu.busy:.0%} (floor {floor_cpu.busy:.0%})"
    # Where the time over the floor goes, when the machine is CPU-bound in both runs: the CPU-seconds the
    # run took beyond the floor's, less the operator's own, were spent by the control plane on the
    # requests the floor does not make (it applies the same children, nothing else).
    cores = os.cpu_count() or 1
    extra = times[-1] * operator_cpu.busy * cores - base[-1] * floor_cpu.busy * cores
    beyond_floor = sum(sent.values()) - count * len(children_of(small("m", "x")))
    breakdown_of_time = (
        f"{extra:.0f} CPU-s beyond the floor's: the operator's own {used:.0f}, the control plane's "
        f"{extra - used:.0f} for the {beyond_floor:.0f} requests the floor does not make "
        f"({(extra - used) / max(beyond_floor, 1) * 1000:.0f} ms each)"
    )
    return [
        within(
            f"cold start: {count} ModelDeployments all Ready", times[-1], base[-1], ratio=1.15, unit="s", detail=marks
        ),
        info("cold start: where the time over the floor goes", extra, "CPU-s", breakdown_of_time),
        Figure(
            "cold start: first Ready",
            times[0],
            "s",
            f"< {FIRST_READY_LIMIT:g} s",
            times[0] < FIRST_READY_LIMIT,
            base[0],
        ),
        below("cold start: operator peak RSS", peak, 250 * 1e6 / 2**20, "MiB", shown="< 250 MB"),
        info("cold start: API requests per ModelDeployment", per_md, "", breakdown),
        info("cold start: reconciles per ModelDeployment", reconciles / count, ""),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--workers", default="4", help="the operator's reconcile workers")
    args = parser.parse_args()
    return 0 if print_all("cold start", run(args.count, args.workers)) else 1


if __name__ == "__main__":
    sys.exit(main())
