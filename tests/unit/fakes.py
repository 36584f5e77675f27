"""A fake API server for the reconcile shell: it records every request, and answers as the real one does
where the operator's safety rests on the answer (creates of a taken name, applies pinned to a uid)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from modeldeploy.handlers.reconciler import Reconciler
from modeldeploy.k8s.children import BY_KIND, WATCHED, Child, read_child
from modeldeploy.k8s.client import ApiError, ObjectRef
from modeldeploy.model.meta import MANAGED_BY, MANAGER, NAME_LABEL

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
GATEWAY = {"trafficRouting": "GatewayAPI", "gateway": {"parentRefs": [{"name": "gw"}]}}

Key = tuple[str, str, str, str]  # apiVersion, kind, namespace, name


class FakeClient:
    """The API server as the reconciler sees it; every request is recorded in order."""

    def __init__(self, body: dict[str, Any], *, served: bool = True) -> None:
        # served: whether the cluster serves the optional child kinds (their CRDs are installed).
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = "1"
        self.objects: dict[Key, dict[str, Any]] = {self._key(body): body}
        self.served = served
        self.rejected: dict[str, ApiError] = {}
        self.calls: list[tuple[str, ...]] = []
        self.events: list[tuple[str, str, str]] = []
        self.created = 0
        self.fail_delete: Exception | None = None
        # Every apply as sent: (field manager, the uid it is pinned to, the object).
        self.applies: list[tuple[str, str | None, dict[str, Any]]] = []

    @staticmethod
    def _key(obj: dict[str, Any]) -> Key:
        meta = obj["metadata"]
        return obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]

    @property
    def md(self) -> dict[str, Any]:
        return copy.deepcopy(self.objects["modeldeploy.dev/v1alpha1", "ModelDeployment", "ml", "iris"])

    def add(self, obj: dict[str, Any]) -> None:
        self.objects[self._key(obj)] = copy.deepcopy(obj)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", kind, name))
        found = self.objects.get((api_version, kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list(self, api_version: str, kind: str, namespace: str, label_selector: dict[str, str]) -> list[Any]:
        self.calls.append(("list", kind))
        return []

    def apply(
        self, obj: dict[str, Any], field_manager: str = "modeldeploy", *, uid: str | None = None
    ) -> dict[str, Any]:
        """Server-side apply; pinned to a uid as the API server pins it (never a create, never another object)."""
        self.calls.append(("apply", obj["kind"], obj["metadata"]["name"]))
        self.applies.append((field_manager, uid, copy.deepcopy(obj)))
        if obj["kind"] in self.rejected:
            raise self.rejected[obj["kind"]]
        current = self.objects.get(self._key(obj))
        if uid is not None and current is None:
            raise ApiError(
                409, "Conflict", "uid mismatch: the provided object specified uid x, and no existing object was found"
            )
        if uid is not None and current is not None and current["metadata"]["uid"] != uid:
            raise ApiError(422, "Invalid", f'metadata.uid: Invalid value: "{uid}": field is immutable')
        stored = copy.deepcopy(obj)
        fresh_uid = current["metadata"]["uid"] if current is not None else self._new_uid(obj)
        generation = current["metadata"].get("generation", 0) + 1 if current is not None else 1
        entries = [
            e for e in (current or {}).get("metadata", {}).get("managedFields", []) if e["manager"] != field_manager
        ]
        entries += [
            e for e in (current or {}).get("metadata", {}).get("managedFields", []) if e["manager"] == field_manager
        ]
        if {"manager": field_manager, "operation": "Apply"} not in entries:
            entries.append({"manager": field_manager, "operation": "Apply"})
        stored["metadata"].update(uid=fresh_uid, generation=generation, managedFields=entries)
        self.add(stored)
        return copy.deepcopy(stored)

    def create(self, obj: dict[str, Any], field_manager: str = "modeldeploy") -> dict[str, Any] | None:
        self.calls.append(("create", obj["kind"], obj["metadata"]["name"]))
        if obj["kind"] in self.rejected:
            raise self.rejected[obj["kind"]]
        if self._key(obj) in self.objects:
            return None
        stored = copy.deepcopy(obj)
        # A create records its fields under an Update entry of the field manager, as the API server does.
        stored["metadata"].update(
            uid=self._new_uid(obj), generation=1, managedFields=[{"manager": field_manager, "operation": "Update"}]
        )
        self.add(stored)
        return copy.deepcopy(stored)

    def adopt(self, current: dict[str, Any], field_manager: str = "modeldeploy") -> None:
        self.calls.append(("adopt", current["kind"], current["metadata"]["name"]))
        stored = self.objects[self._key(current)]
        assert stored["metadata"]["uid"] == current["metadata"]["uid"]
        for entry in stored["metadata"].get("managedFields", []):
            if entry["manager"] == field_manager and entry["operation"] == "Update":
                entry["operation"] = "Apply"

    def _new_uid(self, obj: dict[str, Any]) -> str:
        self.created += 1
        return f"uid-{obj['kind']}-{obj['metadata']['name']}-{self.created}"

    def delete(self, ref: ObjectRef, *, uid: str | None = None) -> bool:
        self.calls.append(("delete", ref.kind, ref.name))
        if self.fail_delete is not None:
            raise self.fail_delete
        current = self.objects.get((ref.api_version, ref.kind, ref.namespace, ref.name))
        if uid is not None and current is not None and current["metadata"]["uid"] != uid:
            raise ApiError(409, "Conflict", "Precondition failed: UID in precondition does not match")
        return self.objects.pop((ref.api_version, ref.kind, ref.namespace, ref.name), None) is not None

    def replace_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("status",))
        current = self.objects[self._key(obj)]
        if current["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        current["status"] = copy.deepcopy(status)
        current["metadata"]["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(current)

    def exists_metadata_only(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        return True

    def has_api(self, group_version: str, plural: str) -> bool:
        """Whether optional kinds are served: all of them, or none."""
        self.calls.append(("discovery", plural))
        return self.served

    def post_event(self, regarding: dict[str, Any], *, type_: str, reason: str, message: str, action: str) -> None:
        self.events.append((type_, reason, message))

    def indexed(self) -> dict[tuple[str, str], Child]:
        """The children kopf's watches would have indexed: every object of a watched kind with the operator's labels."""
        watched = {kind.kind for kind in WATCHED}
        return {
            (obj["kind"], name): read_child(BY_KIND[obj["kind"]], obj)
            for (_, kind, _, name), obj in self.objects.items()
            if kind in watched and _labelled(obj)
        }

    def kinds(self, *verbs: str) -> list[tuple[str, str]]:
        return [(call[1], call[2]) for call in self.calls if call[0] in verbs]

    def written(self) -> list[tuple[str, str]]:
        """Children created or applied, in order."""
        return self.kinds("create", "apply")


def reconcile(client: FakeClient, reconciler: Reconciler | None = None) -> Reconciler:
    reconciler = reconciler or Reconciler(client=client, clock=lambda: NOW)  # type: ignore[arg-type]
    client.calls.clear()
    reconciler.reconcile("ml", "iris", client.indexed(), client.md)
    return reconciler


def condition(client: FakeClient, type_: str) -> dict[str, Any]:
    return next(c for c in client.md["status"]["conditions"] if c["type"] == type_)


def owned_by(obj: dict[str, Any], uid: str, name: str | None = None) -> dict[str, Any]:
    """A copy of obj, controlled by the object with this uid (and renamed)."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["ownerReferences"] = [{"uid": uid, "controller": True, "kind": "ModelDeployment", "name": "x"}]
    obj["metadata"]["name"] = name or obj["metadata"]["name"]
    return obj


def _labelled(obj: dict[str, Any]) -> bool:
    labels = obj["metadata"].get("labels") or {}
    return labels.get(MANAGED_BY) == MANAGER and NAME_LABEL in labels
