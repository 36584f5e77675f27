"""The PodMonitor: the model servers' metrics for a Prometheus run by the Prometheus Operator.

Rendered for every ModelDeployment, and applied only where the cluster serves monitoring.coreos.com/v1
PodMonitor (its row of the table of child kinds says so); elsewhere the pods' prometheus.io/* annotations
are what a Prometheus finds them by. It scrapes every revision's pods (stable and canary) on their `http`
port and gives their series the labels the analysis and the dashboards select on (docs/analysis.md):
`namespace` (the Prometheus Operator adds it), `modeldeploy_dev_revision` and `modeldeploy_dev_name`.
A Prometheus selects it by its labels: `app.kubernetes.io/managed-by: modeldeploy` is on every one.
"""

from __future__ import annotations

from typing import Any

from modeldeploy.model.desired import Desired
from modeldeploy.model.meta import NAME_LABEL, REVISION_LABEL, child_name, metadata, selector

API_VERSION = "monitoring.coreos.com/v1"
KIND = "PodMonitor"
METRICS_PATH = "/metrics"


def _meta_label(label: str) -> str:
    """Prometheus' Kubernetes discovery meta label of a pod label (every other character becomes `_`)."""
    return "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in label)


def render_pod_monitors(desired: Desired) -> list[dict[str, Any]]:
    md = desired.md
    relabelings = [
        {"sourceLabels": [_meta_label(label)], "targetLabel": target, "action": "replace"}
        for label, target in ((REVISION_LABEL, "modeldeploy_dev_revision"), (NAME_LABEL, "modeldeploy_dev_name"))
    ]
    return [
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": metadata(md, child_name(md)),
            "spec": {
                "selector": {"matchLabels": selector(md)},
                "podMetricsEndpoints": [{"port": "http", "path": METRICS_PATH, "relabelings": relabelings}],
            },
        }
    ]
