"""The Services: one in front of the model, and one for the canary when its router sends traffic to it."""

from __future__ import annotations

from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.model.desired import Desired
from modeldeploy.model.meta import child_name, metadata, selector
from modeldeploy.routing import router_for


def render_service(md: ModelDeployment, *, canary: bool = False) -> dict[str, Any]:
    """The Service `<name>` (or `<name>-canary`); the traffic router says which pods `<name>` selects."""
    settings = md.spec.service
    pods = selector(md, "canary") if canary else router_for(md).service_selector(md)
    meta = metadata(md, child_name(md, "canary" if canary else "stable"))
    if settings.annotations:
        meta["annotations"] = dict(sorted(settings.annotations.items()))
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            # Only the main Service is exposed outside the cluster; the canary's is a router's backend.
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


def render_services(desired: Desired) -> list[dict[str, Any]]:
    out = [render_service(desired.md)]
    if desired.canary is not None and router_for(desired.md).canary_service:
        out.append(render_service(desired.md, canary=True))
    return out
