"""Driving a real cluster from Python: kubectl, helm, the operator as a real process, waiting.

Used by the cluster test tier (tests/cluster), `make up` (hack/up.py) and the benchmarks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from localcluster.controlplane import KWOK_NODE_SELECTOR, KWOK_TOLERATION

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "modeldeploy-operator"
OPERATOR_NAMESPACE = "modeldeploy-system"
RELEASE = "modeldeploy"
OPERATOR_SERVICE_ACCOUNT = "modeldeploy-operator"

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll until check() returns something truthy; fail naming what was awaited and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except Exception as err:  # a transient API error is a value like any other while waiting
            last = err
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)


@dataclass
class Cluster:
    """A reachable cluster with the kubectl and helm to drive it."""

    provider: str
    kubeconfig: Path
    kubectl_bin: Path
    helm_bin: Path

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(kubeconfig or self.kubeconfig)
        return env

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.kubectl_bin), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env(kubeconfig),
            check=False,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        result = self.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr or "not found" in result.stderr:
                return None
            raise AssertionError(f"kubectl get {kind} {name} failed: {result.stderr.strip()}")
        found: dict[str, Any] = json.loads(result.stdout)
        return found

    def apply(self, manifest: dict[str, Any] | str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self.kubectl("apply", "-f", "-", input=text, check=check)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.helm_bin), *args], capture_output=True, text=True, env=self.env(), check=False, timeout=300
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def token_kubeconfig(self, namespace: str, service_account: str, path: Path) -> Path:
        """A kubeconfig that authenticates as a ServiceAccount, so a local process has exactly its RBAC."""
        token = self.kubectl("create", "token", service_account, "-n", namespace, "--duration=24h").stdout.strip()
        admin = yaml.safe_load(self.kubectl("config", "view", "--raw", "--minify", "--flatten").stdout)
        cluster = admin["clusters"][0]["cluster"]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": service_account, "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "c", "user": service_account}}],
            "current-context": "sa",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path


class Operator:
    """`modeldeploy run` as a real process, logging to a file."""

    def __init__(self, kubeconfig: Path, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.log = log
        self.args = args
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "modeldeploy.cli", "run", *self.args]

    def start(self) -> None:
        """Start in a session of its own: it outlives the caller unless stopped (make up relies on that)."""
        # The leader Lease in the chart's namespace, where its Role grants it (the process runs outside a pod).
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), PYTHONUNBUFFERED="1")
        env.setdefault("MODELDEPLOY_LEASE_NAMESPACE", OPERATOR_NAMESPACE)
        env.update(self.env)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        handle = self.log.open("ab")
        handle.write(f"\n===== start {self.starts + 1} =====\n".encode())
        handle.flush()
        self.process = subprocess.Popen(
            self.command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        handle.close()
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def metrics_address(self) -> str | None:
        """HOST:PORT of its /metrics, when started with --metrics-address."""
        args = list(self.args)
        for i, arg in enumerate(args):
            if arg == "--metrics-address" and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith("--metrics-address="):
                return arg.partition("=")[2]
        return None

    def kill(self) -> None:
        """SIGKILL: the operator gets no chance to clean up, as when a node dies."""
        if self.process is not None and self.alive:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.alive:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tracebacks(self) -> list[str]:
        """Unexpected exceptions in the log (a reconcile that failed for a reason nobody planned)."""
        text = self.logs()
        return [chunk[:2000] for chunk in text.split("Traceback (most recent call last)")[1:]]


def service_url(cluster: Cluster, name: str, namespace: str) -> str:
    """http://<ClusterIP>:<port> of a Service: reachable from this host through kube-proxy."""
    service = cluster.json("get", "service", name, "-n", namespace)
    return f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"


def post_json(url: str, body: object, timeout: float = 30.0, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST JSON, return (status, decoded answer); an HTTP error status is returned, not raised."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


PodCounts = dict[str, tuple[str, float]]  # pod name -> (role, requests answered)


def request_counts(cluster: Cluster, namespace: str, name: str, endpoint: str = "/classify") -> PodCounts:
    """{pod: (role, requests answered)} of a ModelDeployment's running pods, from their own BentoML
    counters (bentoml_service_request_total at each pod's /metrics, read at the pod's IP)."""
    pods = cluster.json("get", "pods", "-n", namespace, "-l", f"modeldeploy.dev/name={name}")["items"]
    counts: PodCounts = {}
    wanted = f'endpoint="{endpoint}"'
    for pod in pods:
        ip = pod["status"].get("podIP")
        if not ip or pod["metadata"].get("deletionTimestamp"):
            continue
        with urllib.request.urlopen(f"http://{ip}:3000/metrics", timeout=10) as response:
            text = response.read().decode()
        total = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("bentoml_service_request_total{") and wanted in line
        )
        counts[pod["metadata"]["name"]] = (pod["metadata"]["labels"].get("modeldeploy.dev/role", "stable"), total)
    return counts


def served_by_role(before: PodCounts, after: PodCounts) -> dict[str, float]:
    """Requests each role answered between two readings of request_counts (pods seen in both)."""
    served: dict[str, float] = {}
    for pod, (role, count) in after.items():
        if pod in before:
            served[role] = served.get(role, 0.0) + count - before[pod][1]
    return served


def wait_ready(cluster: Cluster, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    """The ModelDeployment once its Ready condition is True."""

    def check() -> dict[str, Any] | None:
        md = cluster.get("modeldeployment", name, namespace)
        return md if md and condition(md, "Ready").get("status") == "True" else None

    return wait_for(check, timeout=timeout, what=f"ModelDeployment {namespace}/{name} Ready")


def table(text: str) -> list[dict[str, str]]:
    """Rows of `kubectl get` output as {COLUMN: cell}; empty cells stay empty, cut at the header's positions."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0]
    names = header.split()
    starts = []
    position = 0
    for name in names:
        position = header.index(name, position)
        starts.append(position)
        position += len(name)
    bounds = [*starts[1:], None]
    return [{n: line[a:b].strip() for n, a, b in zip(names, starts, bounds, strict=True)} for line in lines[1:]]


def process_matches(pid: int, cmdline: list[str]) -> bool:
    """Whether pid is alive and still runs cmdline: never signal a process that merely reused the PID."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return raw.rstrip(b"\0").split(b"\0") == [part.encode() for part in cmdline]


def event_reasons(cluster: Cluster, namespace: str, name: str = "iris") -> list[str]:
    """Reasons of the events about a ModelDeployment, oldest first."""
    events = cluster.json("get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")
    ours = [e for e in events["items"] if e["involvedObject"]["kind"] == "ModelDeployment"]
    ours.sort(key=lambda e: e.get("eventTime") or e.get("firstTimestamp") or "")
    return [e["reason"] for e in ours]


def condition(md: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (md.get("status") or {}).get("conditions", []):
        if cond["type"] == type_:
            found: dict[str, Any] = cond
            return found
    return {}


def sample(name: str, namespace: str, *, kwok: bool = True, **spec: Any) -> dict[str, Any]:
    """A ModelDeployment manifest as a user writes it (image of `bentoml containerize`).

    With kwok (the default), its pods select and tolerate the kwok nodes: they are scheduled onto
    simulated nodes and never run (the image need not exist). Without, they go to the real node.
    """
    body: dict[str, Any] = {
        "apiVersion": "modeldeploy.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "bento": {"image": "registry.example.com/iris-classifier:v1"},
            "replicas": 2,
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        },
    }
    body["spec"].update(spec)
    if kwok:
        placement = body["spec"].setdefault("placement", {})
        placement["tolerations"] = [*placement.get("tolerations", []), dict(KWOK_TOLERATION)]
        placement["nodeSelector"] = {**placement.get("nodeSelector", {}), **KWOK_NODE_SELECTOR}
    return body
