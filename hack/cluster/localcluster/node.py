"""The real node: containerd, runc, CNI, kubelet and kube-proxy, where containers really run.

One real node per host (two kubelets would share the kubepods cgroups and kill each other's
pods): a host-wide lock (`NodeLock`) says which cluster holds it. The node's network is a bridge
of its own with a /24 that only this host and its pods can reach; pods have no route out of it
(no egress by design): the Service range is routed to the bridge, forwarding is enabled on the
bridge only, and a FORWARD rule drops whatever would leave it for another interface.

The functions here build configuration files and command lines; `cluster.py` starts the
processes through `process.py`, and `teardown` undoes everything `setup_network` and the
processes did (pods and containers, mounts, interfaces, rules, routes, cgroups, sysctls).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from localcluster.controlplane import KWOK_POD_CIDR, SERVICE_CLUSTER_IP_RANGE, Layout
from localcluster.process import ClusterError
from localcluster.versions import Binaries, cache_dir

NODE_NAME = "real-node"
BRIDGE = "mdbr0"
POD_CIDR = "10.244.0.0/24"
NODE_IP = "10.244.0.1"
NODE_LABELS = {"type": "real"}
# Images are named after this registry host; containerd (hosts.toml) and buildah
# (registries.conf) map it to the local registry's loopback port, so names stay the same
# whatever port a run gets. `.localhost` names never reach a DNS resolver (RFC 6761).
REGISTRY_HOST = "registry.localhost"
PAUSE_IMAGE = f"{REGISTRY_HOST}/modeldeploy/pause:1"
CNI_BIN_DIRS = ("/usr/lib/cni",)
FORWARD_CHAIN = "MODELDEPLOY-NODE"
NODE_PROCESSES = ("containerd", "apiserver-relay", "coredns", "kubelet", "kube-proxy")
CLUSTER_DOMAIN = "cluster.local"
# The kernel settings the kubelet insists on (it writes them unless protectKernelDefaults, with
# which it refuses to start): recorded before it starts and put back by teardown.
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
# Debian packages the node needs (CNI plugins, iptables for kube-proxy and the bridge rules).
DEBIAN_PACKAGES = ("containernetworking-plugins", "iptables", "iproute2", "conntrack", "mount")


@dataclasses.dataclass(frozen=True)
class NodeLayout:
    """Where the node's files live: config and data in the cluster directory, runtime state and
    sockets in /run (short paths: a unix socket path has at most 107 bytes), images in the cache
    (kept across down/up, so a warm start pulls nothing)."""

    cluster: Layout
    run_dir: Path

    @classmethod
    def of(cls, layout: Layout) -> NodeLayout:
        import hashlib

        key = hashlib.sha256(str(layout.dir).encode()).hexdigest()[:8]
        return cls(layout, Path("/run/modeldeploy") / key)

    @property
    def dir(self) -> Path:
        return self.cluster.dir / "node"

    @property
    def containerd_root(self) -> Path:
        return cache_dir() / "containerd"

    @property
    def containerd_state(self) -> Path:
        return self.run_dir / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.dir / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.dir / "pod-logs"

    @property
    def cni_conf(self) -> Path:
        return self.dir / "cni" / "net.d"

    @property
    def cni_data(self) -> Path:
        return self.dir / "cni" / "data"

    @property
    def certs_d(self) -> Path:
        return self.dir / "certs.d"

    @property
    def bin(self) -> Path:
        """The names containerd looks up on PATH (containerd-shim-runc-v2), unversioned."""
        return self.dir / "bin"

    @property
    def host_record(self) -> Path:
        """What the host was like before the node changed it (sysctls, nftables tables)."""
        return self.dir / "host-before.json"


# --------------------------------------------------------------------------
# The host-wide lock
# --------------------------------------------------------------------------


class NodeLock:
    """One real node per host: an exclusive lock held by the process that runs `up`, recorded
    with the cluster directory that holds the node."""

    PATH = Path("/run/modeldeploy/node.owner")

    @classmethod
    def claim(cls, owner: Path) -> None:
        cls.PATH.parent.mkdir(parents=True, exist_ok=True)
        with cls._locked() as fh:
            current = fh.read().strip()
            if current and current != str(owner) and _owner_alive(Path(current)):
                raise ClusterError(
                    f"the real node of this host belongs to the cluster in {current} (one kubelet per host): "
                    f"stop it first (python3 -m localcluster down --dir {current}), or start this one with --no-node"
                )
            fh.seek(0)
            fh.truncate()
            fh.write(str(owner))

    @classmethod
    def release(cls, owner: Path) -> None:
        if not cls.PATH.exists():
            return
        with cls._locked() as fh:
            if fh.read().strip() == str(owner):
                fh.seek(0)
                fh.truncate()

    @classmethod
    @contextlib.contextmanager
    def _locked(cls) -> Any:
        with cls.PATH.open("a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.seek(0)
                yield fh
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _owner_alive(cluster_dir: Path) -> bool:
    """Whether the cluster recorded as the node's owner still runs its kubelet."""
    from localcluster.process import ProcessRecord, is_ours

    try:
        state = json.loads((cluster_dir / "state.json").read_text())
        raw = state["processes"]["kubelet"]
    except (OSError, ValueError, KeyError):
        return False
    return is_ours(ProcessRecord(**raw))


# --------------------------------------------------------------------------
# Host network
# --------------------------------------------------------------------------


def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def setup_network() -> None:
    """The bridge, its routes and rules; idempotent (a leftover bridge is reused)."""
    if _sh("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        _sh("ip", "link", "add", BRIDGE, "type", "bridge")
    prefix = POD_CIDR.split("/")[1]
    if NODE_IP not in _sh("ip", "-4", "addr", "show", "dev", BRIDGE).stdout:
        _sh("ip", "addr", "add", f"{NODE_IP}/{prefix}", "dev", BRIDGE)
    _sh("ip", "link", "set", BRIDGE, "up")
    # The host reaches Services through the bridge, never through its real interface.
    _sh("ip", "route", "replace", SERVICE_CLUSTER_IP_RANGE, "dev", BRIDGE, "src", NODE_IP)
    # kwok's fake pod IPs are written into Endpoints: traffic to them must not leave the host.
    _sh("ip", "route", "replace", "unreachable", KWOK_POD_CIDR)
    # Pods reach Services (DNAT on the host, back out of the bridge); global forwarding stays off.
    Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/forwarding").write_text("1")
    # Nothing from a pod may leave the bridge for another interface (pods have no egress). In the
    # mangle table, which the kernel passes before filter, where kube-proxy's ACCEPT rules are.
    if _sh("iptables", "-w", "-t", "mangle", "-N", FORWARD_CHAIN, check=False).returncode == 0:
        _sh("iptables", "-w", "-t", "mangle", "-A", FORWARD_CHAIN, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP")
    if _sh("iptables", "-w", "-t", "mangle", "-C", "FORWARD", "-j", FORWARD_CHAIN, check=False).returncode != 0:
        _sh("iptables", "-w", "-t", "mangle", "-I", "FORWARD", "1", "-j", FORWARD_CHAIN)


def teardown_network() -> None:
    _sh("iptables", "-w", "-t", "mangle", "-D", "FORWARD", "-j", FORWARD_CHAIN, check=False)
    _sh("iptables", "-w", "-t", "mangle", "-F", FORWARD_CHAIN, check=False)
    _sh("iptables", "-w", "-t", "mangle", "-X", FORWARD_CHAIN, check=False)
    _sh("ip", "route", "del", "unreachable", KWOK_POD_CIDR, check=False)
    _sh("ip", "route", "del", SERVICE_CLUSTER_IP_RANGE, "dev", BRIDGE, check=False)
    # Leftover veths of pods whose sandbox could not be removed go with the bridge's ports.
    for port in _bridge_ports():
        _sh("ip", "link", "del", port, check=False)
    _sh("ip", "link", "del", BRIDGE, check=False)


def _bridge_ports() -> list[str]:
    result = _sh("ip", "-j", "link", "show", "master", BRIDGE, check=False)
    try:
        return [link["ifname"] for link in json.loads(result.stdout or "[]")]
    except (ValueError, KeyError):
        return []


# --------------------------------------------------------------------------
# Configuration files
# --------------------------------------------------------------------------


def prepare(node: NodeLayout, b: Binaries, registry_port: int) -> None:
    """Write every configuration file of the node for this run."""
    for d in (node.dir, node.bin, node.cni_conf, node.cni_data, node.kubelet_root, node.pod_logs, node.run_dir):
        d.mkdir(parents=True, exist_ok=True)
    for name in ("containerd-shim-runc-v2", "runc", "ctr", "crictl", "containerd"):
        link = node.bin / name
        link.unlink(missing_ok=True)
        link.symlink_to(b[name])
    (node.dir / "containerd.toml").write_text(containerd_config(node))
    write_registry_hosts(node.certs_d, registry_port)
    (node.cni_conf / "10-modeldeploy.conflist").write_text(json.dumps(cni_config(node), indent=2))
    # The host's resolver is never used by pods (dnsPolicy Default gets this file): cluster DNS
    # (CoreDNS on the node's address) answers the cluster's names and nothing else.
    (node.dir / "resolv.conf").write_text(f"nameserver {NODE_IP}\noptions ndots:1\n")
    (node.dir / "kubelet.yaml").write_text(json.dumps(kubelet_config(node), indent=2))
    (node.dir / "crictl.yaml").write_text(
        f"runtime-endpoint: unix://{node.containerd_socket}\nimage-endpoint: unix://{node.containerd_socket}\n"
        "timeout: 30\n"
    )


def containerd_config(node: NodeLayout) -> str:
    cri_runtime = "plugins.'io.containerd.cri.v1.runtime'"
    cri_images = "plugins.'io.containerd.cri.v1.images'"
    return f"""# Generated by localcluster (node.py) for this run.
version = 3
root = "{node.containerd_root}"
state = "{node.containerd_state}"
# Nothing of the host's containerd setup (/etc/containerd, /opt/containerd, /var/run/nri) is used.
imports = []
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.nri.v1.nri",
  "io.containerd.image-verifier.v1.bindir",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{node.containerd_socket}"

[ttrpc]
  address = "{node.run_dir / "containerd.ttrpc.sock"}"

[debug]
  address = ""
  level = "warn"

[metrics]
  address = ""

[{cri_images}]
  snapshotter = "overlayfs"
  # The kubelet asks containerd to pull; images come only from the local registry.
  [{cri_images}.pinned_images]
    sandbox = "{PAUSE_IMAGE}"
  [{cri_images}.registry]
    config_path = "{node.certs_d}"

[{cri_runtime}]
  # Root on these machines lacks CAP_SYS_RESOURCE: without this every sandbox fails with
  # "failed to update /proc/self/oom_score_adj: Permission denied".
  restrict_oom_score_adj = true
  # Network namespaces are pinned under the state dir, not in the host's /var/run/netns.
  netns_mounts_under_state_dir = true
  enable_cdi = false
  cdi_spec_dirs = []
  [{cri_runtime}.cni]
    bin_dirs = {json.dumps(list(CNI_BIN_DIRS))}
    conf_dir = "{node.cni_conf}"
    max_conf_num = 1
  [{cri_runtime}.containerd]
    default_runtime_name = "runc"
    [{cri_runtime}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri_runtime}.containerd.runtimes.runc.options]
        BinaryName = "{node.bin / "runc"}"
        SystemdCgroup = false

[plugins.'io.containerd.grpc.v1.cri']
  # kubectl exec/logs/port-forward streams: loopback only.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""


def write_registry_hosts(certs_d: Path, registry_port: int) -> None:
    """containerd's hosts.toml: the local registry's name to its port, every other registry to
    nowhere, so a pod naming an image elsewhere fails at once (ErrImagePull) without a lookup."""
    for host, server in ((REGISTRY_HOST, f"http://127.0.0.1:{registry_port}"), ("_default", "http://127.0.0.1:9")):
        d = certs_d / host
        d.mkdir(parents=True, exist_ok=True)
        (d / "hosts.toml").write_text(
            f'server = "{server}"\n\n[host."{server}"]\n  capabilities = ["pull", "resolve"]\n  skip_verify = true\n'
        )


def cni_config(node: NodeLayout) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "modeldeploy",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                # No default route and no masquerade: pods reach only the bridge's subnet and Services.
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(node.cni_data),
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": SERVICE_CLUSTER_IP_RANGE, "gw": NODE_IP}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(node: NodeLayout, port: int = 0, healthz_port: int = 0) -> dict[str, Any]:
    pki = node.cluster.pki
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # cgroup v1 on these machines: kubelet 1.35+ refuses it unless told (deprecated, KEP-5573).
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{node.containerd_socket}",
        "imageServiceEndpoint": f"unix://{node.containerd_socket}",
        # The kubelet's own port (logs, exec, port-forward) on the node's bridge address, which only
        # this host and its pods reach; its health port on loopback.
        "address": NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "resolvConf": str(node.dir / "resolv.conf"),
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [NODE_IP],
        "podLogsDir": str(node.pod_logs),
        "serializeImagePulls": False,
        "registerNode": True,
        "maxPods": 110,
        # A shared development disk: evict only when it is really full.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "2%",
            "imagefs.available": "2%",
            "nodefs.inodesFree": "2%",
        },
        "imageGCHighThresholdPercent": 95,
        "imageGCLowThresholdPercent": 90,
        "shutdownGracePeriod": "0s",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "protectKernelDefaults": False,
        "nodeStatusReportFrequency": "10s",
    }


def kube_proxy_config(node: NodeLayout, healthz_port: int, metrics_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(node.cluster.component_kubeconfig("kube-proxy"))},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "detectLocalMode": "ClusterCIDR",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        # NodePorts only on the bridge address, never on loopback or the real interface.
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        # Change no sysctl: keep the host's conntrack table size and timeouts.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


# --------------------------------------------------------------------------
# Command lines
# --------------------------------------------------------------------------


def containerd_args(node: NodeLayout) -> list[str]:
    return [str(node.bin / "containerd"), f"--config={node.dir / 'containerd.toml'}"]


def containerd_env(node: NodeLayout) -> dict[str, str]:
    return {"PATH": f"{node.bin}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}


def relay_args(apiserver_port: int) -> list[str]:
    relay = Path(__file__).with_name("relay.py")
    return [sys.executable, str(relay), f"{NODE_IP}:{apiserver_port}", f"127.0.0.1:{apiserver_port}"]


def corefile(node: NodeLayout, health_port: int, port: int = 53) -> str:
    """Cluster names from the API server; every other name NXDOMAIN, never forwarded anywhere."""
    kubeconfig = node.cluster.component_kubeconfig("coredns")
    return f"""{CLUSTER_DOMAIN}:{port} in-addr.arpa:{port} ip6.arpa:{port} {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:{health_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} modeldeploy-local
        pods insecure
        ttl 5
    }}
    cache 5
}}
.:{port} {{
    bind {NODE_IP}
    errors
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"""


def coredns_args(b: Binaries, node: NodeLayout, health_port: int) -> list[str]:
    (node.dir / "Corefile").write_text(corefile(node, health_port))
    return [str(b["coredns"]), "-conf", str(node.dir / "Corefile"), "-dns.port", "53", "-quiet"]


# What CoreDNS's kubernetes plugin reads (the ClusterRole of CoreDNS's own manifests).
COREDNS_RBAC: tuple[dict[str, Any], ...] = (
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "system:coredns"},
        "rules": [
            {"apiGroups": [""], "resources": ["services", "pods", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "system:coredns"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}],
    },
)


def kubelet_args(b: Binaries, node: NodeLayout, port: int, healthz_port: int) -> list[str]:
    config = node.dir / "kubelet.yaml"
    config.write_text(json.dumps(kubelet_config(node, port, healthz_port), indent=2))
    labels = ",".join(f"{k}={v}" for k, v in NODE_LABELS.items())
    return [
        str(b["kubelet"]),
        f"--config={config}",
        f"--kubeconfig={node.cluster.component_kubeconfig('kubelet')}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={NODE_IP}",
        f"--root-dir={node.kubelet_root}",
        f"--node-labels={labels}",
        "--v=1",
    ]


def kube_proxy_args(b: Binaries, node: NodeLayout, healthz_port: int, metrics_port: int) -> list[str]:
    config = node.dir / "kube-proxy.yaml"
    config.write_text(json.dumps(kube_proxy_config(node, healthz_port, metrics_port), indent=2))
    return [str(b["kube-proxy"]), f"--config={config}", "--v=1"]


def kubernetes_endpoints(apiserver_port: int) -> dict[str, Any]:
    """The `kubernetes` Service's endpoints: the relay on the bridge address (the API server's
    endpoint reconciler is off, since it advertises a loopback address)."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": "kubernetes",
                "endpointslice.kubernetes.io/managed-by": "localcluster.modeldeploy.dev",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": apiserver_port, "protocol": "TCP"}],
    }


# --------------------------------------------------------------------------
# Kernel settings
# --------------------------------------------------------------------------


def record_host_state(node: NodeLayout) -> None:
    """Remember what the node will change on the host, before it does (only once: a restart
    keeps the originals): the kernel settings the kubelet writes, the nftables tables there are."""
    if node.host_record.exists():
        return
    values = {key: Path(f"/proc/sys/{key}").read_text().strip() for key in KUBELET_SYSCTLS}
    node.host_record.write_text(json.dumps({"sysctls": values, "nft_tables": nft_tables()}))


def _recorded(node: NodeLayout) -> dict[str, Any]:
    try:
        found: dict[str, Any] = json.loads(node.host_record.read_text())
    except (OSError, ValueError):
        return {}
    return found


def restore_sysctls(node: NodeLayout, log: Callable[[str], None]) -> None:
    values: Mapping[str, str] = _recorded(node).get("sysctls", {})
    for key, value in values.items():
        path = Path(f"/proc/sys/{key}")
        try:
            if path.read_text().strip() != value:
                path.write_text(value)
                log(f"restored {key.replace('/', '.')} = {value}")
        except OSError as err:
            log(f"could not restore {key}: {err}")


def forget_host_state(node: NodeLayout) -> None:
    node.host_record.unlink(missing_ok=True)


# --------------------------------------------------------------------------
# Teardown
# --------------------------------------------------------------------------


def remove_pods(node: NodeLayout, log: Callable[[str], None]) -> None:
    """Stop and remove every pod sandbox through CRI (containerd still running), so that CNI
    releases each pod's address and interface as it would for a kubelet."""
    if not node.containerd_socket.exists():
        return
    crictl = [str(node.bin / "crictl"), f"--config={node.dir / 'crictl.yaml'}"]
    result = subprocess.run([*crictl, "pods", "-q"], capture_output=True, text=True, check=False, timeout=60)
    pods = result.stdout.split()
    if not pods:
        return
    removed = subprocess.run([*crictl, "rmp", "-f", *pods], capture_output=True, text=True, check=False, timeout=120)
    if removed.returncode != 0:
        log(f"crictl rmp: {removed.stderr.strip()[-500:]}")
    log(f"removed {len(pods)} pod sandbox(es)")


def kill_leftovers(node: NodeLayout, log: Callable[[str], None]) -> None:
    """Processes containerd started for us that outlived it: its shims (identified by our
    socket on their command line) and whatever still runs in the kubepods cgroups."""
    socket = str(node.containerd_socket)
    shim = str(node.bin / "containerd-shim-runc-v2")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            argv
            and argv[0].decode(errors="replace") in (shim, str(Path(shim).resolve()))
            and socket.encode() in b" ".join(argv)
        ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry), 9)
                log(f"killed leftover shim {entry}")
    for pid in _pids_in_kubepods():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
            log(f"killed leftover container process {pid}")


def _kubepods_dirs() -> list[Path]:
    root = Path("/sys/fs/cgroup")
    found = []
    for controller in sorted(root.iterdir()) if root.exists() else ():
        d = controller / "kubepods"
        if d.is_dir():
            found.append(d)
    return found


def _pids_in_kubepods() -> set[int]:
    pids: set[int] = set()
    for base in _kubepods_dirs():
        for procs in base.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def remove_cgroups(log: Callable[[str], None]) -> None:
    for base in _kubepods_dirs():
        for d in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            base.rmdir()
    if any(_kubepods_dirs()):
        log("some kubepods cgroups could not be removed (processes still in them?)")


def _mounts_under(*roots: Path) -> list[str]:
    mounts = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4].replace("\\040", " ")
            if any(point == str(r) or point.startswith(str(r) + "/") for r in roots):
                mounts.append(point)
    return sorted(set(mounts), key=len, reverse=True)


def remove_tree(path: Path, log: Callable[[str], None]) -> None:
    """Delete a directory of the node's, but never through a mount point that is still there."""
    left = _mounts_under(path)
    if left:
        log(f"not removing {path}: still mounted below it: {', '.join(left[:5])}")
        return
    shutil.rmtree(path, ignore_errors=True)


def unmount_under(*roots: Path, log: Callable[[str], None]) -> None:
    """Lazily unmount every mount point below the given directories, deepest first."""
    for point in _mounts_under(*roots):
        result = subprocess.run(["umount", "-l", point], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log(f"umount {point}: {result.stderr.strip()}")


def kube_proxy_cleanup(b: Binaries, node: NodeLayout, log: Callable[[str], None]) -> None:
    """kube-proxy --cleanup removes its rules; the chains it and the kubelet leave behind (empty
    KUBE-FIREWALL, canaries, hints) go too."""
    config = node.dir / "kube-proxy.yaml"
    if config.exists():
        subprocess.run(
            [str(b["kube-proxy"]), f"--config={config}", "--cleanup"],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
    for tool in ("iptables", "ip6tables"):
        for hook in ("INPUT", "OUTPUT"):
            while _sh(tool, "-w", "-D", hook, "-j", "KUBE-FIREWALL", check=False).returncode == 0:
                pass
        for table in ("filter", "nat", "mangle"):
            for chain in ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-PROXY-CANARY", "KUBE-IPTABLES-HINT"):
                _sh(tool, "-w", "-t", table, "-F", chain, check=False)
                _sh(tool, "-w", "-t", table, "-X", chain, check=False)
    log("kube-proxy rules removed")


def remove_created_nft_tables(node: NodeLayout) -> None:
    """The iptables-nft tables that did not exist before the node started and hold no rule now."""
    before = set(_recorded(node).get("nft_tables", []))
    for table in set(nft_tables()) - before:
        listing = _sh("nft", "-j", "list", "table", *table.split(), check=False).stdout
        try:
            objects = json.loads(listing or "{}").get("nftables", [])
        except ValueError:
            continue
        if not any("rule" in obj for obj in objects):
            _sh("nft", "delete", "table", *table.split(), check=False)


def nft_tables() -> list[str]:
    """The host's nftables tables as "family name" (iptables-nft keeps its tables there)."""
    out = _sh("nft", "list", "tables", check=False).stdout
    return [line.removeprefix("table ").strip() for line in out.splitlines() if line.startswith("table ")]


def wait_gone(check: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while check():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


def system_packages_missing() -> list[str]:
    """Debian packages the node needs that are not installed."""
    missing = []
    if not any((Path(d) / "bridge").exists() for d in CNI_BIN_DIRS):
        missing.append("containernetworking-plugins")
    for tool, package in (("iptables", "iptables"), ("ip", "iproute2"), ("nft", "nftables")):
        if not any((Path(d) / tool).exists() for d in ("/usr/sbin", "/sbin", "/usr/bin")):
            missing.append(package)
    return missing


def log_to(stream: IO[str]) -> Callable[[str], None]:
    return lambda msg: print(f"[node] {msg}", file=stream, flush=True)
