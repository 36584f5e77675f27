"""kopf wiring, and nothing more: watches feed the work queue, the queue runs the one reconcile.

- ModelDeployment events (created, changed, found at start-up) queue the object.
- Events of the children it owns (found by label) queue their owner.
- A periodic resync queues every ModelDeployment: the backstop for anything missed.

No kopf change-detecting handlers, timers or daemons are used: those write bookkeeping
onto the object or add a finalizer, and a finalizer would leave ModelDeployments
undeletable while the operator is down. Children are deleted by the cluster's garbage
collector through their ownerReferences.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import kopf

from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION
from modeldeploy.handlers.queue import WorkQueue, executor
from modeldeploy.handlers.reconciler import Reconciler
from modeldeploy.k8s.children import WATCHED, Child, ChildKind, read_child
from modeldeploy.model.meta import MANAGED_BY, MANAGER, NAME_LABEL

log = logging.getLogger(__name__)

Key = tuple[str, str]

# Children are watched by label: a watch of every Deployment in a big cluster would cost memory for all.
OWNED: dict[str, Any] = {MANAGED_BY: MANAGER, NAME_LABEL: kopf.PRESENT}


@dataclass
class Settings:
    """What `modeldeploy run` passes to the handlers, through kopf's memo."""

    reconciler: Reconciler
    workers: int = 4
    resync: timedelta = timedelta(minutes=5)


@dataclass
class Runtime:
    settings: Settings
    queue: WorkQueue[Key]
    indices: dict[str, Any]
    seen: dict[Key, str] = field(default_factory=dict)
    resync_task: asyncio.Task[None] | None = None


def _index_id(plural: str) -> str:
    return f"owned_{plural}"


def _child_index(kind: ChildKind) -> Any:
    def index(*, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> Any:
        return {(namespace or "", labels[NAME_LABEL]): read_child(kind, body)}

    return index


def _queue_owner(*, namespace: str | None, labels: Mapping[str, str], memo: Any, **_: Any) -> None:
    runtime: Runtime | None = memo.get("runtime")
    if runtime is not None:
        runtime.queue.add((namespace or "", labels[NAME_LABEL]))


for _kind in WATCHED:
    kopf.index(_kind.group, _kind.version, _kind.plural, labels=OWNED, id=_index_id(_kind.plural))(_child_index(_kind))
    kopf.on.event(_kind.group, _kind.version, _kind.plural, labels=OWNED, id=f"queue_owner_of_{_kind.plural}")(
        _queue_owner
    )


@kopf.index(GROUP, VERSION, PLURAL)
def modeldeployments(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    """Every ModelDeployment as last seen by the watch: what reconciles read, and the resync's list."""
    meta = {k: v for k, v in body.get("metadata", {}).items() if k != "managedFields"}
    kept = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": meta}
    for part in ("spec", "status"):
        if part in body:
            kept[part] = body[part]
    return {(namespace or "", name): copy.deepcopy(kept)}


def _fingerprint(body: Mapping[str, Any]) -> str:
    """What, besides status, can change a reconcile's outcome: an event with the same one was already handled."""
    meta = body.get("metadata", {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith("kopf.zalando.org/")}
    return json.dumps(
        [meta.get("uid"), meta.get("generation"), annotations, meta.get("labels"), meta.get("deletionTimestamp")],
        sort_keys=True,
    )


@kopf.on.event(GROUP, VERSION, PLURAL)
def modeldeployment_event(
    *, event: kopf.RawEvent, namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any
) -> None:
    runtime: Runtime = memo["runtime"]
    key = (namespace or "", name)
    if event.get("type") == "DELETED":
        runtime.queue.forget(key)
        runtime.seen.pop(key, None)
        runtime.settings.reconciler.forget(*key)
        return
    fingerprint = _fingerprint(body)
    if runtime.seen.get(key) == fingerprint:
        return  # only status changed, most likely by our own write
    runtime.seen[key] = fingerprint
    runtime.queue.add(key)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    # kopf's own bookkeeping, should any handler need it, goes to annotations, never status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    ours: Settings = memo["settings"]
    indices = {_index_id(kind.plural): kwargs[_index_id(kind.plural)] for kind in WATCHED}
    indices["modeldeployments"] = kwargs["modeldeployments"]
    pool = executor(ours.workers)
    loop = asyncio.get_running_loop()

    async def reconcile(key: Key) -> timedelta | None:
        children = _children_of(indices, key)
        cached = next(iter(indices["modeldeployments"].get(key, ())), None)
        if cached is None:
            return None  # deleted: nothing to do, the garbage collector takes the children
        return await loop.run_in_executor(pool, ours.reconciler.reconcile, key[0], key[1], children, cached)

    queue: WorkQueue[Key] = WorkQueue(reconcile, workers=ours.workers)
    runtime = Runtime(settings=ours, queue=queue, indices=indices)
    memo["runtime"] = runtime
    memo["pool"] = pool
    queue.start()
    runtime.resync_task = asyncio.create_task(_resync(runtime), name="resync")
    log.info("modeldeploy operator started with %d workers", ours.workers)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = memo.get("runtime")
    if runtime is None:
        return
    if runtime.resync_task is not None:
        runtime.resync_task.cancel()
    await runtime.queue.stop()
    memo["pool"].shutdown(wait=False, cancel_futures=True)
    sent = runtime.settings.reconciler.client.requests
    log.info(
        "stopping after %d reconciles (%d failed); API requests: %s",
        runtime.queue.reconciles,
        runtime.queue.errors,
        ", ".join(f"{k}={v}" for k, v in sent.most_common()) or "none",
    )


def _children_of(indices: Mapping[str, Any], key: Key) -> dict[tuple[str, str], Child]:
    out: dict[tuple[str, str], Child] = {}
    for kind in WATCHED:
        for child in indices[_index_id(kind.plural)].get(key, ()):
            out[(child.kind, child.name)] = child
    return out


async def _resync(runtime: Runtime) -> None:
    period = runtime.settings.resync.total_seconds()
    while True:
        await asyncio.sleep(period)
        keys = list(runtime.indices["modeldeployments"].keys())
        for key in keys:
            runtime.queue.add(key)
        log.debug("resync queued %d ModelDeployments", len(keys))
