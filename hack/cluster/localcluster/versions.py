"""Pinned versions (versions.env), the build cache, and the cached binaries build.sh makes."""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path

from localcluster.process import ClusterError, run

HERE = Path(__file__).resolve().parent.parent  # hack/cluster
REPO_ROOT = HERE.parent.parent
VERSIONS_FILE = HERE / "versions.env"
BUILD_SCRIPT = HERE / "build.sh"


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


# build.sh component -> the binaries it installs, and the versions.env key of their version.
COMPONENT_BINARIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "kubernetes": (
        "KUBERNETES_VERSION",
        ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet", "kube-proxy"),
    ),
    "etcd": ("ETCD_VERSION", ("etcd",)),
    "kwok": ("KWOK_VERSION", ("kwok",)),
    "helm": ("HELM_VERSION", ("helm",)),
    "containerd": ("CONTAINERD_VERSION", ("containerd", "containerd-shim-runc-v2", "ctr")),
    "runc": ("RUNC_VERSION", ("runc",)),
    "crictl": ("CRI_TOOLS_VERSION", ("crictl",)),
    "registry": ("DISTRIBUTION_VERSION", ("registry",)),
    "coredns": ("COREDNS_VERSION", ("coredns",)),
    "minio": ("MINIO_VERSION", ("minio",)),
    "prometheus": ("PROMETHEUS_VERSION", ("prometheus",)),
    "traefik": ("TRAEFIK_VERSION", ("traefik",)),
    "keda": ("KEDA_VERSION", ("keda-operator", "keda-adapter")),
    "metrics-server": ("METRICS_SERVER_VERSION", ("metrics-server",)),
    "kube-score": ("KUBE_SCORE_VERSION", ("kube-score",)),
}
CONTROL_PLANE_COMPONENTS = ("kubernetes", "etcd", "kwok", "helm")
NODE_COMPONENTS = ("containerd", "runc", "crictl", "registry", "coredns")


@dataclasses.dataclass(frozen=True)
class Binaries:
    """Cached binaries of the pinned versions (the naming is build.sh's: <name>-<version>)."""

    paths: Mapping[str, Path]
    kwok_stages: Path

    @classmethod
    def pinned(cls, versions: Mapping[str, str] | None = None) -> Binaries:
        v = versions or load_versions()
        bin_dir = cache_dir() / "bin"
        # Versions recorded by an older run may lack the keys of components added since.
        known = [(key, names) for key, names in COMPONENT_BINARIES.values() if key in v]
        paths = {name: bin_dir / f"{name}-{v[key]}" for key, names in known for name in names}
        return cls(paths=paths, kwok_stages=cache_dir() / "kwok" / v["KWOK_VERSION"] / "stages")

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]

    def missing(self, components: tuple[str, ...]) -> list[Path]:
        names = [n for c in components for n in COMPONENT_BINARIES[c][1]]
        missing = [self.paths[n] for n in names if not os.access(self.paths[n], os.X_OK)]
        if "kwok" in components and not any(self.kwok_stages.glob("*.yaml")):
            missing.append(self.kwok_stages)
        return missing


def run_build(*components: str) -> None:
    """Run build.sh (which skips what is cached), its progress on our stderr."""
    cmd = ["bash", str(BUILD_SCRIPT), *components]
    # Both streams go to fd 2: `up` keeps a clean stdout for eval, and fd 2 is real even when
    # sys.stderr is a pytest capture object without fileno.
    result = subprocess.run(cmd, stdout=2, stderr=2, check=False)
    if result.returncode != 0:
        raise ClusterError(f"build failed: {shlex.join(cmd)} exited with {result.returncode}")


def ensure_binaries(components: tuple[str, ...] = CONTROL_PLANE_COMPONENTS) -> Binaries:
    binaries = Binaries.pinned()
    if binaries.missing(components):
        run_build(*components)
        still = binaries.missing(components)
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
    kubectl_bin = str(kubectl or ensure_binaries()["kubectl"])
    crds = gateway_api_crds_dir()
    base = [kubectl_bin, "--kubeconfig", str(kubeconfig)]
    applied = run([*base, "apply", "--server-side", "--force-conflicts", "-o", "name", "-f", str(crds)])
    # Wait for the CRDs only: the directory also ships a ValidatingAdmissionPolicy (which has no
    # Established condition).
    names = [n for n in applied.split() if n.startswith("customresourcedefinition")]
    if names:
        run([*base, "wait", "--for=condition=Established", "--timeout=60s", *names])


def prometheus_operator_crds_dir() -> Path:
    """Directory of the Prometheus Operator's PodMonitor and ServiceMonitor CRDs (pinned version)."""
    path = cache_dir() / "prometheus-operator" / load_versions()["PROMETHEUS_OPERATOR_VERSION"] / "crds"
    if not any(path.glob("*.yaml")):
        run_build("prometheus-operator-crds")
    return path


def install_prometheus_operator_crds(kubeconfig: Path | str, kubectl: Path | str | None = None) -> None:
    """Apply the PodMonitor and ServiceMonitor CRDs to a cluster and wait until established (no Prometheus
    Operator runs: what a cluster with it serves, for the objects the operator and the chart render)."""
    kubectl_bin = str(kubectl or ensure_binaries()["kubectl"])
    base = [kubectl_bin, "--kubeconfig", str(kubeconfig)]
    crds = prometheus_operator_crds_dir()
    applied = run([*base, "apply", "--server-side", "--force-conflicts", "-o", "name", "-f", str(crds)])
    run([*base, "wait", "--for=condition=Established", "--timeout=60s", *applied.split()])


def kstatus_binary() -> Path:
    """hack/kstatus built (cached under a digest of its sources): how kstatus reads an object."""
    run_build("kstatus")
    listed = run(["bash", str(BUILD_SCRIPT), "--list"]).split()
    return Path(next(p for p in listed if Path(p).name.startswith("kstatus-")))
