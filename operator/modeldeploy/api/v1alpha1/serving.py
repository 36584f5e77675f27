"""What serves the model: the bento, its resources and environment, BentoML's settings, placement, the Service."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, WithJsonSchema

from modeldeploy.api.base import ApiModel
from modeldeploy.api.rules import Rule

# Kubernetes resource.Quantity, as the core API's OpenAPI schema writes it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
    r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# A BentoML tag with an explicit version: a revision must name exactly one bento.
BENTO_TAG_PATTERN = r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?:[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$"
STORE_URI_PATTERN = r"^(s3|gs|az|https|pvc)://[^\s]+$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, str) and not re.fullmatch(QUANTITY_PATTERN, value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity such as 500m, 2Gi or 4")
    return value


Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string", "pattern": QUANTITY_PATTERN}]}),
]


# --- bento source -----------------------------------------------------------


class LocalObjectReference(ApiModel):
    """A reference to an object in the ModelDeployment's namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the referenced object.")


class BentoStore(ApiModel):
    """Where a bento archive is fetched from when no image was built for it."""

    uri: str = Field(
        pattern=STORE_URI_PATTERN,
        description=(
            "Prefix under which the archive <name>-<version>.bento is found, exported by "
            "`bentoml export`: s3://bucket/path, gs://bucket/path, az://container/path, "
            "https://host/path, or pvc://<claim>/<path> for a PersistentVolumeClaim."
        ),
    )
    secret_ref: LocalObjectReference | None = Field(
        default=None,
        description=(
            "Secret whose keys become environment variables of the fetching init container "
            "(for example AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY). It is referenced, never read."
        ),
    )


class Bento(ApiModel):
    """The model server: a prebuilt image, or a bento tag fetched from a store."""

    crd_rules = (
        Rule(
            cel="has(self.image) != has(self.tag)",
            message="exactly one of image or tag must be set",
            check=lambda b: (b.image is None) != (b.tag is None),
        ),
        Rule(
            cel="!has(self.tag) || has(self.store)",
            message="store is required when tag is set: it says where the bento archive is",
            field_path=".store",
            check=lambda b: b.tag is None or b.store is not None,
        ),
        Rule(
            cel="!has(self.image) || (!has(self.store) && !has(self.runtimeImage))",
            message="store and runtimeImage apply only to tag; an image already contains its bento",
            check=lambda b: b.image is None or (b.store is None and b.runtime_image is None),
        ),
    )

    image: str | None = Field(
        default=None,
        pattern=r"^\S+$",
        max_length=512,
        description="Image built by `bentoml containerize`; its entrypoint serves the bento on port 3000.",
    )
    tag: str | None = Field(
        default=None,
        pattern=BENTO_TAG_PATTERN,
        max_length=256,
        description="Bento tag name:version (an explicit version, never latest), fetched from store.",
    )
    store: BentoStore | None = Field(default=None, description="Where the bento archive for tag is found.")
    runtime_image: str | None = Field(
        default=None,
        pattern=r"^\S+$",
        max_length=512,
        description=(
            "Image with bentoml and the bento's Python dependencies installed, used to fetch and serve "
            "tag. Defaults to the operator's --default-runtime-image."
        ),
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Pull policy of the serving image; the Kubernetes default when unset."
    )

    @property
    def display(self) -> str:
        """What `kubectl get` shows: the tag, or the image's last path segment."""
        if self.tag is not None:
            return self.tag
        return (self.image or "").rsplit("/", 1)[-1].split("@", 1)[0]

    @property
    def name_and_version(self) -> tuple[str, str]:
        """(bento name, version) from the tag, or from the image repository and tag."""
        if self.tag is not None:
            name, _, version = self.tag.partition(":")
            return name, version
        last = (self.image or "").rsplit("/", 1)[-1]
        if "@" in last:
            repo, _, digest = last.partition("@")
            return repo.split(":", 1)[0], digest.rsplit(":", 1)[-1][:12]
        repo, _, version = last.partition(":")
        return repo, version or "latest"


# --- scaling and resources ----------------------------------------------------


class MetricTarget(ApiModel):
    """A resource the autoscaler keeps at a target average utilization of the requests."""

    type: Literal["cpu", "memory"] = Field(description="The resource: cpu or memory.")
    target: int = Field(ge=1, le=100, description="Target average utilization, in percent of the request.")


class Autoscaling(ApiModel):
    """Horizontal autoscaling of the stable revision; spec.replicas is then ignored."""

    crd_rules = (
        Rule(
            cel="self.minReplicas <= self.maxReplicas",
            message="minReplicas must be less than or equal to maxReplicas",
            field_path=".minReplicas",
            check=lambda a: a.min_replicas <= a.max_replicas,
        ),
        Rule(
            cel="self.metrics.all(m, self.metrics.exists_one(n, n.type == m.type))",
            message="each metric type may appear only once",
            field_path=".metrics",
            check=lambda a: len({m.type for m in a.metrics}) == len(a.metrics),
        ),
    )

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest replicas the autoscaler keeps.")
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas the autoscaler may create.")
    metrics: list[MetricTarget] = Field(
        default_factory=lambda: [MetricTarget(type="cpu", target=80)],
        min_length=1,
        max_length=2,
        description="Utilization targets; cpu needs resources.requests.cpu, memory needs resources.requests.memory.",
    )


class GPU(ApiModel):
    """Accelerators for each replica."""

    count: int = Field(default=0, ge=0, le=16, description="GPUs per replica, set as a limit of resourceName.")
    resource_name: str = Field(
        default="nvidia.com/gpu",
        pattern=LABEL_KEY_PATTERN,
        max_length=253,
        description="Extended resource name of the accelerator, nvidia.com/gpu unless your device plugin differs.",
    )


class Resources(ApiModel):
    """Compute resources of each model server container."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Requested resources, for example cpu: 500m and memory: 1Gi.",
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Resource limits, for example memory: 2Gi. GPUs go in gpu, not here.",
    )
    gpu: GPU | None = Field(default=None, description="GPUs per replica.")


# --- environment --------------------------------------------------------------


class KeySelector(ApiModel):
    """A key of a Secret or ConfigMap in the ModelDeployment's namespace."""

    name: str = Field(min_length=1, description="Name of the Secret or ConfigMap.")
    key: str = Field(min_length=1, description="The key to take the value from.")
    optional: bool | None = Field(default=None, description="Start the pod even when the key is missing.")


class FieldSelector(ApiModel):
    """A field of the pod, such as metadata.name or status.podIP."""

    field_path: str = Field(min_length=1, description="Path of the field, for example metadata.name.")
    api_version: str | None = Field(default=None, description="Version of the schema fieldPath is written in.")


class ResourceFieldSelector(ApiModel):
    """A resource request or limit of the model server container."""

    resource: str = Field(min_length=1, description="The resource, for example limits.memory.")
    divisor: Quantity | None = Field(default=None, description="Divisor of the exposed value.")


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from; exactly one source."""

    crd_rules = (
        Rule(
            cel=(
                "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef), "
                "has(self.resourceFieldRef)].filter(x, x).size() == 1"
            ),
            message="exactly one of secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef must be set",
            check=lambda s: (
                sum(x is not None for x in (s.secret_key_ref, s.config_map_key_ref, s.field_ref, s.resource_field_ref))
                == 1
            ),
        ),
    )

    secret_key_ref: KeySelector | None = Field(default=None, description="A key of a Secret.")
    config_map_key_ref: KeySelector | None = Field(default=None, description="A key of a ConfigMap.")
    field_ref: FieldSelector | None = Field(default=None, description="A field of the pod.")
    resource_field_ref: ResourceFieldSelector | None = Field(default=None, description="A resource of the container.")


class EnvVar(ApiModel):
    """An environment variable of the model server, as in a Kubernetes container."""

    crd_rules = (
        Rule(
            cel="!(has(self.value) && has(self.valueFrom))",
            message="value and valueFrom are mutually exclusive",
            check=lambda e: not (e.value is not None and e.value_from is not None),
        ),
    )

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN, description="Variable name.")
    value: str | None = Field(default=None, description="Literal value.")
    value_from: EnvVarSource | None = Field(default=None, description="Value taken from a Secret, ConfigMap or field.")


# --- BentoML configuration ------------------------------------------------------


class BentoConfig(ApiModel):
    """BentoML serving configuration, passed to the server as BENTOML_CONFIG_OVERRIDES.

    BentoML applies these per service, so the service's name is needed. Adaptive batching
    is not configurable from outside a BentoML 1.4 service: it is set in @bentoml.api.
    """

    crd_rules = (
        Rule(
            cel="!(has(self.workers) || has(self.timeoutSeconds) || has(self.maxConcurrency)) || has(self.service)",
            message="service (the BentoML service class name, e.g. IrisClassifier) is required to set "
            "workers, timeoutSeconds or maxConcurrency",
            field_path=".service",
            check=lambda c: (
                c.service is not None or (c.workers is None and c.timeout_seconds is None and c.max_concurrency is None)
            ),
        ),
    )

    service: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        max_length=128,
        description="Name of the BentoML service the settings apply to: its class name, the bento's entry_service.",
    )
    workers: int | None = Field(default=None, ge=1, le=128, description="Worker processes of the service.")
    timeout_seconds: int | None = Field(
        default=None, ge=1, le=86400, description="Request timeout, in seconds; slower requests get 504."
    )
    max_concurrency: int | None = Field(
        default=None, ge=1, le=100000, description="Requests served at once; more are rejected with 429."
    )
    options: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Further BentoML configuration keys (dotted) and values, for example "
            "services.IrisClassifier.traffic.max_concurrency: '8'; applied after the fields above."
        ),
    )


# --- placement and service -------------------------------------------------------


class Toleration(ApiModel):
    """A taint the model server pods tolerate."""

    key: str | None = Field(default=None, description="Taint key; empty with operator Exists matches all taints.")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal (the default).")
    value: str | None = Field(default=None, description="Taint value, for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; all effects when unset."
    )
    toleration_seconds: int | None = Field(default=None, description="How long a NoExecute taint is tolerated.")


class Placement(ApiModel):
    """Where the model server pods may run."""

    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods require.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the pods tolerate.")
    affinity: dict[str, Any] | None = Field(
        default=None, description="A Kubernetes Affinity (nodeAffinity, podAffinity, podAntiAffinity), verbatim."
    )
    priority_class_name: str | None = Field(default=None, description="PriorityClass of the pods.")


class ServiceSettings(ApiModel):
    """The Service in front of the model servers."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(default="ClusterIP", description="Service type.")
    port: int = Field(default=3000, ge=1, le=65535, description="Port the Service listens on.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations of the Service.")
