"""Real processes on loopback for tests and benchmarks: Prometheus, `bentoml serve`, and load.

Everything binds 127.0.0.1 on a free port, lives in a directory the caller gives
(or a temporary one), and is stopped by its own process id or process group, never
by name. Nothing here needs a network beyond loopback.

- :func:`prometheus_binary` -- Debian's ``/usr/bin/prometheus`` (``apt-get install prometheus``), or None.
- :class:`Prometheus` -- a Prometheus scraping every second the targets given with
  :meth:`Prometheus.set_targets` (a ``file_sd_configs`` file, so they can change while it runs).
- :class:`BentoStore` -- trains and builds versions of the example bento once, in a private
  ``BENTOML_HOME``, and unpacks each into a directory (as the container image holds it).
- :class:`BentoServer` -- ``bentoml serve`` of one such directory, with its own ``BENTOML_HOME``.
- :class:`Load` -- a bounded load generator: POSTs ``/classify`` at a fixed rate for a bounded
  time and count, on keep-alive connections, counting answers by class.

Pytest fixtures (``bento_store``, ``prometheus_bin``, ``prometheus``) are in tests/realstack.py,
a plugin the root conftest registers; tests, benchmarks and demos import these classes from here.

Why every server gets its own ``BENTOML_HOME``: ``bentoml serve`` keeps its Prometheus
multiprocess files in ``$BENTOML_HOME/prometheus_multiproc_dir``, and wipes that directory
when it starts. Two servers sharing a home export each other's counters (and a later start
erases an earlier server's), which makes per-revision metrics meaningless.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

REPO = Path(__file__).resolve().parents[3]
BUILD_PY = REPO / "bentos" / "build.py"
BENTO_NAME = "iris-classifier"
PROMETHEUS_PATHS = ("/usr/bin/prometheus",)
PROMETHEUS_MISSING = "needs Debian's prometheus binary: apt-get install prometheus"

# A row of sklearn's iris data (a setosa); the body Load sends by default.
CLASSIFY_PAYLOAD: dict[str, Any] = {"input_series": [[5.1, 3.5, 1.4, 0.2]]}

# (address, labels): a scrape target as "127.0.0.1:PORT" (a URL is accepted) and its target labels.
Target = tuple[str, Mapping[str, str]]


class StackError(RuntimeError):
    """A process of the stack failed to start, to become ready, or to answer."""


# --- processes ------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, from /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    return int(fields[1]), int(fields[19])


def _descendants(root: int) -> list[tuple[int, int]]:
    """(pid, start time) of every live descendant of ROOT."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                children.setdefault(stat[0], []).append((int(entry), stat[1]))
    found: list[tuple[int, int]] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def _still_ours(pid: int, start: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[1] == start


def stop_process_tree(
    proc: subprocess.Popen[bytes], grace: float = 20.0, known: Iterable[tuple[int, int]] = ()
) -> None:
    """Stop a process started with ``start_new_session=True``, its group and its descendants.

    SIGTERM to its process group, SIGKILL after GRACE seconds. Descendants that left the
    group (``bentoml serve`` starts its workers in sessions of their own) are recorded
    first and killed afterwards if they outlive their parent, as are KNOWN (pid, start time)
    pairs recorded earlier, which outlive a parent that died by itself; a pid is only
    signalled while its start time still matches, so a reused pid is never hit.
    """
    tree = {*known, *_descendants(proc.pid)}
    if proc.poll() is None:  # once it is reaped, its pid (and group id) may be reused: no signal then
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group outlives its leader while members remain
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    deadline = time.monotonic() + 5
    for pid, start in sorted(tree):
        while _still_ours(pid, start) and time.monotonic() < deadline:
            time.sleep(0.05)  # most exit with their parent
        if _still_ours(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


# --- Prometheus -----------------------------------------------------------------------


def prometheus_binary() -> str | None:
    """The prometheus executable (Debian's package, v2.42), or None when it is not installed."""
    for path in PROMETHEUS_PATHS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("prometheus")


LABEL_REVISION = "modeldeploy_dev_revision"  # the revision label as a Prometheus target label


class Prometheus:
    """A Prometheus on a free 127.0.0.1 port, scraping the targets of a file_sd file.

    Usage::

        with Prometheus(workdir) as prom:
            prom.set_targets([(server.address, {"namespace": "ml", "modeldeploy_dev_revision": "r1"})])
            prom.wait_for_target(server.address)
            prom.query_value("sum(bentoml_service_request_total)")

    The configuration, the targets file, the TSDB and ``prometheus.log`` are kept under
    ``workdir`` (a temporary directory, removed on stop, when none is given). Targets are
    scraped at ``/metrics`` every ``scrape_interval`` seconds; rules would be evaluated as often.
    ``relabel_configs`` (Prometheus' own syntax, snake_case keys) are applied to the targets:
    give targets ``__meta_kubernetes_*`` labels to run a cluster's relabelling against them.
    Prometheus applies a change of targets within about 5 s (its discovery manager batches updates).
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        scrape_interval: float = 1.0,
        binary: str | None = None,
        ready_timeout: float = 30.0,
        relabel_configs: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.binary = binary or prometheus_binary()
        if self.binary is None:
            raise StackError(PROMETHEUS_MISSING)
        self._own_dir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="prometheus-")) if workdir is None else workdir
        self.scrape_interval = scrape_interval
        self.ready_timeout = ready_timeout
        self.relabel_configs = [dict(rule) for rule in relabel_configs]
        self.targets_file = self.workdir / "targets.json"
        self.log = self.workdir / "prometheus.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the HTTP API, e.g. http://127.0.0.1:40123."""
        if not self.port:
            raise StackError("Prometheus is not started")
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> str:
        interval = f"{max(1, round(self.scrape_interval * 1000))}ms"
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "scrape_configs": [
                {
                    "job_name": "bentoml",
                    "metrics_path": "/metrics",
                    "file_sd_configs": [{"files": [str(self.targets_file)], "refresh_interval": "1s"}],
                    **({"relabel_configs": self.relabel_configs} if self.relabel_configs else {}),
                }
            ],
        }
        return json.dumps(config, indent=2)  # JSON is YAML

    def start(self) -> Self:
        """Start it and wait until /-/ready answers 200."""
        if self._proc is not None:
            raise StackError("Prometheus is already started")
        assert self.binary is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(self._config())
        if not self.targets_file.exists():
            self.set_targets([])
        self.port = free_port()
        cmd = [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            "--storage.tsdb.retention.time=1d",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=info",
        ]
        with self.log.open("wb") as out:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self._proc.poll() is not None:
                raise StackError(f"prometheus exited with {self._proc.returncode}:\n{_tail(self.log)}")
            with contextlib.suppress(OSError):
                if _http_get(f"{self.url}/-/ready", timeout=2)[0] == 200:
                    return
            if time.monotonic() > deadline:
                raise StackError(f"{self.url}/-/ready not 200 after {self.ready_timeout}s:\n{_tail(self.log)}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the process (by its process group) and remove a temporary workdir."""
        if self._proc is not None:
            stop_process_tree(self._proc, grace=10)
            self._proc = None
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Replace the scrape targets: ``[(address, labels), ...]``; Prometheus reloads the file by itself.

        Labels become target labels on every scraped series (e.g. ``namespace`` and
        ``modeldeploy_dev_revision``, as the relabelling in docs/analysis.md produces).
        """
        groups = [{"targets": [_host_port(address)], "labels": dict(labels)} for address, labels in targets]
        self.workdir.mkdir(parents=True, exist_ok=True)
        temporary = self.targets_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(groups, indent=2))
        os.replace(temporary, self.targets_file)  # atomic: never a half-written file

    def scrape_revisions(
        self, namespace: str, revisions: Mapping[str, str], *, wait: bool = True, timeout: float = 30.0
    ) -> None:
        """Scrape one model server per revision (``{revision: address}``), labelled as the pods of that
        revision would be after the relabelling in docs/analysis.md (namespace, modeldeploy_dev_revision).

        With WAIT, returns once every one of them has been scraped with those labels.
        """
        labelled = [(address, {"namespace": namespace, LABEL_REVISION: rev}) for rev, address in revisions.items()]
        self.set_targets(labelled)
        if wait:
            for address, labels in labelled:
                self.wait_for_target(address, {LABEL_REVISION: labels[LABEL_REVISION]}, timeout=timeout)

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/PATH and return its ``data``; raises StackError on an error answer."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        status, body = _http_get(url, timeout=10)
        payload = json.loads(body)
        if status != 200 or payload.get("status") != "success":
            raise StackError(f"GET {url}: {status} {payload.get('error', payload)}")
        return payload["data"]

    def targets(self) -> list[dict[str, Any]]:
        """The active targets, as /api/v1/targets lists them."""
        return list(self.api("targets", state="active")["activeTargets"])

    def wait_for_target(
        self, address: str, labels: Mapping[str, str] | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Wait until the target at ADDRESS (with LABELS, if given) has been scraped successfully."""
        instance = _host_port(address)
        deadline = time.monotonic() + timeout
        last: list[dict[str, Any]] = []
        while True:
            last = [t for t in self.targets() if t["labels"].get("instance") == instance]
            for target in last:
                if all(target["labels"].get(k) == v for k, v in (labels or {}).items()) and target["health"] == "up":
                    return target
            if time.monotonic() > deadline:
                raise StackError(f"target {instance} {dict(labels or {})} not scraped after {timeout}s: {last}")
            time.sleep(0.2)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query: the result vector (a list of {"metric", "value"})."""
        data = self.api("query", query=promql)
        if data["resultType"] != "vector":
            raise StackError(f"{promql!r} is a {data['resultType']}, not a vector")
        return list(data["result"])

    def query_value(self, promql: str) -> float | None:
        """The first sample's value of an instant query, None when the result is empty."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, promql: str, check: Callable[[float], bool], timeout: float = 30.0) -> float:
        """Wait until the query has a value that passes CHECK; return it."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.query_value(promql)
            if value is not None and check(value):
                return value
            if time.monotonic() > deadline:
                raise StackError(f"{promql} is {value} after {timeout}s")
            time.sleep(0.25)


def _host_port(address: str) -> str:
    """ "http://127.0.0.1:3000/" or "127.0.0.1:3000" -> "127.0.0.1:3000"."""
    if "://" in address:
        parsed = urllib.parse.urlsplit(address)
        return f"{parsed.hostname}:{parsed.port}"
    return address


# --- bentos ---------------------------------------------------------------------------


def bento_env(bentoml_home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for bentoml subprocesses: this one without BENTOML_/IRIS_/PROMETHEUS_, plus EXTRA."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTOML_", "IRIS_", "PROMETHEUS_"))}
    env.update(BENTOML_HOME=str(bentoml_home), BENTOML_DO_NOT_TRACK="true", PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Bento:
    """A built version of the example bento."""

    tag: str  # iris-classifier:VERSION
    version: str
    archive: Path  # the exported .bento (models included); `bentoml import` reads it
    path: Path  # the archive unpacked: what `bentoml serve PATH` and the container image run


class BentoStore:
    """Builds versions of the example bento, each once, in a private BENTOML_HOME under ROOT.

    The first build trains the model; later versions reuse it (``--skip-train``), so
    they differ only in their version, as a rebuild of unchanged code does.
    """

    def __init__(self, root: Path, python: str = sys.executable, timeout: float = 180.0) -> None:
        self.root = root
        self.home = root / "home"
        self.python = python
        self.timeout = timeout
        self._built: dict[str, Bento] = {}
        self._lock = threading.Lock()

    def bento(self, version: str) -> Bento:
        """The bento iris-classifier:VERSION, built (and unpacked) on first use."""
        with self._lock:
            if version not in self._built:
                self._built[version] = self._build(version)
            return self._built[version]

    def _build(self, version: str) -> Bento:
        exports = self.root / "exports"
        self.home.mkdir(parents=True, exist_ok=True)
        cmd = [self.python, str(BUILD_PY), "--version", version, "--export", str(exports)]
        if self._built:
            cmd.append("--skip-train")
        result = subprocess.run(
            cmd, env=bento_env(self.home), capture_output=True, text=True, timeout=self.timeout, check=False
        )
        tag = f"{BENTO_NAME}:{version}"
        if result.returncode != 0 or result.stdout.strip() != tag:
            raise StackError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        archive = exports / f"{BENTO_NAME}-{version}.bento"
        path = self.root / "unpacked" / f"{BENTO_NAME}-{version}"
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(path, filter="data")
        return Bento(tag, version, archive, path)


class BentoServer:
    """``bentoml serve`` of an unpacked bento on a free 127.0.0.1 port, in its own process group.

    ``env`` is added to a clean environment: ``IRIS_FAULT_RATE``, ``IRIS_EXTRA_LATENCY_MS``,
    ... (see bentos/iris-classifier/service.py). ``workdir`` holds the server's own
    BENTOML_HOME and ``serve.log``. :meth:`start` returns at once; :meth:`wait_ready`
    waits for /readyz, so several servers can start side by side (see :func:`serving`).
    """

    def __init__(
        self,
        bento: Bento | Path,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        *,
        python: str = sys.executable,
        ready_timeout: float = 90.0,
    ) -> None:
        self.bento_path = bento.path if isinstance(bento, Bento) else bento
        self.workdir = workdir
        self.env = dict(env or {})
        self.python = python
        self.ready_timeout = ready_timeout
        self.log = workdir / "serve.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._workers: list[tuple[int, int]] = []  # (pid, start time), in sessions of their own

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT"""
        if not self.port:
            raise StackError("the server is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """127.0.0.1:PORT, as a scrape target."""
        return _host_port(self.url)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> Self:
        if self._proc is not None:
            raise StackError("the server is already started")
        home = self.workdir / "bentoml-home"
        home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        cmd = [self.python, "-m", "bentoml", "serve", str(self.bento_path)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("wb") as out:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                env=bento_env(home, self.env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_ready(self) -> Self:
        """Wait until /readyz answers 200, at most ``ready_timeout`` seconds from now."""
        if self._proc is None:
            raise StackError("the server is not started")
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self._proc.poll() is not None:
                raise StackError(f"bentoml serve exited with {self._proc.returncode}:\n{_tail(self.log)}")
            with contextlib.suppress(OSError):
                if _http_get(f"{self.url}/readyz", timeout=2)[0] == 200:
                    self._workers = _descendants(self._proc.pid)
                    return self
            if time.monotonic() > deadline:
                raise StackError(f"{self.url}/readyz not 200 after {self.ready_timeout}s:\n{_tail(self.log)}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL what lingers, workers included."""
        if self._proc is not None:
            stop_process_tree(self._proc, known=self._workers)
            self._proc = None

    def __enter__(self) -> Self:
        self.start()
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


@contextlib.contextmanager
def serving(servers: Sequence[BentoServer]) -> Iterator[Sequence[BentoServer]]:
    """Start SERVERS side by side, wait until all are ready, stop all at the end."""
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


# --- load -----------------------------------------------------------------------------


@dataclass
class LoadStats:
    """Answers one target gave a :class:`Load`."""

    ok: int = 0  # 2xx
    client_errors: int = 0  # 4xx (and anything else that is not 2xx or 5xx)
    server_errors: int = 0  # 5xx
    failures: int = 0  # no answer: refused, reset, timed out
    latencies: list[float] = field(default_factory=list)  # seconds, of the answered requests
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
        method = "GET" if self.body is None else "POST"
        stats = self.stats[url]
        conn: http.client.HTTPConnection | None = None
        try:
            while not self._stop.is_set():
                due = self._ticket(url)
                if due is None or self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                status: int | None = None
                error: str | None = None
                start = time.monotonic()
                for attempt in (1, 2):
                    fresh = conn is None
                    if conn is None:
                        conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
                    try:
                        conn.request(method, self.path, body=self.body, headers=headers)
                        response = conn.getresponse()
                        response.read()
                        status = response.status
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
                        else:
                            stats.client_errors += 1
        except Exception as err:  # never let a worker die with a traceback in the test's thread hooks
            with self._lock:
                stats.failures += 1
                stats.last_error = f"load worker crashed: {err!r}"
        finally:
            if conn is not None:
                conn.close()
