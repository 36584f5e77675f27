"""Durations written the Kubernetes way ("30s", "2m", "1h30m", "500ms")."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from modeldeploy.api.rules import FieldRules, Rule

# The subset of Go's time.ParseDuration that CEL's duration() also accepts.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# Long enough for any field's own bound; beyond it a timedelta (or CEL's duration) overflows.
LONGEST = timedelta(days=365)
# The text of a duration, bounded so that the API server's CEL cost estimates stay finite.
MAX_DURATION_LENGTH = 32


def parse_duration(text: str) -> timedelta:
    """Parse "1m30s" into a timedelta; raises ValueError naming the bad text."""
    if len(text) > MAX_DURATION_LENGTH or not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration such as 30s, 2m or 1h30m")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))
    if seconds > LONGEST.total_seconds():
        raise ValueError(f"{text!r} is longer than {format_duration(LONGEST)}")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The shortest "1h2m3s" form of a timedelta, rounded to whole seconds (0s for zero)."""
    total = round(delta.total_seconds())
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return out + (f"{seconds}s" if seconds or not out else "")


class Duration(timedelta):
    """A timedelta that keeps the text it was written as.

    The text is what the API stores and what a person wrote ("90s" stays "90s", never
    "1m30s"), so a spec serializes as it was read and its revision hash does not move.
    """

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> Duration:
        delta = parse_duration(text)
        self = super().__new__(cls, delta.days, delta.seconds, delta.microseconds)
        self.text = text
        return self

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Duration({self.text!r})"

    def __reduce__(self) -> tuple[type[Duration], tuple[str]]:
        return (Duration, (self.text,))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        # A string with the pattern on the wire (and in the CRD schema); a Duration passed in Python is
        # checked the same way, so there is one validation and one error message.
        from_text = core_schema.no_info_after_validator_function(
            cls, core_schema.str_schema(pattern=DURATION_PATTERN, max_length=MAX_DURATION_LENGTH)
        )
        return core_schema.no_info_before_validator_function(
            lambda value: value.text if isinstance(value, Duration) else value,
            from_text,
            serialization=core_schema.plain_serializer_function_ser_schema(str, when_used="json"),
        )


def bounded(at_least: str, at_most: str) -> FieldRules:
    """A duration field between two durations, checked by the API server (CEL) and by pydantic alike."""
    low, high = parse_duration(at_least), parse_duration(at_most)
    return FieldRules(
        Rule(
            cel=f"duration(self) >= duration('{at_least}') && duration(self) <= duration('{at_most}')",
            message=f"must be between {at_least} and {at_most}",
            check=lambda value: low <= value <= high,
        )
    )
