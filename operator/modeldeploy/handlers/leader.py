"""Leader election on a coordination.k8s.io Lease: of the operator's replicas, one reconciles.

client-go's algorithm (k8s.io/client-go/tools/leaderelection), with its default figures:

- every replica reads the Lease every `retry_period` (2 s, with up to 20 % jitter while standby);
- the leader renews it each time; a standby takes it only when its record (holder, renewTime) has
  not changed for `lease_duration` (15 s) as measured on the standby's own monotonic clock since
  it saw the record change, so clocks of different nodes never have to agree;
- the leader writes only while its last successful renewal was sent less than `renew_deadline`
  (10 s) ago: each write asks `may_write` first (the client's write gate), so a leader cut off from
  the API server stops writing 5 s before any standby may take over; when the deadline passes, or
  the Lease turns out to be someone else's, it steps down and becomes a standby again;
- on a clean stop the leader releases the Lease (holder "", duration 1 s), so its successor takes over
  at its next try instead of after 15 s.

Every write is conditional on the resourceVersion read (k8s.lease), so of two replicas racing for
the Lease one wins and the other sees 409. A killed leader is replaced within lease_duration +
retry_period (about 17 s) plus the standby's first reconciles; its caches (kopf's indices) are warm,
as a standby watches everything the leader does and only its work queue stands still.

Why not kopf's peering: it freezes operators of lower priority while one of higher priority is
alive, and replicas of one Deployment have the same priority, where kopf freezes *all* of them;
it also needs a CRD of its own and leaves our work queue (not a kopf handler) running when frozen.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modeldeploy.k8s.client import ApiError
from modeldeploy.k8s.lease import LeaseRecord, Leases

log = logging.getLogger(__name__)

JITTER = 0.2


@dataclass(frozen=True)
class Timing:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline:
            raise ValueError(
                f"--lease-duration {self.lease_duration:g} must be longer than --renew-deadline {self.renew_deadline:g}"
            )
        if not self.renew_deadline > self.retry_period * (1 + JITTER):
            raise ValueError(
                f"--renew-deadline {self.renew_deadline:g} must be longer than --retry-period "
                f"{self.retry_period:g} x {1 + JITTER:g}"
            )
        if self.retry_period <= 0:
            raise ValueError(f"--retry-period {self.retry_period:g} must be positive")


def identity() -> str:
    """This process, unique: the pod's name (the chart passes it; the hostname otherwise) and a random suffix,
    so a restarted container does not mistake its predecessor's Lease for its own."""
    host = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{host}_{uuid.uuid4().hex[:8]}"


class Elector:
    """Runs on a thread of its own, so that renewals never wait behind reconciles or a busy event loop.

    `on_lead` and `on_lose` are called from that thread, once per change of role.
    """

    def __init__(
        self,
        leases: Leases,
        me: str,
        timing: Timing,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.leases = leases
        self.identity = me
        self.timing = timing
        self.clock = clock
        self.on_lead: Callable[[], object] = lambda: None
        self.on_lose: Callable[[], object] = lambda: None
        self._leading = False
        self._valid_until = 0.0
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.terms = 0
        self.last_error: str | None = None

    # -- what others ask ---------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        return self._leading

    def may_write(self) -> bool:
        """Whether a write may be sent now: this replica leads, and renewed the Lease recently enough that no
        standby can have taken it."""
        return self._leading and self.clock() < self._valid_until

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def status(self) -> dict[str, Any]:
        observed = self._observed
        return {
            "identity": self.identity,
            "leading": self._leading,
            "holder": observed.holder if observed else None,
            "lease": f"{self.leases.namespace}/{self.leases.name}",
            "terms": self.terms,
            "lastError": self.last_error,
        }

    # -- the loop ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True, timeout: float = 12.0) -> None:
        """Stop trying; release the Lease if held. The wait outlasts a step's two requests (5 s each), so no
        renewal in flight lands after the release."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if release and self._leading:
            self._release()

    def _run(self) -> None:
        log.info(
            "leader election on Lease %s/%s as %s (lease %gs, renew deadline %gs, retry %gs)",
            self.leases.namespace,
            self.leases.name,
            self.identity,
            self.timing.lease_duration,
            self.timing.renew_deadline,
            self.timing.retry_period,
        )
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # never let the elector die: a dead elector is a replica that never leads
                log.exception("leader election step failed")
            period = self.timing.retry_period
            if not self._leading:
                period *= 1 + random.uniform(0, JITTER)
            self._stop.wait(period)

    def step(self) -> None:
        """One try to take or renew the Lease; changes role when the outcome says so."""
        sent = self.clock()
        try:
            held = self._try(sent)
        except (ApiError, OSError) as err:
            self.last_error = str(err)[:300]
            log.warning("leader election: the Lease could not be read or written: %s", self.last_error)
            held = None
        if held is True:
            self.last_error = None
            self._valid_until = sent + self.timing.renew_deadline
            if not self._leading:
                self._leading = True
                self.terms += 1
                log.info("leading: Lease %s/%s taken by %s", self.leases.namespace, self.leases.name, self.identity)
                self.on_lead()
        elif held is False:
            self._lose(f"the Lease is held by {self._observed.holder if self._observed else 'another replica'}")
        elif self._leading and self.clock() >= self._valid_until:
            self._lose(f"the Lease was not renewed for {self.timing.renew_deadline:g}s")

    def _try(self, now: float) -> bool | None:
        """True: we hold the Lease now; False: another replica does; None: we could not tell (a race lost)."""
        duration = round(self.timing.lease_duration)
        record = self.leases.read()
        if record is None:
            created = self.leases.create(self.identity, duration)
            if created is None:
                return None  # another replica created it first: its record is read next time
            self._see(created, now)
            return True
        self._see(record, now)
        lapsed = now >= self._observed_at + (record.duration or self.timing.lease_duration)
        if record.holder and record.holder != self.identity and not lapsed:
            return False
        written = self.leases.write(record, self.identity, duration)
        if written is None:
            return None
        self._see(written, now)
        return True

    def _see(self, record: LeaseRecord, now: float) -> None:
        old = self._observed
        if old is None or (old.holder, old.renewed, old.resource_version) != (
            record.holder,
            record.renewed,
            record.resource_version,
        ):
            self._observed = record
            self._observed_at = now

    def _lose(self, why: str) -> None:
        self._valid_until = 0.0
        if self._leading:
            self._leading = False
            log.warning("no longer leading: %s; standing by", why)
            self.on_lose()

    def _release(self) -> None:
        """Give the Lease up, so the next leader need not wait for it to expire."""
        self._leading = False
        self._valid_until = 0.0
        try:
            record = self.leases.read()
            if record is not None and record.holder == self.identity:
                self.leases.write(record, "", 1)
                log.info("Lease %s/%s released", self.leases.namespace, self.leases.name)
        except (ApiError, OSError) as err:
            log.warning("the Lease could not be released (it expires by itself): %s", err)
