"""Real processes on loopback for tests and benchmarks: `bentoml serve` of the example bentos.

Everything binds 127.0.0.1 on a free port, lives in a directory the caller gives (or a temporary
one), and is stopped by its own process id or process group, never by name.

- :class:`BentoStore` -- trains and builds versions of the example bento once, in a private
  ``BENTOML_HOME``, and unpacks each into a directory (as the container image holds it).
- :class:`BentoServer` -- ``bentoml serve`` of one such directory, with its own ``BENTOML_HOME``.
- :func:`stop_process_tree`, :func:`free_port` -- for these and for ``prometheus`` / ``loadgen``.

Pytest fixtures (``bento_store``, ``prometheus_bin``, ``prometheus``) are in tests/realstack.py,
a plugin the root conftest registers; tests, benchmarks and demos import these classes from here.

Why every server gets its own ``BENTOML_HOME``: ``bentoml serve`` keeps its Prometheus
multiprocess files in ``$BENTOML_HOME/prometheus_multiproc_dir``, and wipes that directory
when it starts. Two servers sharing a home export each other's counters (and a later start
erases an earlier server's), which makes per-revision metrics meaningless.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

REPO = Path(__file__).resolve().parents[3]
BUILD_PY = REPO / "bentos" / "build.py"
BENTO_NAME = "iris-classifier"


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
        return host_port(self.url)

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


def host_port(address: str) -> str:
    """ "http://127.0.0.1:3000/" or "127.0.0.1:3000" -> "127.0.0.1:3000"."""
    if "://" in address:
        parsed = urllib.parse.urlsplit(address)
        return f"{parsed.hostname}:{parsed.port}"
    return address
