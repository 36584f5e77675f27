"""kopf wiring, and nothing more: watches feed the work queue, the queue runs the one reconcile.

- ModelDeployment events (created, changed, found at start-up) queue the object.
- Events of the children it owns (found by label) queue their owner.
- A periodic resync queues every ModelDeployment: the backstop for anything missed.
- With leader election (`handlers.leader`), every replica watches and indexes, but only the one that
  holds the Lease runs the work queue: a standby's queue gathers keys and never starts, and its
  client refuses every write. A replica that loses the Lease stops its queue and forgets what it
  kept in memory about its objects; whoever leads next starts from their status.
- Probes (`--liveness`): a kopf watch that died for good (kopf does not restart it) or a dead
  elector fails the liveness endpoint, so the kubelet restarts the pod; the answer says who leads.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import kopf

from modeldeploy import metrics
from modeldeploy.api.v1alpha1 import GROUP, PLURAL, VERSION
from modeldeploy.handlers.leader import Elector
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
    # None: no leader election, this process always reconciles.
    elector: Elector | None = None
    # Seconds between kopf's retries of a failing API request (None: kopf's 1,1,2,3,5,8,13,21); after the last a
    # watch ends for good, and the liveness probe fails.
    api_error_backoffs: tuple[float, ...] | None = None


class Watchdog:
    """kopf's watchers that ended other than by cancellation: kopf never restarts those.

    kopf runs each watch as a task named "watcher for <resource>@<namespace>" and cancels it when the
    resource or namespace goes away; one that raised (a watch ERROR event, a 403 after its retries)
    stays dead while the process lives, and the objects it watched are never seen to change again.
    """

    PREFIX = "watcher for "

    def __init__(self) -> None:
        self._known: set[asyncio.Task[Any]] = set()
        self.dead: dict[str, str] = {}

    @property
    def alive(self) -> int:
        return len(self._known)

    def scan(self) -> None:
        for task in asyncio.all_tasks():
            if task not in self._known and task.get_name().startswith(self.PREFIX):
                self._known.add(task)
                task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._known.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        what = task.get_name().removeprefix(self.PREFIX)
        self.dead[what] = f"{type(error).__name__}: {error}" if error is not None else "finished"
        log.error("the watch of %s ended for good (%s): failing the liveness probe", what, self.dead[what])


@dataclass
class Runtime:
    settings: Settings
    queue: WorkQueue[Key]
    indices: dict[str, Any]
    new_queue: Callable[[], WorkQueue[Key]]  # an unstarted one
    seen: dict[Key, bytes] = field(default_factory=dict)
    resync_task: asyncio.Task[None] | None = None
    leading: bool = False
    terms: int = 0
    watchdog: Watchdog = field(default_factory=Watchdog)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # kopf's own settings: its Events (a handler's warnings, posted on the object) are posted only while
    # this replica leads, so that a standby writes nothing at all.
    kopf_settings: kopf.OperatorSettings | None = None

    def lead(self) -> None:
        """This replica leads: run the queue. Keys found while standing by wait in it already; after a term
        lost, every ModelDeployment is queued afresh, as at a start."""
        if self.leading:
            return
        self.leading = True
        self.terms += 1
        if self.kopf_settings is not None:
            self.kopf_settings.posting.enabled = True
        if self.terms > 1:
            for key in list(self.indices["modeldeployments"].keys()):
                self.queue.add(key, Lane.FOUND)
        self.queue.start()
        log.info("reconciling as the leader (term %d, %d keys waiting)", self.terms, len(self.queue))

    async def stand_by(self) -> None:
        """The Lease is lost: stop reconciling, drop what memory says about objects (the next leader may have
        changed them). Reconciles still running on threads find their writes refused by the client's gate."""
        if not self.leading:
            return
        self.leading = False
        if self.kopf_settings is not None:
            self.kopf_settings.posting.enabled = False
        old, self.queue = self.queue, self.new_queue()
        await old.stop()
        for key in list(self.indices["modeldeployments"].keys()):
            self.settings.reconciler.forget(*key)
        log.info("standing by: the work queue is stopped")


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
    if event.get("type") == "DELETED":
        body = event.get("object") or {}
        runtime.settings.reconciler.child_deleted(
            key[0], key[1], body.get("kind", ""), (body.get("metadata") or {}).get("name", "")
        )
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


WATCHDOG_PERIOD = 5.0


async def _watch_watchers(runtime: Runtime) -> None:
    while True:
        runtime.watchdog.scan()
        await asyncio.sleep(WATCHDOG_PERIOD)


@kopf.on.probe(id="watches")
async def watches(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    """Liveness: fails (HTTP 500) once a watch or one of the operator's own eternal tasks ended, so the
    kubelet restarts the pod. (kopf 1.45 also stops the whole operator when a watch fails; this holds
    whether or not it does, and covers the resync and the work queue, which kopf knows nothing of.)"""
    runtime: Runtime | None = memo.get("runtime")
    if runtime is None:
        return {"started": False}
    runtime.watchdog.scan()
    dead = dict(runtime.watchdog.dead)
    if runtime.resync_task is not None and runtime.resync_task.done() and not runtime.resync_task.cancelled():
        dead["resync"] = repr(runtime.resync_task.exception())
    if runtime.queue.stopped_workers:
        dead["work queue"] = f"{runtime.queue.stopped_workers} workers ended"
    if dead:
        raise kopf.PermanentError("dead for good: " + "; ".join(f"{what}: {why}" for what, why in dead.items()))
    return {"alive": runtime.watchdog.alive}


@kopf.on.probe(id="leader")
async def leader(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    """Who leads, as this replica sees it; fails when the elector's thread is gone (it would never lead)."""
    runtime: Runtime | None = memo.get("runtime")
    elector = None if runtime is None else runtime.settings.elector
    if elector is None:
        return {"election": "disabled", "leading": runtime is not None and runtime.leading}
    if not elector.alive:
        raise kopf.PermanentError("the leader elector's thread is gone")
    return elector.status()


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    # kopf's own bookkeeping, should any handler need it, goes to annotations, never status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING
    for kind in WATCHED:
        settings.watching.label_selectors[kind.group, kind.version, kind.plural] = CHILD_SELECTOR
    ours: Settings = memo["settings"]
    if ours.api_error_backoffs is not None:
        settings.networking.error_backoffs = list(ours.api_error_backoffs)
    indices = {_index_id(kind.plural): kwargs[_index_id(kind.plural)] for kind in WATCHED}
    indices["modeldeployments"] = kwargs["modeldeployments"]
    pool = executor(ours.workers)
    loop = asyncio.get_running_loop()

    async def reconcile(key: Key) -> timedelta | None:
        if not runtime.leading:
            return None  # popped just as the Lease was lost: the next leader reconciles it
        children = _children_of(indices, key)
        snapshot = next(iter(indices["modeldeployments"].get(key, ())), None)
        if snapshot is None:
            return None  # deleted: nothing to do, the garbage collector takes the children
        return await loop.run_in_executor(pool, ours.reconciler.reconcile, key[0], key[1], children, expand(snapshot))

    def new_queue() -> WorkQueue[Key]:
        return WorkQueue(reconcile, workers=ours.workers)

    runtime = Runtime(settings=ours, queue=new_queue(), indices=indices, new_queue=new_queue, kopf_settings=settings)
    settings.posting.enabled = False  # until this replica leads (Runtime.lead)

    def queue_depth() -> dict[str, int]:
        # A new queue each time this replica leads: the metrics read whichever is current.
        return runtime.queue.depth()

    metrics.MODELDEPLOYMENTS.queue_depth = queue_depth
    metrics.MODELDEPLOYMENTS.leading = lambda: runtime.leading
    ours.reconciler.client.on_response = metrics.api_response
    # A measurement taken off the workers wakes its ModelDeployment (from the measuring thread).
    ours.reconciler.wake = lambda key: loop.call_soon_threadsafe(lambda: runtime.queue.add(key))
    memo["runtime"] = runtime
    memo["pool"] = pool
    runtime.resync_task = asyncio.create_task(_resync(runtime), name="resync")
    watchdog = asyncio.create_task(_watch_watchers(runtime), name="watchdog")
    runtime.tasks.add(watchdog)
    elector = ours.elector
    if elector is None:
        runtime.lead()
    else:
        ours.reconciler.client.write_gate = elector.may_write

        def lost() -> None:
            task = asyncio.create_task(runtime.stand_by(), name="stand-by")
            runtime.tasks.add(task)
            task.add_done_callback(runtime.tasks.discard)

        elector.on_lead = lambda: loop.call_soon_threadsafe(runtime.lead)
        elector.on_lose = lambda: loop.call_soon_threadsafe(lost)
        elector.start()
    log.info(
        "modeldeploy operator started with %d workers%s",
        ours.workers,
        "" if elector is None else f", as {elector.identity}; reconciling once it leads",
    )


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = memo.get("runtime")
    if runtime is None:
        return
    if runtime.resync_task is not None:
        runtime.resync_task.cancel()
    for task in runtime.tasks:
        task.cancel()
    await runtime.queue.stop()
    elector = runtime.settings.elector
    if elector is not None:
        # After the queue: no reconcile of ours is started any more when the successor takes over.
        await asyncio.get_running_loop().run_in_executor(None, elector.stop)
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
