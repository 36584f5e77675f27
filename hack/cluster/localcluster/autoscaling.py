"""Autoscaling add-ons of the local cluster's real node: metrics-server and KEDA, installed on demand.

- metrics-server (sigs.k8s.io/metrics-server) serves the resource metrics API from the kubelet's
  /metrics/resource, so cpu/memory HorizontalPodAutoscalers work. It runs as a pod; its manifests
  follow upstream's components.yaml, with the kubelet's serving certificate verified against the
  cluster CA (no --kubelet-insecure-tls).
- KEDA (github.com/kedacore/keda/v2): its operator and metrics API server (the adapter), from
  upstream's own manifests (`kubectl kustomize` of the module's config/minimal), with the images
  built here from the binaries build.sh makes.

Both images hold a static binary and nothing else.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from localcluster.addons import _apply, _kubectl
from localcluster.images import Builder, digest
from localcluster.info import ClusterInfo
from localcluster.manifests import binding, cluster_role, service_account
from localcluster.node import REGISTRY_HOST
from localcluster.process import ClusterError
from localcluster.versions import COMPONENT_BINARIES, ensure_binaries, load_versions

RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
KEDA_NAMESPACE = "keda"


def binary_image(builder: Builder, component: str, binary_name: str, path: str) -> str:
    """An image of one static binary (of a build.sh component) at PATH, run as a non-root user."""
    version = load_versions()[COMPONENT_BINARIES[component][0]]
    image = f"{REGISTRY_HOST}/modeldeploy/{binary_name}:{digest(version, path)}"

    def build(image: str) -> None:
        binary = ensure_binaries((component,))[binary_name]
        ctr = builder.run("buildah", "from", "--quiet", "scratch")
        builder.run("buildah", "copy", "--quiet", "--chmod=0755", ctr, str(binary), path)
        builder.commit(ctr, image, ["--entrypoint", json.dumps([path]), "--user", "65532:65532"])

    return builder.ensure(image, build, binary_name)


# --------------------------------------------------------------------------
# metrics-server
# --------------------------------------------------------------------------


def metrics_server_manifests(image: str) -> list[dict[str, Any]]:
    ns, name = "kube-system", "metrics-server"
    labels = {"k8s-app": name}
    subject = service_account(name, ns)
    rules = [
        {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
    ]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}},
        *cluster_role("system:metrics-server", rules, subject),
        binding("metrics-server:system:auth-delegator", "ClusterRole", "system:auth-delegator", subject),
        binding("metrics-server-auth-reader", "Role", "extension-apiserver-authentication-reader", subject, ns),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"selector": labels, "ports": [{"name": "https", "port": 443, "targetPort": "https"}]},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": name,
                        "securityContext": {"runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [
                            {
                                "name": name,
                                "image": image,
                                "args": [
                                    "--cert-dir=/tmp",
                                    "--secure-port=10250",
                                    "--kubelet-preferred-address-types=InternalIP",
                                    "--kubelet-use-node-status-port",
                                    # The kubelet's serving certificate is signed by the cluster CA.
                                    "--kubelet-certificate-authority=/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
                                    "--metric-resolution=15s",
                                ],
                                "ports": [{"name": "https", "containerPort": 10250}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/readyz", "port": "https", "scheme": "HTTPS"},
                                    "periodSeconds": 5,
                                },
                                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                                "securityContext": RESTRICTED,
                                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                            }
                        ],
                        "volumes": [{"name": "tmp", "emptyDir": {}}],
                    },
                },
            },
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "service": {"name": name, "namespace": ns},
                "insecureSkipTLSVerify": True,
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]  # fmt: skip


def ensure_metrics_server(info: ClusterInfo, builder: Builder | None = None, *, wait: bool = True) -> None:
    """The resource metrics API served (`kubectl top` and cpu/memory HPAs work); with wait=False only applied
    (`wait_metrics_server` waits), so that it starts beside other add-ons."""
    builder = builder or info.image_builder()
    image = binary_image(builder, "metrics-server", "metrics-server", "/metrics-server")
    _apply(_kubectl(info), metrics_server_manifests(image))
    if wait:
        wait_metrics_server(info)


def wait_metrics_server(info: ClusterInfo) -> None:
    kubectl = _kubectl(info)
    kubectl("rollout", "status", "deployment/metrics-server", "-n", "kube-system", "--timeout=180s")
    kubectl("wait", "--for=condition=Available", "apiservice/v1beta1.metrics.k8s.io", "--timeout=120s")


# --------------------------------------------------------------------------
# KEDA
# --------------------------------------------------------------------------


def _module_dir(module: str, version: str) -> Path:
    """The module's source in the Go module cache (downloaded when missing)."""
    result = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"], capture_output=True, text=True, check=False
    )
    try:
        found = json.loads(result.stdout).get("Dir", "")
    except ValueError:
        found = ""
    if not found:
        raise ClusterError(f"cannot download {module}@{version} from the module proxy: {result.stderr.strip()}")
    return Path(found)


def keda_manifests(info: ClusterInfo, operator_image: str, adapter_image: str) -> list[dict[str, Any]]:
    """Upstream's config/minimal (CRDs, RBAC, operator, metrics API server), with our images."""
    config = _module_dir("github.com/kedacore/keda/v2", load_versions()["KEDA_VERSION"]) / "config" / "minimal"
    rendered = _kubectl(info)("kustomize", str(config))
    images = {"keda-operator": operator_image, "keda-metrics-apiserver": adapter_image}
    out = []
    for doc in yaml.safe_load_all(rendered):
        if not doc:
            continue
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                container["image"] = images[container["name"]]
                container["imagePullPolicy"] = "IfNotPresent"
                container.setdefault("env", []).append(
                    {"name": "KEDA_CLUSTER_OBJECT_NAMESPACE", "value": KEDA_NAMESPACE}
                )
        out.append(doc)
    return out


def ensure_keda(info: ClusterInfo, builder: Builder | None = None, *, wait: bool = True) -> None:
    """KEDA's operator and external metrics API running (ScaledObjects are acted on); wait=False: only applied."""
    builder = builder or info.image_builder()
    operator = binary_image(builder, "keda", "keda-operator", "/keda")
    adapter = binary_image(builder, "keda", "keda-adapter", "/keda-adapter")
    _apply(_kubectl(info), keda_manifests(info, operator, adapter))
    if wait:
        wait_keda(info)


def wait_keda(info: ClusterInfo) -> None:
    kubectl = _kubectl(info)
    for name in ("keda-operator", "keda-metrics-apiserver"):
        kubectl("rollout", "status", f"deployment/{name}", "-n", KEDA_NAMESPACE, "--timeout=240s")
    kubectl("wait", "--for=condition=Available", "apiservice/v1beta1.external.metrics.k8s.io", "--timeout=180s")
