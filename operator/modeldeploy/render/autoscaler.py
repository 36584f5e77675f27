"""The HorizontalPodAutoscaler of the stable Deployment."""

from __future__ import annotations

from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.model.desired import Desired
from modeldeploy.model.meta import child_name, metadata


def render_hpa(md: ModelDeployment) -> dict[str, Any]:
    scaling = md.spec.autoscaling
    assert scaling is not None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(md, md.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": child_name(md, "stable")},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": metric.type,
                        "target": {"type": "Utilization", "averageUtilization": metric.target},
                    },
                }
                for metric in scaling.metrics
            ],
        },
    }


def render_autoscalers(desired: Desired) -> list[dict[str, Any]]:
    return [] if desired.md.spec.autoscaling is None else [render_hpa(desired.md)]
