"""The leader elector's rules, on an injected clock, against a Lease store that behaves as the API server does
for one object (resourceVersion preconditions, AlreadyExists).

The real Lease, with real processes: tests/cluster/test_leader_election.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from modeldeploy.handlers.leader import Elector, Timing
from modeldeploy.k8s.client import ApiError, Client, NotLeading
from modeldeploy.k8s.lease import LeaseRecord


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Store:
    """One Lease: writes conditional on the resourceVersion, as the API server's."""

    record: LeaseRecord | None = None
    version: int = 0
    down: bool = False
    writes: list[str] = field(default_factory=list)
    namespace: str = "modeldeploy-system"
    name: str = "modeldeploy-operator"

    def _check(self) -> None:
        if self.down:
            raise ApiError(0, "Unreachable", "no answer from the API server")

    def _put(self, holder: str, duration: int, transitions: int, acquired: str) -> LeaseRecord:
        self.version += 1
        self.record = LeaseRecord(holder, duration, transitions, f"renewed-{self.version}", acquired, str(self.version))
        self.writes.append(holder)
        return self.record

    def read(self) -> LeaseRecord | None:
        self._check()
        return self.record

    def create(self, holder: str, duration: int) -> LeaseRecord | None:
        self._check()
        if self.record is not None:
            return None
        return self._put(holder, duration, 0, "now")

    def write(self, old: LeaseRecord, holder: str, duration: int) -> LeaseRecord | None:
        self._check()
        assert self.record is not None
        if old.resource_version != self.record.resource_version:
            return None
        taken = holder != old.holder
        transitions = old.transitions + 1 if taken and holder else old.transitions
        return self._put(holder, duration, transitions, "now" if taken else old.acquired)


class Replica:
    def __init__(self, store: Store, name: str, clock: Clock) -> None:
        self.elector = Elector(store, name, Timing(), clock=clock)  # type: ignore[arg-type]
        self.events: list[str] = []
        self.elector.on_lead = lambda: self.events.append("lead")
        self.elector.on_lose = lambda: self.events.append("lose")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> Store:
    return Store()


def run(clock: Clock, seconds: float, *replicas: Replica, period: float = 2.0) -> None:
    """Every replica tries once per period for `seconds`."""
    end = clock.now + seconds
    while clock.now < end:
        for replica in replicas:
            replica.elector.step()
        clock.now += period


class TestElection:
    def test_the_first_replica_creates_the_lease_and_leads_the_second_stands_by(
        self, clock: Clock, store: Store
    ) -> None:
        a, b = Replica(store, "a", clock), Replica(store, "b", clock)
        run(clock, 60, a, b)
        assert (a.events, b.events) == (["lead"], [])
        assert a.elector.may_write() and not b.elector.may_write()
        assert set(store.writes) == {"a"}, "a standby never writes the Lease of a live leader"

    def test_a_standby_takes_over_once_the_lease_is_not_renewed_for_its_duration(
        self, clock: Clock, store: Store
    ) -> None:
        a, b = Replica(store, "a", clock), Replica(store, "b", clock)
        run(clock, 10, a, b)
        last_renewal = clock.now - 2.0  # a's last step; a is dead from here on
        taken = None
        while taken is None:
            b.elector.step()
            if b.elector.leading:
                taken = clock.now
            clock.now += 2.0
        assert 15 <= taken - last_renewal <= 15 + 2, "lease duration plus at most one retry period"
        assert store.record is not None and store.record.holder == "b" and store.record.transitions == 1

    def test_a_leader_cut_off_stops_writing_before_any_standby_may_take_over(self, clock: Clock, store: Store) -> None:
        a, b = Replica(store, "a", clock), Replica(store, "b", clock)
        run(clock, 10, a, b)
        last_renewal = clock.now - 2.0
        # a loses the API server; b still reaches it (a partition).
        writes_until: float | None = None
        taken_at: float | None = None
        for _ in range(20):
            store.down = True
            a.elector.step()
            if a.elector.may_write():
                writes_until = clock.now
            store.down = False
            b.elector.step()
            if b.elector.leading and taken_at is None:
                taken_at = clock.now
            clock.now += 1.0
        assert writes_until is not None and writes_until < last_renewal + 10
        assert taken_at is not None and taken_at >= last_renewal + 15
        assert a.events == ["lead", "lose"]

    def test_a_released_lease_is_taken_at_the_next_try(self, clock: Clock, store: Store) -> None:
        a, b = Replica(store, "a", clock), Replica(store, "b", clock)
        run(clock, 10, a, b)
        a.elector.stop(release=True)
        assert store.record is not None and store.record.holder == ""
        b.elector.step()
        assert b.elector.leading

    def test_of_two_replicas_racing_for_a_lapsed_lease_one_wins(self, clock: Clock, store: Store) -> None:
        a, b, c = Replica(store, "a", clock), Replica(store, "b", clock), Replica(store, "c", clock)
        run(clock, 4, a, b, c)
        # a dies; b and c read the same lapsed record and both write it: the store takes one.
        run(clock, 40, b, c)
        assert [r.elector.leading for r in (b, c)].count(True) == 1

    def test_a_leader_that_finds_someone_else_holding_the_lease_steps_down_at_once(
        self, clock: Clock, store: Store
    ) -> None:
        a = Replica(store, "a", clock)
        a.elector.step()
        assert store.record is not None
        store._put("intruder", 15, store.record.transitions + 1, "now")
        a.elector.step()
        assert a.events == ["lead", "lose"] and not a.elector.may_write()


class TestTiming:
    @pytest.mark.parametrize(
        ("timing", "message"),
        [
            ({"lease_duration": 10, "renew_deadline": 10}, "--lease-duration 10 must be longer than --renew-deadline"),
            ({"renew_deadline": 2, "retry_period": 2}, "--renew-deadline 2 must be longer than --retry-period 2"),
        ],
    )
    def test_figures_that_cannot_work_are_refused_naming_the_flag(self, timing: dict[str, Any], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            Timing(**timing)


class TestWriteGate:
    def test_a_write_is_refused_before_it_is_sent_a_read_is_not(self) -> None:
        class Api:
            user_agent = ""

            def param_serialize(self, *args: Any, **kwargs: Any) -> Any:
                raise AssertionError("nothing is sent")

        client = Client(Api(), instance="me_1")  # type: ignore[arg-type]
        client.write_gate = lambda: False
        assert client.api.user_agent == "modeldeploy/0.1.0 (me_1)"
        with pytest.raises(NotLeading, match="PATCH /apis/apps/v1/namespaces/ml/deployments/iris not sent"):
            client.request("PATCH", "/apis/apps/v1/namespaces/ml/deployments/iris", body={})
        with pytest.raises(AssertionError, match="nothing is sent"):
            client.request("GET", "/apis/apps/v1/namespaces/ml/deployments/iris")
        assert "PATCH deployments" not in client.requests


class TestWatchdog:
    def test_a_watcher_that_raised_is_dead_one_cancelled_is_not(self) -> None:
        asyncio.run(self._watchers())

    async def _watchers(self) -> None:
        from modeldeploy.handlers.operator import Watchdog

        async def fails() -> None:
            await asyncio.sleep(0.01)
            raise RuntimeError("403 Forbidden")

        watchdog = Watchdog()
        failing = asyncio.create_task(fails(), name="watcher for services.v1@ml")
        removed = asyncio.create_task(asyncio.sleep(10), name="watcher for deployments.v1.apps@gone")
        other = asyncio.create_task(fails(), name="something else")
        watchdog.scan()
        assert watchdog.alive == 2
        removed.cancel()
        await asyncio.gather(failing, removed, other, return_exceptions=True)
        await asyncio.sleep(0)
        assert watchdog.dead == {"services.v1@ml": "RuntimeError: 403 Forbidden"}
        assert watchdog.alive == 0
