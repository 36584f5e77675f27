"""The HTTP API and the canary-test knobs that every iris example bento serves.

Each bento's ``service.py`` subclasses :class:`IrisApi` with its own model, so all
of them answer the same requests the same way and one can replace another as a
new model version. ``bentos/build.py`` copies this file into each bento's build
context, where the bentofile's ``include`` picks it up.

``POST /classify`` takes a batch of 4-feature rows (sepal length, sepal width,
petal length, petal width, in cm) and returns one class name per row::

    {"input_series": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}
    -> ["setosa", "virginica"]

The endpoint is batchable: BentoML's adaptive batcher merges concurrent
requests into one ``predict`` call. ``POST /info`` tells which bento and model
a replica serves.

Environment (read when a worker starts):

``IRIS_FAULT_RATE``
    0.0..1.0 (default 0): that fraction of ``/classify`` requests fail with
    HTTP 500, deterministically per worker process: with rate p, request n
    of a worker fails when floor(n*p) > floor((n-1)*p), so 0.25 fails the
    4th, 8th, ... request and 1 fails every one. The 500 comes back through
    BentoML's metrics middleware, so it is counted in
    ``bentoml_service_request_total{endpoint="/classify",http_response_code="500"}``.
``IRIS_EXTRA_LATENCY_MS``
    extra delay (ms, default 0) added to every ``/classify`` request, failed
    or not; it shows in ``bentoml_service_request_duration_seconds``.
``IRIS_STARTUP_DELAY_S``
    seconds (default 0) to sleep while the service starts, before it
    answers anything, to stand for a slow model load in readiness tests.
``IRIS_MAX_BATCH_SIZE``, ``IRIS_MAX_LATENCY_MS``
    the adaptive batcher's limits (default 32 rows, 1000 ms). The batcher sheds
    a request it expects to answer later than the latency limit with HTTP 503
    ("process is overloaded"): at BentoML's 100 ms, that happened to clients while
    new model server pods were starting on the same two cores. BentoML 1.4 takes
    these only from ``@bentoml.api``, not from its configuration, so they are
    read from the environment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from fractions import Fraction
from typing import Annotated, Any

import bentoml
import numpy as np
from bentoml.validators import DType, Shape

logger = logging.getLogger("bentoml.iris")

CLASSIFY_ROUTE = "/classify"
REQUEST_TIMEOUT_S = 30


def env_number(name: str, default: float, low: float, high: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc
    if not low <= value <= high or math.isnan(value):
        raise ValueError(f"{name} must be in [{low}, {high}], got {raw!r}")
    return value


MAX_BATCH_SIZE = int(env_number("IRIS_MAX_BATCH_SIZE", 32, 2, 10_000))
MAX_LATENCY_MS = int(env_number("IRIS_MAX_LATENCY_MS", 1000, 1, 600_000))


class FaultInjection:
    """ASGI middleware: fail a fixed fraction of ``/classify`` requests with 500.

    It sits inside BentoML's own metrics, access-log, timeout and concurrency
    middlewares, so its responses are counted like any other. One instance
    (one counter) per worker process.
    """

    def __init__(self, app: Any, route: str = CLASSIFY_ROUTE) -> None:
        self.app = app
        self.route = route
        rate = env_number("IRIS_FAULT_RATE", 0.0, 0.0, 1.0)
        # Exact fraction, so that e.g. 0.1 fails exactly every 10th request.
        self.rate = Fraction(rate).limit_denominator(10_000)
        self.delay_s = env_number("IRIS_EXTRA_LATENCY_MS", 0.0, 0.0, 600_000) / 1000
        self.count = 0
        if self.rate or self.delay_s:
            logger.warning(
                "iris fault injection on: IRIS_FAULT_RATE=%s IRIS_EXTRA_LATENCY_MS=%s",
                float(self.rate),
                self.delay_s * 1000,
            )

    def should_fail(self) -> bool:
        """Count one request; tell whether it is one to fail."""
        self.count += 1
        n = self.count
        return math.floor(n * self.rate) > math.floor((n - 1) * self.rate)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.route:
            await self.app(scope, receive, send)
            return
        fail = self.should_fail()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if not fail:
            await self.app(scope, receive, send)
            return
        # Read the request body first, so that a keep-alive connection stays usable.
        while (await receive()).get("more_body", False):
            pass
        body = json.dumps({"error": f"injected fault (IRIS_FAULT_RATE={float(self.rate)})"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-iris-fault", b"injected"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


Features = Annotated[np.ndarray, Shape((-1, 4)), DType("float64")]


class IrisApi:
    """The endpoints of an iris service; the ``@bentoml.service`` subclass brings the model.

    A subclass sets ``model_ref`` to a ``bentoml.models.BentoModel`` (so that
    the model is packed into the bento), calls ``super().__init__()`` before
    loading it, sets ``class_names`` and implements :meth:`predict`; then it
    adds the :class:`FaultInjection` middleware.
    """

    # On an instance, the BentoModel class attribute of the subclass resolves to the stored model.
    model_ref: bentoml.Model
    class_names: list[str]

    def __init__(self) -> None:
        delay = env_number("IRIS_STARTUP_DELAY_S", 0.0, 0.0, 3600.0)
        if delay:
            logger.warning("iris: IRIS_STARTUP_DELAY_S=%s, sleeping", delay)
            time.sleep(delay)

    def predict(self, rows: np.ndarray) -> list[str]:
        """The class name of each row of a non-empty (n, 4) float64 array."""
        raise NotImplementedError

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def classify(self, input_series: Features) -> list[str]:
        """Return the predicted class name for each row."""
        if len(input_series) == 0:
            return []
        return self.predict(input_series)

    @bentoml.api
    def info(self) -> dict[str, Any]:
        """Which model and bento this replica serves (for canary checks)."""
        ctx = bentoml.server_context
        return {
            "bento": f"{ctx.bento_name}:{ctx.bento_version}",
            "model": str(self.model_ref.tag),
            "classes": self.class_names,
            "max_batch_size": MAX_BATCH_SIZE,
            "max_latency_ms": MAX_LATENCY_MS,
        }
