"""GatewayAPI routing: an HTTPRoute sends the canary its exact weight through the Service `<name>-canary`.

The HTTPRoute is rendered here, for this router and for spec.expose (which publishes the model
at a hostname in either routing mode), and is optional (the cluster may not serve the Gateway
API): a missing CRD holds new canaries with a condition instead of failing, and an exposed
model then serves in-cluster only, Degraded saying why.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.model.desired import Desired
from modeldeploy.model.meta import child_name, metadata, selector
from modeldeploy.routing.base import TrafficRouter, share

ROUTE_KIND = "HTTPRoute"
ROUTE_API_VERSION = "gateway.networking.k8s.io/v1"


class GatewayAPIRouter(TrafficRouter):
    mode: ClassVar[str] = "GatewayAPI"
    exact: ClassVar[bool] = True
    needs: ClassVar[frozenset[str]] = frozenset({ROUTE_KIND})
    canary_service: ClassVar[bool] = True
    # The canary's weight goes to 0 in one reconcile and the canary goes in a later one, this long after,
    # so the gateway has taken the new weights before the canary's pods terminate.
    drain: ClassVar[timedelta | None] = timedelta(seconds=5)

    def hold(self, unserved: frozenset[str]) -> tuple[str, str] | None:
        if ROUTE_KIND not in unserved:
            return None
        # The stable revision still serves through its Service; no canary starts without its route.
        return (
            "GatewayAPIMissing",
            f"trafficRouting is GatewayAPI but this cluster does not serve {ROUTE_KIND} ({ROUTE_API_VERSION}): "
            "install the Gateway API CRDs or use trafficRouting: Replicas",
        )

    def service_selector(self, md: ModelDeployment) -> dict[str, str]:
        # In-cluster clients of the Service keep getting the stable model; the route sends the canary its share.
        return selector(md, "stable")

    def _canary_share(self, capacity: int, weight: int, *, autoscaled: bool) -> int:
        return share(capacity, weight)

    def stable_replicas(self, capacity: int, *, canary_ready: int, canary_replicas: int) -> int:
        return capacity  # exact weights need no replica arithmetic

    def weight(self, *, route_weight: int, stable_ready: int, canary_ready: int) -> int:
        return route_weight

    def split(self, *, canary_ready: int, ready: int) -> str:
        return f"exact weights through the {ROUTE_KIND}"


def _gateways(md: ModelDeployment) -> tuple[list[dict[str, Any]], list[str]]:
    """The route's parentRefs and hostnames: spec.expose's when the model is exposed, else rollout.gateway's."""
    if md.spec.expose is not None:
        return [ref.wire() for ref in md.spec.expose.parent_refs], [md.spec.expose.hostname]
    gateway = md.spec.rollout.gateway
    assert gateway is not None  # admission: GatewayAPI needs rollout.gateway or expose
    return [ref.wire() for ref in gateway.parent_refs], list(gateway.hostnames)


def render_route(md: ModelDeployment, *, canary_weight: int, with_canary: bool, split: bool = True) -> dict[str, Any]:
    """The HTTPRoute `<name>`. Split (GatewayAPI): stable and canary Services with their exact weights.
    Not split (Replicas, exposed): the one Service `<name>`, whose pods carry the approximate shares."""
    port = md.spec.service.port
    backends: list[dict[str, Any]] = [{"kind": "Service", "name": child_name(md, "stable"), "port": port}]
    if split:
        backends[0]["weight"] = 100 - canary_weight
        if with_canary:
            backends.append(
                {"kind": "Service", "name": child_name(md, "canary"), "port": port, "weight": canary_weight}
            )
    parent_refs, hostnames = _gateways(md)
    spec: dict[str, Any] = {"parentRefs": parent_refs, "rules": [{"backendRefs": backends}]}
    if hostnames:
        spec["hostnames"] = hostnames
    return {"apiVersion": ROUTE_API_VERSION, "kind": ROUTE_KIND, "metadata": metadata(md, md.name), "spec": spec}


ROUTER = GatewayAPIRouter()


def needed(md: ModelDeployment) -> bool:
    """Whether the spec wants the HTTPRoute: exact canary weights, or the model exposed (or both)."""
    return ROUTER.routes(md) or md.spec.expose is not None


def render_routes(desired: Desired) -> list[dict[str, Any]]:
    """The HTTPRoute row of the table of child kinds."""
    md = desired.md
    if not needed(md):
        return []
    return [
        render_route(
            md, canary_weight=desired.route_weight, with_canary=desired.canary is not None, split=ROUTER.routes(md)
        )
    ]
