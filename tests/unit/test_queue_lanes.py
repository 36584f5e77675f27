"""The work queue's lanes: what users did, then the cluster's answers, then what start-up found, then the resync."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from modeldeploy.handlers.queue import Lane, WorkQueue


async def _drain(order: list[str], count: int) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while len(order) < count:
        assert asyncio.get_running_loop().time() < deadline, order
        await asyncio.sleep(0.01)


def run_in_order(added: list[tuple[str, Lane]]) -> list[str]:
    """The order one worker reconciles keys in, all added while it is busy with "blocker"."""

    async def scenario() -> list[str]:
        order: list[str] = []
        gate = asyncio.Event()

        async def reconcile(key: str) -> timedelta | None:
            if key == "blocker" and not gate.is_set():
                await gate.wait()
            order.append(key)
            return None

        q: WorkQueue[str] = WorkQueue(reconcile, workers=1)
        q.start()
        q.add("blocker")
        await asyncio.sleep(0.01)
        for key, lane in added:
            q.add(key, lane)
        gate.set()
        await _drain(order, 1 + len({key for key, _ in added}))
        await q.stop()
        return order

    return asyncio.run(scenario())


class TestLanes:
    def test_follow_ups_of_started_work_go_before_what_start_up_found(self) -> None:
        # A cold start: the first ModelDeployments finish before the last are begun.
        order = run_in_order([("found-1", Lane.FOUND), ("found-2", Lane.FOUND), ("first", Lane.ANSWER)])
        assert order == ["blocker", "first", "found-1", "found-2"]

    def test_what_a_user_did_goes_before_follow_ups(self) -> None:
        order = run_in_order([("child-changed", Lane.ANSWER), ("spec-edited", Lane.ASKED)])
        assert order == ["blocker", "spec-edited", "child-changed"]

    def test_the_resync_waits_behind_everything_else(self) -> None:
        order = run_in_order([("old", Lane.RESYNC), ("found", Lane.FOUND)])
        assert order == ["blocker", "found", "old"]

    def test_a_key_waiting_in_a_later_lane_moves_up_and_is_reconciled_once(self) -> None:
        order = run_in_order([("a", Lane.RESYNC), ("b", Lane.RESYNC), ("b", Lane.ASKED), ("b", Lane.FOUND)])
        assert order == ["blocker", "b", "a"]

    def test_a_change_during_a_reconcile_keeps_the_better_lane_for_the_next(self) -> None:
        async def scenario() -> list[str]:
            order: list[str] = []
            q: WorkQueue[str]

            async def reconcile(key: str) -> timedelta | None:
                order.append(key)
                if len(order) == 1:
                    q.add("found", Lane.FOUND)
                    q.add("a", Lane.RESYNC)
                    q.add("a", Lane.ASKED)  # the edit wins over the resync asked for at the same time
                await asyncio.sleep(0.01)
                return None

            q = WorkQueue(reconcile, workers=1)
            q.start()
            q.add("a", Lane.ASKED)
            await _drain(order, 3)
            await q.stop()
            return order

        assert asyncio.run(scenario()) == ["a", "a", "found"]

    def test_timers_fire_as_follow_ups(self) -> None:
        async def scenario() -> list[str]:
            order: list[str] = []
            gate = asyncio.Event()

            async def reconcile(key: str) -> timedelta | None:
                if key == "blocker":
                    await gate.wait()
                order.append(key)
                return None

            q: WorkQueue[str] = WorkQueue(reconcile, workers=1)
            q.start()
            q.add("blocker")
            q.add_after("paused-canary", 0.01)
            await asyncio.sleep(0.05)
            q.add("found", Lane.FOUND)
            gate.set()
            await _drain(order, 3)
            await q.stop()
            return order

        assert asyncio.run(scenario()) == ["blocker", "paused-canary", "found"]
