"""Fixtures of the cluster and e2e tiers: a real API server from a provider, the chart installed,
the operator as a real process, the e2e tier's model images. Registered as a plugin in tests/conftest.py,
so both tiers share them.

On the local provider the e2e tier's images are built from the example bentos (python-base,
`bentos/build.py`, `modeldeploy image`) into the local cluster's registry; each is built once and
then found there. Elsewhere (kind, an existing cluster) give them as MODELDEPLOY_E2E_IMAGE (the iris
bento) and MODELDEPLOY_E2E_IMAGE_V2 (the iris-onnx bento), pushed where the nodes can pull them.

Providers (MODELDEPLOY_CLUSTER):
  local     (default) the control plane built from upstream sources by hack/cluster/, kwok nodes
            and a real node (MODELDEPLOY_REAL_NODE=0: kwok nodes only; the e2e tier then fails)
  kind      a kind cluster through pytest-kind (needs Docker; skipped with the reason where there is none)
  existing  whatever KUBECONFIG points at
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from localcluster import LocalCluster, bentoimages
from localcluster.kit import (
    CHART,
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
    RELEASE,
    ROOT,
    Cluster,
    Operator,
    wait_for,
)
from localcluster.realstack import free_port

# Not .cluster/: `make up` runs an operator there, and two operators must never share objects.
TEST_CLUSTER_DIR = Path(os.environ.get("MODELDEPLOY_TEST_CLUSTER_DIR") or ROOT / ".cluster-test")


def _docker_available() -> str | None:
    """None if a Docker engine answers, else why not."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker command"
    result = subprocess.run([docker, "info"], capture_output=True, text=True, check=False, timeout=30)
    if result.returncode != 0:
        last = result.stderr.strip().splitlines()[-1:] or [f"exit code {result.returncode}"]
        return f"`docker info` failed: {last[0]}"
    return None


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    provider = os.environ.get("MODELDEPLOY_CLUSTER", "local")
    if provider == "local":
        local = LocalCluster(TEST_CLUSTER_DIR, real_node=os.environ.get("MODELDEPLOY_REAL_NODE") != "0")
        started_here = not local.is_up()
        info = local.up()
        yield Cluster("local", info.kubeconfig, info.kubectl, info.helm)
        # Left running when it already was (a previous run with MODELDEPLOY_KEEP_CLUSTER=1).
        if started_here and os.environ.get("MODELDEPLOY_KEEP_CLUSTER") != "1":
            local.down()
    elif provider == "kind":
        why = _docker_available()
        if why is not None:
            pytest.skip(f"kind provider needs a Docker engine: {why}")
        kind_cluster = request.getfixturevalue("kind_cluster")
        helm = shutil.which("helm")
        if helm is None:
            pytest.skip("kind provider needs helm on PATH (make cluster-build puts one in ~/.cache/modeldeploy/bin)")
        yield Cluster("kind", Path(kind_cluster.kubeconfig_path), Path(kind_cluster.kubectl_path), Path(helm))
    elif provider == "existing":
        kubeconfig = os.environ.get("KUBECONFIG")
        kubectl = shutil.which("kubectl")
        helm = shutil.which("helm")
        if not kubeconfig or not kubectl or not helm:
            pytest.skip("existing provider needs KUBECONFIG, kubectl and helm on PATH")
        yield Cluster("existing", Path(kubeconfig), Path(kubectl), Path(helm))
    else:
        raise pytest.UsageError(f"MODELDEPLOY_CLUSTER={provider!r}: use local, kind or existing")


@pytest.fixture(scope="session")
def chart(cluster: Cluster) -> Cluster:
    """helm install of the chart: the CRD, RBAC, the ServiceAccount and the operator Deployment."""
    cluster.helm(
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--create-namespace",
        # The operator under test is the process of the `operator` fixture; the chart's own
        # Deployment is scaled up only by the e2e test of the chart's pod.
        "--set",
        "replicas=0",
        "--wait",
        "--timeout",
        "120s",
    )
    # helm installs crds/ only on the first install, never on an upgrade: a cluster kept between runs would
    # go on serving the CRD of the first run (and refuse every field added since). Applied as `make crds` wrote it.
    for crd in sorted((CHART / "crds").glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    # Established is not enough for clients: wait until the resource is served through discovery.
    wait_for(
        lambda: cluster.kubectl("get", "modeldeployments", "-A", check=False).returncode == 0,
        timeout=60,
        what="the ModelDeployment resource to be served",
    )
    return cluster


@pytest.fixture(scope="session")
def operator(chart: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The operator as a local process with exactly the chart's RBAC (the chart's ServiceAccount token).

    On the local provider the chart's own operator pod is simulated by kwok and does nothing;
    this process does the work. On kind or a real cluster, set MODELDEPLOY_OPERATOR=chart
    to test the chart's pod instead (needs the image in a registry the nodes can pull from).
    """
    work = tmp_path_factory.mktemp("operator")
    kubeconfig = chart.token_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, work / "kubeconfig")
    logs = TEST_CLUSTER_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # Its /metrics on loopback, for the tests that scrape it with a real Prometheus.
    metrics = f"127.0.0.1:{free_port()}"
    process = Operator(
        kubeconfig,
        logs / "operator-tests.log",
        "--workers",
        "4",
        "--resync-seconds",
        "20",
        "--metrics-address",
        metrics,
    )
    process.log.unlink(missing_ok=True)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace per test."""
    name = f"md-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, "modeldeploy.dev/test=true")
    wait_for(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        timeout=30,
        what=f"the default ServiceAccount of {name}",
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def running(operator: Operator) -> Iterator[Operator]:
    """The operator, checked alive before and after the test: no input may crash it."""
    if not operator.alive:
        operator.start()
    yield operator
    assert operator.alive, f"the operator died:\n{operator.logs()[-3000:]}"


# --- the e2e tier: model images ------------------------------------------------------------


@dataclass(frozen=True)
class ModelImages:
    v1: str  # iris-classifier (scikit-learn)
    v2: str  # iris-onnx: the same model converted to ONNX, a new version to roll out


@pytest.fixture(scope="session")
def model_images(cluster: Cluster) -> ModelImages:
    if cluster.provider != "local":
        v1, v2 = os.environ.get("MODELDEPLOY_E2E_IMAGE"), os.environ.get("MODELDEPLOY_E2E_IMAGE_V2")
        if not v1 or not v2:
            pytest.skip(
                "e2e elsewhere needs MODELDEPLOY_E2E_IMAGE and MODELDEPLOY_E2E_IMAGE_V2 (tests/clusterstack.py)"
            )
        return ModelImages(v1, v2)
    info = LocalCluster(TEST_CLUSTER_DIR).info()
    assert info is not None and info.real_node, "the e2e tier runs on the local cluster's real node"
    builder = info.image_builder()
    return ModelImages(
        bentoimages.ensure(builder, "iris-classifier", "v1"),
        bentoimages.ensure(builder, "iris-onnx", "v1"),
    )
