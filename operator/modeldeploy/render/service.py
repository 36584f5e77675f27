"""The Services: one in front of the model, and one for the canary when an HTTPRoute splits traffic."""

from __future__ import annotations

from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.render.meta import child_name, metadata, selector


def render_service(md: ModelDeployment, *, canary: bool = False) -> dict[str, Any]:
    """The Service `<name>` (or `<name>-canary`).

    With Replicas routing, `<name>` selects every model server pod, stable and canary,
    and the replica counts set the split. With GatewayAPI routing it selects the stable
    pods only (in-cluster clients keep getting the stable model) and the HTTPRoute sends
    the canary its exact share through `<name>-canary`.
    """
    settings = md.spec.service
    exact = md.spec.rollout.traffic_routing == "GatewayAPI"
    if canary:
        pods = selector(md, "canary")
    else:
        pods = selector(md, "stable") if exact else selector(md)
    meta = metadata(md, child_name(md, "canary" if canary else "stable"))
    if settings.annotations:
        meta["annotations"] = dict(sorted(settings.annotations.items()))
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            # Only the main Service is exposed outside the cluster; the canary's is a route backend.
            "type": "ClusterIP" if canary else settings.type,
            "selector": pods,
            "ports": [
                {
                    "name": "http",
                    "port": settings.port,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }
