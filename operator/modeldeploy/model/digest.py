"""Short content hashes of JSON-able values: revisions, step lists, applied children."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def digest(value: Any, length: int) -> str:
    """The first `length` hex digits of the SHA-256 of the value's canonical JSON."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]
