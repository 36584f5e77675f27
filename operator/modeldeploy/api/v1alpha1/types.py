"""ModelDeployment v1alpha1: the pydantic models the CRD is generated from.

Every field carries a description (it is what `kubectl explain` shows), and every
cross-field rule is a `Rule` enforced both by the API server (CEL) and by pydantic.
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel

from modeldeploy.api.duration import DURATION_PATTERN
from modeldeploy.api.rules import Rule, RuleViolation

GROUP = "modeldeploy.dev"
VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
API_VERSION = f"{GROUP}/{VERSION}"

# Manual rollout control, GitOps-safe: the value names the canary revision it applies to,
# so an annotation left behind (or kept in git) never acts on a later canary.
PROMOTE_ANNOTATION = f"{GROUP}/promote"
ABORT_ANNOTATION = f"{GROUP}/abort"

# Kubernetes resource.Quantity, as the core API's OpenAPI schema writes it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
    r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# A BentoML tag with an explicit version: a revision must name exactly one bento.
BENTO_TAG_PATTERN = r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?:[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$"
STORE_URI_PATTERN = r"^(s3|gs|az|https|pvc)://[^\s]+$"
# Child objects are named <name> and <name>-canary, and Services need DNS-1035 labels.
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MAX_NAME_LENGTH = 63 - len("-canary")
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)

Duration = Annotated[str, Field(pattern=DURATION_PATTERN)]


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, str) and not re.fullmatch(QUANTITY_PATTERN, value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity such as 500m, 2Gi or 4")
    return value


Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string", "pattern": QUANTITY_PATTERN}]}),
]


def _crd_extras(schema: dict[str, Any], cls: type) -> None:
    rules: tuple[Rule, ...] = getattr(cls, "crd_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.to_crd() for rule in rules]


class ApiModel(BaseModel):
    """Base: camelCase on the wire, unknown fields rejected, rules checked."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=_crd_extras,
    )
    crd_rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> ApiModel:
        for rule in self.crd_rules:
            if not rule.check(self):
                raise RuleViolation(rule)
        return self

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase, unset fields omitted."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _sorted_strictly(values: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


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


# --- rollout --------------------------------------------------------------------


class CanaryStep(ApiModel):
    """One step of a canary: a traffic weight held for a pause, then judged."""

    weight: int = Field(ge=1, le=100, description="Percent of traffic the canary receives at this step.")
    pause: Duration = Field(default="1m", description="How long the weight is held, for example 60s or 2m.")


class PrometheusSource(ApiModel):
    """The Prometheus that scrapes the model servers' /metrics."""

    address: str = Field(
        pattern=r"^https?://[^\s]+$",
        description="Base URL of the Prometheus HTTP API, for example http://prometheus.monitoring:9090.",
    )
    revision_label: str = Field(
        default="modeldeploy_dev_revision",
        pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$",
        description=(
            "Series label carrying the pod's modeldeploy.dev/revision label, as your scrape "
            "configuration relabels it (the default matches the scrape job in docs/analysis.md)."
        ),
    )
    namespace_label: str = Field(
        default="namespace",
        pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$",
        description="Series label carrying the pod's namespace.",
    )


class Analysis(ApiModel):
    """How a canary is judged at each step, on BentoML's own request metrics."""

    prometheus: PrometheusSource = Field(description="Where the metrics are queried.")
    interval: Duration = Field(default="30s", description="Time between two measurements.")
    failure_limit: int = Field(
        default=2, ge=1, le=100, description="Failed measurements after which the canary is rolled back."
    )
    min_requests: int = Field(
        default=100,
        ge=0,
        description="Requests the canary must have served in a window before it can pass: no promotion on no data.",
    )
    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="Highest share of 5xx responses, 0.01 being 1%."
    )
    max_latency_p99: Duration | None = Field(
        default=None, description="Highest 99th percentile of request duration, for example 500ms."
    )
    no_data_timeout: Duration = Field(
        default="10m",
        description="How long a step may wait for minRequests before the canary fails for lack of data.",
    )


class GatewayParentRef(ApiModel):
    """A Gateway the HTTPRoute attaches to."""

    name: str = Field(min_length=1, description="Name of the Gateway.")
    namespace: str | None = Field(
        default=None, description="Namespace of the Gateway; the ModelDeployment's when unset."
    )
    section_name: str | None = Field(default=None, description="Listener of the Gateway to attach to.")


class GatewayRoute(ApiModel):
    """The Gateway API HTTPRoute that splits traffic exactly."""

    parent_refs: list[GatewayParentRef] = Field(
        min_length=1, max_length=32, description="Gateways the HTTPRoute attaches to."
    )
    hostnames: list[str] = Field(default_factory=list, max_length=16, description="Hostnames the route matches.")


class Rollout(ApiModel):
    """How a change of the pod-affecting spec (a new bento, say) reaches the pods."""

    crd_rules = (
        Rule(
            cel=(
                "self.steps.map(s, s.weight).isSorted() && "
                "self.steps.all(s, self.steps.exists_one(t, t.weight == s.weight))"
            ),
            message="step weights must be strictly increasing",
            field_path=".steps",
            check=lambda r: _sorted_strictly([s.weight for s in r.steps]),
        ),
        Rule(
            cel="self.trafficRouting != 'GatewayAPI' || has(self.gateway)",
            message="gateway is required when trafficRouting is GatewayAPI",
            field_path=".gateway",
            check=lambda r: r.traffic_routing != "GatewayAPI" or r.gateway is not None,
        ),
    )

    strategy: Literal["Canary", "Rolling"] = Field(
        default="Canary",
        description=(
            "Canary: a new revision beside the stable one, judged step by step. Rolling: replace pods in place."
        ),
    )
    steps: list[CanaryStep] = Field(
        default_factory=lambda: [CanaryStep(weight=10, pause="1m"), CanaryStep(weight=50, pause="2m")],
        min_length=1,
        max_length=20,
        description="Canary steps, weights strictly increasing; the canary is promoted after the last.",
    )
    analysis: Analysis | None = Field(
        default=None, description="Metric checks at each step; without it, a step passes when its pods are Ready."
    )
    traffic_routing: Literal["Replicas", "GatewayAPI"] = Field(
        default="Replicas",
        description=(
            "Replicas: stable and canary pods behind one Service, the weight approximated by replica counts "
            "(any cluster). GatewayAPI: an HTTPRoute with exact weights."
        ),
    )
    gateway: GatewayRoute | None = Field(default=None, description="The HTTPRoute's Gateways, for GatewayAPI.")
    paused: bool = Field(default=False, description="Hold the canary at its current step until set back to false.")
    progress_deadline: Duration = Field(
        default="10m", description="How long canary pods may take to become Ready before the canary fails."
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


# --- the resource ------------------------------------------------------------------


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
    )

    bento: Bento = Field(description="The bento to serve.")
    replicas: int = Field(default=1, ge=0, le=1000, description="Model server replicas; ignored with autoscaling.")
    autoscaling: Autoscaling | None = Field(default=None, description="Horizontal autoscaling; replaces replicas.")
    resources: Resources = Field(default_factory=Resources, description="Compute resources of each replica.")
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=200,
        description="Environment of the model server; names must be unique.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    bento_config: BentoConfig = Field(default_factory=BentoConfig, description="BentoML serving configuration.")
    rollout: Rollout = Field(default_factory=Rollout, description="How changes of the model reach the pods.")
    placement: Placement = Field(default_factory=Placement, description="Where the pods may run.")
    service: ServiceSettings = Field(default_factory=ServiceSettings, description="The Service in front.")
    service_account_name: str | None = Field(
        default=None,
        min_length=1,
        description="ServiceAccount of the model server pods; the namespace default when unset.",
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list, description="Secrets used to pull the serving image."
    )
    startup_timeout: Duration = Field(
        default="10m",
        description="How long a model server may take to load its model before it is restarted.",
    )


class Condition(ApiModel):
    """A Kubernetes-style condition."""

    type: str = Field(description="Ready, Available, Progressing or Degraded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="A CamelCase reason, for machines.")
    message: str = Field(default="", description="What happened and what to do, for people.")
    last_transition_time: str | None = Field(default=None, description="When status last changed.")
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
    last_measured_at: str | None = Field(default=None, description="When the last measurement was taken.")
    waiting_for_data_since: str | None = Field(
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
    weight: int = Field(
        default=0,
        description=(
            "Percent of traffic the canary receives now: the exact HTTPRoute weight, or with Replicas "
            "routing its share of the ready pods."
        ),
    )
    paused: bool = Field(default=False, description="Whether progression is held by spec.rollout.paused.")
    started_at: str | None = Field(default=None, description="When the canary started.")
    step_started_at: str | None = Field(default=None, description="When the current step started.")
    step_ready_at: str | None = Field(
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
    at: str | None = Field(default=None, description="When the rollback finished.")


class ModelDeploymentStatus(ApiModel):
    """The observed state of a deployed model."""

    observed_generation: int | None = Field(default=None, description="The generation last reconciled.")
    phase: Literal["Pending", "Progressing", "Ready", "Degraded", "Failed"] | None = Field(
        default=None, description="Pending, Progressing, Ready, Degraded or Failed."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Available, Progressing, Degraded.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    url: str | None = Field(default=None, description="In-cluster URL of the model's HTTP API.")
    replicas: int | None = Field(default=None, description="Model server pods, all revisions.")
    ready_replicas: int | None = Field(default=None, description="Ready model server pods, all revisions.")
    stable: RevisionStatus | None = Field(default=None, description="The revision serving most traffic.")
    canary: CanaryStatus | None = Field(default=None, description="The revision under test, during a canary.")
    failed: FailedRevision | None = Field(default=None, description="The last rolled-back revision.")


class ModelDeployment(ApiModel):
    """A BentoML model served in the cluster, updated by canary or rolling rollouts."""

    crd_rules = (
        Rule(
            cel=f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
            message=f"metadata.name must be at most {MAX_NAME_LENGTH} characters: child objects add -canary",
            check=lambda m: len(m.metadata.get("name", "")) <= MAX_NAME_LENGTH,
        ),
        Rule(
            cel=f"self.metadata.name.matches('{NAME_PATTERN}')",
            message="metadata.name must be a DNS-1035 label (lowercase letters, digits, '-', starting with a letter)",
            check=lambda m: re.fullmatch(NAME_PATTERN, m.metadata.get("name", "")) is not None,
        ),
    )

    api_version: Literal["modeldeploy.dev/v1alpha1"] = Field(
        default="modeldeploy.dev/v1alpha1", description="The API version."
    )
    kind: Literal["ModelDeployment"] = Field(default="ModelDeployment", description="ModelDeployment.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: ModelDeploymentSpec = Field(description="The desired state.")
    status: ModelDeploymentStatus | None = Field(default=None, description="The observed state.")

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace") or "default")
