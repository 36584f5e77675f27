"""Who may reach the model servers: the opt-in NetworkPolicy of a ModelDeployment."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from modeldeploy.api.base import ApiModel
from modeldeploy.api.rules import FieldRules, Rule
from modeldeploy.api.v1alpha1.formats import LABEL_VALUE_PATTERN, QUALIFIED_NAME_PATTERN, labels_rule

MAX_PEERS = 16

MatchLabels = Annotated[
    dict[str, Annotated[str, Field(max_length=63)]], FieldRules(labels_rule("matchLabels", values=True))
]


class LabelSelectorRequirement(ApiModel):
    """One requirement of a label selector: a key, an operator and (for In and NotIn) values."""

    crd_rules = (
        Rule(
            cel="(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
            message="values must be given with In and NotIn, and only with them",
            field_path=".values",
            check=lambda r: (r.operator in ("In", "NotIn")) == bool(r.values),
        ),
    )

    key: str = Field(max_length=316, pattern=QUALIFIED_NAME_PATTERN, description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="In, NotIn, Exists, DoesNotExist.")
    values: list[Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]] = Field(
        default_factory=list, max_length=64, description="Label values, for In and NotIn."
    )


class LabelSelector(ApiModel):
    """A Kubernetes label selector; empty selects everything."""

    match_labels: MatchLabels = Field(default_factory=dict, max_length=64, description="Labels to match exactly.")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=16, description="Requirements, all of which must hold."
    )


class NetworkPeer(ApiModel):
    """Pods allowed to call the model: those of the namespaces selected, or pods selected in the ModelDeployment's
    namespace, or with both, pods selected in the namespaces selected."""

    crd_rules = (
        Rule(
            cel="has(self.namespaceSelector) || has(self.podSelector)",
            message="a peer needs namespaceSelector, podSelector or both",
            check=lambda p: p.namespace_selector is not None or p.pod_selector is not None,
        ),
    )

    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces whose pods may call; {} for every namespace."
    )
    pod_selector: LabelSelector | None = Field(
        default=None,
        description="Pods that may call: in the namespaces selected, or in the ModelDeployment's namespace.",
    )


class NetworkPolicySettings(ApiModel):
    """An opt-in NetworkPolicy: ingress to the model servers' port only from the peers named."""

    crd_rules = (
        Rule(
            cel="!self.enabled || (has(self.from) && size(self.from) > 0)",
            message=(
                "from must name at least one peer when enabled (the gateway's pods, the clients' namespaces, "
                "Prometheus): with none, nothing could reach the model"
            ),
            field_path=".from",
            check=lambda n: not n.enabled or bool(n.from_),
        ),
    )

    enabled: bool = Field(default=False, description="Render the NetworkPolicy; off unless true.")
    from_: list[NetworkPeer] = Field(
        default_factory=list,
        alias="from",
        max_length=MAX_PEERS,
        description=(
            "Who may call the model servers' port (HTTP API and /metrics): the Gateway's pods with "
            "trafficRouting GatewayAPI, the clients' namespaces, and the Prometheus that scrapes the pods "
            "(canary analysis reads what it scraped)."
        ),
    )
