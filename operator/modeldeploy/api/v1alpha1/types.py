"""ModelDeployment v1alpha1: the pydantic models the CRD is generated from.

Every field carries a description (it is what `kubectl explain` shows), and every
cross-field rule is a `Rule` enforced both by the API server (CEL) and by pydantic.
The spec's parts live in `serving` and `rollout`, the status in `status`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field

from modeldeploy.api.base import ApiModel
from modeldeploy.api.duration import Duration, bounded
from modeldeploy.api.meta import ObjectMeta
from modeldeploy.api.rules import Rule
from modeldeploy.api.v1alpha1.env import MAX_ENV, Env
from modeldeploy.api.v1alpha1.expose import Expose
from modeldeploy.api.v1alpha1.formats import DNSSubdomain
from modeldeploy.api.v1alpha1.network import NetworkPolicySettings
from modeldeploy.api.v1alpha1.rollout import Rollout
from modeldeploy.api.v1alpha1.serving import (
    Autoscaling,
    Bento,
    BentoConfig,
    LocalObjectReference,
    Placement,
    Resources,
    ServiceSettings,
)
from modeldeploy.api.v1alpha1.status import ModelDeploymentStatus

GROUP = "modeldeploy.dev"
VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
API_VERSION = f"{GROUP}/{VERSION}"

# Manual rollout control, GitOps-safe: the value names the canary revision it applies to,
# so an annotation left behind (or kept in git) never acts on a later canary.
PROMOTE_ANNOTATION = f"{GROUP}/promote"
ABORT_ANNOTATION = f"{GROUP}/abort"

# Child objects are named <name> and <name>-canary, and Services need DNS-1035 labels.
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MAX_NAME_LENGTH = 63 - len("-canary")


class ModelDeploymentSpec(ApiModel):
    """The desired state of a deployed model."""

    crd_rules = (
        Rule(
            cel=(
                "!has(self.autoscaling) || !self.autoscaling.metrics.exists(m, m.type == 'cpu') || "
                "(has(self.resources) && has(self.resources.requests) && 'cpu' in self.resources.requests)"
            ),
            message="autoscaling on cpu needs resources.requests.cpu",
            field_path=".autoscaling",
            check=lambda s: (
                s.autoscaling is None
                or all(m.type != "cpu" for m in s.autoscaling.metrics)
                or "cpu" in s.resources.requests
            ),
        ),
        Rule(
            cel=(
                "!has(self.autoscaling) || !self.autoscaling.metrics.exists(m, m.type == 'memory') || "
                "(has(self.resources) && has(self.resources.requests) && 'memory' in self.resources.requests)"
            ),
            message="autoscaling on memory needs resources.requests.memory",
            field_path=".autoscaling",
            check=lambda s: (
                s.autoscaling is None
                or all(m.type != "memory" for m in s.autoscaling.metrics)
                or "memory" in s.resources.requests
            ),
        ),
        Rule(
            cel="self.rollout.trafficRouting != 'GatewayAPI' || has(self.rollout.gateway) || has(self.expose)",
            message="rollout.gateway (or expose) is required when trafficRouting is GatewayAPI",
            field_path=".rollout.gateway",
            check=lambda s: (
                s.rollout.traffic_routing != "GatewayAPI" or s.rollout.gateway is not None or s.expose is not None
            ),
        ),
        Rule(
            cel="!has(self.expose) || !has(self.rollout.gateway)",
            message=(
                "expose and rollout.gateway both name the HTTPRoute's Gateways: set expose only "
                "(its route carries the canary weights too)"
            ),
            field_path=".expose",
            check=lambda s: s.expose is None or s.rollout.gateway is None,
        ),
    )

    bento: Bento = Field(description="The bento to serve.")
    replicas: int = Field(default=1, ge=0, le=1000, description="Model server replicas; ignored with autoscaling.")
    autoscaling: Autoscaling | None = Field(default=None, description="Horizontal autoscaling; replaces replicas.")
    resources: Resources = Field(default_factory=Resources, description="Compute resources of each replica.")
    env: Env = Field(
        default_factory=list,
        max_length=MAX_ENV,
        description=(
            "Environment of the model server; names must be unique. What the operator sets for serving "
            "(BENTOML_PORT, BENTOML_HOST, BENTOML_HOME, BENTOML_CONFIG*, BENTO_PATH, TMPDIR) cannot be set."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    bento_config: BentoConfig = Field(default_factory=BentoConfig, description="BentoML serving configuration.")
    rollout: Rollout = Field(default_factory=Rollout, description="How changes of the model reach the pods.")
    placement: Placement = Field(default_factory=Placement, description="Where the pods may run.")
    service: ServiceSettings = Field(default_factory=ServiceSettings, description="The Service in front.")
    expose: Expose | None = Field(
        default=None,
        description=(
            "Publish the model outside the cluster through a Gateway (Gateway API): an HTTPRoute at a hostname, "
            "which becomes status.url."
        ),
    )
    network_policy: NetworkPolicySettings | None = Field(
        default=None,
        description=(
            "An opt-in NetworkPolicy over the model's pods: ingress to its port only from the peers named. "
            "None unless enabled: who may call a model is the cluster's to say."
        ),
    )
    service_account_name: DNSSubdomain | None = Field(
        default=None,
        description=(
            "ServiceAccount of the model server pods; the namespace default when unset. The operator may forbid "
            "it (its --forbid-service-account-name)."
        ),
    )
    automount_service_account_token: bool | None = Field(
        default=None,
        description=(
            "Give the pods an API token of their ServiceAccount. Off unless set to true: a model server "
            "has no business with the Kubernetes API."
        ),
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list, max_length=16, description="Secrets used to pull the serving image."
    )
    startup_timeout: Annotated[Duration, bounded("10s", "24h")] = Field(
        default=Duration("10m"),
        description=(
            "How long a model server may take to load its model before it is restarted, 10s to 24h "
            "(the startup probe checks every 10s)."
        ),
    )


class ModelDeployment(ApiModel):
    """A BentoML model served in the cluster, updated by canary or rolling rollouts."""

    crd_rules = (
        Rule(
            cel=f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
            message=f"metadata.name must be at most {MAX_NAME_LENGTH} characters: child objects add -canary",
            check=lambda m: len(m.metadata.name) <= MAX_NAME_LENGTH,
        ),
        Rule(
            cel=f"self.metadata.name.matches('{NAME_PATTERN}')",
            message="metadata.name must be a DNS-1035 label (lowercase letters, digits, '-', starting with a letter)",
            check=lambda m: re.fullmatch(NAME_PATTERN, m.metadata.name) is not None,
        ),
    )

    api_version: Literal["modeldeploy.dev/v1alpha1"] = Field(
        default="modeldeploy.dev/v1alpha1", description="The API version."
    )
    kind: Literal["ModelDeployment"] = Field(default="ModelDeployment", description="ModelDeployment.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")
    spec: ModelDeploymentSpec = Field(description="The desired state.")
    status: ModelDeploymentStatus | None = Field(default=None, description="The observed state.")

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"
