"""Chaos, bounded: the leading operator SIGKILLed at random moments of canary walks (tests/cluster/chaos.py).

A few trials in `make test`, with a short Lease (4 s) so that each takes seconds: what is tested here is
that a rollout resumes from wherever the kill left it, with exactly the expected children and no
duplicated Event; the takeover time with the production figures is test_leader_election's, and
benchmarks/chaos.py runs more trials with them.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos import Figures, Replicas, run_trial
from localcluster.kit import Cluster, Operator
from modeldeploy.k8s.client import Client

TRIALS = int(os.environ.get("MODELDEPLOY_CHAOS_TRIALS", "3"))
# The walk (two steps of 2 s on kwok pods) takes about 5 s; a kill after it tests the quiet case.
WINDOW = 7.0
SHORT_LEASE = ("--lease-duration", "4", "--renew-deadline", "3", "--retry-period", "1")

pytestmark = pytest.mark.timeout(120 + 90 * TRIALS)


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


def test_a_leader_killed_at_random_moments_of_canary_walks_the_rollouts_converge(
    cluster: Cluster, replicas: Replicas, namespace: str
) -> None:
    seed = int(os.environ.get("MODELDEPLOY_CHAOS_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    client = Client.from_environment(str(cluster.kubeconfig))
    trials = [
        run_trial(cluster, client, replicas, namespace=namespace, index=i, rng=rng, window=WINDOW)
        for i in range(TRIALS)
    ]
    figures = Figures(trials)
    print(f"\nchaos (seed {seed}, MODELDEPLOY_CHAOS_SEED to replay): {figures.line()}")
    for trial in trials:
        print(f"  {trial.line()}")
    assert figures.converged == len(trials), "\n".join(t.line() for t in trials if not t.converged)
    assert replicas.kills == len(trials)
    assert not replicas.tracebacks(), replicas.tracebacks()[0]
