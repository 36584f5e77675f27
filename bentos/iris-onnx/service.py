"""The iris classifier converted to ONNX, as a BentoML 1.4 service on onnxruntime.

A drop-in new version of iris-classifier: the same HTTP API (``POST /classify``,
batchable, and ``POST /info``) and fault-injection environment (``IRIS_FAULT_RATE``,
``IRIS_EXTRA_LATENCY_MS``, ``IRIS_STARTUP_DELAY_S``, ``IRIS_MAX_BATCH_SIZE``,
``IRIS_MAX_LATENCY_MS``), from ``irisapi.py`` (``bentos/common/``), and the same
answers: train.py accepts the converted model only if it predicts like scikit-learn.
"""

from __future__ import annotations

import bentoml
import numpy as np
import onnxruntime
from irisapi import REQUEST_TIMEOUT_S, FaultInjection, IrisApi


@bentoml.service(traffic={"timeout": REQUEST_TIMEOUT_S})
class IrisOnnxClassifier(IrisApi):
    """Classify iris flowers from their four measurements."""

    # Resolved at build time and packed into the bento (models/iris_onnx/...).
    model_ref = bentoml.models.BentoModel("iris_onnx:latest")

    def __init__(self) -> None:
        super().__init__()
        metadata = self.model_ref.info.metadata
        self.session = onnxruntime.InferenceSession(
            self.model_ref.path_of(metadata["file"]), providers=["CPUExecutionProvider"]
        )
        self.input_name = str(metadata["input"])
        self.label_output = str(metadata["label_output"])
        self.class_names = [str(c) for c in metadata["class_names"]]

    def predict(self, rows: np.ndarray) -> list[str]:
        # The graph takes float32; the API validates float64 rows, as iris-classifier's does.
        (labels,) = self.session.run([self.label_output], {self.input_name: rows.astype(np.float32)})
        return [str(c) for c in labels]


IrisOnnxClassifier.add_asgi_middleware(FaultInjection)
