"""Admission policies of a platform team, in a test: objects the API server refuses that the CRD let through."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from localcluster.kit import Cluster, wait_for


@contextmanager
def admission_policy(
    cluster: Cluster,
    namespace: str,
    *,
    resources: list[dict[str, Any]],
    operations: list[str],
    expression: str,
    message: str,
    effective: Callable[[], Any],
) -> Iterator[None]:
    """A ValidatingAdmissionPolicy bound to one namespace, as a platform team's policy would refuse objects;
    `effective()` says whether the API server enforces it yet (policies take a moment to load)."""
    name = f"test-{namespace}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [{**rule, "operations": operations, "apiVersions": ["*"]} for rule in resources]
            },
            "validations": [{"expression": expression, "message": message}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
        },
    }
    cluster.apply(json.dumps(policy))
    cluster.apply(json.dumps(binding))
    try:
        wait_for(effective, timeout=30, what=f"the admission policy {name} to be enforced")
        yield
    finally:
        cluster.kubectl("delete", "validatingadmissionpolicybinding", name, "--ignore-not-found")
        cluster.kubectl("delete", "validatingadmissionpolicy", name, "--ignore-not-found")
