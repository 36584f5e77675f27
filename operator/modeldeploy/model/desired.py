"""What the rollout wants running: the input of every child kind's renderer."""

from __future__ import annotations

from dataclasses import dataclass

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.model.revision import RevisionPlan


@dataclass(frozen=True)
class Desired:
    md: ModelDeployment
    stable: RevisionPlan
    canary: RevisionPlan | None = None
    # The canary's share of traffic where a router sets it exactly (an HTTPRoute weight).
    route_weight: int = 0
