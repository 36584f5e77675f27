"""How fast a bad canary is caught: from its first bad requests to traffic back on stable.

Target (docs/DESIGN): within interval x failureLimit + 10 s.

Each trial: a ModelDeployment on the local cluster judged by a real Prometheus that scrapes
two real `bentoml serve` processes, the stable revision (healthy) and the canary revision
(IRIS_FAULT_RATE=0.5), both under a steady load. The clock starts when Prometheus has
scraped the canary for the first time (its first bad requests are on record) and stops when
the status says the rollback is done: the canary is gone and all traffic is on stable.

    .venv/bin/python benchmarks/rollback.py [--trials interval:failureLimit ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from harness import Bench, bench_stack, now
from localcluster.kit import condition, sample, wait_for
from localcluster.loadgen import Load
from localcluster.prometheus import Prometheus
from localcluster.realstack import BentoServer, BentoStore, serving
from modeldeploy.api.duration import parse_duration

V2 = {"image": "registry.example.com/iris-classifier:v2"}


def md_with_analysis(namespace: str, prometheus: Prometheus, interval: str, limit: int, **extra: Any) -> dict[str, Any]:
    rollout = {
        "steps": [{"weight": 50, "pause": "10m"}],
        "analysis": {
            "prometheus": {"address": prometheus.url},
            "interval": interval,
            "failureLimit": limit,
            "minRequests": 10,
            "maxErrorRate": 0.05,
        },
    }
    return sample("iris", namespace, rollout=rollout, **extra)


def trial(
    bench: Bench, prometheus: Prometheus, *, stable: BentoServer, canary: BentoServer, interval: str, limit: int
) -> dict[str, float]:
    cluster = bench.cluster
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    wait_for(
        lambda: cluster.kubectl("get", "sa", "default", "-n", namespace, check=False).returncode == 0,
        timeout=30,
        what="default ServiceAccount",
    )
    cluster.apply(md_with_analysis(namespace, prometheus, interval, limit))

    def get() -> dict[str, Any]:
        return cluster.get("modeldeployment", "iris", namespace) or {}

    v1 = wait_for(lambda: condition(get(), "Ready").get("status") == "True" and get(), timeout=60, what="v1 Ready")
    stable_rev = v1["status"]["stable"]["revision"]
    prometheus.scrape_revisions(namespace, {stable_rev: stable.address}, wait=False)

    cluster.apply(md_with_analysis(namespace, prometheus, interval, limit, bento=V2))
    canary_rev = wait_for(lambda: get().get("status", {}).get("canary", {}).get("revision"), timeout=60, what="canary")
    prometheus.scrape_revisions(namespace, {stable_rev: stable.address, canary_rev: canary.address}, timeout=30)
    first_bad = now()
    done = wait_for(
        lambda: (s := get().get("status", {})) and "canary" not in s and s.get("failed") and s,
        timeout=parse_duration(interval).total_seconds() * (limit + 4) + 60,
        what="the rollback",
        interval=0.1,
    )
    elapsed = now() - first_bad
    assert done["failed"]["reason"] == "AnalysisFailed", done["failed"]
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    bound = parse_duration(interval).total_seconds() * limit + 10
    return {"elapsed": elapsed, "bound": bound}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", nargs="*", default=["5s:2", "10s:2", "10s:3", "15s:2"])
    args = parser.parse_args()
    trials = [(t.split(":")[0], int(t.split(":")[1])) for t in args.trials]
    with tempfile.TemporaryDirectory(prefix="bench-rollback-") as tmp:
        root = Path(tmp)
        store = BentoStore(root / "bentos")
        v1, v2 = store.bento("v1"), store.bento("v2")
        stable = BentoServer(v1, root / "stable")
        canary = BentoServer(v2, root / "canary", {"IRIS_FAULT_RATE": "0.5"})
        with (
            bench_stack("--workers", "4") as bench,
            Prometheus(root / "prometheus") as prometheus,
            serving([stable, canary]),
            Load([stable.url, canary.url], rate=20, duration=3600),
        ):
            print(f"{'interval':>8} {'failureLimit':>12} {'caught in':>10} {'bound':>7}  within")
            results = []
            for interval, limit in trials:
                r = trial(bench, prometheus, stable=stable, canary=canary, interval=interval, limit=limit)
                results.append(r)
                ok = "yes" if r["elapsed"] <= r["bound"] else "NO"
                print(f"{interval:>8} {limit:>12} {r['elapsed']:>9.1f}s {r['bound']:>6.0f}s  {ok}", flush=True)
                time.sleep(1)
            slack = [r["bound"] - r["elapsed"] for r in results]
            print(f"every trial within its bound: {all(s >= 0 for s in slack)}; "
                  f"margin min {min(slack):.1f}s, median {statistics.median(slack):.1f}s")  # fmt: skip
            return 0 if all(s >= 0 for s in slack) else 1


if __name__ == "__main__":
    sys.exit(main())
