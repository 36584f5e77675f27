"""One way to start, recognise, check and stop the processes of a local cluster.

Every component (etcd, the API server, kubelet, containerd, the registry, ...) is started by
:func:`spawn` in a session of its own with its output in a log file, recorded as a
:class:`ProcessRecord` (PID, command line, start time), and stopped by :func:`stop` only while
that PID still is that process: a reused PID is never signalled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from pathlib import Path


class ClusterError(RuntimeError):
    """A component could not be built, started or reached."""


# klog error (E1124 ...) and fatal lines, cobra's "Error: ...", JSON and logfmt errors.
ERROR_LINE = re.compile(r'^(?:[EF]\d{4} |Error: )|"level":"(?i:error|fatal|panic)"|level=(?i:error|fatal)')


@dataclasses.dataclass
class ProcessRecord:
    """Enough to recognise our process later and never signal a stranger."""

    pid: int
    cmdline: list[str]
    start_ticks: int
    log: str


def start_ticks(pid: int) -> int | None:
    """Start time of a live (non-zombie) process, in clock ticks since boot."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces: split after its ")".
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # exited, not yet reaped
        return None
    return int(fields[19])


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1] if raw else None


def is_ours(record: ProcessRecord) -> bool:
    """The PID still is the process we started: same command line and start time."""
    return cmdline(record.pid) == record.cmdline and start_ticks(record.pid) == record.start_ticks


def reap(pid: int, timeout: float = 0.0) -> None:
    """Collect the exit status of a process if it is our child.

    Only the parent can: a component started by this Python process (pytest) would otherwise
    stay a zombie until it exits. Components started by an earlier CLI run are init's children.
    """
    end = time.monotonic() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child, or already reaped
            return
        if done or time.monotonic() >= end:
            return
        time.sleep(0.01)


def gone(pid: int) -> bool:
    """The process has exited and been reaped (reaped here if it is our child): no thread of it holds anything."""
    reap(pid)
    return not Path(f"/proc/{pid}").exists()


def spawn(
    args: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None, *, append: bool = False
) -> ProcessRecord:
    """Start a component, its output in log_path, in its own session.

    posix_spawn rather than Popen: the component outlives a CLI `up` on purpose, and a Popen
    object would report it as leaked ("subprocess still running" ResourceWarning) when a test
    session ends. The new session keeps a Ctrl-C or hang-up of the caller's terminal away from it.
    The log is truncated unless `append` (a restart keeps what the previous run wrote).
    """
    args = list(args)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    mode = os.O_APPEND if append else os.O_TRUNC
    pid = os.posix_spawn(
        args[0],
        args,
        {**os.environ, **(env or {})},
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | mode, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
        # Python ignores SIGPIPE, and ignored signals stay ignored across exec: restore the
        # defaults (as Popen's restore_signals does).
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
        setsigmask=(),
    )
    # posix_spawn returns once the child is past the point of no return of execve, but for a
    # 100 MB binary the kernel may still be loading it, with /proc/PID/cmdline empty. Wait for the
    # final argv so that the identity check (is_ours) sees the process as it will stay.
    settle = time.monotonic() + 10.0
    while cmdline(pid) != args and start_ticks(pid) is not None and time.monotonic() < settle:
        time.sleep(0.005)
    return ProcessRecord(pid, args, start_ticks(pid) or 0, str(log_path))


def stop(
    tiers: Iterable[Sequence[ProcessRecord]], grace: float = 15.0, log: Callable[[str], None] = lambda _: None
) -> None:
    """Stop recorded processes tier by tier (dependents first); SIGKILL after `grace`."""
    for records in tiers:
        ours = [r for r in records if is_ours(r)]
        for rec in ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.pid, signal.SIGTERM)
        end = time.monotonic() + grace
        for rec in ours:
            # A process that is exiting has an empty /proc/PID/cmdline, so it stops being "ours"
            # a moment before it is gone.
            while is_ours(rec) and time.monotonic() < end:
                time.sleep(0.02)
            if is_ours(rec):
                log(f"pid {rec.pid} ignored SIGTERM for {grace:.0f}s: SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rec.pid, signal.SIGKILL)
            reap(rec.pid, timeout=5.0)
        for rec in records:
            reap(rec.pid)  # also those that died on their own
            done = "stopped" if rec in ours else "was not running:"
            log(f"{done} {Path(rec.cmdline[0]).name} (pid {rec.pid})")


def failure(name: str, rec: ProcessRecord, why: str, tail_lines: int = 20) -> str:
    """The error message for a component: why, its error lines and its log's tail."""
    try:
        lines = Path(rec.log).read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    # Errors are often far from the end (a bad flag is followed by the whole usage text), so
    # quote error/fatal lines separately from the tail.
    errors = [line for line in lines if ERROR_LINE.search(line)][-10:]
    tail = lines[-tail_lines:]
    parts = [f"{name} {why} (pid {rec.pid}, log {rec.log})"]
    if errors:
        parts += ["--- error lines ---", *errors]
    parts += [f"--- last {len(tail)} lines ---", *tail] if tail else ["(empty log)"]
    return "\n".join(parts)


def wait(what: str, check: Callable[[], bool], deadline: float, log: Callable[[str], None] = lambda _: None) -> None:
    """Poll check() until it is true; TimeoutError(what) after the deadline (time.monotonic())."""
    started = time.monotonic()
    delay = 0.05
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    log(f"{what}: ready ({time.monotonic() - started:.1f}s)")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Distinct free ports (sockets held open until all are chosen)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """GET a health URL of our own; a 200 is all that matters.

    Self-signed serving certificates (controller-manager, scheduler) are not verified.
    """
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as resp:
            return bool(resp.status == HTTPStatus.OK)
    except (OSError, urllib.error.URLError, ValueError):
        return False


def run(cmd: Sequence[str], *, check: bool = True, input: str | None = None, timeout: float = 300) -> str:
    """Run a command, its stdout returned; ClusterError with its stderr when it fails."""
    result = subprocess.run(list(cmd), capture_output=True, text=True, check=False, input=input, timeout=timeout)
    if check and result.returncode != 0:
        raise ClusterError(f"{shlex.join(cmd)} failed ({result.returncode}):\n{result.stderr.strip()}")
    return result.stdout
