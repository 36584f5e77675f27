"""Chaos: the leading operator SIGKILLed at random moments of canary walks, with the production Lease figures.

Two replicas (as the chart runs them, lease 15 s / renew deadline 10 s / retry 2 s); in each trial a
fresh ModelDeployment is made Ready on kwok nodes, updated to a new bento, and the Lease holder is
SIGKILLed at a random moment of the walk and started again. Prints trials, converged (promoted with
exactly the expected children, no Event posted twice), and the worst time from the kill to converged;
exits non-zero unless every trial converged. The trials themselves are tests/cluster/chaos.py's, which
`make test` runs a few of with a short Lease. Runs its own cluster (default .cluster-chaos/).

    .venv/bin/python benchmarks/chaos.py [--trials 20] [--seed N] [--dir .cluster-chaos]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

import harness
from modeldeploy.k8s.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "cluster"))
from chaos import Figures, Replicas, run_trial

# The walk (two steps of 2 s on kwok pods) takes about 5 s; a kill after it tests the quiet case.
WINDOW = 7.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=random.randrange(2**32))
    parser.add_argument("--dir", type=Path, default=harness.ROOT / ".cluster-chaos")
    args = parser.parse_args()
    harness.BENCH_DIR = args.dir.resolve()
    rng = random.Random(args.seed)
    with harness.bench_stack(start_operator=False) as bench:
        replicas = Replicas(bench.operator.kubeconfig, harness.BENCH_DIR / "logs")
        replicas.start()
        try:
            namespace = f"chaos-{uuid.uuid4().hex[:6]}"
            bench.cluster.kubectl("create", "namespace", namespace)
            client = Client.from_environment(str(bench.cluster.kubeconfig))
            started = time.monotonic()
            trials = []
            for index in range(args.trials):
                trial = run_trial(
                    bench.cluster, client, replicas, namespace=namespace, index=index, rng=rng, window=WINDOW
                )
                print(f"  {trial.line()}", flush=True)
                trials.append(trial)
            figures = Figures(trials)
            times = [t.seconds for t in trials if t.converged]
            print(f"chaos (seed {args.seed}, {time.monotonic() - started:.0f}s): {figures.line()}")
            if times:
                print(
                    f"time to converge after the kill: median {statistics.median(times):.1f}s, worst {max(times):.1f}s"
                )
            lost = sum(1 for t in trials if t.lost_events)
            print(f"trials where a transition's Event was never posted (killed between status and event): {lost}")
            tracebacks = replicas.tracebacks()
            print(f"tracebacks in the operators' logs: {len(tracebacks)}")
            if tracebacks:
                print(tracebacks[0])
            return 0 if figures.converged == len(trials) and not tracebacks else 1
        finally:
            replicas.stop()


if __name__ == "__main__":
    sys.exit(main())
