"""Measurements taken off the reconcile workers, so a slow or hanging Prometheus delays nobody else.

A reconcile that finds an analysis due asks for the measurement and goes on without it; the queries
run on an event loop of their own (one thread for any number of them, each bounded by its
deadline), and when the measurement is done the ModelDeployment is woken to use it. At most one
measurement per ModelDeployment is in flight; one that is no longer wanted (its canary went) is
dropped when the next is asked for, or when the ModelDeployment is forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.model.measurement import Measurement

log = logging.getLogger(__name__)

RESOLVERS = 32

MeasureAsync = Callable[[ModelDeployment, str], Awaitable[Measurement]]


@dataclass
class Measurements:
    measure: MeasureAsync
    # Called (from the measuring thread) with the key of a ModelDeployment whose measurement is ready.
    wake: Callable[[Hashable], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _running: dict[Hashable, tuple[str, Future[Measurement]]] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None

    def take(self, key: Hashable, md: ModelDeployment, revision: str) -> Measurement | None:
        """The finished measurement of `revision` (handed out once); None while it is being taken."""
        with self._lock:
            running = self._running.get(key)
            if running is not None and running[0] == revision:
                if not running[1].done():
                    return None
                del self._running[key]
                return running[1].result()
            if running is not None:
                running[1].cancel()
            future = asyncio.run_coroutine_threadsafe(self._measure(md, revision), self._event_loop())
            self._running[key] = (revision, future)
        future.add_done_callback(lambda _: self._done(key))
        return None

    def forget(self, key: Hashable) -> None:
        with self._lock:
            running = self._running.pop(key, None)
        if running is not None:
            running[1].cancel()

    async def _measure(self, md: ModelDeployment, revision: str) -> Measurement:
        try:
            return await self.measure(md, revision)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a measurement that cannot be taken is a failed one, never a stuck rollout
            log.warning("%s/%s: measuring %s failed: %s", md.namespace, md.name, revision, err)
            return Measurement(revision, "Failed", f"measurement failed: {type(err).__name__}: {err}")

    def _done(self, key: Hashable) -> None:
        if self.wake is not None:
            self.wake(key)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            # Name lookups run on the loop's executor: enough threads that hanging ones (a resolver that does
            # not answer) leave room for everyone else's.
            loop.set_default_executor(ThreadPoolExecutor(max_workers=RESOLVERS, thread_name_prefix="resolve"))
            threading.Thread(target=loop.run_forever, name="measurements", daemon=True).start()
            self._loop = loop
        return self._loop
