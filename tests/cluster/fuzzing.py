"""Fuzzing the ModelDeployment API on a real API server, and the operator behind it.

Each spec (tests/cluster/fuzzspecs.py) is sent to the API server as kubectl sends it (strict field
validation). The property: a spec is refused with the field named, or it is admitted and the
operator reconciles it to a status with conditions for its generation; the operator's log has no
traceback. Used by tests/cluster/test_fuzz.py (a few hundred cases) and benchmarks/fuzz.py (1,000).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from localcluster.controlplane import KWOK_NODE_SELECTOR, KWOK_TOLERATION
from modeldeploy.k8s.client import ApiError, Client, resource_path

from fuzzspecs import specs

# A refusal names the field: `spec.x.y: ...` (or metadata's), as the API server words every schema and CEL error.
FIELD_NAMED = re.compile(r"\b(spec|metadata)(\.[^\s:]*)?: |unknown field \"(spec|metadata)[^\"]*\"")
NAMESPACE_PODS = 40


def drive(fuzzer: Fuzzer, cases: int, *, seed: int | None = None) -> Figures:
    """Send `cases` specs drawn by hypothesis (the same ones each time without a seed), settle, the figures."""
    chosen = settings(
        max_examples=cases,
        deadline=None,
        database=None,
        derandomize=seed is None,
        # Every case goes to the API server, and an admitted one to the operator: no shrinking, which would
        # send more; a failing case is reported as it was sent.
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )

    @chosen
    @given(spec=specs())
    def send(spec: dict[str, Any]) -> None:
        fuzzer.submit(spec)

    (send if seed is None else hypothesis_seed(seed)(send))()
    fuzzer.settle()
    return fuzzer.figures


def on_kwok(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec, its pods also tolerating and selecting the kwok nodes (so admitted specs can run)."""
    placement = spec.get("placement", {})
    if not isinstance(placement, dict):
        return spec
    tolerations = placement.get("tolerations", [])
    selector = placement.get("nodeSelector", {})
    placement = {**placement}
    if isinstance(tolerations, list):
        placement["tolerations"] = [*tolerations, dict(KWOK_TOLERATION)]
    if isinstance(selector, dict):
        placement["nodeSelector"] = {**selector, **KWOK_NODE_SELECTOR}
    return {**spec, "placement": placement}


@dataclass
class Figures:
    cases: int = 0
    refused: int = 0
    explained: int = 0
    # Reasons of the conditions that explained them, for the report.
    reasons: dict[str, int] = field(default_factory=dict)
    unnamed: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    unexplained: list[tuple[dict[str, Any], Any]] = field(default_factory=list)
    tracebacks: int = 0

    def line(self) -> str:
        return (
            f"cases {self.cases}, refused at admission {self.refused}, explained by a condition {self.explained}, "
            f"tracebacks {self.tracebacks}; refused without the field named {len(self.unnamed)}, "
            f"admitted and unexplained {len(self.unexplained)}"
        )


@dataclass
class Fuzzer:
    client: Client
    namespace: str
    tracebacks: Callable[[], int]
    batch: int = 25
    settle_timeout: float = 90.0
    figures: Figures = field(default_factory=Figures)
    _pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    _baseline: int = 0

    def __post_init__(self) -> None:
        self._baseline = self.tracebacks()

    def submit(self, spec: dict[str, Any]) -> str | None:
        """Send one spec; the API server's refusal when it refused, None when it admitted it."""
        self.figures.cases += 1
        name = f"fz{self.figures.cases}"
        body = {
            "apiVersion": "modeldeploy.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": on_kwok(spec),
        }
        path = resource_path("modeldeploy.dev/v1alpha1", "ModelDeployment", self.namespace)
        try:
            self.client.request("POST", path, body=body, query=[("fieldValidation", "Strict")])
        except ApiError as err:
            if err.status >= 500 or err.status in (0, 429):
                raise
            self.figures.refused += 1
            if not FIELD_NAMED.search(err.message):
                self.figures.unnamed.append((spec, err.message))
            return err.message
        self._pending[name] = spec
        if len(self._pending) >= self.batch:
            self.settle()
        return None

    def settle(self) -> None:
        """Wait until every admitted spec is explained by its status (or the deadline), then delete them."""
        deadline = time.monotonic() + self.settle_timeout
        waiting = dict(self._pending)
        while waiting and time.monotonic() < deadline:
            found = self.client.request(
                "GET", resource_path("modeldeploy.dev/v1alpha1", "ModelDeployment", self.namespace)
            )
            for item in found["items"]:
                name = item["metadata"]["name"]
                if name in waiting and _explained(item):
                    ready = next(c for c in item["status"]["conditions"] if c["type"] == "Ready")
                    degraded = next((c for c in item["status"]["conditions"] if c["type"] == "Degraded"), {})
                    reason = degraded.get("reason") if degraded.get("status") == "True" else ready["reason"]
                    self.figures.reasons[reason] = self.figures.reasons.get(reason, 0) + 1
                    self.figures.explained += 1
                    del waiting[name]
            if waiting:
                time.sleep(0.5)
        for name, spec in waiting.items():
            self.figures.unexplained.append(
                (spec, self.client.get("modeldeploy.dev/v1alpha1", "ModelDeployment", self.namespace, name))
            )
        for name in self._pending:
            self.client.request(
                "DELETE", resource_path("modeldeploy.dev/v1alpha1", "ModelDeployment", self.namespace, name)
            )
        self._pending.clear()
        self.figures.tracebacks = self.tracebacks() - self._baseline


def _explained(md: dict[str, Any]) -> bool:
    status = md.get("status") or {}
    conditions = status.get("conditions") or []
    ready = next((c for c in conditions if c["type"] == "Ready"), None)
    return (
        status.get("observedGeneration") == md["metadata"].get("generation")
        and ready is not None
        and bool(ready.get("reason"))
        and bool(ready.get("message"))
    )


def quota(namespace: str) -> dict[str, Any]:
    """A platform team's quota on the fuzzed namespace: specs asking for a thousand pods get a condition, not them."""
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "fuzz", "namespace": namespace},
        "spec": {"hard": {"pods": str(NAMESPACE_PODS)}},
    }
