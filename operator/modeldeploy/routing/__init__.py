"""Traffic routers, one module per spec.rollout.trafficRouting mode; `router_for` picks a spec's."""

from __future__ import annotations

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.routing import gateway, replicas
from modeldeploy.routing.base import TrafficRouter

ROUTERS: dict[str, TrafficRouter] = {router.mode: router for router in (replicas.ROUTER, gateway.ROUTER)}


def router_for(md: ModelDeployment) -> TrafficRouter:
    return ROUTERS[md.spec.rollout.traffic_routing]


__all__ = ["ROUTERS", "TrafficRouter", "router_for"]
