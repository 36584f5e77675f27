"""The result of one analysis measurement: what `analysis` produces and `rollout` judges on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from modeldeploy.api.v1alpha1 import CheckResult

Verdict = Literal["Passed", "Failed", "NoData"]


@dataclass(frozen=True)
class Measurement:
    revision: str
    verdict: Verdict
    summary: str
    checks: tuple[CheckResult, ...] = field(default=())
