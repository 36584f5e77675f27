"""Validation errors in words that name the field, the way the API server names it."""

from __future__ import annotations

from pydantic import ValidationError

from modeldeploy.api.rules import RuleViolation


def field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {"function-after", "function-before"} or "[" in str(part):
            continue  # pydantic's names for validator layers, not fields
        else:
            out += f".{part}" if out else str(part)
    return out


def describe(error: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem: `spec.autoscaling.minReplicas: must be ...`."""
    lines = []
    for item in error.errors():
        where = field_path(tuple(item["loc"]))
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, RuleViolation) and cause.field:
            joint = "" if cause.field.startswith("[") or not where else "."
            where = f"{where}{joint}{cause.field}"
        if prefix:
            where = f"{prefix}.{where}" if where else prefix
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return lines
