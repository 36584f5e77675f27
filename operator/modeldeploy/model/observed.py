"""What a reconcile observed in the cluster, reduced to what the rollout decides on.

The shell (modeldeploy.k8s) reads these from raw objects; everything here is plain values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from modeldeploy.model.measurement import Measurement


@dataclass(frozen=True)
class DeploymentState:
    """A serving Deployment as the Deployment controller reports it."""

    name: str
    revision: str | None
    generation: int
    observed_generation: int
    spec_replicas: int
    replicas: int
    updated_replicas: int
    ready_replicas: int
    available_replicas: int
    progress_deadline_exceeded: bool = False
    replica_failure: str | None = None
    # Whether the operator's field manager owns spec.replicas (matters when an HPA takes over).
    replicas_owned_by: frozenset[str] = frozenset()

    @property
    def current(self) -> bool:
        """The controller has seen the latest spec."""
        return self.observed_generation >= self.generation

    @property
    def struggling(self) -> bool:
        """Not every pod is Ready yet: the moment to look at the pods for why."""
        return not self.current or self.ready_replicas < self.spec_replicas

    def ready_at(self, revision: str) -> int:
        """Ready pods serving `revision` (none while the controller lags or runs another revision)."""
        if self.revision != revision or not self.current:
            return 0
        # During a rolling update readyReplicas counts old pods too; updatedReplicas bounds the new ones.
        return min(self.ready_replicas, self.updated_replicas)

    def rolled_out(self, revision: str) -> bool:
        """Every pod runs `revision`, is available, and no old pod is left."""
        return (
            self.revision == revision
            and self.current
            and self.updated_replicas == self.spec_replicas
            and self.replicas == self.spec_replicas
            and self.available_replicas == self.spec_replicas
        )


@dataclass(frozen=True)
class PodProblem:
    """Why a model server pod does not become Ready, in words a person can act on."""

    role: str
    reason: str
    message: str
    # Problems that will not fix themselves by waiting (a crash loop, a bad image).
    fatal: bool
    # (kind, name) of a Secret or ConfigMap the pod needs and the kubelet cannot find.
    missing: tuple[str, str] | None = None


@dataclass(frozen=True)
class Observed:
    """One reconcile's view of the cluster; `now` is the reconcile's clock."""

    now: datetime
    stable: DeploymentState | None = None
    canary: DeploymentState | None = None
    pod_problems: tuple[PodProblem, ...] = ()
    # Required references of the desired revision that do not exist, described for people.
    missing_references: tuple[str, ...] = ()
    # Child kinds the traffic router needs that this cluster does not serve (their CRDs are not installed).
    unserved: frozenset[str] = frozenset()
    measurement: Measurement | None = None
