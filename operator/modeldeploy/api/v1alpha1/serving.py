"""What serves the model: the bento, its resources, BentoML's settings, placement, the Service.

The environment is in `env`, the BentoML options in `bentoml`, the string formats in `formats`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from modeldeploy.api.base import ApiModel
from modeldeploy.api.duration import Duration, bounded
from modeldeploy.api.rules import FieldRules, Rule, cel_string
from modeldeploy.api.v1alpha1.bentoml import MAX_OPTIONS, MAX_VALUE_LENGTH, OPTION_RULES, SERVICE_NAME_PATTERN
from modeldeploy.api.v1alpha1.formats import (
    DNS_SUBDOMAIN_PATTERN,
    EXTENDED_RESOURCE_PATTERN,
    IMAGE_MAX_LENGTH,
    IMAGE_PATTERN,
    LABEL_VALUE_PATTERN,
    QUALIFIED_NAME_PATTERN,
    DNSSubdomain,
    Quantity,
    image_rule,
    labels_rule,
    quantity_value,
)
from modeldeploy.api.v1alpha1.rollout import PrometheusSource

# A BentoML tag with an explicit version: a revision must name exactly one bento.
BENTO_TAG_PATTERN = r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?:[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$"
# pvc://<claim>/<path>: the claim is a name in the ModelDeployment's namespace.
STORE_URI_PATTERN = r"^((s3|gs|az|https)://[^\s]+|pvc://" + DNS_SUBDOMAIN_PATTERN.strip("^$") + r"(/[^\s]*)?)$"
RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")


# --- bento source -----------------------------------------------------------


class LocalObjectReference(ApiModel):
    """A reference to an object in the ModelDeployment's namespace."""

    name: DNSSubdomain = Field(description="Name of the referenced object.")


class BentoStore(ApiModel):
    """Where a bento archive is fetched from when no image was built for it."""

    uri: str = Field(
        max_length=2048,
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
        image_rule("image"),
        image_rule("runtimeImage"),
    )

    image: str | None = Field(
        default=None,
        pattern=IMAGE_PATTERN,
        max_length=IMAGE_MAX_LENGTH,
        description=(
            "Image built by `bentoml containerize`, with a version: name:tag (not latest) or name@sha256:<digest>. "
            "Its entrypoint serves the bento on port 3000."
        ),
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
        pattern=IMAGE_PATTERN,
        max_length=IMAGE_MAX_LENGTH,
        description=(
            "Image with bentoml and the bento's Python dependencies installed, used to fetch and serve "
            "tag, with a version like image. Defaults to the operator's --default-runtime-image."
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


# Metric types the HorizontalPodAutoscaler serves (utilization of the requests), and those KEDA serves from
# BentoML's own request metrics in Prometheus (a value per replica).
RESOURCE_METRICS = ("cpu", "memory")
REQUEST_METRICS = ("requestsPerSecond", "inFlightRequests")


class MetricTarget(ApiModel):
    """What the autoscaler keeps each replica at."""

    crd_rules = (
        Rule(
            cel="!(self.type in ['cpu', 'memory']) || self.target <= 100",
            message="cpu and memory targets are a utilization of the request, in percent: at most 100",
            field_path=".target",
            check=lambda m: m.type not in RESOURCE_METRICS or m.target <= 100,
        ),
    )

    type: Literal["cpu", "memory", "requestsPerSecond", "inFlightRequests"] = Field(
        description=(
            "cpu or memory: average utilization of the request (a HorizontalPodAutoscaler). requestsPerSecond or "
            "inFlightRequests: per replica, from BentoML's bentoml_service_request_* metrics in Prometheus "
            "(a KEDA ScaledObject; needs KEDA in the cluster and autoscaling.prometheus)."
        )
    )
    target: int = Field(
        ge=1,
        le=1_000_000,
        description="cpu/memory: percent of the request (1-100); requestsPerSecond/inFlightRequests: per replica.",
    )


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
        Rule(
            cel=(
                "!self.metrics.exists(m, m.type in ['requestsPerSecond', 'inFlightRequests']) || has(self.prometheus)"
            ),
            message="requestsPerSecond and inFlightRequests need prometheus (where KEDA reads BentoML's metrics)",
            field_path=".prometheus",
            check=lambda a: a.prometheus is not None or all(m.type not in REQUEST_METRICS for m in a.metrics),
        ),
    )

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest replicas the autoscaler keeps.")
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas the autoscaler may create.")
    metrics: list[MetricTarget] = Field(
        default_factory=lambda: [MetricTarget(type="cpu", target=80)],
        min_length=1,
        max_length=4,
        description=(
            "Targets; cpu needs resources.requests.cpu, memory needs resources.requests.memory. With a request "
            "metric, every target goes to one KEDA ScaledObject (KEDA then runs the HorizontalPodAutoscaler)."
        ),
    )
    prometheus: PrometheusSource | None = Field(
        default=None,
        description=(
            "The Prometheus that scrapes the model servers, for requestsPerSecond and inFlightRequests (queried by "
            "KEDA, not by the operator; the operator's --metrics-allow applies to it too)."
        ),
    )
    scale_down_stabilization: Annotated[Duration, bounded("0s", "1h")] = Field(
        default=Duration("5m"),
        description=(
            "How long load must stay low before replicas are removed, 0s to 1h (the HorizontalPodAutoscaler's "
            "scale-down stabilization window)."
        ),
    )

    @property
    def request_based(self) -> bool:
        """Whether a target needs KEDA (a request metric), rather than the HorizontalPodAutoscaler alone."""
        return any(m.type in REQUEST_METRICS for m in self.metrics)


class GPU(ApiModel):
    """Accelerators for each replica."""

    count: int = Field(default=0, ge=0, le=16, description="GPUs per replica, set as a limit of resourceName.")
    resource_name: str = Field(
        default="nvidia.com/gpu",
        pattern=EXTENDED_RESOURCE_PATTERN,
        max_length=253,
        description="Extended resource name of the accelerator, nvidia.com/gpu unless your device plugin differs.",
    )


def _resource_names_rule(field: str) -> Rule:
    return Rule(
        cel=f"!has(self.{field}) || self.{field}.all(k, k in {list(RESOURCE_NAMES)})",
        message=f"{field} may name {', '.join(RESOURCE_NAMES)}; GPUs go in gpu",
        field_path=f".{field}",
        check=lambda r: set(getattr(r, field)) <= set(RESOURCE_NAMES),
    )


def _over_limit(resources: Resources | FetchResources) -> str | None:
    for name, request in sorted(resources.requests.items()):
        limit = resources.limits.get(name)
        if limit is not None and quantity_value(request) > quantity_value(limit):
            return name
    return None


def _request_limit_rule() -> Rule:
    return Rule(
        cel=(
            "!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits) || "
            "quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)"
        ),
        message="a request must not be more than its limit",
        field_path=".requests",
        locate=lambda r: f"requests.{_over_limit(r)}",
        check=lambda r: _over_limit(r) is None,
    )


# The bento store and temporary files of a model server: what the emptyDir may hold at least.
MIN_STORAGE = "64Mi"


def _storage_at_least_minimum(resources: Resources) -> bool:
    return resources.storage is None or quantity_value(resources.storage) >= quantity_value(MIN_STORAGE)


def _storage_within_limit(resources: Resources) -> bool:
    limit = resources.limits.get("ephemeral-storage")
    return resources.storage is None or limit is None or quantity_value(resources.storage) <= quantity_value(limit)


class FetchResources(ApiModel):
    """Compute resources of the fetch-bento init container, key by key over what the operator derives."""

    crd_rules = (
        _resource_names_rule("requests"),
        _resource_names_rule("limits"),
        _request_limit_rule(),
    )

    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        max_length=len(RESOURCE_NAMES),
        description="Requested cpu, memory or ephemeral-storage of the fetching container, for example memory: 512Mi.",
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        max_length=len(RESOURCE_NAMES),
        description="Limits of cpu, memory or ephemeral-storage of the fetching container, for example memory: 2Gi.",
    )


class Resources(ApiModel):
    """Compute resources of each model server container."""

    crd_rules = (
        _resource_names_rule("requests"),
        _resource_names_rule("limits"),
        _request_limit_rule(),
        Rule(
            cel=(
                "!has(self.storage) || "
                f"quantity(string(self.storage)).compareTo(quantity({cel_string(MIN_STORAGE)})) >= 0"
            ),
            message=f"storage must be at least {MIN_STORAGE}: BentoML keeps its home and temporary files there",
            field_path=".storage",
            check=_storage_at_least_minimum,
        ),
        Rule(
            cel=(
                "!has(self.storage) || !has(self.limits) || !('ephemeral-storage' in self.limits) || "
                "quantity(string(self.storage)).compareTo(quantity(string(self.limits['ephemeral-storage']))) <= 0"
            ),
            message="storage must not be more than limits.ephemeral-storage: the pod would be evicted before it fills",
            field_path=".storage",
            check=_storage_within_limit,
        ),
    )

    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        max_length=len(RESOURCE_NAMES),
        description=(
            "Requested cpu, memory or ephemeral-storage, for example cpu: 500m and memory: 1Gi. "
            "ephemeral-storage defaults to storage."
        ),
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        max_length=len(RESOURCE_NAMES),
        description=(
            "Limits of cpu, memory or ephemeral-storage, for example memory: 2Gi. GPUs go in gpu. "
            "ephemeral-storage defaults to its request plus 256Mi for the container's logs."
        ),
    )
    gpu: GPU | None = Field(default=None, description="GPUs per replica.")
    storage: Quantity | None = Field(
        default=None,
        description=(
            "Disk for the bento store and temporary files of each replica: the size limit of the pod's "
            "writable emptyDir (BENTOML_HOME, TMPDIR), and the ephemeral-storage the pods request, so they "
            "are placed on a node with room and evicted only past it. With tag the bento is imported there: "
            "give at least twice its archive. Defaults to 1Gi with image, 4Gi with tag; at least 64Mi."
        ),
    )
    fetch: FetchResources | None = Field(
        default=None,
        description=(
            "Resources of the fetch-bento init container (tag only), key by key over the defaults: requests "
            "cpu 100m and memory 256Mi, limits memory 1Gi; the serving container's cpu and memory limits, "
            "and its ephemeral-storage request and limit, apply to it too (a namespace's ResourceQuota or "
            "LimitRange then admits both); a request above its limit is lowered to it."
        ),
    )


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
        pattern=SERVICE_NAME_PATTERN,
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
    options: Annotated[dict[str, Annotated[str, Field(max_length=MAX_VALUE_LENGTH)]], FieldRules(*OPTION_RULES)] = (
        Field(
            default_factory=dict,
            max_length=MAX_OPTIONS,
            description=(
                "Further BentoML options, services.<Service>.<option>: value, for example "
                "services.IrisClassifier.traffic.max_concurrency: '8'; applied after the fields above. The options "
                "BentoML 1.4 reads are accepted, with values of their type; those the serving contract rests on "
                "(http.host, http.port, ssl, grpc, metrics.enabled, metrics.namespace) are not."
            ),
        )
    )


# --- placement and service -------------------------------------------------------


NodeSelector = Annotated[
    dict[str, Annotated[str, Field(max_length=63)]], FieldRules(labels_rule("nodeSelector", values=True))
]
Annotations = Annotated[
    dict[str, Annotated[str, Field(max_length=4096)]], FieldRules(labels_rule("annotation", values=False))
]


class Toleration(ApiModel):
    """A taint the model server pods tolerate."""

    crd_rules = (
        Rule(
            cel="has(self.key) || (has(self.operator) && self.operator == 'Exists')",
            message="a toleration without key must have operator Exists (it then tolerates every taint)",
            field_path=".operator",
            check=lambda t: t.key is not None or t.operator == "Exists",
        ),
        Rule(
            cel="!(has(self.operator) && self.operator == 'Exists' && has(self.value) && self.value != '')",
            message="value must be empty with operator Exists",
            field_path=".value",
            check=lambda t: not (t.operator == "Exists" and t.value),
        ),
        Rule(
            cel="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            message="tolerationSeconds applies only to effect NoExecute",
            field_path=".tolerationSeconds",
            check=lambda t: t.toleration_seconds is None or t.effect == "NoExecute",
        ),
    )

    key: str | None = Field(
        default=None,
        max_length=316,
        pattern=QUALIFIED_NAME_PATTERN,
        description="Taint key; leave it out with operator Exists to tolerate every taint.",
    )
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal (the default).")
    value: str | None = Field(
        default=None, max_length=63, pattern=LABEL_VALUE_PATTERN, description="Taint value, for Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; all effects when unset."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, le=10**9, description="How long a NoExecute taint is tolerated, in seconds."
    )


class Affinity(ApiModel):
    """A Kubernetes Affinity: each part verbatim, as the core API defines it."""

    node_affinity: dict[str, Any] | None = Field(default=None, description="A NodeAffinity, verbatim.")
    pod_affinity: dict[str, Any] | None = Field(default=None, description="A PodAffinity, verbatim.")
    pod_anti_affinity: dict[str, Any] | None = Field(default=None, description="A PodAntiAffinity, verbatim.")


class Placement(ApiModel):
    """Where the model server pods may run."""

    node_selector: NodeSelector = Field(
        default_factory=dict, max_length=64, description="Node labels the pods require."
    )
    tolerations: list[Toleration] = Field(default_factory=list, max_length=64, description="Taints the pods tolerate.")
    affinity: Affinity | None = Field(
        default=None, description="A Kubernetes Affinity: nodeAffinity, podAffinity, podAntiAffinity."
    )
    priority_class_name: DNSSubdomain | None = Field(default=None, description="PriorityClass of the pods.")


class ServiceSettings(ApiModel):
    """The Service in front of the model servers."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Service type; the operator may allow fewer (see its --allowed-service-type)."
    )
    port: int = Field(default=3000, ge=1, le=65535, description="Port the Service listens on.")
    annotations: Annotations = Field(default_factory=dict, max_length=64, description="Annotations of the Service.")
