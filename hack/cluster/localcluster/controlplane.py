"""The control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and kwok.

Pure functions of the cluster's layout (`Layout`) and ports: the command lines and health URLs
of each component, and the kwok fake nodes. `cluster.py` starts them in order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from localcluster.versions import Binaries

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
# The first address of the service range is the ClusterIP of the `kubernetes` Service, so the
# serving certificate must name it.
KUBERNETES_SERVICE_IP = "10.96.0.1"
# Fake pod IPs handed out by kwok: only written into pod status, never routed (the node adds an
# unreachable route for them, so nothing sent there can leave the machine).
KWOK_POD_CIDR = "10.245.0.0/16"
# kwok manages only nodes carrying this annotation (what kwokctl does too), so a test may still
# add other nodes that nobody manages (NotReady).
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
# kwok nodes carry this taint, as kwokctl's do: only pods that tolerate it (the tests that need
# scheduling only) land there; every other pod goes to the real node, where containers run.
KWOK_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
KWOK_NODE_SELECTOR = {"type": "kwok"}
KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Equal", "value": "fake", "effect": "NoSchedule"}
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
PORTS = ("etcd", "etcd-peer", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Taints the control plane puts on nodes that are not (yet) Ready.
NOT_READY_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a cluster's files live (all under one directory)."""

    dir: Path

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def bin(self) -> Path:
        return self.dir / "bin"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def etcd_data(self) -> Path:
        return self.dir / "etcd"

    def component_kubeconfig(self, name: str) -> Path:
        return self.dir / f"{name}.kubeconfig"


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
    taints: Sequence[Mapping[str, str]] = (KWOK_TAINT,)

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
            # Status may be set on create; kwok's node-initialize stage keeps capacity/allocatable
            # and adds conditions (Ready=True).
            "status": {"capacity": capacity, "allocatable": dict(capacity)},
        }


DEFAULT_NODES: tuple[FakeNode, ...] = (
    FakeNode("kwok-gpu-2", cpu="32", memory="128Gi", gpus=2),
    FakeNode("kwok-gpu-1", cpu="16", memory="64Gi", gpus=1, gpu_product="NVIDIA-L4"),
    FakeNode("kwok-cpu-0", cpu="8", memory="32Gi"),
)


def health_urls(ports: Mapping[str, int]) -> dict[str, str]:
    return {
        "etcd": f"http://127.0.0.1:{ports['etcd']}/health",
        "kube-apiserver": f"https://127.0.0.1:{ports['kube-apiserver']}/readyz",
        "kube-controller-manager": f"https://127.0.0.1:{ports['kube-controller-manager']}/healthz",
        "kube-scheduler": f"https://127.0.0.1:{ports['kube-scheduler']}/healthz",
        "kwok": f"http://127.0.0.1:{ports['kwok']}/healthz",
    }


def etcd_args(b: Binaries, layout: Layout, ports: Mapping[str, int]) -> list[str]:
    client = f"http://127.0.0.1:{ports['etcd']}"
    peer = f"http://127.0.0.1:{ports['etcd-peer']}"
    return [
        str(b["etcd"]),
        "--name=local",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=local={peer}",
        # A throwaway dev/test store: skip fsync, it dominates write latency.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_args(b: Binaries, layout: Layout, ports: Mapping[str, int]) -> list[str]:
    pki = layout.pki
    return [
        str(b["kube-apiserver"]),
        f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports['kube-apiserver']}",
        # SO_REUSEADDR: a restart (LocalCluster.restart_component) binds the port again at once, with the
        # connections of the previous process still in TIME_WAIT.
        "--permit-address-sharing=true",
        # Without it the API server advertises the host's first non-loopback address. With a
        # loopback one it refuses to start unless the endpoint reconciler is off ("may not be in
        # the loopback range"): the real node writes the `kubernetes` Service's endpoints itself
        # (its relay on the node's bridge address, see node.py).
        "--advertise-address=127.0.0.1",
        "--endpoint-reconciler-type=none",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        "--authorization-mode=Node,RBAC",
        # On top of the default plugins (which include PodSecurity, ServiceAccount,
        # ResourceQuota, LimitRanger, ...), as kubeadm does.
        "--enable-admission-plugins=NodeRestriction",
        # Privileged pods are allowed by default so that PodSecurity labels are what restricts
        # them, like on a real cluster.
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
        # logs, exec and port-forward go through the kubelet's port: the kubelet only accepts a
        # client certificate (x509 authentication), and its address is the node's InternalIP
        # (else the API server would resolve the node's hostname through the machine's resolver).
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
        "--profiling=false",
    ]


def controller_manager_args(b: Binaries, layout: Layout, ports: Mapping[str, int]) -> list[str]:
    kubeconfig = layout.component_kubeconfig("controller-manager")
    pki = layout.pki
    return [
        str(b["kube-controller-manager"]),
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
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--cluster-name=modeldeploy-local",
        # Single instance: skip leader election and its start-up wait.
        "--leader-elect=false",
        # The default client rate limit (20 QPS) makes its start-up, which creates a service
        # account and token per controller, take seconds.
        "--kube-api-qps=200",
        "--kube-api-burst=400",
        "--profiling=false",
    ]


def scheduler_args(b: Binaries, layout: Layout, ports: Mapping[str, int]) -> list[str]:
    kubeconfig = layout.component_kubeconfig("scheduler")
    return [
        str(b["kube-scheduler"]),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports['kube-scheduler']}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def kwok_config(b: Binaries) -> str:
    """kwok's --config: the stages build.sh copied out of the kwok module.

    The kwok binary has no built-in stages (only kwokctl embeds them), so without these it
    would neither mark nodes Ready nor pods Running.
    """
    docs = [p.read_text().strip() for p in sorted(b.kwok_stages.glob("*.yaml"))]
    return "\n---\n".join(docs) + "\n"


def kwok_args(b: Binaries, layout: Layout, ports: Mapping[str, int]) -> list[str]:
    key, value = KWOK_NODE_ANNOTATION
    return [
        str(b["kwok"]),
        f"--kubeconfig={layout.kubeconfig}",
        f"--config={layout.dir / 'kwok' / 'kwok.yaml'}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={key}={value}",
        # Node addresses point at loopback so that nothing ever tries to reach a made-up address;
        # kwok serves its (health) endpoint here.
        "--node-ip=127.0.0.1",
        f"--node-port={ports['kwok']}",
        f"--server-address=127.0.0.1:{ports['kwok']}",
        f"--cidr={KWOK_POD_CIDR}",
        # Node heartbeats via Lease objects, as kubelets do (kwokctl's default).
        "--node-lease-duration-seconds=40",
        # At INFO it logs every lease renewal (3 lines per node per 10 s).
        "--v=WARN",
    ]


def nodes_ready(items: Sequence[Mapping[str, Any]], names: Sequence[str]) -> bool:
    """Every named node is Ready and schedulable.

    A new Node gets a `node.kubernetes.io/not-ready:NoSchedule` taint on creation
    (TaintNodesByCondition) that the node lifecycle controller removes a moment after Ready:
    until then pods would stay Pending.
    """
    ready = {
        n["metadata"]["name"]
        for n in items
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
        and not any(t["key"] in NOT_READY_TAINTS for t in n.get("spec", {}).get("taints", []))
    }
    return all(name in ready for name in names)
