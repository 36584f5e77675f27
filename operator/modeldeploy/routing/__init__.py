"""Traffic routers, one module per spec.rollout.trafficRouting mode; `router_for` picks a spec's."""

from __future__ import annotations

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.model.scaling import SCALED_OBJECT_KIND, uses_keda
from modeldeploy.routing import gateway, replicas
from modeldeploy.routing.base import TrafficRouter

ROUTERS: dict[str, TrafficRouter] = {router.mode: router for router in (replicas.ROUTER, gateway.ROUTER)}


def router_for(md: ModelDeployment) -> TrafficRouter:
    return ROUTERS[md.spec.rollout.traffic_routing]


def optional_kinds(md: ModelDeployment) -> frozenset[str]:
    """The optional child kinds a spec needs: its router's, the HTTPRoute when the model is exposed, and the
    KEDA ScaledObject when it autoscales on a request metric."""
    exposed = {gateway.ROUTE_KIND} if md.spec.expose is not None else set()
    scaled = {SCALED_OBJECT_KIND} if uses_keda(md) else set()
    return router_for(md).needs | exposed | scaled


__all__ = ["ROUTERS", "TrafficRouter", "optional_kinds", "router_for"]
