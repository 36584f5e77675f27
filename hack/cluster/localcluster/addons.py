"""Add-ons of the local cluster's real node, installed on demand: Prometheus and the Gateway.

- Prometheus 3 (built from the Go module proxy) runs as a pod in ``monitoring``, discovering the
  model server pods with exactly the scrape job docs/analysis.md tells users to configure (read
  from that page), so what the analysis queries was scraped from real pods by real discovery.
  Pods reach it at ``http://prometheus.monitoring.svc:9090``; this host at its ClusterIP.
- The Gateway: Traefik v3 (the Gateway API's implementation) as a process of this host, listening
  on a loopback port recorded in ``<cluster dir>/gateway`` (host:port), watching Gateways and
  HTTPRoutes with a ServiceAccount's token, forwarding to the pods; the Gateway API CRDs, a
  GatewayClass ``traefik`` and a Gateway ``modeldeploy`` in ``gateway-system`` that admits routes
  from every namespace.

Needs the project's dependencies (PyYAML), unlike the cluster itself.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from localcluster.cluster import LocalCluster
from localcluster.images import Builder, digest
from localcluster.info import ClusterInfo
from localcluster.manifests import cluster_role, service_account
from localcluster.node import REGISTRY_HOST
from localcluster.process import ClusterError, free_ports, http_ok
from localcluster.prometheus import PrometheusApi
from localcluster.versions import REPO_ROOT, ensure_binaries, install_gateway_api_crds, load_versions

ANALYSIS_DOC = REPO_ROOT / "docs" / "analysis.md"
PROMETHEUS_NAMESPACE = "monitoring"
GATEWAY_NAMESPACE, GATEWAY_NAME, GATEWAY_CLASS = "gateway-system", "modeldeploy", "traefik"
TRAEFIK_CONTROLLER = "traefik.io/gateway-controller"
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
}


def documented_scrape_job(doc: Path = ANALYSIS_DOC) -> dict[str, Any]:
    """The pod scrape job of docs/analysis.md, as written there."""
    for block in re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.DOTALL):
        config = yaml.safe_load(block)
        if isinstance(config, dict) and "scrape_configs" in config:
            [job] = config["scrape_configs"]
            found: dict[str, Any] = job
            return found
    raise ClusterError(f"no scrape_configs block in {doc}")


# --------------------------------------------------------------------------
# Prometheus
# --------------------------------------------------------------------------


def prometheus_image(builder: Builder) -> str:
    """The prometheus binary alone in an image (static: it needs no libc)."""
    version = load_versions()["PROMETHEUS_VERSION"]
    image = f"{REGISTRY_HOST}/modeldeploy/prometheus:{digest(version, '/bin/prometheus')}"

    def build(image: str) -> None:
        binary = ensure_binaries(("prometheus",))["prometheus"]
        ctr = builder.run("buildah", "from", "--quiet", "scratch")
        builder.run("buildah", "copy", "--quiet", "--chmod=0755", ctr, str(binary), "/bin/prometheus")
        builder.commit(ctr, image, ["--entrypoint", '["/bin/prometheus"]', "--user", "65534:65534"])

    return builder.ensure(image, build, "prometheus")


def prometheus_manifests(image: str, scrape_interval: str = "2s") -> list[dict[str, Any]]:
    """Namespace, RBAC to discover pods, the configuration, the Deployment and its Service.

    The documented job is used as it is, but for its scrape interval: tests judge canaries over
    windows of seconds, and `increase()` needs a few samples per window.
    """
    job = {**documented_scrape_job(), "scrape_interval": scrape_interval}
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [job],
    }
    ns = PROMETHEUS_NAMESPACE
    labels = {"app.kubernetes.io/name": "prometheus"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "prometheus", "namespace": ns}},
        *cluster_role(
            "modeldeploy-local:prometheus",
            [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}],
            service_account("prometheus", ns),
        ),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "prometheus", "namespace": ns},
            "data": {"prometheus.yml": json.dumps(config, indent=2)},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "prometheus", "namespace": ns, "labels": labels},
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels, "annotations": {"config-digest": digest(json.dumps(config))}},
                    "spec": {
                        "serviceAccountName": "prometheus",
                        "securityContext": {"runAsUser": 65534, "runAsGroup": 65534, "fsGroup": 65534,
                                            "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [
                            {
                                "name": "prometheus",
                                "image": image,
                                "args": [
                                    "--config.file=/etc/prometheus/prometheus.yml",
                                    "--storage.tsdb.path=/prometheus",
                                    "--storage.tsdb.retention.time=6h",
                                    "--web.listen-address=:9090",
                                ],
                                "ports": [{"name": "http", "containerPort": 9090}],
                                "readinessProbe": {"httpGet": {"path": "/-/ready", "port": "http"}, "periodSeconds": 2},
                                "resources": {
                                    "requests": {"cpu": "100m", "memory": "128Mi"},
                                    "limits": {"memory": "1Gi"},
                                },
                                "securityContext": RESTRICTED,
                                "volumeMounts": [
                                    {"name": "config", "mountPath": "/etc/prometheus"},
                                    {"name": "data", "mountPath": "/prometheus"},
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "config", "configMap": {"name": "prometheus"}},
                            {"name": "data", "emptyDir": {}},
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "prometheus", "namespace": ns, "labels": labels},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": 9090, "targetPort": "http"}]},
        },
    ]  # fmt: skip


class ClusterPrometheus(PrometheusApi):
    """The cluster's Prometheus: its API at its ClusterIP for this host, and its in-cluster URL."""

    def __init__(self, url: str, in_cluster_url: str) -> None:
        super().__init__(url)
        self.in_cluster_url = in_cluster_url


def ensure_prometheus(info: ClusterInfo, builder: Builder | None = None) -> ClusterPrometheus:
    """Prometheus running in the cluster (installed, or updated when its configuration changed)."""
    builder = builder or info.image_builder()
    kubectl = _kubectl(info)
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        input=yaml.safe_dump_all(prometheus_manifests(prometheus_image(builder))),
    )
    kubectl("rollout", "status", "deployment/prometheus", "-n", PROMETHEUS_NAMESPACE, "--timeout=180s")
    service = json.loads(kubectl("get", "service", "prometheus", "-n", PROMETHEUS_NAMESPACE, "-o", "json"))
    url = f"http://{service['spec']['clusterIP']}:9090"
    deadline = time.monotonic() + 30
    while not http_ok(f"{url}/-/ready"):
        if time.monotonic() > deadline:
            raise ClusterError(f"Prometheus Ready but {url}/-/ready does not answer")
        time.sleep(0.5)
    return ClusterPrometheus(url, f"http://prometheus.{PROMETHEUS_NAMESPACE}.svc:9090")


# --------------------------------------------------------------------------
# The Gateway (Traefik)
# --------------------------------------------------------------------------


def gateway_manifests(port: int) -> list[dict[str, Any]]:
    """Traefik's identity and RBAC (what its Gateway provider reads and the statuses it writes),
    the GatewayClass and the Gateway whose HTTP listener is Traefik's entry point."""
    ns = GATEWAY_NAMESPACE
    read = ["get", "list", "watch"]
    gateway_api = "gateway.networking.k8s.io"
    routes = ("httproutes", "grpcroutes", "tcproutes", "tlsroutes", "referencegrants", "backendtlspolicies")
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "traefik", "namespace": ns}},
        *cluster_role(
            "modeldeploy-local:traefik",
            [
                # Traefik's provider waits for its Secret and ConfigMap caches (TLS certificates, CA
                # bundles) before it programs anything, even with no TLS listener: upstream's RBAC.
                {"apiGroups": [""], "resources": ["namespaces", "services", "secrets", "configmaps"], "verbs": read},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
                {"apiGroups": [gateway_api], "resources": [*routes, "gatewayclasses", "gateways"], "verbs": read},
                {
                    "apiGroups": [gateway_api],
                    "resources": [f"{r}/status" for r in (*routes, "gatewayclasses", "gateways")],
                    "verbs": ["update", "patch"],
                },
            ],
            service_account("traefik", ns),
        ),
        {
            "apiVersion": f"{gateway_api}/v1",
            "kind": "GatewayClass",
            "metadata": {"name": GATEWAY_CLASS},
            "spec": {"controllerName": TRAEFIK_CONTROLLER},
        },
        {
            "apiVersion": f"{gateway_api}/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY_NAME, "namespace": ns},
            "spec": {
                "gatewayClassName": GATEWAY_CLASS,
                "listeners": [
                    {"name": "web", "protocol": "HTTP", "port": port, "allowedRoutes": {"namespaces": {"from": "All"}}}
                ],
            },
        },
    ]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Gateway:
    address: str  # 127.0.0.1:PORT, Traefik's entry point on this host
    api: str  # 127.0.0.1:PORT, Traefik's own API (and ping)
    namespace: str = GATEWAY_NAMESPACE
    name: str = GATEWAY_NAME

    @property
    def parent_ref(self) -> dict[str, str]:
        """What an HTTPRoute (or a ModelDeployment's gateway/expose settings) names to attach to it."""
        return {"name": self.name, "namespace": self.namespace}

    def weights(self, namespace: str, route: str) -> dict[str, int]:
        """The backend weights Traefik has programmed for an HTTPRoute: {Service name: weight}."""
        with urllib.request.urlopen(f"http://{self.api}/api/http/services", timeout=5) as response:
            services = json.loads(response.read())
        prefix = f"httproute-{namespace}-{route}-"
        for service in services:
            if service.get("name", "").startswith(prefix) and "weighted" in service:
                return {
                    _backend(backend["name"], namespace): int(backend.get("weight", 1))
                    for backend in service["weighted"].get("services", [])
                }
        return {}


def _backend(traefik_name: str, namespace: str) -> str:
    """Traefik names a Service backend <namespace>-<service>-<protocol>-<port>: the Service's name."""
    return traefik_name.split("@", 1)[0].removeprefix(f"{namespace}-").rsplit("-", 2)[0]


def ensure_gateway(local: LocalCluster) -> Gateway:
    """Traefik running for this cluster, with the Gateway API CRDs, class and Gateway."""
    info = local.info()
    if info is None or not info.real_node:
        raise ClusterError("the Gateway forwards to the real node's pods: start the cluster with its real node")
    record = local.dir / "gateway"
    kubectl = _kubectl(info)
    # Always: a test may have deleted the HTTPRoute CRD to see the operator without it.
    install_gateway_api_crds(info.kubeconfig, info.kubectl)
    if record.exists() and local.component_alive("traefik"):
        address, api = record.read_text().split()
        _apply(kubectl, gateway_manifests(int(address.rpartition(":")[2])))
        _wait_programmed(kubectl)
        return Gateway(address, api)
    port, ping = free_ports(2)
    _apply(kubectl, gateway_manifests(port))
    token = kubectl("create", "token", "traefik", "-n", GATEWAY_NAMESPACE, "--duration=48h").strip()
    kubeconfig = local.dir / "traefik.kubeconfig"
    kubeconfig.write_text(token_kubeconfig(info.server, local.layout.pki / "ca.crt", "traefik", token))
    kubeconfig.chmod(0o600)
    binary = ensure_binaries(("traefik",))["traefik"]
    args = [
        str(binary),
        f"--entryPoints.web.address=127.0.0.1:{port}",
        f"--entryPoints.traefik.address=127.0.0.1:{ping}",
        "--ping=true",
        "--ping.entryPoint=traefik",
        # Traefik's own API on that loopback port: what it has programmed (tests wait for weights).
        "--api=true",
        "--api.insecure=true",
        "--providers.kubernetesgateway=true",
        "--providers.kubernetesgateway.throttleDuration=0s",
        # Idle connections to the model servers are dropped before uvicorn's own 5 s keep-alive
        # timeout closes them: otherwise a request sent on one the server just closed is a 502.
        "--serversTransport.forwardingTimeouts.idleConnTimeout=3s",
        "--log.level=WARN",
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
    ]
    # Traefik's Gateway provider takes KUBECONFIG (set here, whatever the caller's is): the token
    # stays in a file of mode 0600, off the command line.
    local.start_component(
        "traefik", args, health_url=f"http://127.0.0.1:{ping}/ping", env={"KUBECONFIG": str(kubeconfig)}
    )
    record.write_text(f"127.0.0.1:{port} 127.0.0.1:{ping}\n")
    _wait_programmed(kubectl)
    return Gateway(f"127.0.0.1:{port}", f"127.0.0.1:{ping}")


def _apply(kubectl: Any, manifests: list[dict[str, Any]]) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(manifests))


def token_kubeconfig(server: str, ca: Path, user: str, token: str) -> str:
    """A kubeconfig that authenticates with a ServiceAccount token (JSON is YAML)."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": user, "context": {"cluster": "local", "user": user}}],
            "current-context": user,
        }
    )


def _wait_programmed(kubectl: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        gw = json.loads(kubectl("get", "gateway", GATEWAY_NAME, "-n", GATEWAY_NAMESPACE, "-o", "json"))
        conditions = {c["type"]: c["status"] for c in gw.get("status", {}).get("conditions", [])}
        if conditions.get("Programmed") == "True":
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"Gateway {GATEWAY_NAMESPACE}/{GATEWAY_NAME} not Programmed by Traefik: {conditions}")
        time.sleep(0.5)


def _kubectl(info: ClusterInfo) -> Any:
    from localcluster.process import run

    def kubectl(*args: str, input: str | None = None) -> str:
        return run([str(info.kubectl), "--kubeconfig", str(info.kubeconfig), *args], input=input)

    return kubectl
