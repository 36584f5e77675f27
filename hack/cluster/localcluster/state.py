"""A local cluster's state file (<dir>/state.json): ports, versions and the processes it started."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from localcluster.process import ProcessRecord

STATE_VERSION = 2


class StateFile:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / "state.json"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise up/down of one directory across processes (pytest-xdist...)."""
        with (self.dir / ".lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def read(self) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return state if state.get("version") == STATE_VERSION else None

    def write(self, state: Mapping[str, Any]) -> None:
        # Atomic replace: a reader never sees a half-written file.
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".state.")
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=2)
        Path(tmp).replace(self.path)

    def exists(self) -> bool:
        return self.path.exists()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def record(state: Mapping[str, Any], name: str) -> ProcessRecord | None:
    """The process record of component NAME, if the state has one."""
    raw = state.get("processes", {}).get(name)
    return ProcessRecord(**raw) if raw else None
