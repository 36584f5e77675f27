"""How a new revision reaches the pods: the strategy, the canary steps, their analysis, the traffic routing."""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal

from pydantic import Field

from modeldeploy.api.base import ApiModel
from modeldeploy.api.duration import Duration, bounded
from modeldeploy.api.rules import FieldRules, Rule
from modeldeploy.api.v1alpha1.formats import DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN

# A base URL: scheme, host, optional port and path prefix; no userinfo, query or fragment, so the
# operator's queries (path /api/v1/query and its own query string) cannot be turned into another request.
PROMETHEUS_ADDRESS_PATTERN = (
    r"^https?://([A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])"
    r"(:[0-9]{1,5})?(/[-A-Za-z0-9._~%!$&'()*+,;=:/]*)?$"
)
# Gateway API's own Hostname format (no IPs; an optional leading wildcard label).
HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def _sorted_strictly(values: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


class CanaryStep(ApiModel):
    """One step of a canary: a traffic weight held for a pause, then judged."""

    weight: int = Field(ge=1, le=100, description="Percent of traffic the canary receives at this step.")
    pause: Annotated[Duration, bounded("0s", "168h")] = Field(
        default=Duration("1m"), description="How long the weight is held, for example 60s or 2m; at most 7 days."
    )


class PrometheusSource(ApiModel):
    """The Prometheus that scrapes the model servers' /metrics."""

    address: str = Field(
        max_length=512,
        pattern=PROMETHEUS_ADDRESS_PATTERN,
        description=(
            "Base URL of the Prometheus HTTP API: scheme, host, optional port and path prefix, no query, fragment "
            "or user, for example http://prometheus.monitoring:9090. The operator may allow only some "
            "(its --metrics-allow)."
        ),
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
    name_label: str = Field(
        default="modeldeploy_dev_name",
        pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$",
        description=(
            "Series label carrying the pod's modeldeploy.dev/name label (the ModelDeployment's name): what "
            "autoscaling on a request metric counts over."
        ),
    )


class Baseline(ApiModel):
    """The canary judged against the stable revision over the same window, instead of absolute limits."""

    max_error_rate_increase: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description=(
            "How much the canary's share of 5xx may exceed the stable revision's, 0.01 being one percentage point."
        ),
    )
    max_latency_p99_ratio: float | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Highest canary p99 latency as a multiple of the stable revision's, for example 1.5.",
    )


class Analysis(ApiModel):
    """How a canary is judged at each step, on BentoML's own request metrics."""

    prometheus: PrometheusSource = Field(description="Where the metrics are queried.")
    interval: Annotated[Duration, bounded("1s", "24h")] = Field(
        default=Duration("30s"), description="Time between two measurements, 1s to 24h."
    )
    failure_limit: int = Field(
        default=2, ge=1, le=100, description="Failed measurements after which the canary is rolled back."
    )
    min_requests: int = Field(
        default=100,
        ge=0,
        le=10**9,
        description="Requests the canary must have served in a window before it can pass: no promotion on no data.",
    )
    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="Highest share of 5xx responses, 0.01 being 1%."
    )
    max_latency_p99: Annotated[Duration, bounded("1ms", "1h")] | None = Field(
        default=None, description="Highest 99th percentile of request duration, for example 500ms."
    )
    baseline: Baseline | None = Field(
        default=None,
        description=(
            "Compare the canary with the stable revision over the same window: while the stable revision has "
            "served minRequests, its error rate (and p99) set the limits and maxErrorRate and maxLatencyP99 "
            "are not used, so a cluster that is slow or failing for both does not fail a good canary."
        ),
    )
    no_data_timeout: Annotated[Duration, bounded("1s", "24h")] = Field(
        default=Duration("10m"),
        description="How long a step may wait for minRequests before the canary fails for lack of data, 1s to 24h.",
    )


class GatewayParentRef(ApiModel):
    """A Gateway the HTTPRoute attaches to."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="Name of the Gateway.")
    namespace: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description="Namespace of the Gateway; the ModelDeployment's when unset.",
    )
    section_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Listener of the Gateway to attach to.",
    )


def _same_parent(a: Any, b: Any) -> bool:
    return bool(a.name == b.name and a.namespace == b.namespace)


# Gateway API's own rules on an HTTPRoute's parentRefs, so the route is never refused after admission.
_SAME_PARENT = (
    "p1.name == p2.name && (has(p1.__namespace__) ? "
    "has(p2.__namespace__) && p1.__namespace__ == p2.__namespace__ : !has(p2.__namespace__))"
)
PARENT_RULES = (
    Rule(
        cel=f"self.all(p1, self.all(p2, !({_SAME_PARENT}) || has(p1.sectionName) == has(p2.sectionName)))",
        message="sectionName must be set on every reference when two reference the same Gateway",
        check=lambda refs: all(
            not _same_parent(a, b) or (a.section_name is None) == (b.section_name is None) for a in refs for b in refs
        ),
    ),
    Rule(
        cel=(
            f"self.all(p1, self.exists_one(p2, {_SAME_PARENT} && "
            "(has(p1.sectionName) ? has(p2.sectionName) && p1.sectionName == p2.sectionName : !has(p2.sectionName))))"
        ),
        message="each reference to a Gateway must name another sectionName",
        check=lambda refs: len({(r.name, r.namespace, r.section_name) for r in refs}) == len(refs),
    ),
)


class GatewayRoute(ApiModel):
    """The Gateway API HTTPRoute that splits traffic exactly."""

    parent_refs: Annotated[list[GatewayParentRef], FieldRules(*PARENT_RULES)] = Field(
        min_length=1, max_length=32, description="Gateways the HTTPRoute attaches to."
    )
    hostnames: list[Annotated[str, Field(min_length=1, max_length=253, pattern=HOSTNAME_PATTERN)]] = Field(
        default_factory=list,
        max_length=16,
        description="Hostnames the route matches, for example iris.example.com or *.example.com.",
    )


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
    gateway: GatewayRoute | None = Field(
        default=None,
        description="The HTTPRoute's Gateways, for GatewayAPI when the model is not exposed (else spec.expose's).",
    )
    paused: bool = Field(default=False, description="Hold the canary at its current step until set back to false.")
    progress_deadline: Annotated[Duration, bounded("30s", "24h")] = Field(
        default=Duration("10m"),
        description="How long canary pods may take to become Ready before the canary fails, 30s to 24h.",
    )
