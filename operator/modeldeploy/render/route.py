"""The Gateway API HTTPRoute that splits traffic between stable and canary with exact weights."""

from __future__ import annotations

from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.render.meta import child_name, metadata


def render_route(md: ModelDeployment, *, canary_weight: int, with_canary: bool) -> dict[str, Any]:
    gateway = md.spec.rollout.gateway
    assert gateway is not None
    port = md.spec.service.port
    backends: list[dict[str, Any]] = [
        {"kind": "Service", "name": child_name(md, "stable"), "port": port, "weight": 100 - canary_weight}
    ]
    if with_canary:
        backends.append({"kind": "Service", "name": child_name(md, "canary"), "port": port, "weight": canary_weight})
    spec: dict[str, Any] = {
        "parentRefs": [ref.wire() for ref in gateway.parent_refs],
        "rules": [{"backendRefs": backends}],
    }
    if gateway.hostnames:
        spec["hostnames"] = list(gateway.hostnames)
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": metadata(md, md.name),
        "spec": spec,
    }
