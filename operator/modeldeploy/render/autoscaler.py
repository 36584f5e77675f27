"""The autoscaler of the stable Deployment: a HorizontalPodAutoscaler for cpu/memory, a KEDA ScaledObject
when a target is a request metric (KEDA then runs the HorizontalPodAutoscaler, with every target)."""

from __future__ import annotations

from typing import Any

from modeldeploy.api.v1alpha1 import Autoscaling, MetricTarget, ModelDeployment
from modeldeploy.model.desired import Desired
from modeldeploy.model.meta import child_name, metadata
from modeldeploy.model.scaling import SCALED_OBJECT_API_VERSION, SCALED_OBJECT_KIND, load_query, uses_keda

# How often KEDA asks Prometheus (its default is 30 s).
POLLING_INTERVAL_S = 15


def _target(md: ModelDeployment) -> dict[str, str]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": child_name(md, "stable")}


def _behavior(scaling: Autoscaling) -> dict[str, Any]:
    return {"scaleDown": {"stabilizationWindowSeconds": round(scaling.scale_down_stabilization.total_seconds())}}


def render_hpa(md: ModelDeployment) -> dict[str, Any]:
    scaling = md.spec.autoscaling
    assert scaling is not None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(md, md.name),
        "spec": {
            "scaleTargetRef": _target(md),
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
            "behavior": _behavior(scaling),
        },
    }


def _trigger(md: ModelDeployment, metric: MetricTarget) -> dict[str, Any]:
    if metric.type in ("cpu", "memory"):
        return {"type": metric.type, "metricType": "Utilization", "metadata": {"value": str(metric.target)}}
    scaling = md.spec.autoscaling
    assert scaling is not None and scaling.prometheus is not None  # admission: request metrics need it
    return {
        "type": "prometheus",
        "name": {"requestsPerSecond": "requests-per-second", "inFlightRequests": "in-flight-requests"}[metric.type],
        "metadata": {
            "serverAddress": scaling.prometheus.address,
            "query": load_query(metric.type, scaling.prometheus, md.namespace, md.name),
            "threshold": str(metric.target),
            # No series yet (no request served) is no load, not an error.
            "ignoreNullValues": "true",
        },
    }


def render_scaled_object(md: ModelDeployment) -> dict[str, Any]:
    scaling = md.spec.autoscaling
    assert scaling is not None
    return {
        "apiVersion": SCALED_OBJECT_API_VERSION,
        "kind": SCALED_OBJECT_KIND,
        "metadata": metadata(md, md.name),
        "spec": {
            "scaleTargetRef": _target(md),
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "pollingInterval": POLLING_INTERVAL_S,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(scaling)}},
            "triggers": [_trigger(md, metric) for metric in scaling.metrics],
        },
    }


def render_autoscalers(desired: Desired) -> list[dict[str, Any]]:
    """The HorizontalPodAutoscaler row of the table of child kinds."""
    md = desired.md
    return [] if md.spec.autoscaling is None or uses_keda(md) else [render_hpa(md)]


def render_scaled_objects(desired: Desired) -> list[dict[str, Any]]:
    """The ScaledObject row of the table of child kinds (an optional kind: KEDA may not be installed)."""
    md = desired.md
    return [render_scaled_object(md)] if uses_keda(md) else []
