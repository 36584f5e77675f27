"""The chart as helm renders it, for tests of what it grants and installs."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from localcluster.versions import ensure_binaries

CHART = Path(__file__).resolve().parents[2] / "charts" / "modeldeploy-operator"


def render_chart(*values: str, api_versions: Sequence[str] = ()) -> list[dict[str, Any]]:
    """`helm template` of the chart with `--set` values, as documents; API_VERSIONS as if the cluster served them
    (e.g. monitoring.coreos.com/v1/ServiceMonitor)."""
    helm = ensure_binaries(("helm",))["helm"]
    args = [str(helm), "template", "modeldeploy", str(CHART)]
    for value in values:
        args += ["--set", value]
    for api_version in api_versions:
        args += ["--api-versions", api_version]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]
