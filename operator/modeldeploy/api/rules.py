"""Cross-field validation rules written once, enforced twice.

Each rule carries the CEL expression the API server evaluates at admission
(`x-kubernetes-validations`) and the Python predicate pydantic evaluates in
`modeldeploy render` and in the operator, with the same message, so a user sees
the same words whichever side rejects the spec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    cel: str
    message: str
    check: Callable[[Any], bool]
    # Relative to the object the rule sits on, e.g. ".minReplicas": the API server
    # then names `spec.autoscaling.minReplicas` in its rejection.
    field_path: str | None = None

    def to_crd(self) -> dict[str, str]:
        out = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


class RuleViolation(ValueError):
    """Raised by pydantic validation when a Rule fails; keeps the field the rule names."""

    def __init__(self, rule: Rule) -> None:
        super().__init__(rule.message)
        self.rule = rule

    @property
    def field(self) -> str | None:
        return self.rule.field_path.lstrip(".") if self.rule.field_path else None
