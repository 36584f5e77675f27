"""The operator's settings that change what is planned, and the specs they make it refuse.

A spec the API server admitted may still ask for what this operator cannot do (a bento tag with no
runtime image to serve it) or is not allowed to do (the platform team's policy). Such a spec is
refused as a whole, the way an invalid one is: its fields named, what runs left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.model.policy import Policy


@dataclass(frozen=True)
class PlanConfig:
    default_runtime_image: str | None = None
    policy: Policy = field(default_factory=Policy)


@dataclass(frozen=True)
class Refusal:
    reason: str  # InvalidSpec or NotAllowed
    problems: tuple[str, ...]  # one line each, "<field>: <why>"


def refusal(md: ModelDeployment, config: PlanConfig) -> Refusal | None:
    """Why this operator will not deploy the spec, or None."""
    spec = md.spec
    if spec.bento.tag is not None and spec.bento.runtime_image is None and not config.default_runtime_image:
        return Refusal(
            "InvalidSpec",
            (
                "spec.bento.runtimeImage: required with tag, since this operator has no --default-runtime-image: "
                "an image with bentoml installed to fetch and serve the bento",
            ),
        )
    policy = config.policy
    analysis = spec.rollout.analysis
    scaling_source = spec.autoscaling.prometheus if spec.autoscaling is not None else None
    refused = [
        problem
        for problem in (
            policy.service_type_refused(spec.service.type),
            policy.service_account_refused(spec.service_account_name),
            policy.metrics_refused(analysis.prometheus.address) if analysis is not None else None,
            # KEDA, not the operator, queries this one; it is the same kind of request, on the author's behalf.
            policy.metrics_refused(scaling_source.address, "spec.autoscaling.prometheus.address")
            if scaling_source is not None
            else None,
        )
        if problem is not None
    ]
    return Refusal("NotAllowed", tuple(refused)) if refused else None
