"""Prometheus for tests, benchmarks and demos: a client of its HTTP API, and a local process.

- :class:`PrometheusApi` -- queries any Prometheus by URL (the local cluster's, in a pod, at its
  ClusterIP; or a local process).
- :class:`Prometheus` -- a Prometheus process on a free 127.0.0.1 port scraping the targets given
  with :meth:`Prometheus.set_targets` (a ``file_sd_configs`` file), for model servers that run
  as processes on loopback, where no pod exists to discover.
- :func:`prometheus_binary` -- the Prometheus 3 that build.sh builds from the Go module proxy.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from localcluster.process import ClusterError
from localcluster.realstack import StackError, _http_get, _tail, free_port, host_port, stop_process_tree
from localcluster.versions import ensure_binaries

PROMETHEUS_MISSING = "the Prometheus binary could not be built (hack/cluster/build.sh prometheus)"

# (address, labels): a scrape target as "127.0.0.1:PORT" (a URL is accepted) and its target labels.
Target = tuple[str, Mapping[str, str]]


def prometheus_binary() -> str:
    """The Prometheus 3 executable, built from the Go module proxy on first use (cached)."""
    try:
        return str(ensure_binaries(("prometheus",))["prometheus"])
    except ClusterError as err:
        raise StackError(f"{PROMETHEUS_MISSING}: {err}") from None


LABEL_REVISION = "modeldeploy_dev_revision"  # the revision label as a Prometheus target label


class PrometheusApi:
    """A client of a Prometheus' HTTP API at URL (http://host:port)."""

    def __init__(self, url: str) -> None:
        self._url = url

    @property
    def url(self) -> str:
        return self._url

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/PATH and return its ``data``; raises StackError on an error answer."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        status, body = _http_get(url, timeout=10)
        payload = json.loads(body)
        if status != 200 or payload.get("status") != "success":
            raise StackError(f"GET {url}: {status} {payload.get('error', payload)}")
        return payload["data"]

    def targets(self) -> list[dict[str, Any]]:
        """The active targets, as /api/v1/targets lists them."""
        return list(self.api("targets", state="active")["activeTargets"])

    def wait_for_target(
        self, address: str, labels: Mapping[str, str] | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Wait until the target at ADDRESS (with LABELS, if given) has been scraped successfully."""
        instance = host_port(address)
        deadline = time.monotonic() + timeout
        last: list[dict[str, Any]] = []
        while True:
            last = [t for t in self.targets() if t["labels"].get("instance") == instance]
            for target in last:
                if all(target["labels"].get(k) == v for k, v in (labels or {}).items()) and target["health"] == "up":
                    return target
            if time.monotonic() > deadline:
                raise StackError(f"target {instance} {dict(labels or {})} not scraped after {timeout}s: {last}")
            time.sleep(0.2)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query: the result vector (a list of {"metric", "value"})."""
        data = self.api("query", query=promql)
        if data["resultType"] != "vector":
            raise StackError(f"{promql!r} is a {data['resultType']}, not a vector")
        return list(data["result"])

    def query_value(self, promql: str) -> float | None:
        """The first sample's value of an instant query, None when the result is empty."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, promql: str, check: Callable[[float], bool], timeout: float = 30.0) -> float:
        """Wait until the query has a value that passes CHECK; return it."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.query_value(promql)
            if value is not None and check(value):
                return value
            if time.monotonic() > deadline:
                raise StackError(f"{promql} is {value} after {timeout}s")
            time.sleep(0.25)


class Prometheus(PrometheusApi):
    """A Prometheus on a free 127.0.0.1 port, scraping the targets of a file_sd file.

    Usage::

        with Prometheus(workdir) as prom:
            prom.set_targets([(server.address, {"namespace": "ml", "modeldeploy_dev_revision": "r1"})])
            prom.wait_for_target(server.address)
            prom.query_value("sum(bentoml_service_request_total)")

    The configuration, the targets file, the TSDB and ``prometheus.log`` are kept under
    ``workdir`` (a temporary directory, removed on stop, when none is given). Targets are
    scraped at ``/metrics`` every ``scrape_interval`` seconds; rules would be evaluated as often.
    ``relabel_configs`` (Prometheus' own syntax, snake_case keys) are applied to the targets:
    give targets ``__meta_kubernetes_*`` labels to run a cluster's relabelling against them.
    Prometheus applies a change of targets within about 5 s (its discovery manager batches updates).
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        scrape_interval: float = 1.0,
        binary: str | None = None,
        ready_timeout: float = 30.0,
        relabel_configs: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.binary = binary or prometheus_binary()
        self._own_dir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="prometheus-")) if workdir is None else workdir
        self.scrape_interval = scrape_interval
        self.ready_timeout = ready_timeout
        self.relabel_configs = [dict(rule) for rule in relabel_configs]
        self.targets_file = self.workdir / "targets.json"
        self.log = self.workdir / "prometheus.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the HTTP API, e.g. http://127.0.0.1:40123."""
        if not self.port:
            raise StackError("Prometheus is not started")
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> str:
        interval = f"{max(1, round(self.scrape_interval * 1000))}ms"
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "scrape_configs": [
                {
                    "job_name": "bentoml",
                    "metrics_path": "/metrics",
                    "file_sd_configs": [{"files": [str(self.targets_file)], "refresh_interval": "1s"}],
                    **({"relabel_configs": self.relabel_configs} if self.relabel_configs else {}),
                }
            ],
        }
        return json.dumps(config, indent=2)  # JSON is YAML

    def start(self) -> Self:
        """Start it and wait until /-/ready answers 200."""
        if self._proc is not None:
            raise StackError("Prometheus is already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(self._config())
        if not self.targets_file.exists():
            self.set_targets([])
        self.port = free_port()
        cmd = [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            "--storage.tsdb.retention.time=1d",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=info",
        ]
        with self.log.open("wb") as out:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self._proc.poll() is not None:
                raise StackError(f"prometheus exited with {self._proc.returncode}:\n{_tail(self.log)}")
            with contextlib.suppress(OSError):
                if _http_get(f"{self.url}/-/ready", timeout=2)[0] == 200:
                    return
            if time.monotonic() > deadline:
                raise StackError(f"{self.url}/-/ready not 200 after {self.ready_timeout}s:\n{_tail(self.log)}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the process (by its process group) and remove a temporary workdir."""
        if self._proc is not None:
            stop_process_tree(self._proc, grace=10)
            self._proc = None
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Replace the scrape targets: ``[(address, labels), ...]``; Prometheus reloads the file by itself.

        Labels become target labels on every scraped series (e.g. ``namespace`` and
        ``modeldeploy_dev_revision``, as the relabelling in docs/analysis.md produces).
        """
        groups = [{"targets": [host_port(address)], "labels": dict(labels)} for address, labels in targets]
        self.workdir.mkdir(parents=True, exist_ok=True)
        temporary = self.targets_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(groups, indent=2))
        os.replace(temporary, self.targets_file)  # atomic: never a half-written file

    def scrape_revisions(
        self, namespace: str, revisions: Mapping[str, str], *, wait: bool = True, timeout: float = 30.0
    ) -> None:
        """Scrape one model server per revision (``{revision: address}``), labelled as the pods of that
        revision would be after the relabelling in docs/analysis.md (namespace, modeldeploy_dev_revision).

        With WAIT, returns once every one of them has been scraped with those labels.
        """
        labelled = [(address, {"namespace": namespace, LABEL_REVISION: rev}) for rev, address in revisions.items()]
        self.set_targets(labelled)
        if wait:
            for address, labels in labelled:
                self.wait_for_target(address, {LABEL_REVISION: labels[LABEL_REVISION]}, timeout=timeout)
