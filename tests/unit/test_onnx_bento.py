"""The ONNX iris bento: built and served for real, a drop-in new version of the iris-classifier bento.

Everything happens in a temporary BENTOML_HOME, so ~/bentoml is not touched
(the build and serve helpers are in tests/bentoserve.py).
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bentoserve import KNOWN_SAMPLES, build_bento, metric, request, serve

pytestmark = [pytest.mark.bento, pytest.mark.timeout(180)]

VERSION = "unittest"
TAG = f"iris-onnx:{VERSION}"
SKLEARN_TAG = f"iris-classifier:{VERSION}"

# The range of each feature in the iris data set (cm).
FEATURE_RANGES = [(4.3, 7.9), (2.0, 4.4), (1.0, 6.9), (0.1, 2.5)]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BentoML home holding the ONNX bento and the scikit-learn bento whose model it converts."""
    home = tmp_path_factory.mktemp("bentoml-home")
    assert build_bento(home, "iris-onnx", VERSION) == TAG
    assert build_bento(home, "iris-classifier", VERSION) == SKLEARN_TAG
    return home


def test_classifies_known_samples(home: Path, tmp_path: Path) -> None:
    with serve(TAG, home, tmp_path / "serve.log") as server:
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

        not_four_features = server.classify([[5.1, 3.5, 1.4]])
        assert 400 <= not_four_features.status < 500, not_four_features.body

        info = request(f"{server.url}/info", {})
        assert info.status == 200
        assert info.json()["bento"] == TAG  # type: ignore[index]
        assert info.json()["model"].startswith("iris_onnx:")  # type: ignore[index]
        assert info.json()["classes"] == ["setosa", "versicolor", "virginica"]  # type: ignore[index]


def test_predicts_like_the_sklearn_bento(home: Path, tmp_path: Path) -> None:
    rng = random.Random(0)
    rows = [[round(rng.uniform(low, high), 1) for low, high in FEATURE_RANGES] for _ in range(100)]
    with (
        serve(TAG, home, tmp_path / "onnx.log") as onnx_server,
        serve(SKLEARN_TAG, home, tmp_path / "sklearn.log") as sklearn_server,
    ):
        onnx, sklearn = onnx_server.classify(rows), sklearn_server.classify(rows)
    assert (onnx.status, sklearn.status) == (200, 200), (onnx.body, sklearn.body)
    assert set(sklearn.json()) == {"setosa", "versicolor", "virginica"}  # type: ignore[arg-type]
    assert onnx.json() == sklearn.json()


def test_fault_rate_one_fails_every_classify(home: Path, tmp_path: Path) -> None:
    with serve(TAG, home, tmp_path / "serve.log", IRIS_FAULT_RATE="1") as server:
        row, _ = KNOWN_SAMPLES[0]
        results = [server.classify([row]) for _ in range(6)]
        assert [r.status for r in results] == [500] * len(results)
        assert all(r.headers.get("x-iris-fault") == "injected" for r in results)

        # Only /classify fails.
        assert request(f"{server.url}/info", {}).status == 200

        text = request(f"{server.url}/metrics").body.decode()
        labels = {
            "endpoint": "/classify",
            "service_name": "iris-onnx",
            "service_version": VERSION,
            "runner_name": "IrisOnnxClassifier",
        }
        total = "bentoml_service_request_total"
        assert metric(text, total, http_response_code="500", **labels) == len(results)
        assert metric(text, total, http_response_code="200", **labels) == 0
