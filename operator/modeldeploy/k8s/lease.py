"""The coordination.k8s.io Lease that says which operator replica leads: read it, take it, renew it.

The record is the Lease's spec, as client-go's leaderelection writes it (holderIdentity,
leaseDurationSeconds, acquireTime, renewTime, leaseTransitions), so `kubectl get lease` and other
tools read it the usual way. Every write is a PUT conditional on the resourceVersion read (or a
create): of two replicas racing for the same record, one gets 409 and stays standby.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modeldeploy.k8s.client import ApiError, Client, resource_path

API_VERSION = "coordination.k8s.io/v1"
KIND = "Lease"


@dataclass(frozen=True)
class LeaseRecord:
    holder: str  # "" when released
    duration: int  # seconds
    transitions: int
    renewed: str  # renewTime as written (MicroTime); what changes on every renewal
    acquired: str
    resource_version: str

    @classmethod
    def of(cls, lease: dict[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            duration=int(spec.get("leaseDurationSeconds") or 0),
            transitions=int(spec.get("leaseTransitions") or 0),
            renewed=spec.get("renewTime") or "",
            acquired=spec.get("acquireTime") or "",
            resource_version=lease["metadata"].get("resourceVersion", ""),
        )


def micro_time(now: datetime | None = None) -> str:
    """A metav1.MicroTime: RFC 3339 in UTC with microseconds."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Leases:
    """One Lease, read and written through `client` (a client of its own: the write gate of the reconciles'
    client must not stop the renewals)."""

    def __init__(self, client: Client, namespace: str, name: str) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name

    @property
    def path(self) -> str:
        return resource_path(API_VERSION, KIND, self.namespace, self.name)

    def read(self) -> LeaseRecord | None:
        try:
            lease = self.client.request("GET", self.path, timeout=5)
        except ApiError as err:
            if err.not_found:
                return None
            raise
        return LeaseRecord.of(lease)

    def _body(self, holder: str, duration: int, transitions: int, acquired: str, rv: str | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if rv is not None:
            meta["resourceVersion"] = rv
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": meta,
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": duration,
                "acquireTime": acquired,
                "renewTime": micro_time(),
                "leaseTransitions": transitions,
            },
        }

    def create(self, holder: str, duration: int) -> LeaseRecord | None:
        """The Lease created with `holder` holding it; None when another replica created it first."""
        body = self._body(holder, duration, 0, micro_time(), None)
        try:
            created = self.client.request(
                "POST", resource_path(API_VERSION, KIND, self.namespace), body=body, timeout=5
            )
        except ApiError as err:
            if err.already_exists:
                return None
            raise
        return LeaseRecord.of(created)

    def write(self, old: LeaseRecord, holder: str, duration: int) -> LeaseRecord | None:
        """Take or renew (or, with holder "", release) the Lease read as `old`; None when it changed since."""
        taken = holder != old.holder
        transitions = old.transitions + 1 if taken and holder else old.transitions
        acquired = micro_time() if taken else old.acquired
        body = self._body(holder, duration, transitions, acquired, old.resource_version)
        try:
            written = self.client.request("PUT", self.path, body=body, timeout=5)
        except ApiError as err:
            if err.conflict:
                return None
            raise
        return LeaseRecord.of(written)
