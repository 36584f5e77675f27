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

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema


@dataclass(frozen=True)
class Rule:
    cel: str
    message: str
    check: Callable[[Any], bool]
    # Relative to the object the rule sits on, e.g. ".minReplicas": the API server
    # then names `spec.autoscaling.minReplicas` in its rejection.
    field_path: str | None = None
    # For rules over a map or a list, the offending entries named: a CEL messageExpression, and the
    # same words from Python (both start from `message`).
    cel_message: str | None = None
    explain: Callable[[Any], str] | None = None
    # The offending entry, named after the field the rule sits on (a key of a map, say).
    locate: Callable[[Any], str] | None = None

    def to_crd(self) -> dict[str, str]:
        out = {"rule": self.cel, "message": self.message}
        if self.cel_message:
            out["messageExpression"] = self.cel_message
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out

    def enforce(self, value: Any) -> None:
        """Raise the rule's violation unless the value passes. A rule that cannot be evaluated on a value refuses
        it, as the API server refuses an object on which a CEL rule fails to evaluate."""
        try:
            passed = self.check(value)
        except ValueError:
            raise
        except Exception as err:
            raise RuleViolation(
                self, f"{self.message} (the rule could not be evaluated: {type(err).__name__})"
            ) from err
        if not passed:
            raise self.violation(value)

    def violation(self, value: Any) -> RuleViolation:
        message = self.explain(value) if self.explain is not None else self.message
        field = self.locate(value) if self.locate is not None else None
        if field is None and self.field_path:
            field = self.field_path.lstrip(".")
        return RuleViolation(self, message, field)


class RuleViolation(ValueError):
    """Raised by pydantic validation when a Rule fails; keeps the field the rule names."""

    def __init__(self, rule: Rule, message: str | None = None, field: str | None = None) -> None:
        super().__init__(message or rule.message)
        self.rule = rule
        self.field = field


def cel_string(text: str) -> str:
    """A CEL string literal (single-quoted, backslashes and quotes escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class FieldRules:
    """Rules on a field's own value (a duration, a map, a list): `Annotated[T, FieldRules(rule, ...)]`.

    The CEL goes on the field's node of the CRD (self is the field's value), the check runs after
    pydantic's own validation of the value. Not for a field whose type is a model: its node would
    lose the model's own rules.
    """

    def __init__(self, *rules: Rule) -> None:
        self.rules = rules

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def check(value: Any) -> Any:
            for rule in self.rules:
                rule.enforce(value)
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = dict(handler(schema))
        out["x-kubernetes-validations"] = [*out.get("x-kubernetes-validations", []), *(r.to_crd() for r in self.rules)]
        return out
