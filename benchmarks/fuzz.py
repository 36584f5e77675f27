"""Fuzz the API and the operator: 1,000 specs (hypothesis) against a real API server and the operator.

Prints the figures issue 10 asks for: cases, refused at admission (each with the field named), explained
by a condition (admitted, then reconciled to a status with conditions), and tracebacks in the operator's
log; exits non-zero when any spec was refused without its field named, left unexplained, or made a
traceback. Runs its own cluster (default .cluster-fuzz/), never another one's.

    .venv/bin/python benchmarks/fuzz.py [--cases 1000] [--seed N] [--dir .cluster-fuzz]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from pathlib import Path

import harness
from modeldeploy.k8s.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "cluster"))
from fuzzing import Fuzzer, drive, quota


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=random.randrange(2**32))
    parser.add_argument("--dir", type=Path, default=harness.ROOT / ".cluster-fuzz")
    args = parser.parse_args()
    # bench_stack runs its cluster in harness.BENCH_DIR: this benchmark's own directory instead.
    harness.BENCH_DIR = args.dir.resolve()
    with harness.bench_stack("--workers", "4", "--resync-seconds", "20") as bench:
        namespace = f"fuzz-{uuid.uuid4().hex[:6]}"
        bench.cluster.kubectl("create", "namespace", namespace)
        bench.cluster.apply(quota(namespace))
        client = Client.from_environment(str(bench.cluster.kubeconfig))
        fuzzer = Fuzzer(client, namespace, lambda: len(bench.operator.tracebacks()))
        started = time.monotonic()
        figures = drive(fuzzer, args.cases, seed=args.seed)
        print(f"fuzz (seed {args.seed}, {time.monotonic() - started:.0f}s): {figures.line()}")
        print(f"explained by: {json.dumps(dict(sorted(figures.reasons.items(), key=lambda kv: -kv[1])))}")
        for spec, message in figures.unnamed[:5]:
            print(f"refused without the field named: {json.dumps(spec)[:300]}\n  {message[:300]}")
        for spec, found in figures.unexplained[:5]:
            print(f"unexplained: {json.dumps(spec)[:300]}\n  status: {json.dumps((found or {}).get('status'))[:300]}")
        if figures.tracebacks:
            print("\n".join(bench.operator.tracebacks()[-figures.tracebacks :][:3]))
        return 0 if not (figures.unnamed or figures.unexplained or figures.tracebacks) else 1


if __name__ == "__main__":
    sys.exit(main())
