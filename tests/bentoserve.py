"""Build the example bentos and serve them for real, for the bento tests (tests/unit/test_*_bento.py).

A bento is built by ``bentos/build.py`` and served by a real ``bentoml serve``
subprocess on a free loopback port, in its own process group, which is always
terminated at the end; both run in a BENTOML_HOME the test gives, so ~/bentoml
is not touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_PY = REPO / "bentos" / "build.py"

BUILD_TIMEOUT_S = 120.0
READY_DEADLINE_S = 90.0
STOP_DEADLINE_S = 20.0

# Rows 0, 50 and 100 of sklearn's iris data, one of each class.
KNOWN_SAMPLES = [
    ([5.1, 3.5, 1.4, 0.2], "setosa"),
    ([7.0, 3.2, 4.7, 1.4], "versicolor"),
    ([6.3, 3.3, 6.0, 2.5], "virginica"),
]


def clean_env(bentoml_home: Path, **extra: str) -> dict[str, str]:
    """The environment for bentoml subprocesses: hermetic, isolated home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTOML_", "IRIS_", "PROMETHEUS_"))}
    env.update(
        BENTOML_HOME=str(bentoml_home),
        BENTOML_DO_NOT_TRACK="true",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def build_bento(bentoml_home: Path, bento: str, version: str, export_dir: Path | None = None) -> str:
    """Train and build ``bentos/BENTO`` into BENTOML_HOME with build.py; return the tag it printed."""
    cmd = [sys.executable, str(BUILD_PY), "--bento", bento, "--version", version]
    if export_dir is not None:
        cmd += ["--export", str(export_dir)]
    result = subprocess.run(
        cmd,
        env=clean_env(bentoml_home),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str]
    elapsed: float

    def json(self) -> object:
        return json.loads(self.body)


def request(url: str, payload: object | None = None, timeout: float = 10.0) -> Response:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    start = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body, status, headers = resp.read(), resp.status, resp.headers
    except urllib.error.HTTPError as err:
        body, status, headers = err.read(), err.code, err.headers
    elapsed = time.monotonic() - start
    return Response(status, body, {k.lower(): v for k, v in headers.items()}, elapsed)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def classify(self, rows: list[list[float]]) -> Response:
        return request(f"{self.url}/classify", {"input_series": rows})


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_DEADLINE_S)
    # Whatever is left of the group (the arbiter, or workers it left behind).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@contextlib.contextmanager
def serve(target: str, bentoml_home: Path, log: Path, **env: str) -> Iterator[Server]:
    """Run ``bentoml serve TARGET`` on a free loopback port until /readyz is 200."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "bentoml", "serve", target]
    cmd += ["--port", str(port), "--host", "127.0.0.1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=log.parent,
            env=clean_env(bentoml_home, **env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as a whole
        )
    try:
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"bentoml serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if request(f"{url}/readyz", timeout=2).status == 200:
                    break
            except OSError:
                pass  # not listening yet, or listening but the worker is not up
            if time.monotonic() > deadline:
                pytest.fail(f"{url}/readyz not 200 after {READY_DEADLINE_S}s:\n{log.read_text()}")
            time.sleep(0.2)
        yield Server(url, proc, log)
    finally:
        _stop(proc)


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample NAME{...} whose labels include LABELS, if any."""
    for line in text.splitlines():
        m = re.fullmatch(r"(\w+)\{(.*)\} (\S+)", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None
