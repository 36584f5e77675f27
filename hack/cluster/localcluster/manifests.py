"""Manifests the local cluster's own components need (plain dicts, standard library only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

RBAC = "rbac.authorization.k8s.io"


def cluster_role(name: str, rules: Sequence[dict[str, Any]], subject: dict[str, str]) -> list[dict[str, Any]]:
    """A ClusterRole with RULES and the ClusterRoleBinding that grants it to SUBJECT."""
    return [
        {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRole", "metadata": {"name": name}, "rules": list(rules)},
        binding(name, "ClusterRole", name, subject),
    ]


def binding(
    name: str, role_kind: str, role: str, subject: dict[str, str], namespace: str | None = None
) -> dict[str, Any]:
    """A ClusterRoleBinding (or, in NAMESPACE, a RoleBinding) of an existing role to SUBJECT."""
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding" if namespace else "ClusterRoleBinding",
        "metadata": metadata,
        "roleRef": {"apiGroup": RBAC, "kind": role_kind, "name": role},
        "subjects": [subject],
    }


def service_account(name: str, namespace: str) -> dict[str, str]:
    """A ServiceAccount as a binding's subject."""
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def user(name: str) -> dict[str, str]:
    """A user (a client certificate's common name) as a binding's subject."""
    return {"apiGroup": RBAC, "kind": "User", "name": name}
