#!/usr/bin/env python3
"""A real local Kubernetes control plane without Docker, for development and tests.

It runs etcd, kube-apiserver, kube-controller-manager and kube-scheduler as
plain processes on free loopback ports, plus kwok, which plays the kubelet
for a few fake nodes (some with ``nvidia.com/gpu`` capacity): pods scheduled
onto them are marked Running and Ready without any container being started.
The binaries are built from upstream Go modules by ``build.sh`` and cached by
version (see ``versions.env``).

Standard library only, so it runs before any project dependency is installed.

Command line::

    python3 hack/cluster/localcluster.py up|down|status|env [--dir .cluster]
    python3 hack/cluster/localcluster.py gateway-api-crds [--dir .cluster]
    python3 hack/cluster/localcluster.py fake-nodes | kubectl apply -f -
    python3 hack/cluster/localcluster.py build

Python::

    from localcluster import LocalCluster
    info = LocalCluster(".cluster").up()     # ClusterInfo
    subprocess.run([info.kubectl, "get", "nodes"], env=info.env())
    LocalCluster(".cluster").down()
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import fcntl
import functools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
DEFAULT_DIR = REPO_ROOT / ".cluster"
VERSIONS_FILE = HERE / "versions.env"
BUILD_SCRIPT = HERE / "build.sh"

STATE_VERSION = 1
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
# Bumped when _ensure_pki issues different files: older pki/ is recreated.
PKI_LAYOUT = "2"
# The first address of the service range is the ClusterIP of the
# `kubernetes` Service, so the serving certificate must name it.
KUBERNETES_SERVICE_IP = "10.96.0.1"
# Fake pod IPs handed out by kwok: only written into pod status, never routed.
POD_CIDR = "10.244.0.0/16"
# kwok manages only nodes carrying this annotation (what kwokctl does too),
# so a test may still add other nodes that nobody manages (NotReady).
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
# Components in start order.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# `down` stops them tier by tier: clients of the API server first, etcd last.
STOP_TIERS = (("kwok", "kube-scheduler", "kube-controller-manager"), ("kube-apiserver",), ("etcd",))
# Taints the control plane puts on nodes that are not (yet) Ready.
NOT_READY_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})
# klog error (E1124 ...) and fatal lines, cobra's "Error: ...", JSON errors of etcd and kwok.
ERROR_LINE = re.compile(r'^(?:[EF]\d{4} |Error: )|"level":"(?i:error|fatal|panic)"')


class ClusterError(RuntimeError):
    """A component could not be built, started or reached."""


# --------------------------------------------------------------------------
# Versions, cache and binaries
# --------------------------------------------------------------------------


def load_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parse versions.env (KEY=VALUE lines, `#` comments) the way bash would."""
    versions: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        versions[key.strip()] = value.strip().strip("'\"")
    return versions


def cache_dir() -> Path:
    """Root of the build cache; shared by every checkout, keyed by version."""
    configured = os.environ.get("MODELDEPLOY_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "modeldeploy"


@dataclasses.dataclass(frozen=True)
class Binaries:
    """Cached binaries of the pinned versions (the naming is build.sh's)."""

    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    etcd: Path
    kwok: Path
    helm: Path
    kwok_stages: Path

    @classmethod
    def pinned(cls, versions: Mapping[str, str] | None = None) -> Binaries:
        v = versions or load_versions()
        bin_dir = cache_dir() / "bin"
        kube = v["KUBERNETES_VERSION"]
        return cls(
            kube_apiserver=bin_dir / f"kube-apiserver-{kube}",
            kube_controller_manager=bin_dir / f"kube-controller-manager-{kube}",
            kube_scheduler=bin_dir / f"kube-scheduler-{kube}",
            kubectl=bin_dir / f"kubectl-{kube}",
            etcd=bin_dir / f"etcd-{v['ETCD_VERSION']}",
            kwok=bin_dir / f"kwok-{v['KWOK_VERSION']}",
            helm=bin_dir / f"helm-{v['HELM_VERSION']}",
            kwok_stages=cache_dir() / "kwok" / v["KWOK_VERSION"] / "stages",
        )

    def missing(self) -> list[Path]:
        missing = [
            p
            for p in (
                self.kube_apiserver,
                self.kube_controller_manager,
                self.kube_scheduler,
                self.kubectl,
                self.etcd,
                self.kwok,
                self.helm,
            )
            if not os.access(p, os.X_OK)
        ]
        if not any(self.kwok_stages.glob("*.yaml")):
            missing.append(self.kwok_stages)
        return missing


def run_build(*components: str) -> None:
    """Run build.sh (which skips what is cached), its progress on our stderr."""
    cmd = ["bash", str(BUILD_SCRIPT), *components]
    # Both streams go to fd 2: `up` keeps a clean stdout for eval, and fd 2
    # is real even when sys.stderr is a pytest capture object without fileno.
    result = subprocess.run(cmd, stdout=2, stderr=2, check=False)
    if result.returncode != 0:
        raise ClusterError(f"build failed: {shlex.join(cmd)} exited with {result.returncode}")


def ensure_binaries() -> Binaries:
    binaries = Binaries.pinned()
    if binaries.missing():
        run_build("kubernetes", "etcd", "kwok", "helm")
        still = binaries.missing()
        if still:
            raise ClusterError(f"build.sh finished but these are missing: {', '.join(map(str, still))}")
    return binaries


def gateway_api_crds_dir(build: bool = True) -> Path:
    """Directory of the Gateway API standard-channel CRD manifests (pinned version)."""
    path = cache_dir() / "gateway-api" / load_versions()["GATEWAY_API_VERSION"] / "standard"
    if build and not any(path.glob("*.yaml")):
        run_build("gateway-api")
    return path


def install_gateway_api_crds(kubeconfig: Path | str, kubectl: Path | str | None = None) -> None:
    """Apply the Gateway API standard CRDs to a cluster and wait until established."""
    kubectl_bin = str(kubectl or ensure_binaries().kubectl)
    crds = gateway_api_crds_dir()
    base = [kubectl_bin, "--kubeconfig", str(kubeconfig)]
    applied = _run([*base, "apply", "--server-side", "--force-conflicts", "-o", "name", "-f", str(crds)])
    # Wait for the CRDs only: the directory also ships a ValidatingAdmissionPolicy
    # (which has no Established condition).
    names = [n for n in applied.split() if n.startswith("customresourcedefinition")]
    if names:
        _run([*base, "wait", "--for=condition=Established", "--timeout=60s", *names])


def _run(cmd: Sequence[str]) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ClusterError(f"{shlex.join(cmd)} failed ({result.returncode}):\n{result.stderr.strip()}")
    return result.stdout


# --------------------------------------------------------------------------
# Fake nodes
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FakeNode:
    """A kwok node: capacity is what the scheduler sees, nothing runs there."""

    name: str
    cpu: str = "8"
    memory: str = "32Gi"
    pods: str = "110"
    gpus: int = 0
    gpu_product: str = "NVIDIA-A100-SXM4-40GB"
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    taints: Sequence[Mapping[str, str]] = ()

    def manifest(self) -> dict[str, Any]:
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": self.pods, "ephemeral-storage": "100Gi"}
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": f"kwok-{self.cpu}cpu-{self.gpus}gpu",
            "type": "kwok",
        }
        if self.gpus:
            capacity["nvidia.com/gpu"] = str(self.gpus)
            # The labels NVIDIA's GPU feature discovery puts on real GPU nodes.
            labels |= {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": self.gpu_product,
                "nvidia.com/gpu.count": str(self.gpus),
            }
        labels |= dict(self.labels)
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                "annotations": {KWOK_NODE_ANNOTATION[0]: KWOK_NODE_ANNOTATION[1], "node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {"taints": [dict(t) for t in self.taints]} if self.taints else {},
            # Status may be set on create; kwok's node-initialize stage keeps
            # capacity/allocatable and adds conditions (Ready=True).
            "status": {"capacity": capacity, "allocatable": dict(capacity)},
        }


DEFAULT_NODES: tuple[FakeNode, ...] = (
    FakeNode("kwok-gpu-2", cpu="32", memory="128Gi", gpus=2),
    FakeNode("kwok-gpu-1", cpu="16", memory="64Gi", gpus=1, gpu_product="NVIDIA-L4"),
    FakeNode("kwok-cpu-0", cpu="8", memory="32Gi"),
)


# --------------------------------------------------------------------------
# State and processes
# --------------------------------------------------------------------------


@dataclasses.dataclass
class ProcessRecord:
    """Enough to recognise our process later and never signal a stranger."""

    pid: int
    cmdline: list[str]
    start_ticks: int
    log: str


@dataclasses.dataclass
class ClusterInfo:
    """What a caller needs to use a running cluster."""

    dir: Path
    kubeconfig: Path
    bin_dir: Path
    kubectl: Path
    helm: Path
    server: str
    ports: dict[str, int]
    pids: dict[str, int]
    versions: dict[str, str]

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """An environment for subprocesses: KUBECONFIG set, bin dir first on PATH."""
        env = dict(os.environ if base is None else base)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env


def _proc_start_ticks(pid: int) -> int | None:
    """Start time of a live (non-zombie) process, in clock ticks since boot."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces: split after its ")".
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # exited, not yet reaped
        return None
    return int(fields[19])


def _proc_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1] if raw else None


def _is_ours(record: ProcessRecord) -> bool:
    """The PID still is the process we started: same command line and start time."""
    return _proc_cmdline(record.pid) == record.cmdline and _proc_start_ticks(record.pid) == record.start_ticks


def _reap(pid: int, timeout: float = 0.0) -> None:
    """Collect the exit status of a process if it is our child.

    Only the parent can: a component started by this Python process (pytest)
    would otherwise stay a zombie until it exits. Components started by an
    earlier CLI run are init's children: init reaps them, where it reaps
    orphans at all (some sandbox inits do not; their zombies hold no memory
    or ports).
    """
    end = time.monotonic() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child, or already reaped
            return
        if done or time.monotonic() >= end:
            return
        time.sleep(0.01)


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (sockets held open until all are chosen)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# --------------------------------------------------------------------------
# PKI (openssl CLI)
# --------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ClusterError(f"openssl {' '.join(args)} failed:\n{result.stderr.strip()}")


def _issue_cert(pki: Path, name: str, subject: str, extensions: Sequence[str], ca: str | None = "ca") -> None:
    """Create <name>.key (EC P-256, fast to generate) and <name>.crt signed by <ca>."""
    key, crt, csr, cfg = (pki / f"{name}.{ext}" for ext in ("key", "crt", "csr", "cnf"))
    cfg.write_text("[ext]\n" + "\n".join(extensions) + "\n")
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
    signer = (
        ["-CA", str(pki / f"{ca}.crt"), "-CAkey", str(pki / f"{ca}.key"), "-CAcreateserial"]
        if ca
        else ["-signkey", str(key)]
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        *signer,
        "-days",
        "3650",
        "-sha256",
        "-extfile",
        str(cfg),
        "-extensions",
        "ext",
        "-out",
        str(crt),
    )
    csr.unlink()
    cfg.unlink()
    key.chmod(0o600)


def _ensure_pki(pki: Path) -> None:
    """CA, apiserver serving cert, client certs and service-account keys.

    Kept across down/up: nothing in them depends on the (changing) ports, and
    generating them takes a noticeable part of a warm start.
    """
    if (pki / "complete").exists() and (pki / "complete").read_text() == PKI_LAYOUT:
        return
    shutil.rmtree(pki, ignore_errors=True)
    pki.mkdir(parents=True)
    _issue_cert(
        pki,
        "ca",
        "/CN=modeldeploy-local-ca",
        [
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            "subjectKeyIdentifier=hash",
        ],
        ca=None,
    )
    client = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature", "extendedKeyUsage=clientAuth"]
    sans = [
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
        "IP:127.0.0.1",
        f"IP:{KUBERNETES_SERVICE_IP}",
    ]
    _issue_cert(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=serverAuth",
            "subjectAltName=" + ",".join(sans),
        ],
    )
    # system:masters is bound to cluster-admin by the bootstrap RBAC policy.
    _issue_cert(pki, "admin", "/O=system:masters/CN=kubernetes-admin", client)
    # The control-plane components use the identities the bootstrap RBAC
    # roles are written for, as on a kubeadm cluster.
    _issue_cert(pki, "controller-manager", "/CN=system:kube-controller-manager", client)
    _issue_cert(pki, "scheduler", "/CN=system:kube-scheduler", client)
    # Aggregation layer (front proxy): a separate CA, as kubeadm does, and the
    # client the API server presents to aggregated API servers. Also silences
    # the "missing requestheader-client-ca-file" errors of kcm and scheduler.
    _issue_cert(
        pki,
        "front-proxy-ca",
        "/CN=modeldeploy-local-front-proxy-ca",
        ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"],
        ca=None,
    )
    _issue_cert(pki, "front-proxy-client", "/CN=front-proxy-client", client, ca="front-proxy-ca")
    # Service-account tokens are signed with RSA, like kubeadm does.
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(pki / "sa.key"))
    _openssl("pkey", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    (pki / "sa.key").chmod(0o600)
    (pki / "complete").write_text(PKI_LAYOUT)


def _kubeconfig(server: str, pki: Path, user: str, cert: str, embed: bool) -> str:
    def field(kind: str, path: Path) -> str:
        if embed:
            return f"{kind}-data: {base64.b64encode(path.read_bytes()).decode()}"
        return f"{kind}: {path}"

    return f"""apiVersion: v1
kind: Config
clusters:
- name: modeldeploy-local
  cluster:
    server: {server}
    {field("certificate-authority", pki / "ca.crt")}
users:
- name: {user}
  user:
    {field("client-certificate", pki / f"{cert}.crt")}
    {field("client-key", pki / f"{cert}.key")}
contexts:
- name: modeldeploy-local
  context:
    cluster: modeldeploy-local
    user: {user}
current-context: modeldeploy-local
"""


# --------------------------------------------------------------------------
# A minimal API client (urllib + the admin client certificate)
# --------------------------------------------------------------------------


class _Api:
    def __init__(self, server: str, pki: Path) -> None:
        self.server = server
        self.ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    def request(self, method: str, path: str, body: object = None, timeout: float = 5.0) -> Any:
        """Send JSON, return the decoded JSON answer (of any shape, hence Any)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as resp:
            raw = resp.read()
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode()

    def ok(self, path: str) -> bool:
        try:
            self.request("GET", path, timeout=2.0)
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return True


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    """GET a loopback health URL.

    The self-signed serving certificates of kube-controller-manager and
    kube-scheduler are not verified: only a 200 from our own port matters.
    """
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as resp:
            return bool(resp.status == HTTPStatus.OK)
    except (OSError, urllib.error.URLError, ValueError):
        return False


# --------------------------------------------------------------------------
# The cluster
# --------------------------------------------------------------------------


class LocalCluster:
    """A local control plane + kwok nodes whose files live in one directory.

    Layout of ``dir``: ``kubeconfig`` (admin), ``bin/`` (kubectl, helm),
    ``logs/<component>.log``, ``pki/``, ``etcd/`` (data), ``state.json``
    (PIDs, ports, command lines).
    """

    def __init__(
        self,
        directory: Path | str = DEFAULT_DIR,
        *,
        nodes: Sequence[FakeNode] = DEFAULT_NODES,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.dir = Path(directory).resolve()
        self.nodes = tuple(nodes)
        self._log = log or (lambda msg: print(f"[localcluster] {msg}", file=sys.stderr, flush=True))
        self.pki = self.dir / "pki"
        self.logs = self.dir / "logs"
        self.bin_dir = self.dir / "bin"
        self.kubeconfig = self.dir / "kubeconfig"
        self.state_file = self.dir / "state.json"
        self.etcd_data = self.dir / "etcd"

    # ---- public API -----------------------------------------------------

    def up(self, timeout: float = 180.0) -> ClusterInfo:
        """Start the cluster, or return at once if it is already up and healthy.

        Builds missing binaries first (cold: many minutes). ``timeout`` bounds
        the start of the processes, not the build.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            info = self._healthy_info()
            if info is not None:
                self._log(f"already up: {info.server}")
                return info
            if self.state_file.exists():
                self._log("stale state (a process died or is unhealthy): cleaning up")
                self._stop_recorded()
            binaries = ensure_binaries()
            started = time.monotonic()
            info = self._start(binaries, deadline=started + timeout)
            elapsed = time.monotonic() - started
            self._log(f"up in {elapsed:.1f}s: {info.server}, KUBECONFIG={info.kubeconfig}")
            return info

    def down(self) -> None:
        """Stop the processes this cluster started (nothing else); drop etcd data."""
        if not self.dir.exists():
            return
        with self._lock():
            self._stop_recorded()

    def is_up(self) -> bool:
        return self._healthy_info() is not None

    def info(self) -> ClusterInfo | None:
        """The recorded cluster, whether or not it is healthy."""
        state = self._read_state()
        return self._info_from_state(state) if state else None

    def status(self) -> dict[str, Any]:
        """Per-component liveness and health, for humans and `status`."""
        state = self._read_state()
        if state is None:
            return {"dir": str(self.dir), "up": False, "components": {}}
        components: dict[str, Any] = {}
        for name in COMPONENTS:
            rec = self._record(state, name)
            alive = rec is not None and _is_ours(rec)
            components[name] = {
                "pid": rec.pid if rec else None,
                "running": alive,
                "healthy": alive and self._component_healthy(name, state),
                "log": rec.log if rec else None,
            }
        up = all(c["healthy"] for c in components.values())
        return {
            "dir": str(self.dir),
            "up": up,
            "server": state["server"],
            "ports": state["ports"],
            "components": components,
        }

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this cluster."""
        cmd = [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(cmd, input=input, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            err = result.stderr.strip()
            raise ClusterError(f"{shlex.join(cmd)} failed ({result.returncode}):\n{err}")
        return result

    def install_gateway_api_crds(self) -> None:
        install_gateway_api_crds(self.kubeconfig, self.bin_dir / "kubectl")

    def wait_for_default_service_account(self, namespace: str, timeout: float = 30.0) -> None:
        """Pods are rejected until a new namespace's `default` ServiceAccount exists."""
        state = self._read_state()
        if state is None:
            raise ClusterError("cluster is not up")
        api = _Api(state["server"], self.pki)
        self._wait(
            f"ServiceAccount {namespace}/default",
            lambda: api.ok(f"/api/v1/namespaces/{namespace}/serviceaccounts/default"),
            time.monotonic() + timeout,
        )

    # ---- start ----------------------------------------------------------

    def _start(self, binaries: Binaries, deadline: float) -> ClusterInfo:
        versions = load_versions()
        for d in (self.logs, self.bin_dir):
            d.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.etcd_data, ignore_errors=True)
        _ensure_pki(self.pki)
        names = ("etcd", "etcd-peer", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
        ports = dict(zip(names, _free_ports(len(names)), strict=True))
        server = f"https://127.0.0.1:{ports['kube-apiserver']}"
        self._write_kubeconfigs(server)
        self._link_tools(binaries)
        self._write_kwok_config(binaries)

        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "server": server,
            "ports": ports,
            "versions": versions,
            "processes": {},
            "started_at": time.time(),
        }
        health = self._health_urls(ports)
        api = _Api(server, self.pki)
        try:
            self._spawn(state, "etcd", self._etcd_args(binaries, ports))
            self._wait_component(state, "etcd", lambda: _http_ok(health["etcd"]), deadline)
            self._spawn(state, "kube-apiserver", self._apiserver_args(binaries, ports))
            self._wait_component(state, "kube-apiserver", lambda: api.ok("/readyz"), deadline)
            # These three only need the API server: start them together.
            self._spawn(state, "kube-controller-manager", self._controller_manager_args(binaries, ports))
            self._spawn(state, "kube-scheduler", self._scheduler_args(binaries, ports))
            self._spawn(state, "kwok", self._kwok_args(binaries, ports), env={"HOME": str(self.dir / "kwok")})
            for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
                url = health[name]
                self._wait_component(state, name, functools.partial(_http_ok, url), deadline)
            for node in self.nodes:
                api.request("POST", "/api/v1/nodes", node.manifest())
            self._wait_component(
                state, "kwok", lambda: self._nodes_ready(api), deadline, what="fake nodes Ready and untainted"
            )
            self._wait_component(
                state,
                "kube-controller-manager",
                lambda: api.ok("/api/v1/namespaces/default/serviceaccounts/default"),
                deadline,
                what="ServiceAccount default/default",
            )
        except BaseException:
            # Whatever failed (or Ctrl-C): leave nothing running behind.
            self._stop_processes(state)
            self.state_file.unlink(missing_ok=True)
            raise
        self._write_state(state)
        return self._info_from_state(state)

    def _etcd_args(self, b: Binaries, ports: Mapping[str, int]) -> list[str]:
        client = f"http://127.0.0.1:{ports['etcd']}"
        peer = f"http://127.0.0.1:{ports['etcd-peer']}"
        return [
            str(b.etcd),
            "--name=local",
            f"--data-dir={self.etcd_data}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=local={peer}",
            # A throwaway dev/test store: skip fsync, it dominates write latency.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _apiserver_args(self, b: Binaries, ports: Mapping[str, int]) -> list[str]:
        pki = self.pki
        return [
            str(b.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-apiserver']}",
            # Without it the API server advertises the host's first non-loopback
            # address. With a loopback one it refuses to start unless the
            # endpoint reconciler is off ("may not be in the loopback range"):
            # the `kubernetes` Service then has no endpoints, which nothing in
            # this cluster (no real pods) could use anyway.
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            # On top of the default plugins (which include PodSecurity,
            # ServiceAccount, ResourceQuota, LimitRanger, ...), as kubeadm does.
            "--enable-admission-plugins=NodeRestriction",
            # Privileged pods are allowed by default so that PodSecurity
            # labels are what restricts them, like on a real cluster.
            "--allow-privileged=true",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            "--profiling=false",
        ]

    def _controller_manager_args(self, b: Binaries, ports: Mapping[str, int]) -> list[str]:
        kubeconfig = self.dir / "controller-manager.kubeconfig"
        return [
            str(b.kube_controller_manager),
            f"--kubeconfig={kubeconfig}",
            # Delegated authn/authz for its own /metrics (/healthz is always open).
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-controller-manager']}",
            # All default controllers: deployment, replicaset, garbage-collector,
            # horizontal-pod-autoscaling, namespace, serviceaccount(-token), ...
            "--controllers=*",
            # Each controller acts with its own service account, as on a real cluster.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={self.pki / 'sa.key'}",
            f"--root-ca-file={self.pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={self.pki / 'ca.crt'}",
            f"--cluster-signing-key-file={self.pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--cluster-name=modeldeploy-local",
            # Single instance: skip leader election and its start-up wait.
            "--leader-elect=false",
            # The default client rate limit (20 QPS) makes its start-up, which
            # creates a service account and token per controller, take seconds.
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--profiling=false",
        ]

    def _scheduler_args(self, b: Binaries, ports: Mapping[str, int]) -> list[str]:
        kubeconfig = self.dir / "scheduler.kubeconfig"
        return [
            str(b.kube_scheduler),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-scheduler']}",
            "--leader-elect=false",
            "--profiling=false",
        ]

    def _kwok_args(self, b: Binaries, ports: Mapping[str, int]) -> list[str]:
        key, value = KWOK_NODE_ANNOTATION
        return [
            str(b.kwok),
            f"--kubeconfig={self.kubeconfig}",
            f"--config={self.dir / 'kwok' / 'kwok.yaml'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={key}={value}",
            # Node addresses point at loopback so that nothing ever tries to
            # reach a made-up address; kwok serves its (health) endpoint here.
            "--node-ip=127.0.0.1",
            f"--node-port={ports['kwok']}",
            f"--server-address=127.0.0.1:{ports['kwok']}",
            f"--cidr={POD_CIDR}",
            # Node heartbeats via Lease objects, as kubelets do (kwokctl's default).
            "--node-lease-duration-seconds=40",
            # At INFO it logs every lease renewal (3 lines per node per 10 s).
            "--v=WARN",
        ]

    @staticmethod
    def _health_urls(ports: Mapping[str, int]) -> dict[str, str]:
        return {
            "etcd": f"http://127.0.0.1:{ports['etcd']}/health",
            "kube-apiserver": f"https://127.0.0.1:{ports['kube-apiserver']}/readyz",
            "kube-controller-manager": f"https://127.0.0.1:{ports['kube-controller-manager']}/healthz",
            "kube-scheduler": f"https://127.0.0.1:{ports['kube-scheduler']}/healthz",
            "kwok": f"http://127.0.0.1:{ports['kwok']}/healthz",
        }

    def _write_kubeconfigs(self, server: str) -> None:
        # The admin kubeconfig embeds its certificates: it stays valid when copied.
        self.kubeconfig.write_text(_kubeconfig(server, self.pki, "admin", "admin", embed=True))
        self.kubeconfig.chmod(0o600)
        for path in self._component_kubeconfigs():
            name = path.stem  # the certificate's name in pki/
            path.write_text(_kubeconfig(server, self.pki, f"system:kube-{name}", name, embed=False))
            path.chmod(0o600)

    def _component_kubeconfigs(self) -> tuple[Path, Path]:
        return self.dir / "controller-manager.kubeconfig", self.dir / "scheduler.kubeconfig"

    def _link_tools(self, b: Binaries) -> None:
        for name, target in (("kubectl", b.kubectl), ("helm", b.helm)):
            link = self.bin_dir / name
            link.unlink(missing_ok=True)
            link.symlink_to(target)

    def _write_kwok_config(self, b: Binaries) -> None:
        """kwok's --config: the stages build.sh copied out of the kwok module.

        The kwok binary has no built-in stages (only kwokctl embeds them), so
        without these it would neither mark nodes Ready nor pods Running.
        """
        home = self.dir / "kwok"
        home.mkdir(parents=True, exist_ok=True)
        docs = [p.read_text().strip() for p in sorted(b.kwok_stages.glob("*.yaml"))]
        (home / "kwok.yaml").write_text("\n---\n".join(docs) + "\n")

    def _spawn(self, state: dict[str, Any], name: str, args: list[str], env: Mapping[str, str] | None = None) -> None:
        """Start a component, its output in logs/<name>.log, in its own session.

        posix_spawn rather than Popen: the component outlives a CLI `up` on
        purpose, and a Popen object would report it as leaked ("subprocess
        still running" ResourceWarning) when a test session ends. When `down`
        runs in the process that started it (pytest), it reaps it (_reap);
        otherwise init does. The new session keeps a Ctrl-C or hang-up of the
        caller's terminal away from it.
        """
        log_path = self.logs / f"{name}.log"
        pid = os.posix_spawn(
            args[0],
            args,
            {**os.environ, **(env or {})},
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsid=True,
            # Python ignores SIGPIPE, and ignored signals stay ignored across
            # exec: restore the defaults (as Popen's restore_signals does).
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
            setsigmask=(),
        )
        # posix_spawn returns once the child is past the point of no return of
        # execve, but for a 100 MB binary the kernel may still be loading it,
        # with /proc/PID/cmdline empty. Wait for the final argv so that the
        # identity check (_is_ours) sees the process as it will stay.
        settle = time.monotonic() + 10.0
        while _proc_cmdline(pid) != args and _proc_start_ticks(pid) is not None and time.monotonic() < settle:
            time.sleep(0.005)
        ticks = _proc_start_ticks(pid) or 0
        state["processes"][name] = dataclasses.asdict(ProcessRecord(pid, list(args), ticks, str(log_path)))
        # Written after each spawn so that an interrupted `up` can be cleaned up.
        self._write_state(state)
        self._log(f"started {name} (pid {pid}), log: {log_path}")

    def _wait_component(
        self, state: dict[str, Any], name: str, check: Callable[[], bool], deadline: float, what: str | None = None
    ) -> None:
        rec = self._record(state, name)
        if rec is None:
            raise ClusterError(f"{name} was never started")

        def ready() -> bool:
            if not _is_ours(rec):
                raise ClusterError(self._failure(name, rec, "exited during start-up"))
            return check()

        try:
            self._wait(what or name, ready, deadline)
        except TimeoutError:
            raise ClusterError(self._failure(name, rec, f"not ready in time ({what or 'health check'})")) from None

    def _wait(self, what: str, check: Callable[[], bool], deadline: float) -> None:
        started = time.monotonic()
        delay = 0.05
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(what)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        self._log(f"{what}: ready ({time.monotonic() - started:.1f}s)")

    def _failure(self, name: str, rec: ProcessRecord, why: str, tail_lines: int = 20) -> str:
        """The error message for a component: why, its error lines and its log's tail."""
        try:
            lines = Path(rec.log).read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        # Errors are often far from the end (a bad flag is followed by the
        # whole usage text), so quote klog error/fatal lines and cobra's
        # "Error:" separately from the tail.
        errors = [line for line in lines if ERROR_LINE.search(line)][-10:]
        tail = lines[-tail_lines:]
        parts = [f"{name} {why} (pid {rec.pid}, log {rec.log})"]
        if errors:
            parts += ["--- error lines ---", *errors]
        parts += [f"--- last {len(tail)} lines ---", *tail] if tail else ["(empty log)"]
        return "\n".join(parts)

    def _nodes_ready(self, api: _Api) -> bool:
        """Every node of self.nodes is Ready (set by kwok) and schedulable.

        A new Node gets a `node.kubernetes.io/not-ready:NoSchedule` taint on
        creation (TaintNodesByCondition) that the node lifecycle controller
        removes a moment after Ready: until then pods would stay Pending.
        """
        try:
            items = api.request("GET", "/api/v1/nodes")["items"]
        except (OSError, urllib.error.URLError, ValueError, KeyError):
            return False
        ready = {
            n["metadata"]["name"]
            for n in items
            if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
            and not any(t["key"] in NOT_READY_TAINTS for t in n.get("spec", {}).get("taints", []))
        }
        return all(node.name in ready for node in self.nodes)

    # ---- stop -------------------------------------------------------------

    def _stop_recorded(self) -> None:
        state = self._read_state()
        if state is not None:
            self._stop_processes(state)
        self.state_file.unlink(missing_ok=True)
        for path in (self.kubeconfig, *self._component_kubeconfigs()):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.etcd_data, ignore_errors=True)

    def _stop_processes(self, state: Mapping[str, Any], grace: float = 15.0) -> None:
        """Stop our recorded processes, dependents first; SIGKILL after `grace`.

        Tiers, because the API server's graceful shutdown stalls while etcd
        is gone, and clients of the API server log errors while it goes away.
        """
        for tier in STOP_TIERS:
            records = [r for n in tier if (r := self._record(state, n)) is not None]
            ours = [r for r in records if _is_ours(r)]
            for rec in ours:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rec.pid, signal.SIGTERM)
            end = time.monotonic() + grace
            for rec in ours:
                # A process that is exiting has an empty /proc/PID/cmdline, so
                # it stops being "ours" a moment before it is gone.
                while _is_ours(rec) and time.monotonic() < end:
                    time.sleep(0.02)
                if _is_ours(rec):
                    self._log(f"pid {rec.pid} ignored SIGTERM for {grace:.0f}s: SIGKILL")
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(rec.pid, signal.SIGKILL)
                _reap(rec.pid, timeout=5.0)
            for rec in records:
                _reap(rec.pid)  # also those that died on their own
                done = "stopped" if rec in ours else "was not running:"
                self._log(f"{done} {Path(rec.cmdline[0]).name} (pid {rec.pid})")

    # ---- state ------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise up/down of one directory across processes (pytest-xdist...)."""
        with (self.dir / ".lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read_state(self) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        return state if state.get("version") == STATE_VERSION else None

    def _write_state(self, state: Mapping[str, Any]) -> None:
        # Atomic replace: a reader never sees a half-written file.
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".state.")
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=2)
        Path(tmp).replace(self.state_file)

    @staticmethod
    def _record(state: Mapping[str, Any], name: str) -> ProcessRecord | None:
        raw = state.get("processes", {}).get(name)
        return ProcessRecord(**raw) if raw else None

    def _component_healthy(self, name: str, state: Mapping[str, Any]) -> bool:
        if name == "kube-apiserver":
            # Verified TLS with the admin certificate: this is what clients see.
            return _Api(state["server"], self.pki).ok("/readyz")
        return _http_ok(self._health_urls(state["ports"])[name])

    def _healthy_info(self) -> ClusterInfo | None:
        """Info of a running cluster whose processes are ours and healthy, else None."""
        state = self._read_state()
        if state is None or not self.kubeconfig.exists():
            return None
        for name in COMPONENTS:
            rec = self._record(state, name)
            if rec is None or not _is_ours(rec):
                return None
        if not _Api(state["server"], self.pki).ok("/readyz"):
            return None
        return self._info_from_state(state)

    def _info_from_state(self, state: Mapping[str, Any]) -> ClusterInfo:
        return ClusterInfo(
            dir=self.dir,
            kubeconfig=self.kubeconfig,
            bin_dir=self.bin_dir,
            kubectl=self.bin_dir / "kubectl",
            helm=self.bin_dir / "helm",
            server=state["server"],
            ports=dict(state["ports"]),
            pids={n: p["pid"] for n, p in state["processes"].items()},
            versions=dict(state["versions"]),
        )


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def _env_line(info_or_cluster: ClusterInfo | LocalCluster) -> str:
    kubeconfig = shlex.quote(str(info_or_cluster.kubeconfig))
    bin_dir = shlex.quote(str(info_or_cluster.bin_dir))
    return f"export KUBECONFIG={kubeconfig} PATH={bin_dir}:$PATH"


def _cmd_up(cluster: LocalCluster, args: argparse.Namespace) -> int:
    info = cluster.up(timeout=args.timeout)
    if args.gateway_api:
        cluster.install_gateway_api_crds()
    # stdout carries only this line: `eval "$(localcluster.py up)"` works.
    print(_env_line(info))
    return 0


def _cmd_status(cluster: LocalCluster, args: argparse.Namespace) -> int:
    report = cluster.status()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if report["up"] else 1
    print(f"cluster {report['dir']}: {'up' if report['up'] else 'down'}")
    if report["components"]:
        print(f"  server {report['server']}")
    for name, c in report["components"].items():
        if c["healthy"]:
            health = "healthy"
        else:
            health = "running, unhealthy" if c["running"] else "not running"
        print(f"  {name:<24} pid {c['pid']!s:<8} {health}")
    return 0 if report["up"] else 1


def _cmd_down(cluster: LocalCluster, _: argparse.Namespace) -> int:
    cluster.down()
    return 0


def _cmd_env(cluster: LocalCluster, _: argparse.Namespace) -> int:
    print(_env_line(cluster))
    return 0


def _cmd_crds(cluster: LocalCluster, _: argparse.Namespace) -> int:
    cluster.install_gateway_api_crds()
    return 0


def _cmd_fake_nodes(cluster: LocalCluster, _: argparse.Namespace) -> int:
    # A v1 List that `kubectl apply -f -` accepts: the same fake nodes for
    # another cluster, where a kwok started by hand manages them.
    print(json.dumps({"apiVersion": "v1", "kind": "List", "items": [n.manifest() for n in cluster.nodes]}, indent=2))
    return 0


_COMMANDS: dict[str, Callable[[LocalCluster, argparse.Namespace], int]] = {
    "up": _cmd_up,
    "down": _cmd_down,
    "status": _cmd_status,
    "env": _cmd_env,
    "gateway-api-crds": _cmd_crds,
    "fake-nodes": _cmd_fake_nodes,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="cluster directory (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", parents=[common], help="build if needed, start, wait until ready")
    up.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        help="seconds to wait for the processes to be ready (the build is not bounded)",
    )
    up.add_argument("--gateway-api", action="store_true", help="also install the Gateway API standard CRDs")
    sub.add_parser("down", parents=[common], help="stop what `up` started, remove etcd data")
    status = sub.add_parser("status", parents=[common], help="report; exit 0 only when up and healthy")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("env", parents=[common], help="print `export KUBECONFIG=... PATH=...` for eval")
    sub.add_parser(
        "gateway-api-crds", parents=[common], help="install the Gateway API standard CRDs into the running cluster"
    )
    sub.add_parser("fake-nodes", parents=[common], help="print the kwok Node manifests (for another cluster)")
    sub.add_parser("build", help="build and cache every binary (runs build.sh)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "build":
            run_build()
            return 0
        return _COMMANDS[args.command](LocalCluster(args.dir), args)
    except ClusterError as err:
        print(f"localcluster: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `... | head` closed our stdout: not an error; keep Python's exit
        # flush from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
