"""The opt-in NetworkPolicy of a model: ingress to the model servers' port only from the peers the spec names.

Over every pod of the ModelDeployment (stable and canary share one policy), Ingress only: what the
model servers call (a bento store, other services) is left to the cluster's own policies. Rendered only
when spec.networkPolicy.enabled is true.
"""

from __future__ import annotations

from typing import Any

from modeldeploy.api.v1alpha1 import LabelSelector, ModelDeployment, NetworkPeer
from modeldeploy.model.desired import Desired
from modeldeploy.model.meta import child_name, metadata, selector

# The model servers' port (render.deployment.HTTP_PORT): renderers do not import each other.
SERVING_PORT = 3000


def _selector(found: LabelSelector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if found.match_labels:
        out["matchLabels"] = dict(sorted(found.match_labels.items()))
    if found.match_expressions:
        out["matchExpressions"] = [
            {"key": r.key, "operator": r.operator, **({"values": list(r.values)} if r.values else {})}
            for r in found.match_expressions
        ]
    return out


def _peer(peer: NetworkPeer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if peer.namespace_selector is not None:
        out["namespaceSelector"] = _selector(peer.namespace_selector)
    if peer.pod_selector is not None:
        out["podSelector"] = _selector(peer.pod_selector)
    return out


def render_network_policy(md: ModelDeployment) -> dict[str, Any]:
    settings = md.spec.network_policy
    assert settings is not None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(md, child_name(md)),
        "spec": {
            "podSelector": {"matchLabels": selector(md)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [_peer(peer) for peer in settings.from_],
                    "ports": [{"protocol": "TCP", "port": SERVING_PORT}],
                }
            ],
        },
    }


def render_network_policies(desired: Desired) -> list[dict[str, Any]]:
    settings = desired.md.spec.network_policy
    return [render_network_policy(desired.md)] if settings is not None and settings.enabled else []
