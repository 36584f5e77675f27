"""Every spec the API server admits reconciles or explains itself; every other one is refused with the
field named. Hypothesis draws the specs (tests/cluster/fuzzing.py); benchmarks/fuzz.py runs 1,000."""

from __future__ import annotations

import os

import pytest

from localcluster.kit import Cluster, Operator
from modeldeploy.k8s.client import Client

from fuzzing import Fuzzer, drive, quota

CASES = int(os.environ.get("MODELDEPLOY_FUZZ_CASES", "300"))

pytestmark = pytest.mark.timeout(900)


def test_every_spec_is_refused_with_the_field_named_or_explained_by_its_status(
    cluster: Cluster, running: Operator, namespace: str
) -> None:
    cluster.apply(quota(namespace))
    fuzzer = Fuzzer(Client.from_environment(str(cluster.kubeconfig)), namespace, lambda: len(running.tracebacks()))
    figures = drive(fuzzer, CASES)
    print(f"\nfuzz: {figures.line()}\nexplained by: {figures.reasons}")
    assert figures.cases == CASES
    assert figures.unnamed == [], figures.unnamed[:3]
    assert figures.unexplained == [], figures.unexplained[:3]
    assert figures.tracebacks == 0, running.tracebacks()[-figures.tracebacks :]
    assert figures.explained > CASES // 10, "hardly any spec was admitted: the fuzzing reached no reconcile"
