"""The model server's environment: plain Kubernetes EnvVars, minus what would break serving."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from modeldeploy.api.base import ApiModel
from modeldeploy.api.rules import FieldRules, Rule
from modeldeploy.api.v1alpha1.formats import QUALIFIED_NAME_PATTERN, DNSSubdomain, Quantity

ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
CONFIG_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
# The pod fields the downward API exposes to a container's environment.
FIELD_PATH_PATTERN = (
    r"^(metadata\.(name|namespace|uid)|metadata\.(labels|annotations)\['" + QUALIFIED_NAME_PATTERN.strip("^$") + r"'\]"
    r"|spec\.(nodeName|serviceAccountName)|status\.(hostIP|hostIPs|podIP|podIPs))$"
)
# What the operator sets and the serving contract rests on: BentoML serving on port 3000 on every
# address (probes, the Service), a writable BENTOML_HOME and TMPDIR under a read-only root, the
# image's bento where BentoML looks for it, and configuration only through bentoConfig.
RESERVED_ENV = (
    "BENTOML_PORT",
    "BENTOML_HOST",
    "BENTOML_HOME",
    "BENTOML_CONFIG",
    "BENTOML_CONFIG_OPTIONS",
    "BENTOML_CONFIG_OVERRIDES",
    "BENTO_PATH",
    "TMPDIR",
)
MAX_ENV = 200


class KeySelector(ApiModel):
    """A key of a Secret or ConfigMap in the ModelDeployment's namespace."""

    name: DNSSubdomain = Field(description="Name of the Secret or ConfigMap.")
    key: str = Field(
        min_length=1, max_length=253, pattern=CONFIG_KEY_PATTERN, description="The key to take the value from."
    )
    optional: bool | None = Field(default=None, description="Start the pod even when the key is missing.")


class FieldSelector(ApiModel):
    """A field of the pod, such as metadata.name or status.podIP."""

    field_path: str = Field(
        max_length=400,
        pattern=FIELD_PATH_PATTERN,
        description=(
            "Path of the field: metadata.name, metadata.namespace, metadata.uid, metadata.labels['<key>'], "
            "metadata.annotations['<key>'], spec.nodeName, spec.serviceAccountName, status.hostIP(s), status.podIP(s)."
        ),
    )
    api_version: Literal["v1"] | None = Field(default=None, description="Version of the schema of fieldPath: v1.")


CPU_DIVISORS = ("1m", "1")
BYTE_DIVISORS = ("1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei")


class ResourceFieldSelector(ApiModel):
    """A resource request or limit of the model server container."""

    crd_rules = (
        Rule(
            cel=(
                "!has(self.divisor) || (self.resource.endsWith('.cpu') ? "
                f"string(self.divisor) in {list(CPU_DIVISORS)} : string(self.divisor) in {list(BYTE_DIVISORS)})"
            ),
            message=f"divisor must be {' or '.join(CPU_DIVISORS)} for cpu, one of {', '.join(BYTE_DIVISORS)} otherwise",
            field_path=".divisor",
            check=lambda s: (
                s.divisor is None or str(s.divisor) in (CPU_DIVISORS if s.resource.endswith(".cpu") else BYTE_DIVISORS)
            ),
        ),
    )

    resource: Literal[
        "limits.cpu", "limits.memory", "limits.ephemeral-storage", "requests.cpu", "requests.memory",
        "requests.ephemeral-storage",
    ] = Field(description="The resource, for example limits.memory.")  # fmt: skip
    divisor: Quantity | None = Field(default=None, description="Divisor of the exposed value, 1m or 1 for cpu.")


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
    value: str | None = Field(default=None, max_length=32768, description="Literal value.")
    value_from: EnvVarSource | None = Field(default=None, description="Value taken from a Secret, ConfigMap or field.")


def _reserved_at(env: list[Any]) -> int | None:
    return next((i for i, var in enumerate(env) if var.name in RESERVED_ENV), None)


_RESERVED_MESSAGE = (
    f"{', '.join(RESERVED_ENV)} are set by the operator: the model server listens on port 3000 on every address, "
    "writes under /tmp and takes its configuration from bentoConfig"
)
_RESERVED_CEL = f"self.exists(e, e.name in {list(RESERVED_ENV)})"

Env = Annotated[
    list[EnvVar],
    FieldRules(
        Rule(
            cel=f"!{_RESERVED_CEL}",
            message=_RESERVED_MESSAGE,
            explain=lambda env: f"{env[_reserved_at(env) or 0].name} cannot be set: {_RESERVED_MESSAGE}",
            locate=lambda env: f"[{_reserved_at(env)}].name",
            check=lambda env: _reserved_at(env) is None,
        )
    ),
]
