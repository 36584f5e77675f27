"""Pytest fixtures for real processes on loopback (the classes are in localcluster.realstack).

Registered as a plugin by tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from localcluster.prometheus import Prometheus, prometheus_binary
from localcluster.realstack import BentoStore


@pytest.fixture(scope="session")
def bento_store(tmp_path_factory: pytest.TempPathFactory) -> BentoStore:
    """The session's BentoStore: each version is built once per test session."""
    return BentoStore(tmp_path_factory.mktemp("realstack-bentos"))


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    """The Prometheus 3 executable (built from the Go module proxy on first use)."""
    return prometheus_binary()


@pytest.fixture(scope="module")
def prometheus(prometheus_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A running Prometheus for the test module, scraping whatever it sets with ``set_targets``."""
    with Prometheus(tmp_path_factory.mktemp("prometheus"), binary=prometheus_bin) as prom:
        yield prom
