"""Every scale benchmark in one run, each figure against its target and the floor measured in the same run;
exits non-zero when a target is missed. `make bench` runs this, then benchmarks/rollback.py.

    .venv/bin/python benchmarks/bench.py [--only latency coldstart unrelated steady] [--cold-count 1000] ...

Each benchmark has a cluster of its own (fresh etcd); they run one after the other, never together.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import coldstart
import latency
import steady
import unrelated
from report import Figure, print_all


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=["latency", "coldstart", "unrelated", "steady"])
    parser.add_argument("--latency-samples", type=int, default=500)
    parser.add_argument("--cold-count", type=int, default=1000)
    parser.add_argument("--unrelated", type=int, default=5000)
    parser.add_argument("--steady-count", type=int, default=10000)
    args = parser.parse_args()
    benchmarks: dict[str, tuple[str, Callable[[], list[Figure]]]] = {
        "latency": ("apply -> children", lambda: latency.run(args.latency_samples)),
        # As many reconcile workers as the floor has writers.
        "coldstart": ("cold start", lambda: coldstart.run(args.cold_count, workers="8")),
        "unrelated": ("objects the operator does not own", lambda: unrelated.run(50, args.unrelated)),
        "steady": ("steady at scale", lambda: steady.run(args.steady_count, 100)),
    }
    results: list[tuple[str, list[Figure]]] = []
    for name in args.only:
        title, bench = benchmarks[name]
        started = time.monotonic()
        print(f"==> {title}", flush=True)
        figures = bench()
        print_all(f"{title} ({time.monotonic() - started:.0f}s)", figures)
        results.append((title, figures))
    print("\n==> every figure of this run")
    verdicts = [print_all(title, figures) for title, figures in results]  # every section printed, even after a miss
    ok = all(verdicts)
    print("targets met" if ok else "targets NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
