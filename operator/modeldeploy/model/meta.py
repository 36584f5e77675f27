"""Names, labels and owner references every child carries: how the operator finds its children again."""

from __future__ import annotations

import re
from typing import Any, Literal

from modeldeploy.api.v1alpha1 import API_VERSION, KIND, Bento, ModelDeployment

# Labels of every serving pod: which ModelDeployment, which revision, which role.
NAME_LABEL = "modeldeploy.dev/name"
REVISION_LABEL = "modeldeploy.dev/revision"
ROLE_LABEL = "modeldeploy.dev/role"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "modeldeploy"
# The init container that imports a bento from its store, and the variable on it naming the
# archive as the spec's store URI says it (pvc:// included), for the conditions to quote.
FETCH_CONTAINER = "fetch-bento"
BENTO_SOURCE_ENV = "MODELDEPLOY_BENTO_SOURCE"

Role = Literal["stable", "canary"]


def child_name(md: ModelDeployment, role: Role = "stable") -> str:
    return md.name if role == "stable" else f"{md.name}-canary"


def label_value(text: str) -> str:
    """A valid label value: at most 63 of [A-Za-z0-9-_.], starting and ending alphanumeric."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63]
    return cleaned.strip("-_.")


def selector(md: ModelDeployment, role: Role | None = None) -> dict[str, str]:
    out = {NAME_LABEL: md.name}
    if role is not None:
        out[ROLE_LABEL] = role
    return out


def labels(md: ModelDeployment, role: Role | None = None, bento: Bento | None = None) -> dict[str, str]:
    """The labels of a child, and of a revision's pods with that revision's BENTO: a canary of
    another bento must not change the stable pods' labels (their template would roll)."""
    bento_name, _ = (bento or md.spec.bento).name_and_version
    return {
        "app.kubernetes.io/name": label_value(bento_name) or "model",
        "app.kubernetes.io/instance": md.name,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "modeldeploy",
        MANAGED_BY: MANAGER,
        **selector(md, role),
    }


def owner_reference(md: ModelDeployment) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": md.name,
        "uid": md.metadata.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(md: ModelDeployment, name: str, role: Role | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": md.namespace, "labels": labels(md, role)}
    if md.metadata.uid:
        meta["ownerReferences"] = [owner_reference(md)]
    return meta
