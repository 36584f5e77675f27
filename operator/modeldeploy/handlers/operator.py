"""kopf wiring, and nothing more: watches feed the work queue, the queue runs the one reconcile.

- ModelDeployment events (created, changed, found at start-up) queue the object.
- Events of the children it owns (found by label) queue their owner.
- A periodic resync queues every ModelDeployment: the backstop for anything missed.

No kopf change-detecting handlers, timers or daemons are used: those write bookkeeping
onto the object or add a finalizer, and a finalizer would leave ModelDeployments
undeletable while the operator is down. Children are deleted by the cluster's garbage
collector through their ownerReferences.

What the operator holds grows with its own objects only: the child watches carry a label
selector to the API server (kopf's `watching.label_selectors`), so Deployments, Services and
HPAs that are not the operator's never reach it, and the ModelDeployment index keeps a compact
copy of what a reconcile reads (`snapshot`). Handlers are coroutines: a synchronous one would
run on kopf's thread pool, one thread hop per event and the work queue touched off its loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import kopf

from modeldeploy import metrics
from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION
from modeldeploy.handlers.queue import Lane, WorkQueue, executor
from modeldeploy.handlers.reconciler import Reconciler
from modeldeploy.handlers.snapshot import compact, expand, fingerprint
from modeldeploy.k8s.children import WATCHED, Child, ChildKind, read_child
from modeldeploy.model.meta import MANAGED_BY, MANAGER, NAME_LABEL

log = logging.getLogger(__name__)

# The resync sleeps between keys only when the next is due this much later: one timer per key would
# cost more than it spreads.
RESYNC_TICK = 0.05
# How long a child event waits for the ones that follow it before its owner is reconciled.
CHILD_SETTLE = 0.25

Key = tuple[str, str]

# Children are watched by label, filtered by the API server: a watch of every Deployment in a big cluster
# would cost memory and CPU for all. The handlers' own filter says the same, for kopf's bookkeeping.
OWNED: dict[str, Any] = {MANAGED_BY: MANAGER, NAME_LABEL: kopf.PRESENT}
CHILD_SELECTOR = f"{MANAGED_BY}={MANAGER},{NAME_LABEL}"


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
    seen: dict[Key, bytes] = field(default_factory=dict)
    resync_task: asyncio.Task[None] | None = None


def _index_id(plural: str) -> str:
    return f"owned_{plural}"


def _child_index(kind: ChildKind) -> Any:
    async def index(*, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> Any:
        return {(namespace or "", labels[NAME_LABEL]): read_child(kind, body)}

    return index


def _listed(event: kopf.RawEvent) -> bool:
    """Found by the initial listing of a watch (kopf gives those events no type), not changed since."""
    return event.get("type") is None


async def _queue_owner(
    *, event: kopf.RawEvent, namespace: str | None, labels: Mapping[str, str], memo: Any, **_: Any
) -> None:
    runtime: Runtime | None = memo.get("runtime")
    if runtime is None:
        return
    key = (namespace or "", labels[NAME_LABEL])
    if _listed(event):
        runtime.queue.add(key, Lane.FOUND)
    else:
        # A child's status moves in bursts (a Deployment reports observedGeneration, then its pods, then
        # their readiness, as its controllers catch up); one reconcile after the burst sees it all.
        runtime.queue.add_after(key, CHILD_SETTLE)


for _kind in WATCHED:
    kopf.index(_kind.group, _kind.version, _kind.plural, labels=OWNED, id=_index_id(_kind.plural))(_child_index(_kind))
    kopf.on.event(_kind.group, _kind.version, _kind.plural, labels=OWNED, id=f"queue_owner_of_{_kind.plural}")(
        _queue_owner
    )


@kopf.index(GROUP, VERSION, PLURAL)
async def modeldeployments(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, bytes]:
    """Every ModelDeployment as last seen by the watch: what reconciles read, and the resync's list."""
    return {(namespace or "", name): compact(body)}


@kopf.on.event(GROUP, VERSION, PLURAL)
async def modeldeployment_event(
    *, event: kopf.RawEvent, namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any
) -> None:
    runtime: Runtime = memo["runtime"]
    key = (namespace or "", name)
    if event.get("type") == "DELETED":
        metrics.forget(key)
        runtime.queue.forget(key)
        runtime.seen.pop(key, None)
        runtime.settings.reconciler.forget(*key)
        return
    metrics.MODELDEPLOYMENTS.update(key, metrics.seen(body.get("status")))
    handled = fingerprint(body)
    if runtime.seen.get(key) == handled:
        return  # only status changed, most likely by our own write
    runtime.seen[key] = handled
    runtime.queue.add(key, Lane.FOUND if _listed(event) else Lane.ASKED)


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: no handler here detects changes, yet kopf builds one for every event of every watched
    object, a deep copy of the whole body (managedFields and status included). An empty one costs nothing,
    and nothing is ever stored on the objects."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    # kopf's own bookkeeping, should any handler need it, goes to annotations, never status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING
    for kind in WATCHED:
        settings.watching.label_selectors[kind.group, kind.version, kind.plural] = CHILD_SELECTOR
    ours: Settings = memo["settings"]
    indices = {_index_id(kind.plural): kwargs[_index_id(kind.plural)] for kind in WATCHED}
    indices["modeldeployments"] = kwargs["modeldeployments"]
    pool = executor(ours.workers)
    loop = asyncio.get_running_loop()

    async def reconcile(key: Key) -> timedelta | None:
        children = _children_of(indices, key)
        snapshot = next(iter(indices["modeldeployments"].get(key, ())), None)
        if snapshot is None:
            return None  # deleted: nothing to do, the garbage collector takes the children
        return await loop.run_in_executor(pool, ours.reconciler.reconcile, key[0], key[1], children, expand(snapshot))

    queue: WorkQueue[Key] = WorkQueue(reconcile, workers=ours.workers)
    metrics.MODELDEPLOYMENTS.queue_depth = queue.depth
    ours.reconciler.client.on_response = metrics.api_response
    # A measurement taken off the workers wakes its ModelDeployment (from the measuring thread).
    ours.reconciler.wake = lambda key: loop.call_soon_threadsafe(queue.add, key)
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
    """Every ModelDeployment queued once per period, spread evenly over it.

    Spread, so that the API server sees a steady trickle instead of a burst of every object at once;
    in the resync lane, so that a change never waits behind it. Each pass logs what it cost.
    """
    period = runtime.settings.resync.total_seconds()
    await asyncio.sleep(period)
    while True:
        started = asyncio.get_running_loop().time()
        before = Counter(runtime.settings.reconciler.client.requests)
        keys = list(runtime.indices["modeldeployments"].keys())
        for i, key in enumerate(keys):
            runtime.queue.add(key, Lane.RESYNC)
            due = started + period * (i + 1) / len(keys)
            delay = due - asyncio.get_running_loop().time()
            if delay > RESYNC_TICK:
                await asyncio.sleep(delay)
        await asyncio.sleep(max(0.0, started + period - asyncio.get_running_loop().time()))
        sent = runtime.settings.reconciler.client.requests - before
        log.info(
            "resync of %d ModelDeployments over %.0fs; API requests meanwhile: %s",
            len(keys),
            asyncio.get_running_loop().time() - started,
            ", ".join(f"{k}={v}" for k, v in sent.most_common()) or "none",
        )
