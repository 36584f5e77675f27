"""A work queue in the manner of controller-runtime's: every trigger becomes "reconcile this key".

- A key waiting in the queue is there once, however many events arrive for it.
- A key is never reconciled by two workers at once; an event during a reconcile
  queues it again for right after.
- A reconcile may ask to be run again after a delay (a canary pause ending); the
  earliest request wins.
- A reconcile that raises is retried with exponential backoff; the operator never
  stops on an error.

Reconciles are synchronous (the kubernetes client is) and run on a thread pool;
the queue itself lives on the asyncio loop kopf runs on.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

BACKOFF_BASE = 1.0
BACKOFF_MAX = 300.0


class WorkQueue(Generic[K]):
    def __init__(
        self,
        reconcile: Callable[[K], Awaitable[timedelta | None]],
        *,
        workers: int = 4,
    ) -> None:
        self._reconcile = reconcile
        self._workers = workers
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._again: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._failures: dict[K, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.reconciles = 0
        self.errors = 0

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"reconcile-worker-{i}") for i in range(self._workers)]

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def add(self, key: K) -> None:
        """Reconcile key soon."""
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        """Reconcile key after delay seconds, unless an earlier reconcile is already scheduled."""
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
            key = await self._ready.get()
            self._queued.discard(key)
            self._active.add(key)
            try:
                requeue = await self._reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1
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
                if key in self._again:
                    self._again.discard(key)
                    self.add(key)
                self._ready.task_done()


def executor(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile")
