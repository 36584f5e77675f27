"""Convert the iris classifier to ONNX and save it to the BentoML model store.

The classifier is iris-classifier's, fitted by that bento's own ``train()``
(same data, split and hyper-parameters), converted with skl2onnx for a float32
input of shape [None, 4], and accepted only if onnxruntime predicts the same
class as scikit-learn for every row of the iris data set. The ONNX file is
saved as ``iris_onnx`` with ``bentoml.models.create`` into the model store of
``$BENTOML_HOME`` (default ``~/bentoml``).

Usage::

    python bentos/iris-onnx/train.py [--version VERSION]

Prints the saved model's tag (``iris_onnx:<version>``) on stdout.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import onnxruntime
import skl2onnx
import sklearn
from onnx import ModelProto
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris

MODEL_NAME = "iris_onnx"
MODEL_FILE = "model.onnx"
INPUT_NAME = "features"
# skl2onnx's name for a classifier's predicted-label output.
LABEL_OUTPUT = "label"

IRIS_CLASSIFIER = runpy.run_path(str(Path(__file__).resolve().parents[1] / "iris-classifier" / "train.py"))


def convert(model: Any) -> ModelProto:
    """The fitted scikit-learn pipeline as an ONNX graph over float32 rows of 4 features."""
    # Without ZipMap the probabilities come out as a plain (n, 3) tensor, not one dict per row.
    return skl2onnx.to_onnx(model, initial_types=[(INPUT_NAME, FloatTensorType([None, 4]))], options={"zipmap": False})


def check(model: Any, onnx_model: ModelProto) -> int:
    """Raise unless onnxruntime and scikit-learn agree on every iris row; return how many rows."""
    rows = load_iris().data
    session = onnxruntime.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    (labels,) = session.run([LABEL_OUTPUT], {INPUT_NAME: rows.astype(np.float32)})
    expected = model.predict(rows)
    differ = np.flatnonzero(labels != expected)
    if differ.size:
        first = differ[0]
        raise ValueError(
            f"{MODEL_NAME}: onnxruntime and scikit-learn disagree on {differ.size} of {len(rows)} iris rows,"
            f" e.g. row {first} {rows[first].tolist()}: {str(labels[first])!r} != {str(expected[first])!r}"
        )
    return len(rows)


def save(
    onnx_model: ModelProto, accuracy: float, class_names: list[str], checked_rows: int, version: str | None = None
) -> bentoml.Model:
    """Save the ONNX model to the BentoML model store as ``iris_onnx``."""
    name: str | bentoml.Tag = MODEL_NAME if version is None else bentoml.Tag(MODEL_NAME, version)
    with bentoml.models.create(
        name,
        labels={"dataset": "sklearn-iris", "framework": "onnx"},
        metadata={
            # The scikit-learn model's: the ONNX one predicts the same classes on all the data.
            "accuracy": accuracy,
            "class_names": class_names,
            "features": IRIS_CLASSIFIER["FEATURES"],
            "file": MODEL_FILE,
            "input": INPUT_NAME,
            "label_output": LABEL_OUTPUT,
            "opsets": {o.domain or "ai.onnx": o.version for o in onnx_model.opset_import},
            "checked_rows": checked_rows,
            "sklearn_version": sklearn.__version__,
            "skl2onnx_version": skl2onnx.__version__,
            "onnxruntime_version": onnxruntime.__version__,
        },
    ) as stored:
        Path(stored.path_of(MODEL_FILE)).write_bytes(onnx_model.SerializeToString())
    return stored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", help="model version (default: generated)")
    args = parser.parse_args(argv)
    model, accuracy, names = IRIS_CLASSIFIER["train"]()
    onnx_model = convert(model)
    checked_rows = check(model, onnx_model)
    stored = save(onnx_model, accuracy, names, checked_rows, version=args.version)
    print(
        f"converted {MODEL_NAME}: same classes as scikit-learn on all {checked_rows} iris rows,"
        f" hold-out accuracy {accuracy:.3f}",
        file=sys.stderr,
    )
    print(stored.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
