"""The PodDisruptionBudget of a model: voluntary disruptions (a node drain, the cluster autoscaler) take its
pods one at a time.

One budget covers every pod of the ModelDeployment, stable and canary alike (the selector is the
name label only), so a drain never takes the last Ready pods of either revision at once.

The rule: `maxUnavailable: 1` whenever the model may run two pods or more (spec.replicas >= 2, or an
autoscaler allowed to go to two or more); none otherwise. `maxUnavailable` rather than `minAvailable`
because the count moves: the disruption controller computes it against the replicas the Deployments
ask for right now (what the autoscaler set, plus a canary's), so one pod may always go, and a model the
autoscaler scaled down to a single pod is never held on a node being drained. Pods that are not Ready
are evicted regardless (`unhealthyPodEvictionPolicy: AlwaysAllow`): a crash-looping pod must not block
a drain, and evicting it costs no serving capacity.
"""

from __future__ import annotations

from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.model.desired import Desired
from modeldeploy.model.meta import child_name, metadata, selector

MAX_UNAVAILABLE = 1


def most_replicas(md: ModelDeployment) -> int:
    """The most stable pods the spec allows: its replicas, or the autoscaler's maximum."""
    scaling = md.spec.autoscaling
    return scaling.max_replicas if scaling is not None else md.spec.replicas


def render_pdb(md: ModelDeployment) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(md, child_name(md)),
        "spec": {
            "maxUnavailable": MAX_UNAVAILABLE,
            "selector": {"matchLabels": selector(md)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def render_pdbs(desired: Desired) -> list[dict[str, Any]]:
    return [render_pdb(desired.md)] if most_replicas(desired.md) >= 2 else []
