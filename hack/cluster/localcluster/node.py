"""The real node: containerd, runc, CNI, kubelet and kube-proxy, where containers really run.

One real node per host (two kubelets would share the kubepods cgroups and kill each other's
pods): a host-wide lock (`NodeLock`) says which cluster holds it. The node's network is a bridge
of its own with a /24 that only this host and its pods can reach; pods have no route out of it
(no egress by design): the Service range is routed to the bridge, forwarding is enabled on the
bridge only, and a forward-path rule drops whatever would leave it for another interface.

This module says what the node is (names, addresses, where its files live, who holds it);
`nodeconfig` writes its configuration files and command lines, `hostnet` changes the host's
network for it and puts everything back, `teardown` removes its pods, mounts and cgroups, and
`cluster.py` starts and stops its processes through `process.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
from pathlib import Path
from typing import Any

from localcluster.controlplane import Layout
from localcluster.process import ClusterError
from localcluster.versions import cache_dir

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


def system_packages_missing() -> list[str]:
    """Debian packages the node needs that are not installed."""
    missing = []
    if not any((Path(d) / "bridge").exists() for d in CNI_BIN_DIRS):
        missing.append("containernetworking-plugins")
    for tool, package in (("iptables", "iptables"), ("ip", "iproute2"), ("nft", "nftables")):
        if not any((Path(d) / tool).exists() for d in ("/usr/sbin", "/sbin", "/usr/bin")):
            missing.append(package)
    return missing
