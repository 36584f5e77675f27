"""10,000 ModelDeployments steady on the local cluster (one in ten with a pod, the rest at replicas 0, on
kwok nodes). Targets: operator RSS under 1 GB; a spec change of one (its replicas) reflected in its
Deployment with p99 under 1 s while the others sit still; the periodic resync's API requests per
ModelDeployment, from the operator's own count of a whole pass.

    .venv/bin/python benchmarks/steady.py [--count 10000] [--samples 100]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections import Counter

from harness import MachineCpu, bench_stack, cpu_nodes, cpu_seconds, now, peak_rss_mib, requests_logged, rss_mib
from modeldeploy.api.v1alpha1 import API_VERSION, KIND
from modeldeploy.k8s.client import Client
from modeldeploy.model.meta import MANAGED_BY, MANAGER
from report import Figure, below, info, print_all
from workload import ReadyClock, Stream, create_all, create_namespaces, patch_spec, percentile, settled, small

NAMESPACES = 20
WITH_POD = 10  # one ModelDeployment in WITH_POD has a pod
# Two passes cover the reconciler's full re-apply period (300 s, which puts back changes made by hand), so
# their average is what a pass costs in the long run; the default period is 300 s.
RESYNC_SECONDS = 150
# Enough reconcile workers that creating them all does not take the whole benchmark; a steady state needs few.
WORKERS = "16"
RESYNC_LINE = "resync of"


def _name(i: int) -> tuple[str, str]:
    return f"steady-{i % NAMESPACES}", f"m{i}"


def _latency(client: Client, count: int, samples: int) -> list[float]:
    """Scale one ModelDeployment without a pod to 1 at a time; ms until a watch sees its Deployment so."""
    seen: dict[tuple[str, str], float] = {}
    arrived = threading.Condition()

    def on_event(type_: str, obj: dict[str, object], at: float) -> None:
        meta, spec = obj["metadata"], obj["spec"]
        if spec.get("replicas") == 1:  # type: ignore[attr-defined]
            with arrived:
                seen.setdefault((meta["namespace"], meta["name"]), at)  # type: ignore[index]
                arrived.notify_all()

    out = []
    # Spread over the namespaces and the whole range, none of them with a pod yet.
    picks = [i for i in range(1, count, max(1, count // samples)) if i % WITH_POD][:samples]
    with Stream(client, "apps/v1", "Deployment", on_event, label_selector=f"{MANAGED_BY}={MANAGER}"):
        for i in picks:
            key = _name(i)
            started = now()
            patch_spec(client, *key, {"replicas": 1})
            with arrived:
                if not arrived.wait_for(lambda k=key: k in seen, timeout=30):  # type: ignore[misc]
                    raise AssertionError(f"{key} never got its replica")
            out.append((seen[key] - started) * 1000)
            time.sleep(0.2)
    return out


def run(count: int, samples: int, resync_seconds: int = RESYNC_SECONDS) -> list[Figure]:
    nodes = cpu_nodes(count // WITH_POD // 100 + 2)
    resync = str(resync_seconds)
    with bench_stack("--workers", WORKERS, "--resync-seconds", resync, start_operator=False, nodes=nodes) as bench:
        client = Client.from_environment(str(bench.cluster.kubeconfig), pool_size=16)
        create_namespaces(client, [f"steady-{i}" for i in range(NAMESPACES)])
        bench.operator.start()
        assert bench.operator.process is not None
        pid = bench.operator.process.pid
        time.sleep(3)
        rss_empty = rss_mib(pid)  # started, watching, holding nothing yet
        clock = ReadyClock(count, settled)
        with Stream(client, API_VERSION, KIND, clock):
            started = now()
            create_all(
                client,
                [small(n, ns, replicas=int(i % WITH_POD == 0)) for i, (ns, n) in enumerate(map(_name, range(count)))],
            )
            print(f"  {count} ModelDeployments created in {now() - started:.0f}s", flush=True)
            clock.wait(3600)
        print(f"  {len(clock.at)} rolled out after {now() - started:.0f}s", flush=True)
        rss_steady = rss_mib(pid)
        lat = _latency(client, count, samples)
        passes = len(requests_logged(bench.operator.logs(), RESYNC_LINE))
        # The next pass may overlap the changes just made: the two after it are the steady ones.
        while len(requests_logged(bench.operator.logs(), RESYNC_LINE)) < passes + 1:
            time.sleep(2)
        with MachineCpu() as cpu:
            cpu_before, pass_started = cpu_seconds(pid), now()
            while len(requests_logged(bench.operator.logs(), RESYNC_LINE)) < passes + 3:
                time.sleep(2)
            cpu_used = cpu_seconds(pid) - cpu_before
        window = now() - pass_started
        sent: Counter[str] = sum(requests_logged(bench.operator.logs(), RESYNC_LINE)[passes + 1 :], Counter())
        rss_after, peak = rss_mib(pid), peak_rss_mib(pid)
    per_md = sum(sent.values()) / count / 2
    breakdown = ", ".join(f"{what} {n}" for what, n in sent.most_common()) or "none"
    rss = max(rss_steady, rss_after)
    each = f"{(rss - rss_empty) / count * 1024:.0f} KiB per ModelDeployment over the {rss_empty:.0f} MiB of none"
    return [
        below(f"{count} ModelDeployments steady: operator RSS", rss, 1e9 / 2**20, "MiB",
              f"{each}; peak {peak:.0f} MiB while they were created", shown="< 1 GB"),
        info("spec change -> Deployment p50", statistics.median(lat), "ms",
             f"n={len(lat)}, replicas 0 -> 1, seen through a watch"),
        below("spec change -> Deployment p99", percentile(lat, 0.99), 1000, "ms", f"max {max(lat):.0f} ms"),
        info(f"resync ({resync_seconds}s): API requests per ModelDeployment", per_md, "",
             f"two whole passes of {count}: {breakdown}"),
        info("resync: operator CPU", cpu_used / window, "cores",
             f"{cpu_used:.0f} CPU-s in {window:.0f}s; machine busy {cpu.busy:.0%}"),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--resync-seconds", type=int, default=RESYNC_SECONDS)
    args = parser.parse_args()
    return 0 if print_all("steady", run(args.count, args.samples, args.resync_seconds)) else 1


if __name__ == "__main__":
    sys.exit(main())
