"""A bounded load generator for tests, benchmarks and demos (HTTP on keep-alive connections)."""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

# The header the iris bentos' fault injection (IRIS_FAULT_RATE) puts on the 500s it answers.
FAULT_HEADER = "x-iris-fault"
# A row of sklearn's iris data (a setosa); the body Load sends by default.
CLASSIFY_PAYLOAD: dict[str, Any] = {"input_series": [[5.1, 3.5, 1.4, 0.2]]}


@dataclass
class LoadStats:
    """Answers one target gave a :class:`Load`."""

    ok: int = 0  # 2xx
    client_errors: int = 0  # 4xx (and anything else that is not 2xx or 5xx)
    server_errors: int = 0  # 5xx
    injected_errors: int = 0  # of those, the ones the iris bentos' fault injection answered (x-iris-fault)
    # (seconds since the start, status, the start of the body) of the other 5xx, for finding out why.
    unexpected: list[tuple[float, int, str]] = field(default_factory=list, repr=False)
    failures: int = 0  # no answer: refused, reset, timed out
    latencies: list[float] = field(default_factory=list, repr=False)  # seconds, of the answered requests
    last_error: str | None = None  # why the last failure had no answer

    @property
    def answered(self) -> int:
        return self.ok + self.client_errors + self.server_errors

    @property
    def sent(self) -> int:
        return self.answered + self.failures

    @property
    def error_rate(self) -> float:
        """5xx among the answered requests."""
        return self.server_errors / self.answered if self.answered else 0.0

    def latency_quantile(self, q: float) -> float | None:
        """The Q-quantile (nearest rank) of the answered requests' latencies, in seconds."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Load:
    """Sends requests to each of URLS at RATE per second, for at most DURATION seconds.

    Open loop: request i to a target is due at start + i/RATE, sent by whichever of that
    target's CONCURRENCY keep-alive connections is free (a late request goes out at once,
    so a slow server gets as many as the connections allow, never a burst of more).
    It ends after DURATION seconds, after MAX_REQUESTS per target, or on :meth:`stop`.
    PAYLOAD None sends GET, otherwise POST of it as JSON. ``stats[url]`` counts the answers.

        with Load([server.url], rate=25, duration=20) as load:
            ...
        load.stats[server.url].error_rate
    """

    def __init__(
        self,
        urls: Sequence[str],
        rate: float,
        duration: float,
        *,
        max_requests: int | None = None,
        concurrency: int = 4,
        path: str = "/classify",
        payload: object | None = CLASSIFY_PAYLOAD,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        keepalive: bool = True,
    ) -> None:
        if rate <= 0 or duration <= 0 or concurrency < 1:
            raise ValueError("rate and duration must be positive, concurrency at least 1")
        self.urls = list(urls)
        self.rate = rate
        self.duration = duration
        self.max_requests = max_requests if max_requests is not None else math.ceil(rate * duration)
        self.concurrency = concurrency
        self.path = path
        self.body = None if payload is None else json.dumps(payload).encode()
        self.timeout = timeout
        self.headers = dict(headers or {})
        # Without keep-alive every request opens its own connection, so kube-proxy picks an
        # endpoint per request (with keep-alive, per connection).
        self.keepalive = keepalive
        self.stats: dict[str, LoadStats] = {url: LoadStats() for url in self.urls}
        self.started = 0.0  # time.monotonic() at start
        self.ended = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._next: dict[str, int] = dict.fromkeys(self.urls, 0)
        self._threads: list[threading.Thread] = []

    @property
    def elapsed(self) -> float:
        """Seconds since the start (until the end, once it ended)."""
        if not self.started:
            return 0.0
        return (self.ended or time.monotonic()) - self.started

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def start(self) -> Self:
        if self._threads:
            raise RuntimeError("a Load runs once")
        self.started = time.monotonic()
        for url in self.urls:
            for i in range(self.concurrency):
                thread = threading.Thread(target=self._worker, args=(url,), name=f"load-{url}-{i}", daemon=True)
                self._threads.append(thread)
                thread.start()
        return self

    def stop(self) -> None:
        """End early (requests in flight finish) and wait for the connections to close."""
        self._stop.set()
        self.join()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the load has ended by itself (at most TIMEOUT seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if not self.running and self._threads and not self.ended:
            self.ended = time.monotonic()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _ticket(self, url: str) -> float | None:
        """When this target's next request is due (monotonic time), None once the load is over."""
        with self._lock:
            i = self._next[url]
            due = self.started + i / self.rate
            if i >= self.max_requests or due >= self.started + self.duration:
                return None
            self._next[url] = i + 1
            return due

    def _worker(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
        headers = {"Content-Type": "application/json"} if self.body is not None else {}
        headers |= self.headers
        method = "GET" if self.body is None else "POST"
        stats = self.stats[url]
        conn: http.client.HTTPConnection | None = None
        try:
            while not self._stop.is_set():
                due = self._ticket(url)
                if due is None or self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                status: int | None = None
                injected = False
                error: str | None = None
                start = time.monotonic()
                for attempt in (1, 2):
                    fresh = conn is None
                    if conn is None:
                        conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
                    try:
                        conn.request(method, self.path, body=self.body, headers=headers)
                        response = conn.getresponse()
                        body = response.read()
                        status = response.status
                        injected = response.getheader(FAULT_HEADER) is not None
                        if not self.keepalive:
                            conn.close()
                            conn = None
                        break
                    except (OSError, http.client.HTTPException) as err:
                        conn.close()
                        conn = None
                        error = repr(err)
                        # A keep-alive connection the server closed while idle: retry once on a new one.
                        stale = isinstance(err, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError))
                        if fresh or not stale or attempt == 2:
                            break
                elapsed = time.monotonic() - start
                with self._lock:
                    if status is None:
                        stats.failures += 1
                        stats.last_error = error
                    else:
                        stats.latencies.append(elapsed)
                        if 200 <= status < 300:
                            stats.ok += 1
                        elif 500 <= status < 600:
                            stats.server_errors += 1
                            stats.injected_errors += injected
                            if not injected:
                                stats.unexpected.append(
                                    (start - self.started, status, body[:200].decode(errors="replace"))
                                )
                        else:
                            stats.client_errors += 1
        except Exception as err:  # never let a worker die with a traceback in the test's thread hooks
            with self._lock:
                stats.failures += 1
                stats.last_error = f"load worker crashed: {err!r}"
        finally:
            if conn is not None:
                conn.close()
