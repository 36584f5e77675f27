"""One level-based reconcile of one ModelDeployment: observe, plan (pure), record, apply, report.

Runs on a worker thread. Takes the object from the watch cache (or fresh from the API server
right after its own status write), its children from the operator's in-memory index (kept by
kopf's watches), asks `rollout` what should run, has the children it controls written
(`handlers.apply`), and writes status only when it changed. Whatever goes wrong on the way ends
as a condition on the object: a spec the operator cannot use (InvalidSpec, NotAllowed), a child
the cluster refuses (ChildRejected, NameConflict), an error of the reconcile itself (ReconcileError).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from modeldeploy import metrics
from modeldeploy.analysis.runner import Measurements
from modeldeploy.api.errors import describe
from modeldeploy.api.v1alpha1 import API_VERSION, KIND, ModelDeployment, ModelDeploymentStatus
from modeldeploy.handlers.apply import Applier
from modeldeploy.handlers.observe import Children, Observer, owned
from modeldeploy.k8s.client import ApiError, Client
from modeldeploy.rollout import conditions
from modeldeploy.rollout.config import PlanConfig, refusal
from modeldeploy.rollout.plan import analysis_due, plan

log = logging.getLogger(__name__)

Key = tuple[str, str]

CONFLICT_RETRY = timedelta(seconds=1)
# A ModelDeployment that can't be fixed by waiting is looked at again only this often.
INVALID_RECHECK = timedelta(minutes=5)
# A child someone else's object stands in for, or the API server refused: nothing watches what would
# change that (the other object may carry no labels), so it is looked at again this often.
CHILD_RECHECK = timedelta(seconds=15)
# A reconcile that failed is retried after 1s, 2s, 4s, ... at most this long.
FAILURE_BACKOFF_MAX = 300.0
# What a failed reconcile's condition quotes of the error.
CAUSE_LIMIT = 300


@dataclass
class Reconciler:
    client: Client
    config: PlanConfig = field(default_factory=PlanConfig)
    measurements: Measurements | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Set by the operator's wiring: queue a ModelDeployment now (a measurement for it is ready).
    wake: Callable[[Key], object] | None = None
    # Per ModelDeployment: the resourceVersion its last status write produced, until the cache has it.
    _written: dict[Key, str] = field(default_factory=dict)
    _failures: dict[Key, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.observer = Observer(self.client, self.clock, self.config.default_runtime_image)
        self.applier = Applier(self.client, self.observer)
        if self.measurements is not None:
            self.measurements.wake = self._measured

    def _measured(self, key: Any) -> None:
        if self.wake is not None:
            self.wake(key)

    # -- entry point -----------------------------------------------------------------

    def reconcile(
        self,
        namespace: str,
        name: str,
        children: Children,
        cached: Mapping[str, Any] | None = None,
    ) -> timedelta | None:
        """Reconcile one ModelDeployment; `cached` is its body from the watch cache (read fresh when None)."""
        key = (namespace, name)
        try:
            with metrics.RECONCILE_DURATION.time():
                again = self._reconcile(namespace, name, children, cached)
        except ApiError as err:
            if err.not_found or err.namespace_terminating:
                log.debug("%s/%s went away during its reconcile: %s", namespace, name, err)
                return None  # deleted meanwhile: the garbage collector takes the children
            metrics.reconcile_failed(err.reason or str(err.status))
            return self._failed(key, cached, err)
        except OSError as err:
            metrics.reconcile_failed(type(err).__name__)
            return self._failed(key, cached, err)
        except Exception as err:
            metrics.reconcile_failed(type(err).__name__)
            self._failed(key, cached, err)
            raise  # a cause nobody planned for: the work queue logs it whole and backs off
        self._failures.pop(key, None)
        return again

    def forget(self, namespace: str, name: str) -> None:
        """The ModelDeployment is gone: drop what was kept about it."""
        key = (namespace, name)
        self._written.pop(key, None)
        self._failures.pop(key, None)
        self.applier.forget(key)
        if self.measurements is not None:
            self.measurements.forget(key)

    def child_deleted(self, namespace: str, owner: str, kind: str, name: str) -> None:
        """The watch saw a child of the ModelDeployment OWNER deleted."""
        self.applier.child_deleted((namespace, owner), (kind, name))

    def _latest(self, key: Key, cached: Mapping[str, Any] | None) -> dict[str, Any] | None:
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
        key = (namespace, name)
        body = self._latest(key, cached)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None  # gone, or going: the garbage collector removes the children
        try:
            md = parse(body)
        except ValidationError as err:
            return INVALID_RECHECK if self._report_invalid(body, describe(err)) else CONFLICT_RETRY
        refused = refusal(md, self.config)
        if refused is not None:
            reported = self._report_invalid(body, list(refused.problems), refused.reason)
            return INVALID_RECHECK if reported else CONFLICT_RETRY

        children = {ref: child for ref, child in indexed.items() if owned(child, md)}
        observed = self.observer.observe(md, children)
        revision = analysis_due(md, observed)
        if revision is not None and self.measurements is not None:
            measured = self.measurements.take(key, md, revision)
            if measured is not None:
                metrics.measured(key, measured)
                observed = replace(observed, measurement=measured)
        result = plan(md, observed, self.config)

        # The decision is recorded before it is acted on: a decision made on a stale copy is refused
        # here (409) before it touches a child, and an operator stopped between the two steps
        # resumes from what the status says it was doing.
        recorded = conditions.with_reconcile_error(md.status, result.status)
        written = self._write_status(body, recorded)
        if written is None:
            return CONFLICT_RETRY
        metrics.rollouts(key, result.outcomes)
        status = result.status
        again = result.requeue_after
        if not result.leave_children:
            problems = tuple(self.applier.apply(md, result, indexed, observed.unserved))
            if problems != result.facts.apply_problems:
                status = conditions.status(replace(result.facts, apply_problems=problems))
            if problems:
                again = min(again or CHILD_RECHECK, CHILD_RECHECK)
        if status != recorded and self._write_status(written, status) is None:
            return CONFLICT_RETRY
        for event in [*result.events, *conditions.transitions(md.status or ModelDeploymentStatus(), status)]:
            self.client.post_event(
                body, type_=event.type, reason=event.reason, message=event.message, action="Reconcile"
            )
        return again

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

    def _report_invalid(self, body: dict[str, Any], problems: list[str], reason: str = "InvalidSpec") -> bool:
        """A spec the API server let through but the operator cannot (or may not) use: say so in status.

        False when the object changed under us (reconcile again).
        """
        old = stored_status(body) or ModelDeploymentStatus()
        status = conditions.invalid_spec(old, body["metadata"].get("generation"), problems, self.clock(), reason)
        if status.wire() == (body.get("status") or {}):
            return True
        if self._write_status(body, status) is None:
            return False
        message = "; ".join(problems)
        self.client.post_event(body, type_="Warning", reason=reason, message=message, action="Validate")
        return True

    def _failed(self, key: Key, cached: Mapping[str, Any] | None, err: Exception) -> timedelta:
        """A reconcile that raised: the cause in a ReconcileError condition, in one line, and a retry later."""
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        delay = timedelta(seconds=min(2.0 ** (failures - 1), FAILURE_BACKOFF_MAX))
        cause = one_line(err)
        log.warning("%s/%s: reconcile failed (attempt %d, again in %s): %s", *key, failures, delay, cause)
        try:
            body = self._latest(key, cached)
            if body is not None and not body["metadata"].get("deletionTimestamp"):
                old = stored_status(body) or ModelDeploymentStatus()
                generation = body["metadata"].get("generation")
                self._write_status(body, conditions.reconcile_error(old, generation, cause, self.clock()))
        except Exception as second:  # the API server may be what failed: the log has it, and the retry
            log.debug("%s/%s: could not record the failure: %s", *key, one_line(second))
        return delay


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if not isinstance(err, ApiError | OSError):
        text = f"{type(err).__name__}: {text}"
    return text[:CAUSE_LIMIT]


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
