"""The work queue: one reconcile per key at a time, deduplicated, delayed, retried with backoff."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest

from modeldeploy.handlers import queue as queue_module
from modeldeploy.handlers.queue import WorkQueue


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def test_events_for_a_waiting_key_collapse_into_one_reconcile() -> None:
    async def scenario() -> Counter[str]:
        seen: Counter[str] = Counter()
        gate = asyncio.Event()

        async def reconcile(key: str) -> timedelta | None:
            await gate.wait()
            seen[key] += 1
            return None

        q: WorkQueue[str] = WorkQueue(reconcile, workers=1)
        q.start()
        q.add("blocker")
        await asyncio.sleep(0.01)
        for _ in range(50):
            q.add("a")
        gate.set()
        await until(lambda: seen["a"] == 1)
        await asyncio.sleep(0.05)
        await q.stop()
        return seen

    assert asyncio.run(scenario())["a"] == 1


def test_a_key_is_never_reconciled_concurrently_and_late_events_are_not_lost() -> None:
    async def scenario() -> tuple[int, int]:
        running = 0
        most = 0
        calls = 0
        q: WorkQueue[str]

        async def reconcile(key: str) -> timedelta | None:
            nonlocal running, most, calls
            running += 1
            most = max(most, running)
            calls += 1
            if calls == 1:
                q.add("a")  # an event while the key is being reconciled
            await asyncio.sleep(0.02)
            running -= 1
            return None

        q = WorkQueue(reconcile, workers=4)
        q.start()
        q.add("a")
        await until(lambda: calls == 2)
        await asyncio.sleep(0.05)
        await q.stop()
        return most, calls

    most, calls = asyncio.run(scenario())
    assert most == 1
    assert calls == 2


def test_requeue_after_and_earliest_wins() -> None:
    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        times: list[float] = []

        async def reconcile(key: str) -> timedelta | None:
            times.append(loop.time() - start)
            return timedelta(seconds=0.2) if len(times) == 1 else None

        q: WorkQueue[str] = WorkQueue(reconcile, workers=1)
        q.start()
        q.add("a")
        await until(lambda: len(times) == 2)
        q.add_after("b", 10)
        q.add_after("b", 0.05)
        await until(lambda: len(times) == 3)
        await q.stop()
        return times

    times = asyncio.run(scenario())
    assert times[1] - times[0] >= 0.19
    assert times[2] < 1.0


def test_failures_back_off_and_the_queue_keeps_working(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_module, "BACKOFF_BASE", 0.05)

    async def scenario() -> tuple[list[float], int]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        attempts: list[float] = []
        others = 0

        async def reconcile(key: str) -> timedelta | None:
            nonlocal others
            if key == "bad":
                attempts.append(loop.time() - start)
                if len(attempts) < 4:
                    raise RuntimeError("boom")
            else:
                others += 1
            return None

        q: WorkQueue[str] = WorkQueue(reconcile, workers=1)
        q.start()
        q.add("bad")
        q.add("good")
        await until(lambda: len(attempts) == 4 and others == 1)
        assert q.errors == 3
        await q.stop()
        return attempts, others

    attempts, others = asyncio.run(scenario())
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[1] > gaps[0] * 1.3, gaps  # exponential
    assert others == 1
