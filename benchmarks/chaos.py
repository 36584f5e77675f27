"""Chaos: faults at random moments of canary walks, with the production Lease figures.

Two replicas (as the chart runs them, lease 15 s / renew deadline 10 s / retry 2 s); in each trial a
fresh ModelDeployment is made Ready on kwok nodes, updated to a new bento, and at a random moment of
the walk one fault strikes: the Lease holder SIGKILLed and started again (--trials, 20), the API
server SIGKILLed and started again (--apiserver-restarts, 5), etcd likewise (--etcd-restarts, 1).
Prints, per fault, trials, converged (promoted with exactly the expected children, no Event posted
twice), and the worst time from the fault to converged; exits non-zero unless every trial converged.
The trials themselves are tests/cluster/chaos.py's, which `make test` runs a few of with a short
Lease. Runs its own cluster (default .cluster-chaos/).

    .venv/bin/python benchmarks/chaos.py [--trials 20] [--apiserver-restarts 5] [--etcd-restarts 1]
                                         [--seed N] [--dir .cluster-chaos]
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
from chaos import Figures, Replicas, fault_action, run_trial


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="of the leading operator SIGKILLed")
    parser.add_argument("--apiserver-restarts", type=int, default=5)
    parser.add_argument("--etcd-restarts", type=int, default=1)
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
            plan = (
                ["operator"] * args.trials
                + ["kube-apiserver"] * args.apiserver_restarts
                + ["etcd"] * args.etcd_restarts
            )
            trials = []
            for index, fault in enumerate(plan):
                act = fault_action(fault, replicas, client, bench.local)
                trial = run_trial(
                    bench.cluster, client, namespace=namespace, index=index, rng=rng, fault=fault, act=act
                )
                print(f"  {trial.line()}", flush=True)
                trials.append(trial)
            figures = Figures(trials)
            print(f"chaos (seed {args.seed}, {time.monotonic() - started:.0f}s):")
            for fault in dict.fromkeys(plan):
                of_fault = [t for t in trials if t.fault == fault]
                times = [t.seconds for t in of_fault if t.converged]
                median = f", median {statistics.median(times):.1f}s" if times else ""
                print(f"  {Figures(of_fault).line()}{median}")
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
