"""The only place that talks to the Kubernetes API (kopf's own watching aside).

A small generic client over the `kubernetes` package's transport: objects are plain
dicts, children are written with server-side apply under one field manager, the
ModelDeployment's status is replaced whole, conditional on the resourceVersion read.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from modeldeploy import __version__
from modeldeploy.api.v1alpha1 import API_VERSION, KIND, PLURAL
from modeldeploy.k8s.children import CHILD_KINDS
from modeldeploy.k8s.objects import FIELD_MANAGER

log = logging.getLogger(__name__)
# One line per write sent, at DEBUG (`modeldeploy run --log-writes`): which process wrote what.
writes = logging.getLogger("modeldeploy.writes")

# apiVersion, kind -> plural: the child kinds of the table, and what else the operator reads or writes.
PLURALS: dict[tuple[str, str], str] = {(child.api_version, child.kind): child.plural for child in CHILD_KINDS} | {
    (API_VERSION, KIND): PLURAL,
    ("v1", "Pod"): "pods",
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("events.k8s.io/v1", "Event"): "events",
    ("coordination.k8s.io/v1", "Lease"): "leases",
}

# What the API server does not change: anything else is a write, and a write is gated (Client.write_gate).
READ_METHODS = frozenset({"GET", "HEAD"})


class ApiError(Exception):
    """An error answer of the API server, with its HTTP status and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def invalid(self) -> bool:
        return self.status == 422

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def uid_mismatch(self) -> bool:
        """An apply pinned to a uid found no object of that uid: it is gone, or another object took its name."""
        return (self.status == 409 and "uid mismatch" in self.message) or (
            self.status == 422 and "metadata.uid" in self.message
        )

    @property
    def unreachable(self) -> bool:
        """No answer from the API server at all (status 0)."""
        return self.status == 0

    @property
    def namespace_terminating(self) -> bool:
        """The namespace is being deleted: nothing may be created in it any more."""
        return self.status == 403 and "because it is being terminated" in self.message


class NotLeading(ApiError):
    """A write refused before it was sent: this replica does not hold the leader Lease (or may have lost it).

    Status 0, as an unanswered request: a reconcile that meets it fails quietly and is not retried by
    this replica until it leads again."""

    def __init__(self, method: str, path: str) -> None:
        super().__init__(0, "NotLeading", f"{method} {path} not sent: this replica does not lead")


def resource_path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    """The path of a resource; names are quoted whole, so no `/` or `..` in one can reach another path."""
    plural = PLURALS[(api_version, kind)]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{quote(namespace, safe='')}"
    base += f"/{plural}"
    return base + (f"/{quote(name, safe='')}" if name else "")


def _kind_of(path: str) -> str:
    """The resource of a request path, for counting: /apis/apps/v1/namespaces/x/deployments/y -> deployments."""
    parts = [p for p in path.split("/") if p]
    if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2:
        parts = parts[parts.index("namespaces") + 2 :]
    else:
        parts = parts[2:] if parts[0] == "api" else parts[3:]
    resource = parts[0] if parts else path
    return resource + ("/status" if parts and parts[-1] == "status" else "")


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ObjectRef:
        meta = obj["metadata"]
        return cls(obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


class Client:
    """Synchronous, thread-safe; reconciles run it from worker threads."""

    def __init__(self, api: k8s_client.ApiClient, *, instance: str = "modeldeploy-operator") -> None:
        self.api = api
        # Who this process is, to the API server (User-Agent) and in the Events it posts (reportingInstance).
        self.instance = instance
        self.api.user_agent = f"modeldeploy/{__version__} ({instance})"
        # Requests sent, by "METHOD path-kind": what the operator costs the API server.
        self.requests: Counter[str] = Counter()
        # Called after every request with (verb, resource, status code or 0 for no answer, seconds): metrics.
        self.on_response: Callable[[str, str, int, float], None] | None = None
        # Asked before every write; False refuses it (NotLeading). Set to the leader elector's check, so a
        # replica that does not hold the Lease, or may have lost it, writes nothing.
        self.write_gate: Callable[[], bool] | None = None

    @classmethod
    def from_environment(
        cls, kubeconfig: str | None = None, pool_size: int = 16, *, instance: str = "modeldeploy-operator"
    ) -> Client:
        """In-cluster credentials when running in a pod, else the kubeconfig ($KUBECONFIG)."""
        configuration = k8s_client.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        configuration.connection_pool_maxsize = pool_size
        return cls(k8s_client.ApiClient(configuration), instance=instance)

    # -- transport ---------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Iterable[tuple[str, str]] = (),
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: float = 30,
    ) -> Any:
        query = list(query)
        if method not in READ_METHODS and self.write_gate is not None and not self.write_gate():
            raise NotLeading(method, path)
        resource = _kind_of(path)
        self.requests[f"{method} {resource}"] += 1
        if method not in READ_METHODS:
            writes.debug("write %s %s", method, path)
        url_path = path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        req = self.api.param_serialize(
            method, url_path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        started = time.perf_counter()
        try:
            response = self.api.call_api(*req, _request_timeout=timeout)
            data = response.read()
        except (urllib3.exceptions.HTTPError, OSError) as err:
            self._responded(method, resource, 0, started)
            raise ApiError(0, "Unreachable", f"no answer from the API server: {type(err).__name__}: {err}") from err
        self._responded(method, resource, response.status, started)
        text = data.decode("utf-8") if isinstance(data, bytes) else (data or "")
        if not 200 <= response.status < 300:
            message = text
            try:
                status = json.loads(text)
                message = status.get("message", text)
                reason = status.get("reason", response.reason or "")
            except ValueError:
                reason = response.reason or ""
            raise ApiError(response.status, reason, message)
        return json.loads(text) if text else None

    def _responded(self, method: str, resource: str, code: int, started: float) -> None:
        if self.on_response is not None:
            self.on_response(method, resource, code, time.perf_counter() - started)

    # -- objects -------------------------------------------------------------------

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.request("GET", resource_path(api_version, kind, namespace, name))
        except ApiError as err:
            if err.not_found:
                return None
            raise
        return result

    def list(self, api_version: str, kind: str, namespace: str, label_selector: dict[str, str]) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in sorted(label_selector.items()))
        result = self.request("GET", resource_path(api_version, kind, namespace), query=[("labelSelector", selector)])
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    def apply(
        self, obj: dict[str, Any], field_manager: str = FIELD_MANAGER, *, uid: str | None = None
    ) -> dict[str, Any]:
        """Server-side apply under the operator's field manager, taking over fields it owns.

        With `uid`, the apply is pinned to that object: it never creates one, and never writes to another
        object of the same name (ApiError.uid_mismatch), so what the operator applies to is what it checked.
        """
        ref = ObjectRef.of(obj)
        if uid is not None:
            obj = {**obj, "metadata": {**obj["metadata"], "uid": uid}}
        result: dict[str, Any] = self.request(
            "PATCH",
            resource_path(ref.api_version, ref.kind, ref.namespace, ref.name),
            body=obj,
            query=[("fieldManager", field_manager), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )
        return result

    def create(self, obj: dict[str, Any], field_manager: str = FIELD_MANAGER) -> dict[str, Any] | None:
        """Create an object (POST); None when one of that name exists already.

        Server-side apply cannot create without the risk of landing on someone else's object, so children are
        created by a POST, which records their fields under an Update entry of the field manager. Applies would
        share that entry's fields without owning them (a field they stop sending would stay): `adopt` turns it
        into the Apply entry before the object's first apply, so an object that is never changed costs one
        request, not two.
        """
        ref = ObjectRef.of(obj)
        try:
            created: dict[str, Any] = self.request(
                "POST",
                resource_path(ref.api_version, ref.kind, ref.namespace),
                body=obj,
                query=[("fieldManager", field_manager)],
            )
        except ApiError as err:
            if err.already_exists:
                return None
            raise
        return created

    def adopt(self, current: dict[str, Any], field_manager: str = FIELD_MANAGER) -> None:
        """Take the fields a create recorded under the field manager's Update entry as applied (CURRENT: the object
        as read). The patch replaces the whole list, pinned to the object's uid (a JSON patch test of the
        resourceVersion would lose to the controllers' first status writes): an entry another manager added
        meanwhile is dropped, which costs nothing, as Update entries never conflict and are written again."""
        meta = current.get("metadata", {})
        entries = meta.get("managedFields") or []
        applied = [
            {**e, "operation": "Apply"} if e.get("manager") == field_manager and e.get("operation") == "Update" else e
            for e in entries
        ]
        if applied == entries:
            return
        ref = ObjectRef.of(current)
        try:
            self.request(
                "PATCH",
                resource_path(ref.api_version, ref.kind, ref.namespace, ref.name),
                body={"metadata": {"uid": meta.get("uid"), "managedFields": applied}},
                content_type="application/merge-patch+json",
            )
        except ApiError as err:
            # The object is ours all the same; only a field removed from it later may stay behind.
            log.warning(
                "%s %s/%s: its fields could not be taken as applied: %s", ref.kind, ref.namespace, ref.name, err
            )

    def delete(self, ref: ObjectRef, *, uid: str | None = None) -> bool:
        """Delete (foreground-free, background GC); False when it was already gone."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", resource_path(ref.api_version, ref.kind, ref.namespace, ref.name), body=body)
        except ApiError as err:
            if err.not_found:
                return False
            raise
        return True

    def replace_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        """Replace the status through the status subresource (PUT), conditional on obj's resourceVersion.

        Replacing, not patching: a merge patch merges nested objects (a field left out stays) and a
        diff against a copy that turned out stale can leave a partial object. The API server answers
        409 when the object changed since obj was read.
        """
        ref = ObjectRef.of(obj)
        meta = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
        body = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": meta, "status": status}
        if "spec" in obj:
            body["spec"] = obj["spec"]
        result: dict[str, Any] = self.request(
            "PUT", resource_path(ref.api_version, ref.kind, ref.namespace, ref.name) + "/status", body=body
        )
        return result

    def patch_annotations(self, obj: dict[str, Any], annotations: dict[str, str | None]) -> dict[str, Any]:
        ref = ObjectRef.of(obj)
        result: dict[str, Any] = self.request(
            "PATCH",
            resource_path(ref.api_version, ref.kind, ref.namespace, ref.name),
            body={"metadata": {"annotations": annotations}},
            content_type="application/merge-patch+json",
        )
        return result

    def exists_metadata_only(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Whether an object exists, fetching its metadata only (a Secret's data never reaches us)."""
        try:
            self.request(
                "GET",
                resource_path(api_version, kind, namespace, name),
                accept="application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
            )
        except ApiError as err:
            if err.not_found:
                return False
            raise
        return True

    def has_api(self, group_version: str, plural: str) -> bool:
        """Whether the cluster serves a resource, e.g. ("gateway.networking.k8s.io/v1", "httproutes")."""
        try:
            found = self.request("GET", f"/apis/{group_version}")
        except ApiError as err:
            if err.not_found:
                return False
            raise
        return any(r.get("name") == plural for r in found.get("resources", []))

    def post_event(self, regarding: dict[str, Any], *, type_: str, reason: str, message: str, action: str) -> None:
        """An events.k8s.io/v1 Event about an object; best effort, never fails a reconcile."""
        meta = regarding["metadata"]
        now = datetime.now(UTC)
        event = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}-", "namespace": meta["namespace"]},
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": "modeldeploy.dev/operator",
            "reportingInstance": self.instance[:128],
            "action": action,
            "reason": reason,
            "note": message[:1024],
            "type": type_,
            "regarding": {
                "apiVersion": regarding["apiVersion"],
                "kind": regarding["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
        }
        try:
            self.request("POST", resource_path("events.k8s.io/v1", "Event", meta["namespace"]), body=event)
        except ApiError as err:
            level = logging.DEBUG if err.namespace_terminating or isinstance(err, NotLeading) else logging.WARNING
            log.log(level, "could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], err)
