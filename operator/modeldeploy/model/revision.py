"""Revisions: the pod-affecting part of a spec, the hash that names it, and what the rollout asks to run.

Changing anything in a RevisionTemplate changes the pods, so it makes a new revision (and, with
the Canary strategy, a canary). Replicas, autoscaling, the rollout settings and the Service do
not: they apply to whatever revision runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import Field

from modeldeploy.api.base import ApiModel
from modeldeploy.api.duration import Duration
from modeldeploy.api.v1alpha1 import (
    Bento,
    BentoConfig,
    CanaryStep,
    EnvVar,
    LocalObjectReference,
    ModelDeploymentSpec,
    Placement,
    Resources,
)
from modeldeploy.model.digest import digest
from modeldeploy.model.meta import Role

REVISION_LENGTH = 10


class RevisionTemplate(ApiModel):
    """Everything a model server pod is rendered from; kept in status to render a revision again."""

    bento: Bento
    resources: Resources = Field(default_factory=Resources)
    env: list[EnvVar] = Field(default_factory=list)
    bento_config: BentoConfig = Field(default_factory=BentoConfig)
    placement: Placement = Field(default_factory=Placement)
    service_account_name: str | None = None
    automount_service_account_token: bool | None = None
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list)
    startup_timeout: Duration = Duration("10m")

    @property
    def revision(self) -> str:
        return digest(self.wire(), REVISION_LENGTH)


def template_of(spec: ModelDeploymentSpec, default_runtime_image: str | None = None) -> RevisionTemplate:
    """The spec's revision template, with the operator's default runtime image filled in.

    The default is written into the template so that changing it on the operator
    makes a new revision (the pods change), and so that a stored template renders
    the same pods whatever the operator's setting is later.
    """
    bento = spec.bento
    if bento.tag is not None and bento.runtime_image is None and default_runtime_image:
        bento = bento.model_copy(update={"runtime_image": default_runtime_image})
    return RevisionTemplate(
        bento=bento,
        resources=spec.resources,
        env=spec.env,
        bento_config=spec.bento_config,
        placement=spec.placement,
        service_account_name=spec.service_account_name,
        automount_service_account_token=spec.automount_service_account_token,
        image_pull_secrets=spec.image_pull_secrets,
        startup_timeout=spec.startup_timeout,
    )


def steps_hash(steps: Sequence[CanaryStep]) -> str:
    """Names a list of canary steps, so an edit of them during a canary is seen (status.canary.stepsHash)."""
    return digest([step.wire() for step in steps], REVISION_LENGTH)


@dataclass(frozen=True)
class RevisionPlan:
    """One serving Deployment the rollout wants: what `rollout` decides and `render` draws."""

    role: Role
    revision: str
    template: RevisionTemplate
    replicas: int | None  # None: the HorizontalPodAutoscaler decides
