"""The chart as helm renders it, for tests of what it grants and installs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from localcluster.versions import ensure_binaries

CHART = Path(__file__).resolve().parents[2] / "charts" / "modeldeploy-operator"


def render_chart(*values: str) -> list[dict[str, Any]]:
    """`helm template` of the chart with `--set` values, as documents."""
    helm = ensure_binaries(("helm",))["helm"]
    args = [str(helm), "template", "modeldeploy", str(CHART)]
    for value in values:
        args += ["--set", value]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]
