"""The store path, for real: a bento exported with `bentoml export`, fetched by the fetch-bento init
container from a store the cluster reaches, imported and served by the runtime image.

Three stores, all inside the local cluster: an S3-compatible server (MinIO, built from the Go
module proxy, run as a pod; the Secret's credentials are used), an https server (a pod with a
certificate of this machine's private CA, which the runtime image used here trusts), and a
PersistentVolumeClaim bound to a volume on the real node. A missing archive and wrong credentials
each show as a condition naming the store URI, with the operator alive.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from minio import Minio

from localcluster import LocalCluster, bentoimages, cache_dir, pki
from localcluster.kit import Cluster, Operator, condition, post_json, sample, service_url, wait_for, wait_ready

from clusterstack import TEST_CLUSTER_DIR

pytestmark = pytest.mark.timeout(600)

TAG = "iris-classifier:v1"
ROWS = {"input_series": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}
S3_USER, S3_PASSWORD, BUCKET = "modeldeploy", "store-password-for-tests", "bentos"
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
}
HTTPS_SERVER = """\
import functools, http.server, ssl
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory="/srv")
server = http.server.ThreadingHTTPServer(("0.0.0.0", 8443), handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("/tls/tls.crt", "/tls/tls.key")
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""


@dataclass(frozen=True)
class Stores:
    namespace: str  # where the store servers run
    archive: Path  # the exported bento, on the real node's disk
    runtime_image: str  # the bento runtime, trusting the https store's CA
    s3_endpoint: str  # as pods reach it (cluster DNS)
    https_uri: str


def _deployment(name: str, namespace: str, image: str, pod: dict[str, Any]) -> dict[str, Any]:
    labels = {"app": name}
    container = {"name": name, "image": image, "securityContext": RESTRICTED, **pod.pop("container")}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "automountServiceAccountToken": False,
                    "containers": [container],
                    **pod,
                },
            },
        },
    }


def _service(name: str, namespace: str, port: int, target: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": [{"port": port, "targetPort": target}]},
    }


@pytest.fixture(scope="module")
def stores(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    if cluster.provider != "local":
        pytest.skip("the store servers are built and run on the local cluster's real node")
    info = LocalCluster(TEST_CLUSTER_DIR).info()
    assert info is not None and info.real_node
    builder = info.image_builder()
    archive = bentoimages.archive(builder, "iris-classifier", "v1")
    ca = pki.private_ca(cache_dir() / "pki")
    namespace = f"md-stores-{uuid.uuid4().hex[:6]}"
    host = f"store.{namespace}.svc"
    cert, key = pki.server_certificate(ca, tmp_path_factory.mktemp("store-tls"), [host, f"{host}.cluster.local"])
    files = {"path": str(archive.parent), "type": "Directory"}
    minio = _deployment(
        "minio",
        namespace,
        builder.minio(),
        {
            "container": {
                "args": ["server", "/data", "--address", ":9000", "--quiet"],
                "env": [
                    {"name": "MINIO_ROOT_USER", "value": S3_USER},
                    {"name": "MINIO_ROOT_PASSWORD", "value": S3_PASSWORD},
                ],
                "readinessProbe": {"httpGet": {"path": "/minio/health/ready", "port": 9000}, "periodSeconds": 1},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            },
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    )
    https = _deployment(
        "store",
        namespace,
        builder.python_base(),
        {
            "container": {
                "command": ["python3", "/app/server.py"],
                "readinessProbe": {"tcpSocket": {"port": 8443}, "periodSeconds": 1},
                "volumeMounts": [
                    {"name": "app", "mountPath": "/app"},
                    {"name": "tls", "mountPath": "/tls"},
                    {"name": "files", "mountPath": "/srv", "readOnly": True},
                ],
            },
            "volumes": [
                {"name": "app", "configMap": {"name": "store-server"}},
                {"name": "tls", "secret": {"secretName": "store-tls"}},
                {"name": "files", "hostPath": files},
            ],
        },
    )
    tls = {
        "tls.crt": base64.b64encode(cert.read_bytes()).decode(),
        "tls.key": base64.b64encode(key.read_bytes()).decode(),
    }
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "store-server", "namespace": namespace},
         "data": {"server.py": HTTPS_SERVER}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "store-tls", "namespace": namespace},
         "type": "kubernetes.io/tls", "data": tls},
        minio, _service("minio", namespace, 9000, 9000), https, _service("store", namespace, 443, 8443),
    ]  # fmt: skip
    cluster.apply(yaml.safe_dump_all(manifests))
    try:
        for name in ("minio", "store"):
            cluster.kubectl("rollout", "status", f"deployment/{name}", "-n", namespace, "--timeout=180s")
        minio_url = service_url(cluster, "minio", namespace)
        client = Minio(minio_url.removeprefix("http://"), access_key=S3_USER, secret_key=S3_PASSWORD, secure=False)
        wait_for(
            lambda: client.bucket_exists(BUCKET) or client.make_bucket(BUCKET) is None, timeout=30, what="a bucket"
        )
        client.fput_object(BUCKET, f"models/{archive.name}", str(archive))
        yield Stores(
            namespace=namespace,
            archive=archive,
            runtime_image=builder.runtime_trusting(ca),
            s3_endpoint=f"http://minio.{namespace}.svc:9000",
            https_uri=f"https://{host}",
        )
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def from_store(name: str, namespace: str, stores: Stores, store: dict[str, Any], tag: str = TAG) -> dict[str, Any]:
    bento = {"tag": tag, "store": store, "runtimeImage": stores.runtime_image}
    resources = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    return sample(name, namespace, kwok=False, bento=bento, replicas=1, resources=resources)


def s3_secret(cluster: Cluster, namespace: str, stores: Stores, password: str = S3_PASSWORD) -> None:
    cluster.kubectl(
        "create", "secret", "generic", "s3-creds", "-n", namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={S3_USER}", f"--from-literal=AWS_SECRET_ACCESS_KEY={password}",
        f"--from-literal=AWS_ENDPOINT_URL={stores.s3_endpoint}", "--from-literal=AWS_DEFAULT_REGION=us-east-1",
    )  # fmt: skip


def answers(cluster: Cluster, namespace: str) -> None:
    wait_ready(cluster, namespace, "iris", timeout=300)
    url = service_url(cluster, "iris", namespace)
    status, answer = wait_for(lambda: post_json(f"{url}/classify", ROWS), timeout=30, what="a prediction")
    assert (status, answer) == (200, ["setosa", "virginica"])


def fetch_failed(cluster: Cluster, namespace: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def degraded() -> dict[str, Any] | None:
        md = cluster.get("modeldeployment", "iris", namespace) or {}
        seen.update(condition(md, "Degraded"))
        return seen if seen.get("status") == "True" and seen.get("reason") == "BentoFetchFailed" else None

    try:
        # Reported from the first failed import, not only once the kubelet backs off.
        return wait_for(degraded, timeout=90, what="Degraded: BentoFetchFailed")
    except AssertionError as err:
        raise AssertionError(f"{err}; the Degraded condition: {seen}") from None


class TestFetchedFromAStore:
    def test_from_s3_with_the_secrets_credentials(
        self, cluster: Cluster, running: Operator, namespace: str, stores: Stores
    ) -> None:
        s3_secret(cluster, namespace, stores)
        store = {"uri": f"s3://{BUCKET}/models", "secretRef": {"name": "s3-creds"}}
        cluster.apply(from_store("iris", namespace, stores, store))
        answers(cluster, namespace)

    def test_from_https(self, cluster: Cluster, running: Operator, namespace: str, stores: Stores) -> None:
        cluster.apply(from_store("iris", namespace, stores, {"uri": stores.https_uri}))
        answers(cluster, namespace)

    def test_from_a_persistent_volume_claim(
        self, cluster: Cluster, running: Operator, namespace: str, stores: Stores
    ) -> None:
        volume = f"bentos-{namespace}"
        claim = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "bentos", "namespace": namespace},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadOnlyMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "claimRef": {"namespace": namespace, "name": "bentos"},
                "hostPath": {"path": str(stores.archive.parent), "type": "Directory"},
            },
        }
        cluster.apply(yaml.safe_dump_all([pv, claim]))
        try:
            cluster.apply(from_store("iris", namespace, stores, {"uri": "pvc://bentos/"}))
            answers(cluster, namespace)
        finally:
            cluster.kubectl("delete", "pv", volume, "--wait=false", check=False)


class TestStoreProblems:
    def test_wrong_credentials_are_a_condition_naming_the_store(
        self, cluster: Cluster, running: Operator, namespace: str, stores: Stores
    ) -> None:
        s3_secret(cluster, namespace, stores, password="not-the-password")
        uri = f"s3://{BUCKET}/models"
        cluster.apply(from_store("iris", namespace, stores, {"uri": uri, "secretRef": {"name": "s3-creds"}}))
        cond = fetch_failed(cluster, namespace)
        assert uri in cond["message"]
        assert running.alive

    def test_a_missing_archive_is_a_condition_naming_the_store(
        self, cluster: Cluster, running: Operator, namespace: str, stores: Stores
    ) -> None:
        cluster.apply(from_store("iris", namespace, stores, {"uri": stores.https_uri}, tag="iris-classifier:v404"))
        cond = fetch_failed(cluster, namespace)
        assert stores.https_uri in cond["message"] and "iris-classifier-v404.bento" in cond["message"]
        assert running.alive
