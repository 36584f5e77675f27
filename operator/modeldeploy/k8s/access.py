"""What the operator may do in the API: the RBAC rules the chart grants in every namespace it watches.

Derived from the table of child kinds plus what the operator does to objects it does not own;
tests/unit/test_rbac.py renders the chart with helm and fails when the two disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from modeldeploy.k8s.children import CHILD_KINDS


@dataclass(frozen=True)
class Grant:
    """Verbs on resources of one API group: one RBAC rule."""

    group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]


# Children of a watched kind are listed and watched; those of an optional kind are only addressed by name.
WATCHED_VERBS = ("get", "list", "watch", "create", "patch", "delete")
BY_NAME_VERBS = ("get", "create", "patch", "delete")

# Everything else, no wildcards.
OTHER_GRANTS = (
    Grant("modeldeploy.dev", ("modeldeployments",), ("get", "list", "watch", "patch")),
    # Status is replaced whole (PUT), conditional on the resourceVersion the reconcile read.
    Grant("modeldeploy.dev", ("modeldeployments/status",), ("get", "update")),
    # Owner references with blockOwnerDeletion on children.
    Grant("modeldeploy.dev", ("modeldeployments/finalizers",), ("update",)),
    # Why pods of a ModelDeployment are not Ready (listed by label, only then).
    Grant("", ("pods",), ("list",)),
    # Whether referenced objects exist, read by name, metadata only. Not Secrets: RBAC cannot limit a get to
    # metadata, and a token that can get Secrets reads them all; a missing one is reported from the pods.
    Grant("", ("configmaps", "serviceaccounts", "persistentvolumeclaims"), ("get",)),
    Grant("events.k8s.io", ("events",), ("create", "patch")),
    # kopf posts its own events through the core API.
    Grant("", ("events",), ("create", "patch")),
)


# In the operator's own namespace only: the leader Lease (handlers/leader.py), read, created once, then
# replaced conditionally on its resourceVersion. Never listed or watched: it is addressed by name.
LEADER_ELECTION_GRANTS = (Grant("coordination.k8s.io", ("leases",), ("get", "create", "update")),)


def namespaced_grants() -> tuple[Grant, ...]:
    children = tuple(
        Grant(child.group, (child.plural,), BY_NAME_VERBS if child.optional else WATCHED_VERBS) for child in CHILD_KINDS
    )
    return children + OTHER_GRANTS
