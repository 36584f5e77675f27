"""The operator's /metrics, scraped from the running operator by a real Prometheus while it reconciles
real objects: the series exist, with the values the objects' status and the operator's work imply."""

from __future__ import annotations

import pytest

from localcluster.kit import Cluster, Operator, sample, wait_for, wait_ready
from localcluster.prometheus import Prometheus

pytestmark = pytest.mark.prometheus

V2 = {"image": "registry.example.com/iris-classifier:v2"}
STEPS = {"steps": [{"weight": 25, "pause": "10m"}, {"weight": 50, "pause": "10m"}]}


@pytest.fixture
def scraped(running: Operator, prometheus: Prometheus) -> Prometheus:
    """The module's Prometheus scraping the operator under test."""
    address = running.metrics_address
    assert address is not None, "the operator fixture serves /metrics"
    prometheus.set_targets([(address, {"job": "modeldeploy-operator"})])
    prometheus.wait_for_target(address, {"job": "modeldeploy-operator"})
    return prometheus


def value(prom: Prometheus, promql: str) -> float:
    found = prom.query_value(promql)
    return 0.0 if found is None else found


def canary(cluster: Cluster, namespace: str) -> dict[str, object]:
    found: dict[str, object] = (cluster.get("modeldeployment", "iris", namespace) or {}).get("status", {}).get(
        "canary"
    ) or {}
    return found


def test_prometheus_scrapes_what_the_operator_did(cluster: Cluster, scraped: Prometheus, namespace: str) -> None:
    prom = scraped
    reconciles_before = value(prom, "sum(modeldeploy_reconcile_duration_seconds_count)")
    puts_before = value(prom, 'sum(modeldeploy_api_requests_total{verb="PUT",resource="modeldeployments/status"})')

    cluster.apply(sample("iris", namespace, replicas=4, rollout=STEPS))
    wait_ready(cluster, namespace, "iris")
    md = f'namespace="{namespace}",name="iris"'
    prom.wait_for(f'sum(modeldeploy_ready_replicas{{{md},role="stable"}})', lambda v: v == 4)
    prom.wait_for(f'modeldeploy_phase{{{md},phase="Ready"}}', lambda v: v == 1)
    assert value(prom, "sum(modeldeploy_reconcile_duration_seconds_count)") > reconciles_before
    assert (
        value(prom, 'sum(modeldeploy_api_requests_total{verb="PUT",resource="modeldeployments/status"})') > puts_before
    )
    # The children were created: answered 201 by the API server, counted by code.
    assert value(prom, 'sum(modeldeploy_api_requests_total{resource="deployments",code=~"20[01]"})') >= 1
    assert value(prom, "sum(modeldeploy_workqueue_wait_duration_seconds_count)") > 0
    assert value(prom, "sum(modeldeploy_workqueue_adds_total)") > 0
    lanes = {r["metric"]["lane"] for r in prom.query("modeldeploy_workqueue_depth")}
    assert lanes == {"asked", "answer", "found", "resync"}
    assert value(prom, "modeldeploy_leader") == 1, "the one operator process leads"
    assert prom.query(f"modeldeploy_canary_weight{{{md}}}")[0]["value"][1] == "0"

    cluster.apply(sample("iris", namespace, replicas=4, rollout=STEPS, bento=V2))
    wait_for(lambda: canary(cluster, namespace).get("weight") == 25, timeout=60, what="the canary's first step")
    prom.wait_for(f"modeldeploy_canary_weight{{{md}}}", lambda v: v == 25)
    held = canary(cluster, namespace)
    assert value(prom, f"modeldeploy_canary_step{{{md}}}") == 1
    assert value(prom, f'modeldeploy_rollouts_started_total{{{md},strategy="Canary"}}') == 1
    assert value(prom, f'modeldeploy_ready_replicas{{{md},role="canary",revision="{held["revision"]}"}}') == 1

    cluster.kubectl("annotate", "modeldeployment", "iris", "-n", namespace, f"modeldeploy.dev/abort={held['revision']}")
    prom.wait_for(f'modeldeploy_rollouts_rolled_back_total{{{md},reason="ManualAbort"}}', lambda v: v == 1)
    prom.wait_for(f"modeldeploy_canary_weight{{{md}}}", lambda v: v == 0)
    assert value(prom, f"modeldeploy_canary_step{{{md}}}") == 0
    assert prom.query(f'modeldeploy_replicas{{{md},role="canary"}}') == []
    assert value(prom, f"sum(modeldeploy_rollouts_promoted_total{{{md}}})") == 0

    cluster.kubectl("delete", "modeldeployment", "iris", "-n", namespace)
    prom.wait_for(f"count(modeldeploy_phase{{{md}}}) or vector(0)", lambda v: v == 0)
