"""The TrafficRouter interface: how one spec.rollout.trafficRouting mode splits traffic between revisions.

The planner asks its router how big a canary must be, what share of traffic it really gets
and whether the cluster can route at all; the renderers ask it which pods the Service selects
and whether the canary needs a Service of its own. A router renders the children only it needs
(in its own module, listed in the table of child kinds).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from datetime import timedelta
from typing import ClassVar

from modeldeploy.api.v1alpha1 import ModelDeployment


class TrafficRouter(ABC):
    mode: ClassVar[str]
    # True: the canary gets exactly the step's weight. False: an approximation from pod counts.
    exact: ClassVar[bool]
    # Optional child kinds (modeldeploy.k8s.children) the router cannot work without.
    needs: ClassVar[frozenset[str]] = frozenset()
    # Whether the canary gets a Service of its own, `<name>-canary`, for the router to send traffic to.
    canary_service: ClassVar[bool] = False
    # How long a canary whose weight went to 0 keeps its pods, for the data path to take the new weights;
    # None: its traffic ends with its pods.
    drain: ClassVar[timedelta | None] = None

    def hold(self, unserved: frozenset[str]) -> tuple[str, str] | None:
        """(reason, message) when no canary can start because the cluster lacks a kind this router needs."""
        return None

    @abstractmethod
    def service_selector(self, md: ModelDeployment) -> dict[str, str]:
        """The pods the Service `<name>` selects."""

    def canary_replicas(self, capacity: int, weight: int, *, autoscaled: bool) -> int:
        """Canary pods for a step: its share of the capacity, at least one, never more than the capacity."""
        return min(max(self._canary_share(capacity, weight, autoscaled=autoscaled), 1), max(capacity, 1))

    @abstractmethod
    def _canary_share(self, capacity: int, weight: int, *, autoscaled: bool) -> int: ...

    @abstractmethod
    def stable_replicas(self, capacity: int, *, canary_ready: int, canary_replicas: int) -> int:
        """Stable pods while a canary progresses (the autoscaler's when it owns the stable size)."""

    @abstractmethod
    def weight(self, *, route_weight: int, stable_ready: int, canary_ready: int) -> int:
        """The percent of traffic the canary really gets now, given the route weight the plan asks for."""

    @abstractmethod
    def split(self, *, canary_ready: int, ready: int) -> str:
        """How the split is made, for people (the Progressing condition)."""

    def routes(self, md: ModelDeployment) -> bool:
        """Whether this router carries the spec's traffic: what gates the children only it renders."""
        return md.spec.rollout.traffic_routing == self.mode


def share(capacity: int, weight: int) -> int:
    """Pods out of `capacity` that carry `weight` percent, rounded up."""
    return math.ceil(capacity * weight / 100)
