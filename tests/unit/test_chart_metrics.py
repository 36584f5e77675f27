"""The chart exposes the operator's /metrics: the flag, the port, the annotations, a Service, a ServiceMonitor
only where the Prometheus Operator's CRDs are served."""

from __future__ import annotations

import json
from typing import Any

from helm import CHART, render_chart

SERVICE_MONITOR = "monitoring.coreos.com/v1/ServiceMonitor"


def kinds(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        out.setdefault(doc["kind"], []).append(doc)
    return out


def operator_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = kinds(docs)["Deployment"]
    template: dict[str, Any] = deployment["spec"]["template"]
    return template


class TestChartMetrics:
    def test_the_operator_serves_metrics_on_the_annotated_port(self) -> None:
        pod = operator_pod(render_chart())
        [container] = pod["spec"]["containers"]
        assert "--metrics-address=0.0.0.0:8081" in container["args"]
        assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
        assert pod["metadata"]["annotations"] == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "8081",
            "prometheus.io/path": "/metrics",
        }

    def test_the_metrics_service_selects_the_operator_pod_by_its_port_name(self) -> None:
        docs = render_chart("metrics.port=9100")
        [service] = [s for s in kinds(docs)["Service"] if s["metadata"]["name"].endswith("-metrics")]
        pod = operator_pod(docs)
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        assert service["spec"]["ports"] == [
            {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}
        ]
        assert "annotations" not in service["metadata"], "annotated pods and Services would be scraped twice"

    def test_no_service_monitor_where_the_prometheus_operator_is_not_installed(self) -> None:
        assert "ServiceMonitor" not in kinds(render_chart())

    def test_a_service_monitor_where_it_is(self) -> None:
        docs = render_chart("metrics.serviceMonitor.labels.release=kube-prometheus", api_versions=[SERVICE_MONITOR])
        [monitor] = kinds(docs)["ServiceMonitor"]
        [service] = [s for s in kinds(docs)["Service"] if s["metadata"]["name"].endswith("-metrics")]
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]

    def test_metrics_can_be_turned_off(self) -> None:
        docs = render_chart("metrics.enabled=false", api_versions=[SERVICE_MONITOR])
        assert not any(k in kinds(docs) for k in ("ServiceMonitor",))
        assert not any(s["metadata"]["name"].endswith("-metrics") for s in kinds(docs).get("Service", []))
        pod = operator_pod(docs)
        assert not any(a.startswith("--metrics-address") for a in pod["spec"]["containers"][0]["args"])
        assert "annotations" not in pod["metadata"]


class TestChartDashboards:
    def test_each_dashboard_is_a_config_map_for_grafanas_sidecar_holding_the_file_unchanged(self) -> None:
        files = sorted((CHART / "dashboards").glob("*.json"))
        maps = {m["metadata"]["name"]: m for m in kinds(render_chart("dashboards.enabled=true"))["ConfigMap"]}
        assert sorted(maps) == [f"modeldeploy-operator-dashboard-{f.stem}" for f in files]
        for path in files:
            config_map = maps[f"modeldeploy-operator-dashboard-{path.stem}"]
            assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
            assert json.loads(config_map["data"][path.name]) == json.loads(path.read_text())

    def test_no_dashboards_unless_asked(self) -> None:
        assert "ConfigMap" not in kinds(render_chart())
