"""Chaos, bounded: faults at random moments of canary walks (tests/cluster/chaos.py).

A few trials in `make test`, with a short Lease (4 s) so that each takes seconds: the leading operator
SIGKILLed (3 trials), the API server SIGKILLed and started again (1), etcd likewise (1). What is tested
here is that a rollout resumes from wherever the fault left it, with exactly the expected children and
no duplicated Event; the takeover time with the production figures is test_leader_election's, and
benchmarks/chaos.py runs more trials with them (20 / 5 / 1).

The control-plane faults strike the session's own cluster, so the tests after this one also check that
everything else (the node, kwok, the controllers) came through them.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos import Figures, Replicas, fault_action, run_trial
from localcluster import LocalCluster
from localcluster.kit import Cluster, Operator
from modeldeploy.k8s.client import Client

from clusterstack import TEST_CLUSTER_DIR

TRIALS = int(os.environ.get("MODELDEPLOY_CHAOS_TRIALS", "3"))
RESTARTS = int(os.environ.get("MODELDEPLOY_CHAOS_RESTARTS", "1"))  # of the API server, and of etcd
SHORT_LEASE = ("--lease-duration", "4", "--renew-deadline", "3", "--retry-period", "1")

pytestmark = pytest.mark.timeout(120 + 90 * (TRIALS + 2 * RESTARTS))


@pytest.fixture
def replicas(cluster: Cluster, operator: Operator, tmp_path: Path) -> Iterator[Replicas]:
    """Two replicas in place of the session's operator."""
    operator.stop()
    pair = Replicas(operator.kubeconfig, tmp_path, *SHORT_LEASE)
    pair.start()
    try:
        yield pair
    finally:
        pair.stop()
        operator.start()


def test_faults_at_random_moments_of_canary_walks_the_rollouts_converge(
    cluster: Cluster, replicas: Replicas, namespace: str
) -> None:
    if cluster.provider != "local":
        pytest.skip("restarts the API server and etcd: the local cluster only")
    seed = int(os.environ.get("MODELDEPLOY_CHAOS_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    client = Client.from_environment(str(cluster.kubeconfig))
    local = LocalCluster(TEST_CLUSTER_DIR)
    plan = ["operator"] * TRIALS + ["kube-apiserver"] * RESTARTS + ["etcd"] * RESTARTS
    trials = []
    for index, fault in enumerate(plan):
        act = fault_action(fault, replicas, client, local)
        trials.append(run_trial(cluster, client, namespace=namespace, index=index, rng=rng, fault=fault, act=act))
    print(f"\nchaos (seed {seed}, MODELDEPLOY_CHAOS_SEED to replay):")
    for fault in dict.fromkeys(plan):
        print(f"  {Figures([t for t in trials if t.fault == fault]).line()}")
    for trial in trials:
        print(f"  {trial.line()}")
    assert Figures(trials).converged == len(trials), "\n".join(t.line() for t in trials if not t.converged)
    assert replicas.kills == TRIALS
    assert not replicas.tracebacks(), replicas.tracebacks()[0]
