"""The iris example bento: build it, serve it for real, classify, inject faults.

Everything happens in a temporary BENTOML_HOME, so ~/bentoml is not touched
(the build and serve helpers are in tests/bentoserve.py).
"""

from __future__ import annotations

import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bentoserve import KNOWN_SAMPLES, build_bento, metric, request, serve

pytestmark = [pytest.mark.bento, pytest.mark.timeout(180)]

VERSION = "unittest"
TAG = f"iris-classifier:{VERSION}"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Train + build the bento in a temporary home; return (home, exported .bento)."""
    home = tmp_path_factory.mktemp("bentoml-home")
    export_dir = tmp_path_factory.mktemp("export")
    assert build_bento(home, "iris-classifier", VERSION, export_dir=export_dir) == TAG
    archive = export_dir / f"iris-classifier-{VERSION}.bento"
    assert archive.is_file(), list(export_dir.iterdir())
    return home, archive


def test_serve_by_tag_classifies_iris(built: tuple[Path, Path], tmp_path: Path) -> None:
    home, _ = built
    with serve(TAG, home, tmp_path / "serve.log") as server:
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

        info = request(f"{server.url}/info", {})
        assert info.status == 200
        assert info.json()["bento"] == TAG  # type: ignore[index]

        livez = request(f"{server.url}/livez")
        assert livez.status == 200

        metrics = request(f"{server.url}/metrics")
        assert metrics.status == 200
        text = metrics.body.decode()
        assert "bentoml_service_request_total" in text
        labels = {
            "endpoint": "/classify",
            "service_name": "iris-classifier",
            "service_version": VERSION,
            "runner_name": "IrisClassifier",
        }
        ok = metric(text, "bentoml_service_request_total", http_response_code="200", **labels)
        assert ok == 2 + len(results)
        failed = metric(text, "bentoml_service_request_total", http_response_code="500", **labels)
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

    with serve(
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

        text = request(f"{server.url}/metrics").body.decode()
        labels = {
            "endpoint": "/classify",
            "service_name": "iris-classifier",
            "service_version": VERSION,
        }
        total = "bentoml_service_request_total"
        assert metric(text, total, http_response_code="500", **labels) == 5
        assert metric(text, total, http_response_code="200", **labels) == 15
        duration = "bentoml_service_request_duration_seconds_count"
        assert metric(text, duration, http_response_code="500", **labels) == 5

    # BentoML wrote only to its (empty) home: the models came from the bento dir.
    assert not any((empty_home / "models").iterdir())
