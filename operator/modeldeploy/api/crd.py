"""The CustomResourceDefinition, generated from the pydantic models.

pydantic writes JSON Schema; Kubernetes wants a *structural* OpenAPI v3 schema:
no $ref, no null branches, int-or-string spelled its own way, free-form objects
marked as such, and defaults that contain no nulls. This module does that
translation and adds what only a CRD has: printer columns, subresources, names.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from modeldeploy.api.v1alpha1 import GROUP, KIND, PLURAL, VERSION, ModelDeployment

SHORT_NAMES = ["md"]
CATEGORIES = ["modeldeploy"]

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Whether the model serves its desired revision with every replica ready.",
    },
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Lifecycle phase."},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stable.bento", "description": "The stable bento."},
    {"name": "Canary", "type": "string", "jsonPath": ".status.canary.bento", "description": "The bento under test."},
    {
        "name": "Weight",
        "type": "integer",
        "jsonPath": ".status.canary.weight",
        "description": "Percent of traffic sent to the canary.",
    },
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas", "description": "Model server pods."},
    {
        "name": "Available",
        "type": "integer",
        "jsonPath": ".status.readyReplicas",
        "description": "Ready model server pods.",
    },
    {
        "name": "URL",
        "type": "string",
        "jsonPath": ".status.url",
        "description": "Where the model answers: its Gateway hostname when exposed, else in-cluster.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

# JSON Schema keywords a structural schema keeps as they are.
_KEPT = {
    "type",
    "description",
    "enum",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
}


class _WithFactoryDefaults(GenerateJsonSchema):
    """Also write defaults that come from default_factory, so the API server applies them."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            schema = {**schema, "default": factory()}  # type: ignore[call-arg]
            schema.pop("default_factory")
        return super().default_schema(schema)


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Translate one pydantic JSON Schema node into a structural OpenAPI node."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)

    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(branches) == 1:
            return _structural({**branches[0], **rest}, defs)
        types = sorted(b.get("type", "") for b in branches)
        if types == ["integer", "string"]:
            common = {k: v for k, v in _structural(rest, defs).items() if k != "type"}
            # Each keyword applies to the values of its own type; the bounds keep CEL cost estimates finite.
            for branch in branches:
                common |= {k: v for k, v in branch.items() if k in _KEPT and k != "type"}
            return {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True, **common}
        raise ValueError(f"no structural form for the union {node['anyOf']!r}")

    out: dict[str, Any] = {k: v for k, v in node.items() if k in _KEPT}
    if "const" in node:
        out["enum"] = [node["const"]]
    default = node.get("default")
    # Objects default to their full default value, not {}: the API server checks a default against
    # the object's CEL rules before nested defaults apply. Empty maps and lists are left out.
    if default not in (None, {}, []) or (isinstance(default, dict) and "properties" in node):
        out["default"] = _drop_nulls(default)

    kind = node.get("type")
    if kind == "object":
        if "properties" in node:
            out["properties"] = {name: _structural(prop, defs) for name, prop in node["properties"].items()}
            if node.get("required"):
                out["required"] = list(node["required"])
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            out["additionalProperties"] = _structural(extra, defs)
        elif "properties" not in node:
            # dict[str, Any]: a verbatim Kubernetes object such as an Affinity.
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        out["items"] = _structural(node["items"], defs)
    return out


def _without_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_without_defaults(v) for v in node]
    return node


def openapi_schema() -> dict[str, Any]:
    """The openAPIV3Schema of the ModelDeployment CRD."""
    raw = ModelDeployment.model_json_schema(by_alias=True, schema_generator=_WithFactoryDefaults)
    schema = _structural(raw, raw.get("$defs", {}))
    props = schema["properties"]
    # The API server owns these three; a CRD may only say they are there.
    props["apiVersion"] = {"type": "string", "description": "The API version, modeldeploy.dev/v1alpha1."}
    props["kind"] = {"type": "string", "description": "ModelDeployment."}
    props["metadata"] = {"type": "object"}
    # Status is written by the operator alone; server-side defaults there would only blur what it observed.
    props["status"] = _without_defaults(props["status"])
    schema["required"] = ["spec"]
    return schema


def crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "modeldeploy"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }
