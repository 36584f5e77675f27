"""The iris classifier (scikit-learn) as a BentoML 1.4 service.

Its HTTP API (``POST /classify``, batchable, and ``POST /info``) and its
fault-injection environment (``IRIS_FAULT_RATE``, ``IRIS_EXTRA_LATENCY_MS``,
``IRIS_STARTUP_DELAY_S``, ``IRIS_MAX_BATCH_SIZE``, ``IRIS_MAX_LATENCY_MS``)
are those of every iris bento: see ``irisapi.py`` (``bentos/common/``).
"""

from __future__ import annotations

import bentoml
import joblib
import numpy as np
from irisapi import REQUEST_TIMEOUT_S, FaultInjection, IrisApi

MODEL_FILE = "model.joblib"


@bentoml.service(traffic={"timeout": REQUEST_TIMEOUT_S})
class IrisClassifier(IrisApi):
    """Classify iris flowers from their four measurements."""

    # Resolved at build time and packed into the bento (models/iris_clf/...).
    model_ref = bentoml.models.BentoModel("iris_clf:latest")

    def __init__(self) -> None:
        super().__init__()
        self.model = joblib.load(self.model_ref.path_of(MODEL_FILE))
        self.class_names = [str(c) for c in self.model.classes_]

    def predict(self, rows: np.ndarray) -> list[str]:
        return [str(c) for c in self.model.predict(rows)]


IrisClassifier.add_asgi_middleware(FaultInjection)
