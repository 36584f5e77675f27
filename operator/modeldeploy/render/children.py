"""Every child of a ModelDeployment for one rollout plan, in the order they are applied."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.api.v1alpha1.revision import RevisionPlan
from modeldeploy.render.autoscaler import render_hpa
from modeldeploy.render.deployment import render_deployment
from modeldeploy.render.route import render_route
from modeldeploy.render.service import render_service


@dataclass(frozen=True)
class RenderConfig:
    """Whether the cluster serves the Gateway API (an HTTPRoute is rendered only then)."""

    gateway_api: bool = True


def render_children(
    md: ModelDeployment,
    stable: RevisionPlan | None,
    canary: RevisionPlan | None,
    *,
    route_weight: int = 0,
    config: RenderConfig | None = None,
) -> list[dict[str, Any]]:
    """Deployments first, so a Service or route never points at pods that were never asked for."""
    config = config or RenderConfig()
    if stable is None:
        return []
    exact = md.spec.rollout.traffic_routing == "GatewayAPI"
    out = [render_deployment(md, stable)]
    if canary is not None:
        out.append(render_deployment(md, canary))
    out.append(render_service(md))
    if canary is not None and exact:
        out.append(render_service(md, canary=True))
    if md.spec.autoscaling is not None:
        out.append(render_hpa(md))
    if exact and config.gateway_api:
        out.append(render_route(md, canary_weight=route_weight, with_canary=canary is not None))
    return out
