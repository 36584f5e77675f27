"""Points in time as status stores them: aware datetimes, RFC 3339 in UTC with whole seconds on the wire."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AwareDatetime, PlainSerializer

_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def whole_seconds(moment: datetime) -> datetime:
    """The moment as status keeps it, so a value compares the same before and after a round trip."""
    return moment.astimezone(UTC).replace(microsecond=0)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_FORMAT)


Timestamp = Annotated[AwareDatetime, PlainSerializer(_rfc3339, return_type=str, when_used="json")]
