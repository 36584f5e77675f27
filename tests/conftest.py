"""Test tiers by directory: tests/unit is `unit`, tests/cluster is `cluster`, tests/e2e is `e2e`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Fixtures for real Prometheus and bentoml serve processes (tests/realstack.py), and for the
# cluster and e2e tiers: the cluster, the chart, the operator process, a namespace per test
# (tests/clusterstack.py).
pytest_plugins = ["realstack", "clusterstack"]

TIERS = {"unit": pytest.mark.unit, "cluster": pytest.mark.cluster, "e2e": pytest.mark.e2e}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        relative = Path(item.fspath).relative_to(root)
        tier = TIERS.get(relative.parts[0]) if len(relative.parts) > 1 else None
        if tier is not None:
            item.add_marker(tier)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI every tier must really run: a skip is a missing dependency, not a pass."""
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = reporter.stats.get("skipped", [])
    if skipped and exitstatus == 0:
        reporter.write_line(f"CI: {len(skipped)} test(s) were skipped; failing the run", red=True)
        for report in skipped:
            reporter.write_line(f"  {report.nodeid}: {report.longrepr}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
