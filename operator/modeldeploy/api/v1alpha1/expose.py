"""How the model's users reach it from outside the cluster: an HTTPRoute on a Gateway, at a hostname."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from modeldeploy.api.base import ApiModel
from modeldeploy.api.rules import FieldRules
from modeldeploy.api.v1alpha1.formats import DNS_SUBDOMAIN_PATTERN
from modeldeploy.api.v1alpha1.rollout import PARENT_RULES, GatewayParentRef


class Expose(ApiModel):
    """Publishes the model through a Gateway: an HTTPRoute `<name>` to its Service, for one hostname.

    With trafficRouting Replicas the route sends everything to the Service (whose pods carry the
    canary's approximate share); with GatewayAPI the same route carries the exact canary weights.
    """

    hostname: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description=(
            "Hostname the model answers at, for example iris.example.com (no wildcard: it is the URL users get)."
        ),
    )
    parent_refs: Annotated[list[GatewayParentRef], FieldRules(*PARENT_RULES)] = Field(
        min_length=1, max_length=32, description="Gateways the HTTPRoute attaches to."
    )
    scheme: Literal["http", "https"] = Field(
        default="http", description="How users reach the Gateway's listener: https when it terminates TLS."
    )
    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="The port users reach the Gateway's listener on, when not the scheme's default (for status.url).",
    )

    @property
    def url(self) -> str:
        default = {"http": 80, "https": 443}[self.scheme]
        port = f":{self.port}" if self.port is not None and self.port != default else ""
        return f"{self.scheme}://{self.hostname}{port}/"
