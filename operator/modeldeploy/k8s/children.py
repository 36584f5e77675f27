"""The one table of child kinds: what each is in the API, whether the cluster may lack it, what renders it
and what a reconcile reads of it.

Everything else about a kind is derived from this table: the kinds kopf watches
(modeldeploy.handlers.operator), the client's resource paths (modeldeploy.k8s.client), the RBAC
rules the chart must grant (modeldeploy.k8s.access, checked against the chart by a unit test),
the order children are applied in, and the owner check every child goes through.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.k8s.objects import created_not_applied, deployment_state
from modeldeploy.model.desired import Desired
from modeldeploy.model.observed import DeploymentState
from modeldeploy.model.revision import RevisionPlan
from modeldeploy.model.scaling import SCALED_OBJECT_API_VERSION, SCALED_OBJECT_KIND
from modeldeploy.render import podmonitor
from modeldeploy.render.autoscaler import render_autoscalers, render_scaled_objects
from modeldeploy.render.deployment import render_deployments
from modeldeploy.render.disruption import render_pdbs
from modeldeploy.render.network import render_network_policies
from modeldeploy.render.service import render_services
from modeldeploy.routing import gateway

Renderer = Callable[[Desired], list[dict[str, Any]]]
Observer = Callable[[Mapping[str, Any]], DeploymentState]


@dataclass(frozen=True)
class ChildKind:
    api_version: str
    kind: str
    plural: str
    # The objects of this kind a plan wants (none is fine).
    render: Renderer
    # Its CRD may be absent, or go away. Never watched: kopf's watch of a resource whose CRD is deleted can
    # end the whole operator. Rendered only once the cluster is seen to serve it, found and removed by name
    # (at most one object, named after the ModelDeployment), and its status feeds nothing of ours.
    optional: bool = False
    # What a reconcile reads of its objects beyond their existence.
    observe: Observer | None = None
    # An optional kind nothing needs: where the cluster does not serve it, it is left out and nothing is
    # said (a PodMonitor where no Prometheus Operator runs), instead of Degraded ChildKindNotServed.
    if_served: bool = False

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


# In the order children are applied: Deployments first, so a Service or route never points at pods
# that were never asked for.
CHILD_KINDS = (
    ChildKind("apps/v1", "Deployment", "deployments", render_deployments, observe=deployment_state),
    ChildKind("v1", "Service", "services", render_services),
    ChildKind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", render_autoscalers),
    ChildKind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", render_pdbs),
    ChildKind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", render_network_policies),
    ChildKind(gateway.ROUTE_API_VERSION, gateway.ROUTE_KIND, "httproutes", gateway.render_routes, optional=True),
    ChildKind(SCALED_OBJECT_API_VERSION, SCALED_OBJECT_KIND, "scaledobjects", render_scaled_objects, optional=True),
    ChildKind(
        podmonitor.API_VERSION,
        podmonitor.KIND,
        "podmonitors",
        podmonitor.render_pod_monitors,
        optional=True,
        if_served=True,
    ),
)
BY_KIND = {child.kind: child for child in CHILD_KINDS}
WATCHED = tuple(child for child in CHILD_KINDS if not child.optional)
OPTIONAL = tuple(child for child in CHILD_KINDS if child.optional)
IF_SERVED = tuple(child for child in CHILD_KINDS if child.if_served)


def render_children(
    md: ModelDeployment,
    stable: RevisionPlan | None,
    canary: RevisionPlan | None,
    *,
    route_weight: int = 0,
    unserved: frozenset[str] = frozenset(),
    served: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """Every child a plan wants, in the order they are applied; none of a kind the cluster does not serve.

    Kinds of `if_served` rows only when named in SERVED (the cluster is seen to serve them).
    """
    if stable is None:
        return []
    desired = Desired(md, stable, canary, route_weight)
    return [
        obj
        for child in CHILD_KINDS
        if child.kind not in unserved and (not child.if_served or child.kind in served)
        for obj in child.render(desired)
    ]


# On every child: a digest of what the operator last applied, so an unchanged child is not applied again.
APPLIED_ANNOTATION = "modeldeploy.dev/applied"


@dataclass(frozen=True)
class Child:
    """What the operator keeps of a child object, found by a watch or read by name."""

    api_version: str
    kind: str
    name: str
    uid: str
    # The uid of its controller: only a child whose controller is the ModelDeployment is taken as its own.
    owner: str | None = None
    state: DeploymentState | None = None
    applied: str | None = None  # the APPLIED_ANNOTATION it carries
    generation: int | None = None
    # Created by the operator and never applied since: Client.adopt comes before its first apply.
    unadopted: bool = False


def read_child(kind: ChildKind, obj: Mapping[str, Any]) -> Child:
    meta = obj.get("metadata", {})
    owner = next((ref.get("uid") for ref in meta.get("ownerReferences") or [] if ref.get("controller")), None)
    return Child(
        api_version=kind.api_version,
        kind=kind.kind,
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        owner=owner,
        state=kind.observe(obj) if kind.observe is not None else None,
        applied=(meta.get("annotations") or {}).get(APPLIED_ANNOTATION),
        generation=meta.get("generation"),
        unadopted=created_not_applied(meta),
    )
