"""Model-server monitoring children: a PodMonitor per ModelDeployment where the Prometheus Operator's CRDs are
served (the real CRDs of github.com/prometheus-operator/prometheus-operator, from the module proxy), none and
nothing wrong where they are not; the chart's ServiceMonitor likewise, from helm's view of the real cluster."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from localcluster.kit import CHART, OPERATOR_NAMESPACE, RELEASE, Cluster, Operator, condition, sample, wait_for
from localcluster.versions import install_prometheus_operator_crds, prometheus_operator_crds_dir

V2 = {"image": "registry.example.com/iris-classifier:v2"}


@pytest.fixture(scope="module")
def monitoring_crds(chart: Cluster) -> Iterator[Cluster]:
    install_prometheus_operator_crds(chart.kubeconfig, chart.kubectl_bin)
    wait_for(
        lambda: chart.kubectl("get", "podmonitors", "-A", check=False).returncode == 0,
        timeout=60,
        what="PodMonitor to be served",
    )
    yield chart
    # The other tests' cluster has no Prometheus Operator: the chart without its ServiceMonitor, then the CRDs
    # gone. In this order: helm cannot upgrade a release whose last manifest holds a kind no longer served.
    chart.helm(
        "upgrade", RELEASE, str(CHART), "-n", OPERATOR_NAMESPACE, "--reuse-values",
        "--set", "metrics.serviceMonitor.enabled=false",
    )  # fmt: skip
    chart.kubectl("delete", "-f", str(prometheus_operator_crds_dir()))


def pod_monitor(cluster: Cluster, namespace: str, name: str = "iris") -> dict[str, Any] | None:
    return cluster.get("podmonitor", name, namespace)


def test_no_pod_monitor_and_nothing_wrong_without_the_crds(cluster: Cluster, running: Operator, namespace: str) -> None:
    assert cluster.kubectl("get", "crd", "podmonitors.monitoring.coreos.com", check=False).returncode != 0
    cluster.apply(sample("iris", namespace))
    md = wait_for(
        lambda: (
            (md := cluster.get("modeldeployment", "iris", namespace))
            and condition(md, "Ready").get("status") == "True"
            and md
        ),
        timeout=60,
        what="iris Ready",
    )
    assert condition(md, "Degraded")["reason"] == "Healthy"


def test_a_pod_monitor_selects_every_revision_where_the_crds_are_served(
    monitoring_crds: Cluster, running: Operator, namespace: str
) -> None:
    cluster = monitoring_crds
    cluster.apply(sample("iris", namespace, rollout={"steps": [{"weight": 50, "pause": "10m"}]}))
    monitor = wait_for(lambda: pod_monitor(cluster, namespace), timeout=60, what="the PodMonitor")
    md = cluster.get("modeldeployment", "iris", namespace)
    assert md is not None
    [owner] = monitor["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ModelDeployment", md["metadata"]["uid"], True)
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    assert {r["targetLabel"] for r in endpoint["relabelings"]} == {"modeldeploy_dev_revision", "modeldeploy_dev_name"}

    # A canary's pods are selected by the same PodMonitor: it selects the ModelDeployment, not a revision.
    cluster.apply(sample("iris", namespace, rollout={"steps": [{"weight": 50, "pause": "10m"}]}, bento=V2))
    wait_for(
        lambda: ((cluster.get("modeldeployment", "iris", namespace) or {}).get("status", {}).get("canary") or {}).get(
            "stepReadyAt"
        ),
        timeout=60,
        what="the canary at its step",
    )
    selector = ",".join(f"{k}={v}" for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    pods = cluster.json("get", "pods", "-n", namespace, "-l", selector)["items"]
    roles = sorted(p["metadata"]["labels"]["modeldeploy.dev/role"] for p in pods)
    assert roles == ["canary", "stable"], "the PodMonitor's selector finds the pods of both revisions"
    assert condition(cluster.get("modeldeployment", "iris", namespace) or {}, "Degraded")["reason"] == "Healthy"

    # The chart, installed where ServiceMonitor is served, renders its ServiceMonitor (helm asks the cluster).
    cluster.helm("upgrade", RELEASE, str(CHART), "-n", OPERATOR_NAMESPACE, "--reuse-values")
    monitors = cluster.json("get", "servicemonitors", "-n", OPERATOR_NAMESPACE)["items"]
    assert [m["spec"]["endpoints"][0]["port"] for m in monitors] == ["metrics"]

    cluster.kubectl("delete", "modeldeployment", "iris", "-n", namespace)
    wait_for(lambda: pod_monitor(cluster, namespace) is None, timeout=60, what="the PodMonitor collected")
