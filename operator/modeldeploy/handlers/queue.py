"""A work queue in the manner of controller-runtime's: every trigger becomes "reconcile this key".

- A key waiting in the queue is there once, however many events arrive for it.
- A key is never reconciled by two workers at once; an event during a reconcile
  queues it again for right after.
- A reconcile may ask to be run again after a delay (a canary pause ending); the
  earliest request wins.
- A reconcile that raises is retried with exponential backoff; the operator never
  stops on an error.
- Keys wait in lanes: what a user did (created, edited, asked to promote) goes first; what the
  cluster did in answer (a child changed, a timer fired) next; what was found at start-up after;
  the periodic resync last. At a cold start the follow-up reconciles of the first
  ModelDeployments (their children appeared, became Ready) run before the last ones are begun, so
  the first are Ready in seconds instead of after every first pass; a spec change never waits
  behind follow-ups, nor behind a resync of thousands.

Reconciles are synchronous (the kubernetes client is) and run on a thread pool;
the queue itself lives on the asyncio loop kopf runs on.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from enum import IntEnum
from typing import Generic, TypeVar

from modeldeploy import metrics

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

BACKOFF_BASE = 1.0
BACKOFF_MAX = 300.0


class Lane(IntEnum):
    """Which keys are taken first: the lowest lane that holds any."""

    ASKED = 0  # the object itself changed: created, its spec edited, a promotion asked for
    ANSWER = 1  # follow-ups of work under way: a child changed, a timer fired, a retry
    FOUND = 2  # listed at start-up, not reconciled yet
    RESYNC = 3  # the periodic backstop


class WorkQueue(Generic[K]):
    def __init__(
        self,
        reconcile: Callable[[K], Awaitable[timedelta | None]],
        *,
        workers: int = 4,
    ) -> None:
        self._reconcile = reconcile
        self._workers = workers
        self._lanes: tuple[deque[K], ...] = tuple(deque() for _ in Lane)
        # key -> the lane it waits in; a key moved to a better lane leaves a stale entry behind, skipped.
        self._queued: dict[K, Lane] = {}
        # key -> when it was first queued (a move to a better lane keeps it): the wait a worker ends.
        self._since: dict[K, float] = {}
        self._wakeup = asyncio.Event()
        self._active: set[K] = set()
        self._again: dict[K, Lane] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._failures: dict[K, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.reconciles = 0
        self.errors = 0
        for lane in Lane:  # every lane's series from the start, so that rate() sees the first add
            metrics.QUEUE_ADDS.labels(lane.name.lower())
            metrics.QUEUE_WAIT.labels(lane.name.lower())

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"reconcile-worker-{i}") for i in range(self._workers)]

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def add(self, key: K, lane: Lane = Lane.ANSWER) -> None:
        """Reconcile key soon, in its lane's turn. Call from the event loop (the queue is not thread-safe)."""
        if key in self._active:
            self._again[key] = min(lane, self._again.get(key, lane))
            return
        waiting = self._queued.get(key)
        if waiting is not None and waiting <= lane:
            return
        self._queued[key] = lane
        self._since.setdefault(key, time.monotonic())
        self._lanes[lane].append(key)
        metrics.QUEUE_ADDS.labels(lane.name.lower()).inc()
        self._wakeup.set()

    @property
    def stopped_workers(self) -> int:
        """Workers that ended although nobody stopped the queue (none should: each catches what a reconcile
        raises)."""
        return sum(1 for task in self._tasks if task.done() and not task.cancelled())

    def __len__(self) -> int:
        """Keys waiting to be reconciled."""
        return len(self._queued)

    def depth(self) -> dict[str, int]:
        """Keys waiting, by lane (every lane, empty ones too)."""
        counts = dict.fromkeys((lane.name.lower() for lane in Lane), 0)
        for lane in self._queued.values():
            counts[lane.name.lower()] += 1
        return counts

    def _pop(self) -> K | None:
        for lane, keys in zip(Lane, self._lanes, strict=True):
            while keys:
                key = keys.popleft()
                if self._queued.get(key) == lane:
                    del self._queued[key]
                    since = self._since.pop(key, None)
                    if since is not None:
                        metrics.QUEUE_WAIT.labels(lane.name.lower()).observe(time.monotonic() - since)
                    return key
        return None

    def add_after(self, key: K, delay: float) -> None:
        """Reconcile key after delay seconds (as a follow-up), unless an earlier reconcile is already scheduled."""
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        handle = self._timers.get(key)
        if handle is not None:
            if handle.when() <= when:
                return
            handle.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def forget(self, key: K) -> None:
        """The object is gone: drop its timers and backoff state."""
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()
        self._failures.pop(key, None)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def _work(self) -> None:
        while True:
            key = self._pop()
            if key is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self._active.add(key)
            try:
                requeue = await self._reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1
                metrics.QUEUE_RETRIES.inc()
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = min(BACKOFF_BASE * 2 ** (failures - 1), BACKOFF_MAX) * random.uniform(0.8, 1.2)
                log.exception("reconcile of %s failed (attempt %d); retrying in %.1fs", key, failures, delay)
                self.add_after(key, delay)
            else:
                self._failures.pop(key, None)
                if requeue is not None:
                    self.add_after(key, requeue.total_seconds())
            finally:
                self.reconciles += 1
                self._active.discard(key)
                again = self._again.pop(key, None)
                if again is not None:
                    self.add(key, again)


def executor(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile")
