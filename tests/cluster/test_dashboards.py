"""Every query of the Grafana dashboards returns data: a real Prometheus scraping real `bentoml serve` processes
(one per revision, labelled as the documented relabelling labels pods) and the running operator's /metrics,
while a ModelDeployment goes through a canary judged on those servers, a promotion, an aborted canary, and
reconciles the API server fails (a broken admission webhook)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster.kit import ROOT, Cluster, Operator, condition, sample, wait_for
from localcluster.loadgen import Load
from localcluster.prometheus import LABEL_REVISION, Prometheus
from localcluster.realstack import BentoServer, BentoStore, serving

pytestmark = [pytest.mark.bento, pytest.mark.prometheus, pytest.mark.timeout(300)]

DASHBOARDS = sorted((ROOT / "charts" / "modeldeploy-operator" / "dashboards").glob("*.json"))
RATE = 15
V2 = {"image": "registry.example.com/iris-classifier:v2"}
V3 = {"image": "registry.example.com/iris-classifier:v3"}
# What Grafana puts in for its built-in variables; the scrape interval is 1 s.
BUILT_IN = {"$__rate_interval": "20s", "$__interval": "5s", "$__range": "10m"}


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, rows' nested panels included."""
    out = []
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop(0)
        panels += panel.get("panels", [])
        out += [(panel["title"], target["expr"]) for target in panel.get("targets", [])]
    return out


def substitute(expr: str, variables: dict[str, str]) -> str:
    for name, value in {**BUILT_IN, **{f"${k}": v for k, v in variables.items()}}.items():
        expr = expr.replace(name, value)
    left = re.findall(r"\$\w+", expr)
    assert not left, f"variables no one substitutes: {left} in {expr}"
    return expr


@pytest.fixture(scope="module")
def servers(bento_store: BentoStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[BentoServer]]:
    root = tmp_path_factory.mktemp("dashboard-servers")
    # The stable server fails a few requests, so the error-rate panel has errors to divide.
    stable = BentoServer(bento_store.bento("v1"), root / "stable", {"IRIS_FAULT_RATE": "0.02"})
    canary = BentoServer(bento_store.bento("v2"), root / "canary")
    with serving([stable, canary]), Load([stable.url, canary.url], rate=RATE, duration=240):
        yield [stable, canary]


def status_of(cluster: Cluster, namespace: str) -> dict[str, Any]:
    return (cluster.get("modeldeployment", "iris", namespace) or {}).get("status") or {}


def analysed(namespace: str, prometheus: Prometheus, **spec: Any) -> dict[str, Any]:
    rollout = {
        "steps": [{"weight": 50, "pause": "10s"}],
        "analysis": {
            "prometheus": {"address": prometheus.url},
            "interval": "10s",
            "failureLimit": 2,
            "minRequests": 30,
            "maxErrorRate": 0.05,
        },
    }
    return sample("iris", namespace, rollout=rollout, **spec)


def broken_webhook(namespace: str) -> dict[str, Any]:
    """A validating webhook whose service does not exist, for Deployments in NAMESPACE: the API server answers
    every write of one with 500 InternalError (failurePolicy Fail), as it does for a webhook that is down."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": f"broken-{namespace}"},
        "webhooks": [
            {
                "name": "broken.modeldeploy.dev",
                "clientConfig": {"service": {"name": "nothing", "namespace": namespace, "port": 443}},
                "rules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["deployments"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 2,
            }
        ],
    }


def test_every_dashboard_query_returns_series(
    cluster: Cluster,
    running: Operator,
    namespace: str,
    prometheus: Prometheus,
    servers: list[BentoServer],
) -> None:
    assert [p.name for p in DASHBOARDS] == ["modeldeployment.json", "operator.json"]
    stable_server, canary_server = servers
    assert running.metrics_address is not None
    operator_target = (running.metrics_address, {"job": "modeldeploy-operator"})

    def scrape(revisions: dict[str, BentoServer]) -> None:
        labelled = {"namespace": namespace, "modeldeploy_dev_name": "iris"}
        targets = [(s.address, {**labelled, LABEL_REVISION: rev}) for rev, s in revisions.items()]
        prometheus.set_targets([operator_target, *targets])
        for address, labels in targets:
            prometheus.wait_for_target(address, {LABEL_REVISION: labels[LABEL_REVISION]})

    # v1 Ready; a canary of v2 judged on the servers' metrics and promoted.
    cluster.apply(analysed(namespace, prometheus))
    v1 = wait_for(lambda: status_of(cluster, namespace).get("phase") == "Ready" and status_of(cluster, namespace),
                  timeout=60, what="v1 Ready")["stable"]["revision"]  # fmt: skip
    cluster.apply(analysed(namespace, prometheus, bento=V2))
    v2 = wait_for(lambda: status_of(cluster, namespace).get("canary"), timeout=60, what="the canary")["revision"]
    scrape({v1: stable_server, v2: canary_server})
    wait_for(
        lambda: "canary" not in (s := status_of(cluster, namespace)) and s["stable"]["revision"] == v2,
        timeout=120,
        what="the canary promoted on real metrics",
    )
    # A third revision, started and aborted: a rollback to count.
    cluster.apply(analysed(namespace, prometheus, bento=V3))
    v3 = wait_for(lambda: status_of(cluster, namespace).get("canary"), timeout=60, what="the v3 canary")["revision"]
    cluster.kubectl("annotate", "modeldeployment", "iris", "-n", namespace, f"modeldeploy.dev/abort={v3}")
    wait_for(
        lambda: (
            (md := cluster.get("modeldeployment", "iris", namespace))
            and condition(md, "Degraded")["reason"] == "RolledBack"
        ),
        timeout=60,
        what="the v3 canary rolled back",
    )

    # Reconciles that fail: a ModelDeployment whose Deployment the API server cannot take (a webhook is down).
    broken = f"{namespace}-b"
    cluster.kubectl("create", "namespace", broken)
    webhook = broken_webhook(broken)
    try:
        cluster.apply(webhook)
        cluster.apply(sample("broken", broken))
        # Retried with backoff (1 s, 2 s, 4 s, ...): a rate over the dashboards' window sees them.
        prometheus.wait_for(
            'sum(rate(modeldeploy_reconcile_errors_total{reason="InternalError"}[20s]))', lambda v: v > 0, timeout=60
        )
    finally:
        name = webhook["metadata"]["name"]
        cluster.kubectl("delete", "validatingwebhookconfiguration", name, "--wait=false", check=False)
        cluster.kubectl("delete", "namespace", broken, "--wait=false", check=False)

    variables = {"namespace": namespace, "name": "iris", "datasource": "prometheus"}
    empty = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for variable in dashboard["templating"]["list"]:
            assert variable["name"] in variables, f"{path.name}: variable ${variable['name']} is not tested"
            if variable["type"] == "query":
                # label_values(SELECTOR, LABEL): Prometheus' label API, as Grafana asks it.
                found = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
                assert found, variable["query"]
                match, label = substitute(found[1], variables), found[2]
                values = prometheus.api(f"label/{label}/values", **{"match[]": match})
                assert variables[variable["name"]] in values, f"{path.name}: ${variable['name']} offers {values}"
        for title, expr in expressions(dashboard):
            promql = substitute(expr, variables)
            if not prometheus.query(promql):
                empty.append(f"{path.name}: {title}: {promql}")
    assert empty == [], "dead panels:\n" + "\n".join(empty)

    # A few values that only a working pipeline gives.
    by_revision = f'namespace="{namespace}",modeldeploy_dev_name="iris",endpoint="/classify"'
    errors = prometheus.query_value(
        f'sum(rate(bentoml_service_request_total{{{by_revision},{LABEL_REVISION}="{v1}",http_response_code=~"5.."}}[1m]))'
    )
    assert errors is not None and errors > 0, "the stable server's injected faults reach the error-rate panel"
    md = f'namespace="{namespace}",name="iris"'
    assert prometheus.query_value(f'sum(modeldeploy_analysis_measurements_total{{{md},verdict="Passed"}})') >= 1
    assert prometheus.query_value(f'sum(modeldeploy_rollouts_promoted_total{{{md},reason="StepsComplete"}})') == 1
    assert prometheus.query_value(f'sum(modeldeploy_rollouts_rolled_back_total{{{md},reason="ManualAbort"}})') == 1
