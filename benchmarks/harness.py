"""What every benchmark needs: its own local cluster, the chart, and the operator as a real process.

The cluster lives in .cluster-bench/ (not .cluster/), so a benchmark never shares its API
server with `make up` or the tests, and two operators never act on the same objects.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from localcluster import DEFAULT_NODES, FakeNode, LocalCluster
from localcluster.kit import (
    CHART,
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
    RELEASE,
    Cluster,
    Operator,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / ".cluster-bench"


@dataclass
class Bench:
    cluster: Cluster
    operator: Operator
    local: LocalCluster


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory of a process so far, MiB (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far, user and system (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class MachineCpu:
    """How busy the machine's cores were while the block ran (/proc/stat): near 100% means a figure is
    bounded by CPU that the cluster, the operator, the benchmark and whatever else runs here share."""

    def __init__(self) -> None:
        self.busy = float("nan")

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    def __enter__(self) -> MachineCpu:
        self._start = self._read()
        return self

    def __exit__(self, *_: object) -> None:
        total, idle = self._read()
        spent = total - self._start[0]
        self.busy = 1 - (idle - self._start[1]) / spent if spent else float("nan")


def requests_logged(text: str, line: str = "stopping after") -> list[Counter[str]]:
    """The API requests the operator says it sent, from each of its log lines that start with `line`."""
    out = []
    for match in re.finditer(re.escape(line) + r".*API requests[^:]*: (.*)", text):
        counts: Counter[str] = Counter()
        for part in match.group(1).split(", "):
            what, _, count = part.rpartition("=")
            if count.isdigit():
                counts[what] = int(count)
        out.append(counts)
    return out


def cpu_nodes(count: int) -> tuple[FakeNode, ...]:
    """Plain nodes of 64 cores and 110 pods each (the kubelet default), for benchmarks at scale."""
    return tuple(FakeNode(f"kwok-bench-{i}", cpu="64", memory="256Gi") for i in range(count))


@contextlib.contextmanager
def bench_stack(
    *operator_args: str, start_operator: bool = True, nodes: tuple[FakeNode, ...] = DEFAULT_NODES
) -> Iterator[Bench]:
    """Cluster up (fresh etcd), chart installed, the operator running; everything stopped at the end."""
    local = LocalCluster(BENCH_DIR, nodes=nodes, real_node=False)
    local.down()  # a fresh etcd: figures do not depend on what an earlier run left behind
    info = local.up()
    cluster = Cluster("local", info.kubeconfig, info.kubectl, info.helm)
    operator: Operator | None = None
    try:
        cluster.helm(
            "upgrade", "--install", RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE,
            # The operator measured is the process below; the chart's own pod would have no node to run on.
            "--create-namespace", "--set", "replicas=0", "--wait", "--timeout", "120s",
        )  # fmt: skip
        wait_for(
            lambda: cluster.kubectl("get", "modeldeployments", "-A", check=False).returncode == 0,
            timeout=60,
            what="the ModelDeployment resource",
        )
        kubeconfig = cluster.token_kubeconfig(
            OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, BENCH_DIR / "operator.kubeconfig"
        )
        operator = Operator(kubeconfig, BENCH_DIR / "logs" / "operator.log", *operator_args)
        operator.log.unlink(missing_ok=True)
        if start_operator:
            operator.start()
        yield Bench(cluster, operator, local)
    finally:
        if operator is not None:
            operator.stop()
        if os.environ.get("MODELDEPLOY_KEEP_BENCH_CLUSTER") != "1":
            local.down()


def now() -> float:
    return time.monotonic()
