"""One level-based reconcile of one ModelDeployment: observe, plan (pure), record, apply, report.

Runs on a worker thread. Takes the object from the watch cache (or fresh from the API server
right after its own status write), its children from the operator's in-memory index (kept by
kopf's watches), asks `rollout` what should run, renders the children from the table of child
kinds, applies them with server-side apply, removes children no longer wanted, and writes
status only when it changed.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from modeldeploy.api.errors import describe
from modeldeploy.api.v1alpha1 import API_VERSION, KIND, ModelDeployment, ModelDeploymentStatus
from modeldeploy.handlers.observe import Children, Observer, owned
from modeldeploy.k8s.children import APPLIED_ANNOTATION, BY_KIND, OPTIONAL, Child, read_child, render_children
from modeldeploy.k8s.client import FIELD_MANAGER, ApiError, Client, ObjectRef
from modeldeploy.model.digest import digest
from modeldeploy.model.measurement import Measurement
from modeldeploy.model.meta import child_name
from modeldeploy.model.observed import DeploymentState
from modeldeploy.rollout import conditions
from modeldeploy.rollout.conditions import Problem
from modeldeploy.rollout.plan import Plan, PlanConfig, analysis_due, plan

log = logging.getLogger(__name__)

HANDOFF_MANAGER = "modeldeploy-handoff"
# Children are applied in full at least this often anyway, which puts back any change made by hand.
FULL_APPLY_PERIOD = 300.0
CONFLICT_RETRY = timedelta(seconds=1)
# A ModelDeployment that can't be fixed by waiting is looked at again only this often.
INVALID_RECHECK = timedelta(minutes=5)
APPLIED_DIGEST_LENGTH = 16

Measure = Callable[[ModelDeployment, str], Measurement]


@dataclass
class Reconciler:
    client: Client
    config: PlanConfig = field(default_factory=PlanConfig)
    measure: Measure | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Per ModelDeployment: the resourceVersion its last status write produced, until the cache has it.
    _written: dict[tuple[str, str], str] = field(default_factory=dict)
    # When each ModelDeployment's children were last applied in full, and what generation each child
    # had after the operator's own last apply (a different one means someone else changed it).
    _full_apply: dict[tuple[str, str], float] = field(default_factory=dict)
    _generations: dict[tuple[str, str], dict[tuple[str, str], int | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.observer = Observer(self.client, self.clock, self.config.default_runtime_image)

    # -- entry point -----------------------------------------------------------------

    def reconcile(
        self,
        namespace: str,
        name: str,
        children: Children,
        cached: Mapping[str, Any] | None = None,
    ) -> timedelta | None:
        """Reconcile one ModelDeployment; `cached` is its body from the watch cache (read fresh when None)."""
        try:
            return self._reconcile(namespace, name, children, cached)
        except ApiError as err:
            if err.not_found or err.namespace_terminating:
                log.debug("%s/%s went away during its reconcile: %s", namespace, name, err)
                return None  # deleted meanwhile: the garbage collector takes the children
            raise

    def forget(self, namespace: str, name: str) -> None:
        """The ModelDeployment is gone: drop what was kept about it."""
        key = (namespace, name)
        self._written.pop(key, None)
        self._full_apply.pop(key, None)
        self._generations.pop(key, None)

    def _latest(self, key: tuple[str, str], cached: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The object to decide on: never older than the operator's own last write to it.

        The watch cache is used once it has reached the version the last status write produced;
        until then (a few milliseconds, usually) the object is read from the API server. The cache
        has caught up when it holds that version or when it holds what the API server returns (a
        later write by someone else may have come first).
        """
        written = self._written.get(key)
        cached_rv = None if cached is None else cached["metadata"].get("resourceVersion")
        if cached is not None and (written is None or written == cached_rv):
            self._written.pop(key, None)
            return copy.deepcopy(dict(cached))
        fresh = self.client.get(API_VERSION, KIND, *key)
        if fresh is None or fresh["metadata"].get("resourceVersion") == cached_rv:
            self._written.pop(key, None)
        return fresh

    def _reconcile(
        self, namespace: str, name: str, indexed: Children, cached: Mapping[str, Any] | None
    ) -> timedelta | None:
        body = self._latest((namespace, name), cached)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None  # gone, or going: the garbage collector removes the children
        try:
            md = parse(body)
        except ValidationError as err:
            return INVALID_RECHECK if self._report_invalid(body, describe(err)) else CONFLICT_RETRY

        children = {ref: child for ref, child in indexed.items() if owned(child, md)}
        observed = self.observer.observe(md, children)
        revision = analysis_due(md, observed)
        if revision is not None and self.measure is not None:
            observed = replace(observed, measurement=self.measure(md, revision))
        result = plan(md, observed, self.config)

        # The decision is recorded before it is acted on: a decision made on a stale copy is refused
        # here (409) before it touches a child, and an operator stopped between the two steps
        # resumes from what the status says it was doing.
        written = self._write_status(body, result.status)
        if written is None:
            return CONFLICT_RETRY
        status = result.status
        if not result.leave_children:
            problems = self._apply(md, result, children, observed.unserved)
            if problems:
                status = conditions.status(replace(result.facts, apply_problems=tuple(problems)))
                if self._write_status(written, status) is None:
                    return CONFLICT_RETRY
        for event in [*result.events, *conditions.transitions(md.status or ModelDeploymentStatus(), status)]:
            self.client.post_event(
                body, type_=event.type, reason=event.reason, message=event.message, action="Reconcile"
            )
        return result.requeue_after

    # -- act -----------------------------------------------------------------------------

    def _apply(self, md: ModelDeployment, result: Plan, children: Children, unserved: frozenset[str]) -> list[Problem]:
        desired = render_children(md, result.stable, result.canary, route_weight=result.route_weight, unserved=unserved)
        stable_child = children.get(("Deployment", child_name(md, "stable")))
        if md.spec.autoscaling is not None and stable_child is not None and stable_child.state is not None:
            self._hand_replicas_to_autoscaler(md, stable_child.state)
        key = (md.namespace, md.name)
        full = time.monotonic() - self._full_apply.get(key, float("-inf")) > FULL_APPLY_PERIOD
        problems = []
        for obj in desired:
            problem = self._apply_child(md, obj, children.get((obj["kind"], obj["metadata"]["name"])), full=full)
            if problem is not None:
                problems.append(problem)
        if full and not problems:
            self._full_apply[key] = time.monotonic()
        self._remove_unwanted(md, children, {(obj["kind"], obj["metadata"]["name"]) for obj in desired})
        return problems

    def _apply_child(
        self, md: ModelDeployment, obj: dict[str, Any], child: Child | None, *, full: bool
    ) -> Problem | None:
        """Apply one desired child unless it is unchanged; the problem, when the cluster will not take it."""
        kind = BY_KIND[obj["kind"]]
        if kind.optional and not self.observer.served(kind.kind):
            # A kind the traffic router needs was left out already, with the router's reason; any other is
            # said here, and the other children are applied all the same.
            return (
                "ChildKindNotServed",
                f"this cluster does not serve {kind.kind} ({kind.api_version}): install its CRDs",
            )
        applied_digest = digest(obj, APPLIED_DIGEST_LENGTH)
        obj["metadata"].setdefault("annotations", {})[APPLIED_ANNOTATION] = applied_digest
        ref = (obj["kind"], obj["metadata"]["name"])
        generations = self._generations.setdefault((md.namespace, md.name), {})
        if (
            not full
            and child is not None
            and child.applied == applied_digest
            and child.generation == generations.get(ref, child.generation)
        ):
            return None  # applied already, and nobody changed it since
        try:
            applied = self.client.apply(obj)
        except ApiError as err:
            if err.not_found and kind.optional:
                self.observer.forget_served(kind.kind)  # the CRD went away: ask again next time
                raise
            if err.status >= 500 or err.status in (409, 429) or err.namespace_terminating:
                raise  # transient, or the object is going: the caller decides
            where = f"{obj['kind']} {obj['metadata']['name']}"
            log.warning("%s/%s: applying %s failed: %s", md.namespace, md.name, where, err)
            return ("ChildRejected", f"{where} was rejected by the API server: {err.message}")
        generations[ref] = applied.get("metadata", {}).get("generation")
        return None

    def _remove_unwanted(self, md: ModelDeployment, children: Children, wanted: set[tuple[str, str]]) -> None:
        for (kind, name), child in children.items():
            if (kind, name) not in wanted:
                log.info("%s/%s: removing %s %s", md.namespace, md.name, kind, name)
                self.client.delete(ObjectRef(child.api_version, kind, md.namespace, name), uid=child.uid)
        # Optional kinds are not watched: when the spec changed and wants none, delete the one there is.
        for optional in OPTIONAL:
            name = child_name(md)
            if (optional.kind, name) in wanted or not self._spec_changed(md) or not self.observer.served(optional.kind):
                continue
            found = self.client.get(optional.api_version, optional.kind, md.namespace, name)
            if found is None:
                continue
            child = read_child(optional, found)
            if not owned(child, md):
                continue  # someone else's object that happens to share the name
            if self.client.delete(ObjectRef(optional.api_version, optional.kind, md.namespace, name), uid=child.uid):
                log.info("%s/%s: removed %s %s", md.namespace, md.name, optional.kind, name)

    @staticmethod
    def _spec_changed(md: ModelDeployment) -> bool:
        observed = md.status.observed_generation if md.status else None
        return observed != md.metadata.generation

    def _hand_replicas_to_autoscaler(self, md: ModelDeployment, stable: DeploymentState) -> None:
        """Stop owning spec.replicas without resetting it.

        Server-side apply removes a field its manager stops sending unless another manager
        owns it too; a one-field apply under a second manager keeps the current count until
        the autoscaler writes its own.
        """
        if FIELD_MANAGER not in stable.replicas_owned_by or HANDOFF_MANAGER in stable.replicas_owned_by:
            return
        self.client.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": stable.name, "namespace": md.namespace},
                "spec": {"replicas": stable.spec_replicas},
            },
            field_manager=HANDOFF_MANAGER,
        )

    # -- report --------------------------------------------------------------------------

    def _write_status(self, body: dict[str, Any], status: ModelDeploymentStatus) -> dict[str, Any] | None:
        """Write status if it changed; the object as it is now, or None when it changed under us.

        The write is conditional on the resourceVersion the reconcile read, so a decision made
        on a stale copy is refused by the API server, never recorded.
        """
        new = status.wire()
        if new == (body.get("status") or {}):
            return body
        meta = body["metadata"]
        try:
            written = self.client.replace_status(body, new)
        except ApiError as err:
            if err.conflict:
                return None
            raise
        self._written[(meta["namespace"], meta["name"])] = written["metadata"].get("resourceVersion", "")
        return written

    def _report_invalid(self, body: dict[str, Any], problems: list[str]) -> bool:
        """A spec the API server let through but the operator cannot use: say so in status.

        False when the object changed under us (reconcile again).
        """
        old = stored_status(body) or ModelDeploymentStatus()
        status = conditions.invalid_spec(old, body["metadata"].get("generation"), problems, self.clock())
        if status.wire() == (body.get("status") or {}):
            return True
        if self._write_status(body, status) is None:
            return False
        message = "; ".join(problems)
        self.client.post_event(body, type_="Warning", reason="InvalidSpec", message=message, action="Validate")
        return True


def parse(body: Mapping[str, Any]) -> ModelDeployment:
    """The typed object; a status the operator cannot read is dropped rather than fatal."""
    data = {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body}
    md = ModelDeployment.model_validate(data)
    md.status = stored_status(body)
    return md


def stored_status(body: Mapping[str, Any]) -> ModelDeploymentStatus | None:
    if not body.get("status"):
        return None
    try:
        return ModelDeploymentStatus.model_validate(body["status"])
    except ValidationError as err:
        name = body.get("metadata", {}).get("name", "")
        log.warning("%s: unreadable status ignored: %s", name, "; ".join(describe(err)))
        return None
