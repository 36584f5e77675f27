"""Replicas routing: stable and canary pods behind one Service; replica counts set the split (any cluster)."""

from __future__ import annotations

import math
from typing import ClassVar

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.model.meta import selector
from modeldeploy.routing.base import TrafficRouter, share


class ReplicasRouter(TrafficRouter):
    mode: ClassVar[str] = "Replicas"
    exact: ClassVar[bool] = False

    def service_selector(self, md: ModelDeployment) -> dict[str, str]:
        return selector(md)

    def _canary_share(self, capacity: int, weight: int, *, autoscaled: bool) -> int:
        if autoscaled:
            # The autoscaler owns the stable size, so the canary is added beside it.
            return capacity if weight >= 50 else math.ceil(capacity * weight / (100 - weight))
        return share(capacity, weight)

    def stable_replicas(self, capacity: int, *, canary_ready: int, canary_replicas: int) -> int:
        # The stable gives up one pod per Ready canary pod, never before: capacity is kept throughout.
        return max(capacity - min(canary_ready, canary_replicas), 0)

    def weight(self, *, route_weight: int, stable_ready: int, canary_ready: int) -> int:
        ready = stable_ready + canary_ready
        return round(100 * canary_ready / ready) if ready else 0

    def split(self, *, canary_ready: int, ready: int) -> str:
        return f"approximate: {canary_ready} of {ready} Ready pods are canary pods"


ROUTER = ReplicasRouter()
