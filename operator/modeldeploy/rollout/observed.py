"""What the reconciler observed in the cluster, reduced to what the rollout decides on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modeldeploy.api.measurement import Measurement
from modeldeploy.api.v1alpha1.revision import REVISION_LABEL, ROLE_LABEL


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

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> DeploymentState:
        meta = obj.get("metadata", {})
        spec = obj.get("spec", {})
        status = obj.get("status", {}) or {}
        labels = spec.get("template", {}).get("metadata", {}).get("labels", {}) or {}
        conditions = {c.get("type"): c for c in status.get("conditions", []) or []}
        progressing = conditions.get("Progressing", {})
        failure = conditions.get("ReplicaFailure", {})
        owners = frozenset(
            entry.get("manager", "")
            for entry in meta.get("managedFields", []) or []
            if "f:replicas" in (entry.get("fieldsV1", {}).get("f:spec", {}) or {})
        )
        return cls(
            name=meta.get("name", ""),
            revision=labels.get(REVISION_LABEL),
            generation=int(meta.get("generation", 0)),
            observed_generation=int(status.get("observedGeneration", 0)),
            spec_replicas=int(spec.get("replicas", 1)),
            replicas=int(status.get("replicas", 0)),
            updated_replicas=int(status.get("updatedReplicas", 0)),
            ready_replicas=int(status.get("readyReplicas", 0)),
            available_replicas=int(status.get("availableReplicas", 0)),
            progress_deadline_exceeded=progressing.get("reason") == "ProgressDeadlineExceeded",
            replica_failure=failure.get("message") if failure.get("status") == "True" else None,
            replicas_owned_by=owners,
        )

    @property
    def current(self) -> bool:
        """The controller has seen the latest spec."""
        return self.observed_generation >= self.generation

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


_WAITING_REASONS = {
    "ImagePullBackOff": ("ImagePullFailed", True),
    "ErrImagePull": ("ImagePullFailed", True),
    "InvalidImageName": ("ImagePullFailed", True),
    "CrashLoopBackOff": ("CrashLoop", True),
    "CreateContainerConfigError": ("ContainerConfigError", True),
    "CreateContainerError": ("ContainerConfigError", True),
    "RunContainerError": ("ContainerConfigError", True),
}


def pod_problems(pods: Iterable[Mapping[str, Any]]) -> tuple[PodProblem, ...]:
    """The distinct problems of the given pods, one per (role, reason)."""
    found: dict[tuple[str, str], PodProblem] = {}
    for pod in pods:
        meta = pod.get("metadata", {})
        if meta.get("deletionTimestamp"):
            continue
        role = (meta.get("labels") or {}).get(ROLE_LABEL, "stable")
        status = pod.get("status", {}) or {}
        name = meta.get("name", "")
        for cond in status.get("conditions", []) or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                message = f"pod {name} cannot be scheduled: {cond.get('message', '')}".strip()
                found.setdefault((role, "Unschedulable"), PodProblem(role, "Unschedulable", message, False))
        statuses = [("init container", s) for s in status.get("initContainerStatuses", []) or []]
        statuses += [("container", s) for s in status.get("containerStatuses", []) or []]
        for what, cs in statuses:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            mapped = _WAITING_REASONS.get(waiting.get("reason", ""))
            if mapped is None:
                continue
            reason, fatal = mapped
            if what == "init container" and cs.get("name") == "fetch-bento" and reason == "CrashLoop":
                reason = "BentoFetchFailed"
            detail = waiting.get("message") or waiting.get("reason")
            message = f"{what} {cs.get('name')} of pod {name}: {waiting.get('reason')}: {detail}"
            found.setdefault((role, reason), PodProblem(role, reason, message, fatal))
    return tuple(found.values())


@dataclass(frozen=True)
class Observed:
    """One reconcile's view of the cluster; `now` is the reconcile's clock."""

    now: datetime
    stable: DeploymentState | None = None
    canary: DeploymentState | None = None
    # (kind, name) of the children that exist, for removing the ones no longer wanted.
    children: frozenset[tuple[str, str]] = frozenset()
    pod_problems: tuple[PodProblem, ...] = ()
    # Required references of the desired revision that do not exist, described for people.
    missing_references: tuple[str, ...] = ()
    gateway_api: bool = True
    measurement: Measurement | None = None
