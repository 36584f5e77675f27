"""Specs for fuzzing the ModelDeployment API (hypothesis), drawn two ways: from the CRD's own schema (every
field, its types, enums, patterns and bounds), and as mutations of valid specs (a value replaced by one
drawn from its schema, by one of another type or a hostile one; a field removed; an unknown one added)."""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import strategies as st

from modeldeploy.api.crd import crd
from modeldeploy.api.v1alpha1.bentoml import OPTIONS
from modeldeploy.api.v1alpha1.formats import PINNED_IMAGE_PATTERN

SPEC_SCHEMA: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

MAX_ITEMS, MAX_PROPERTIES, MAX_TEXT = 3, 3, 24
# Fields whose values are mostly refused by CEL when drawn from the schema's pattern alone: drawn as
# their rules want half the time, so that admitted specs reach the operator too.
HINTS: dict[str, st.SearchStrategy[Any]] = {
    ".bento.image": st.from_regex(PINNED_IMAGE_PATTERN, fullmatch=True).filter(lambda s: len(s) <= 80),
    ".bento.runtimeImage": st.from_regex(PINNED_IMAGE_PATTERN, fullmatch=True).filter(lambda s: len(s) <= 80),
    ".resources.requests{}": st.sampled_from(["100m", "1", "2", "256Mi", "1Gi", 1, 0]),
    ".resources.limits{}": st.sampled_from(["200m", "2", "512Mi", "2Gi", 2]),
}
KEY_HINTS: dict[str, st.SearchStrategy[str]] = {
    ".resources.requests{}": st.sampled_from(["cpu", "memory", "ephemeral-storage", "nvidia.com/gpu"]),
    ".resources.limits{}": st.sampled_from(["cpu", "memory", "ephemeral-storage", "nvidia.com/gpu"]),
    ".bentoConfig.options{}": st.sampled_from(
        [f"services.IrisClassifier.{o}" for o in sorted(OPTIONS)] + ["services.IrisClassifier.http.port", "x.y"]
    ),
}
HOSTILE: list[Any] = [
    "",
    " ",
    "[",
    "{",
    "a/b",
    "../../kube-system/secrets/x",
    "latest",
    "x:latest",
    "0s",
    "99999999999h",
    "-1",
    "1e400",
    "\u0000",
    "é",
    "http://127.0.0.1:9/any/path#",
    "BENTOML_PORT",
    "services.X.http.port",
    "*",
    "true",
    -1,
    0,
    2**31,
    2**63 - 1,
    10**20,
    1.5,
    -0.5,
    True,
    None,
    [],
    {},
    [{}],
    {"x": 1},
]


def from_schema(node: dict[str, Any], path: str = "") -> st.SearchStrategy[Any]:
    """Values the schema node describes (types, enums, patterns and bounds); CEL rules are left to the server."""
    if path in HINTS:
        return st.one_of(HINTS[path], _plain(node, path))
    return _plain(node, path)


def _plain(node: dict[str, Any], path: str) -> st.SearchStrategy[Any]:
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if node.get("x-kubernetes-int-or-string"):
        return st.one_of(_integer(node), _string(node))
    kind = node.get("type")
    if kind == "object":
        return _object(node, path)
    if kind == "array":
        items = from_schema(node["items"], f"{path}[]")
        size = min(node.get("maxItems", MAX_ITEMS), MAX_ITEMS)
        keys = node.get("x-kubernetes-list-map-keys")
        unique = (lambda item: tuple(item.get(k) for k in keys) if isinstance(item, dict) else item) if keys else None
        return st.lists(
            items, min_size=node.get("minItems", 0), max_size=max(size, node.get("minItems", 0)), unique_by=unique
        )
    if kind == "string":
        return _string(node)
    if kind == "integer":
        return _integer(node)
    if kind == "number":
        return st.floats(node.get("minimum", -1e6), node.get("maximum", 1e6), allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    return json_values()


def _object(node: dict[str, Any], path: str) -> st.SearchStrategy[Any]:
    if "properties" in node:
        required = set(node.get("required", []))
        props = {name: from_schema(sub, f"{path}.{name}") for name, sub in node["properties"].items()}
        return st.fixed_dictionaries(
            {k: v for k, v in props.items() if k in required},
            optional={k: v for k, v in props.items() if k not in required},
        )
    if isinstance(node.get("additionalProperties"), dict):
        keys = KEY_HINTS.get(f"{path}{{}}", st.text(string.ascii_letters + "./-_", min_size=1, max_size=MAX_TEXT))
        values = from_schema(node["additionalProperties"], f"{path}{{}}")
        return st.dictionaries(keys, values, max_size=min(node.get("maxProperties", MAX_PROPERTIES), MAX_PROPERTIES))
    return st.dictionaries(
        st.sampled_from(["nodeAffinity", "podAffinity", "podAntiAffinity", "x"]), json_values(), max_size=2
    )


def _string(node: dict[str, Any]) -> st.SearchStrategy[str]:
    longest = min(node.get("maxLength", MAX_TEXT), 64)
    shortest = node.get("minLength", 0)
    if "pattern" in node:
        return st.from_regex(node["pattern"], fullmatch=True).filter(lambda s: shortest <= len(s) <= longest)
    return st.text(min_size=shortest, max_size=max(shortest, min(longest, MAX_TEXT)))


def _integer(node: dict[str, Any]) -> st.SearchStrategy[int]:
    return st.integers(node.get("minimum", -(2**40)), node.get("maximum", 2**40))


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text(max_size=8))
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=2), st.dictionaries(st.text(max_size=6), inner, max_size=2)),
        max_leaves=4,
    )


VALID_SEEDS: list[dict[str, Any]] = [
    {"bento": {"image": "registry.example.com/iris-classifier:v1"}, "replicas": 2},
    {
        "bento": {"image": "registry.example.com/iris-classifier:v1"},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "metrics": [{"type": "cpu", "target": 70}]},
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        "bentoConfig": {
            "service": "IrisClassifier",
            "workers": 2,
            "options": {"services.IrisClassifier.traffic.timeout": "30"},
        },
        "env": [
            {"name": "MODEL_MODE", "value": "fast"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
    },
    {
        "bento": {
            "tag": "iris:v1",
            "store": {"uri": "s3://models/bentos", "secretRef": {"name": "s3-creds"}},
            "runtimeImage": "registry.example.com/rt:1.4",
        },
        "rollout": {
            "steps": [{"weight": 20, "pause": "1s"}, {"weight": 60, "pause": "2s"}],
            "analysis": {"prometheus": {"address": "http://127.0.0.1:9"}, "interval": "5s", "maxLatencyP99": "500ms"},
        },
        "service": {"type": "NodePort", "port": 8080, "annotations": {"example.com/team": "ml"}},
    },
    {
        "bento": {"image": "registry.example.com/iris-classifier@sha256:" + "ab" * 32},
        "rollout": {
            "trafficRouting": "GatewayAPI",
            "gateway": {"parentRefs": [{"name": "public", "sectionName": "http"}], "hostnames": ["iris.example.com"]},
        },
        "placement": {
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
            "priorityClassName": "high",
        },
        "serviceAccountName": "default",
        "startupTimeout": "2m",
    },
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, sub in value.items():
            out += _paths(sub, (*prefix, key))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            out += _paths(sub, (*prefix, index))
    return out


def _set(tree: Any, path: tuple[Any, ...], value: Any, *, delete: bool = False) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    copy = dict(tree) if isinstance(tree, dict) else list(tree)
    if not rest and delete:
        del copy[head]
    elif not rest:
        copy[head] = value
    else:
        copy[head] = _set(tree[head], rest, value, delete=delete)
    return copy


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A valid spec with one to three mutations."""
    spec: Any = json.loads(json.dumps(draw(st.sampled_from(VALID_SEEDS))))
    for _ in range(draw(st.integers(0, 3))):
        paths = [p for p in _paths(spec) if p]
        if not paths:
            break  # everything was deleted
        path = draw(st.sampled_from(paths))
        how = draw(st.sampled_from(["schema", "schema", "schema", "replace", "delete", "unknown", "boundary"]))
        node, where = schema_at(path)
        if how == "schema" and node is not None:
            spec = _set(spec, path, draw(from_schema(node, where)))
        elif how == "delete":
            spec = _set(spec, path, None, delete=True)
        elif how == "unknown":
            spec = (
                _set(spec, (*path[:-1], "unknownField"), draw(st.sampled_from(HOSTILE)))
                if isinstance(_get(spec, path[:-1]), dict)
                else spec
            )
        elif how == "boundary" and isinstance(_get(spec, path), int) and not isinstance(_get(spec, path), bool):
            spec = _set(spec, path, draw(st.sampled_from([-1, 0, 1, 101, 1001, 65536, 2**53])))
        else:
            spec = _set(spec, path, draw(st.one_of(st.sampled_from(HOSTILE), json_values())))
    return spec if isinstance(spec, dict) else {"bento": spec}


def schema_at(path: tuple[Any, ...]) -> tuple[dict[str, Any] | None, str]:
    """The schema node of a value in a spec (None outside the schema: an unknown field), and its HINTS key:
    `.bento.image`, `.env[]`, `.resources.requests{}`."""
    node: dict[str, Any] | None = SPEC_SCHEMA
    where = ""
    for part in path:
        if node is None:
            break
        if isinstance(part, int):
            node, where = node.get("items"), where + "[]"
        elif part in node.get("properties", {}):
            node, where = node["properties"][part], where + f".{part}"
        elif isinstance(node.get("additionalProperties"), dict):
            node, where = node["additionalProperties"], where + "{}"
        else:
            node = None
    return node, where


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def specs() -> st.SearchStrategy[dict[str, Any]]:
    # Mutations twice as often: most specs drawn from the schema alone fail a CEL rule at admission.
    return st.one_of(from_schema(SPEC_SCHEMA, ""), mutated(), mutated())
