"""The iris example bento: build it, serve it for real, classify, inject faults.

Everything happens in a temporary BENTOML_HOME, so ~/bentoml is not touched.
Each server is a real ``bentoml serve`` subprocess on a free loopback port,
in its own process group, which is always terminated at the end.
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
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.bento, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
BUILD_PY = REPO / "bentos" / "build.py"
VERSION = "unittest"
TAG = f"iris-classifier:{VERSION}"

READY_DEADLINE_S = 90.0
STOP_DEADLINE_S = 20.0

# Rows 0, 50 and 100 of sklearn's iris data, one of each class.
KNOWN_SAMPLES = [
    ([5.1, 3.5, 1.4, 0.2], "setosa"),
    ([7.0, 3.2, 4.7, 1.4], "versicolor"),
    ([6.3, 3.3, 6.0, 2.5], "virginica"),
]


def _clean_env(bentoml_home: Path, **extra: str) -> dict[str, str]:
    """The environment for bentoml subprocesses: hermetic, isolated home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTOML_", "IRIS_", "PROMETHEUS_"))}
    env.update(
        BENTOML_HOME=str(bentoml_home),
        BENTOML_DO_NOT_TRACK="true",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def _free_port() -> int:
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


def _request(url: str, payload: object | None = None, timeout: float = 10.0) -> Response:
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
        return _request(f"{self.url}/classify", {"input_series": rows})


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
def _serve(target: str, bentoml_home: Path, log: Path, **env: str) -> Iterator[Server]:
    """Run ``bentoml serve TARGET`` on a free loopback port until /readyz is 200."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "bentoml", "serve", target]
    cmd += ["--port", str(port), "--host", "127.0.0.1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=log.parent,
            env=_clean_env(bentoml_home, **env),
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
                if _request(f"{url}/readyz", timeout=2).status == 200:
                    break
            except OSError:
                pass  # not listening yet, or listening but the worker is not up
            if time.monotonic() > deadline:
                pytest.fail(f"{url}/readyz not 200 after {READY_DEADLINE_S}s:\n{log.read_text()}")
            time.sleep(0.2)
        yield Server(url, proc, log)
    finally:
        _stop(proc)


def _metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample NAME{...} whose labels include LABELS, if any."""
    for line in text.splitlines():
        m = re.fullmatch(r"(\w+)\{(.*)\} (\S+)", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Train + build the bento in a temporary home; return (home, exported .bento)."""
    home = tmp_path_factory.mktemp("bentoml-home")
    export_dir = tmp_path_factory.mktemp("export")
    result = subprocess.run(
        [sys.executable, str(BUILD_PY), "--version", VERSION, "--export", str(export_dir)],
        env=_clean_env(home),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == TAG, result.stdout + result.stderr
    archive = export_dir / f"iris-classifier-{VERSION}.bento"
    assert archive.is_file(), list(export_dir.iterdir())
    return home, archive


def test_serve_by_tag_classifies_iris(built: tuple[Path, Path], tmp_path: Path) -> None:
    home, _ = built
    with _serve(TAG, home, tmp_path / "serve.log") as server:
        # One batch with one row of each class.
        resp = server.classify([row for row, _ in KNOWN_SAMPLES])
        assert resp.status == 200, resp.body
        assert resp.json() == [name for _, name in KNOWN_SAMPLES]

        # Concurrent single-row requests (merged by the adaptive batcher).
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda s: server.classify([s[0]]), KNOWN_SAMPLES * 4))
        assert [r.status for r in results] == [200] * len(results)
        assert [r.json() for r in results] == [[name] for _, name in KNOWN_SAMPLES * 4]

        empty = server.classify([])
        assert (empty.status, empty.json()) == (200, [])

        info = _request(f"{server.url}/info", {})
        assert info.status == 200
        assert info.json()["bento"] == TAG  # type: ignore[index]

        livez = _request(f"{server.url}/livez")
        assert livez.status == 200

        metrics = _request(f"{server.url}/metrics")
        assert metrics.status == 200
        text = metrics.body.decode()
        assert "bentoml_service_request_total" in text
        labels = {
            "endpoint": "/classify",
            "service_name": "iris-classifier",
            "service_version": VERSION,
            "runner_name": "IrisClassifier",
        }
        ok = _metric(text, "bentoml_service_request_total", http_response_code="200", **labels)
        assert ok == 2 + len(results)
        failed = _metric(text, "bentoml_service_request_total", http_response_code="500", **labels)
        assert failed == 0  # pre-initialised by BentoML, so rate() works


def test_fault_injection_from_bento_dir(built: tuple[Path, Path], tmp_path: Path) -> None:
    """Serve the unpacked bento (as the container image does) from an empty home."""
    _, archive = built
    bento_dir = tmp_path / "bento"
    with tarfile.open(archive, "r:xz") as tar:
        tar.extractall(bento_dir, filter="data")
    assert (bento_dir / "models" / "iris_clf").is_dir()
    empty_home = tmp_path / "home"
    empty_home.mkdir()

    with _serve(
        str(bento_dir),
        empty_home,
        tmp_path / "serve.log",
        IRIS_FAULT_RATE="0.25",
        IRIS_EXTRA_LATENCY_MS="50",
    ) as server:
        row, name = KNOWN_SAMPLES[0]
        results = [server.classify([row]) for _ in range(20)]
        failed = [i for i, r in enumerate(results) if r.status != 200]
        # Rate 0.25 on one worker: exactly every 4th request fails.
        assert failed == [3, 7, 11, 15, 19], [r.status for r in results]
        for i, r in enumerate(results):
            if i in failed:
                assert r.status == 500
                assert r.headers.get("x-iris-fault") == "injected"
                assert "injected fault" in r.json()["error"]  # type: ignore[index]
            else:
                assert r.json() == [name]
            assert r.elapsed >= 0.045, r.elapsed  # IRIS_EXTRA_LATENCY_MS

        text = _request(f"{server.url}/metrics").body.decode()
        labels = {
            "endpoint": "/classify",
            "service_name": "iris-classifier",
            "service_version": VERSION,
        }
        total = "bentoml_service_request_total"
        assert _metric(text, total, http_response_code="500", **labels) == 5
        assert _metric(text, total, http_response_code="200", **labels) == 15
        duration = "bentoml_service_request_duration_seconds_count"
        assert _metric(text, duration, http_response_code="500", **labels) == 5

    # BentoML wrote only to its (empty) home: the models came from the bento dir.
    assert not any((empty_home / "models").iterdir())
