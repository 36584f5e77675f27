"""Building blocks for tests: ModelDeployments and observed Deployments, written the way users write them."""

from __future__ import annotations

import copy
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment

IMAGE_V1 = "registry.example.com/iris_classifier:v1"
IMAGE_V2 = "registry.example.com/iris_classifier:v2"


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def md_body(name: str = "iris", namespace: str = "ml", **spec: Any) -> dict[str, Any]:
    """A ModelDeployment manifest; keyword arguments are merged into its spec (camelCase), bento replaced whole."""
    base = {"bento": {"image": IMAGE_V1}, "replicas": 2}
    merged = deep_merge(base, {k: v for k, v in spec.items() if k != "bento"})
    if "bento" in spec:
        merged["bento"] = copy.deepcopy(spec["bento"])
    return {
        "apiVersion": "modeldeploy.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace, "uid": "0b7c-uid", "generation": 1},
        "spec": merged,
    }


def md(name: str = "iris", namespace: str = "ml", **spec: Any) -> ModelDeployment:
    return ModelDeployment.model_validate(md_body(name, namespace, **spec))
