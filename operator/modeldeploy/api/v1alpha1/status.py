"""What the operator observed and decided, as `kubectl get` and `kubectl describe` show it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from modeldeploy.api.base import ApiModel
from modeldeploy.api.timestamp import Timestamp


class Condition(ApiModel):
    """A Kubernetes-style condition."""

    type: str = Field(description="Ready, Available, Progressing, Degraded, Reconciling or Stalled.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="A CamelCase reason, for machines.")
    message: str = Field(default="", description="What happened and what to do, for people.")
    last_transition_time: Timestamp | None = Field(default=None, description="When status last changed.")
    observed_generation: int | None = Field(default=None, description="The generation this condition describes.")


class RevisionStatus(ApiModel):
    """A revision of the model server: what runs and how much of it."""

    revision: str = Field(description="Hash of the pod-affecting spec; the modeldeploy.dev/revision label.")
    bento: str = Field(description="The bento tag or image of this revision.")
    replicas: int = Field(default=0, description="Pods of this revision.")
    ready_replicas: int = Field(default=0, description="Ready pods of this revision.")
    template: dict[str, Any] = Field(
        default_factory=dict,
        description="The pod-affecting part of the spec this revision was made from, kept to re-render it.",
    )


class CheckResult(ApiModel):
    """One metric check of an analysis."""

    name: str = Field(description="requests, errorRate or latencyP99.")
    value: float | None = Field(default=None, description="The measured value; absent when it could not be measured.")
    threshold: float | None = Field(default=None, description="The limit it was judged against.")
    passed: bool = Field(description="Whether the check passed.")
    message: str = Field(default="", description="What was measured, or why it could not be.")


class AnalysisStatus(ApiModel):
    """The state of a canary's analysis."""

    failures: int = Field(default=0, description="Failed measurements since the canary started.")
    measurements: int = Field(default=0, description="Measurements taken at the current step.")
    verdict: Literal["Passed", "Failed", "NoData"] | None = Field(
        default=None, description="Verdict of the last measurement."
    )
    last_measured_at: Timestamp | None = Field(default=None, description="When the last measurement was taken.")
    waiting_for_data_since: Timestamp | None = Field(
        default=None, description="Since when the canary has served fewer than minRequests per window."
    )
    checks: list[CheckResult] = Field(default_factory=list, description="Results of the last measurement.")


class CanaryStatus(RevisionStatus):
    """The revision under test."""

    state: Literal["Progressing", "Promoting", "RollingBack"] = Field(
        default="Progressing", description="Progressing through steps, Promoting, or RollingBack."
    )
    step: int = Field(default=0, description="Index of the current step in spec.rollout.steps.")
    step_weight: int = Field(default=0, description="Percent of traffic the current step sends to the canary.")
    steps_hash: str | None = Field(
        default=None,
        description=(
            "Hash of the spec.rollout.steps the canary walks; when the steps are edited mid-canary the walk "
            "restarts at the first of the new steps."
        ),
    )
    weight: int = Field(
        default=0,
        description=(
            "Percent of traffic the canary receives now: the exact HTTPRoute weight, or with Replicas "
            "routing its share of the ready pods."
        ),
    )
    paused: bool = Field(default=False, description="Whether progression is held by spec.rollout.paused.")
    started_at: Timestamp | None = Field(default=None, description="When the canary started.")
    step_started_at: Timestamp | None = Field(
        default=None,
        description=(
            "When the current step started, or when its canary pods stopped being Ready after they were "
            "(a pod evicted by a drain, say); progressDeadline counts from here."
        ),
    )
    step_ready_at: Timestamp | None = Field(
        default=None, description="When the current step's canary pods were Ready; its pause counts from here."
    )
    reason: str | None = Field(default=None, description="Why the canary is promoting or rolling back (CamelCase).")
    message: str | None = Field(default=None, description="The measurement or event behind it, for people.")
    analysis: AnalysisStatus = Field(default_factory=AnalysisStatus, description="Analysis state.")


class FailedRevision(ApiModel):
    """A revision that was rolled back; not tried again until the spec changes."""

    revision: str = Field(description="The rolled-back revision.")
    bento: str = Field(description="Its bento.")
    reason: str = Field(description="Why it was rolled back (CamelCase).")
    message: str = Field(default="", description="The failed measurement or event.")
    at: Timestamp | None = Field(default=None, description="When the rollback finished.")


class ModelDeploymentStatus(ApiModel):
    """The observed state of a deployed model."""

    observed_generation: int | None = Field(default=None, description="The generation last reconciled.")
    phase: Literal["Pending", "Progressing", "Ready", "Degraded", "Failed"] | None = Field(
        default=None, description="Pending, Progressing, Ready, Degraded or Failed."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Available, Progressing, Degraded; Reconciling and Stalled as kstatus reads them.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    url: str | None = Field(
        default=None,
        description="URL of the model's HTTP API: through its Gateway when exposed (spec.expose), else in-cluster.",
    )
    replicas: int | None = Field(default=None, description="Model server pods, all revisions.")
    ready_replicas: int | None = Field(default=None, description="Ready model server pods, all revisions.")
    stable: RevisionStatus | None = Field(default=None, description="The revision serving most traffic.")
    canary: CanaryStatus | None = Field(default=None, description="The revision under test, during a canary.")
    failed: FailedRevision | None = Field(default=None, description="The last rolled-back revision.")
