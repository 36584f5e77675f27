"""Teardown of the real node: its pods and containers, leftover processes, mounts, cgroups and
kube-proxy's rules, in the order `LocalCluster.down` needs them."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from localcluster import hostnet, node
from localcluster.hostnet import sh
from localcluster.node import NodeLayout
from localcluster.process import ProcessRecord, stop
from localcluster.state import record
from localcluster.versions import Binaries

# `down` stops processes tier by tier: the node's agents, then the node's runtime and services,
# then the clients of the API server, the API server, etcd.
STOP_TIERS = (
    ("kube-proxy", "kubelet", "traefik"),
    ("containerd",),
    ("coredns", "apiserver-relay", "registry"),
    ("kwok", "kube-scheduler", "kube-controller-manager"),
    ("kube-apiserver",),
    ("etcd",),
)


def stop_cluster(state: Mapping[str, Any], layout: NodeLayout, directory: Path, log: Callable[[str], None]) -> None:
    """Stop a cluster's recorded processes tier by tier; with a real node, also its pods and what it changed."""
    with_node = bool(state.get("real_node"))

    def records(names: Sequence[str]) -> list[ProcessRecord]:
        return [r for n in names if (r := record(state, n)) is not None]

    tiers = [records(t) for t in STOP_TIERS]
    stop([tiers[0]], log=log)  # kubelet and kube-proxy
    if with_node:
        remove_pods(layout, log)
    stop([tiers[1]], log=log)  # containerd
    if with_node:
        after_containerd(layout, Binaries.pinned(state.get("versions")), log)
        node.NodeLock.release(directory)
    stop(tiers[2:], log=log)


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
            while sh(tool, "-w", "-D", hook, "-j", "KUBE-FIREWALL", check=False).returncode == 0:
                pass
        for table in ("filter", "nat", "mangle"):
            for chain in ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-PROXY-CANARY", "KUBE-IPTABLES-HINT"):
                sh(tool, "-w", "-t", table, "-F", chain, check=False)
                sh(tool, "-w", "-t", table, "-X", chain, check=False)
    log("kube-proxy rules removed")


def after_containerd(node: NodeLayout, b: Binaries, log: Callable[[str], None]) -> None:
    """Everything but the pods, once containerd is stopped: leftover processes, kube-proxy's
    rules, mounts, the host network, cgroups, kernel settings, the node's runtime files."""
    kill_leftovers(node, log)
    kube_proxy_cleanup(b, node, log)
    unmount_under(node.kubelet_root, node.containerd_state, log=log)
    hostnet.teardown_network()
    hostnet.remove_created_nft_tables(node)
    remove_cgroups(log)
    hostnet.restore_sysctls(node, log)
    hostnet.forget_host_state(node)
    for tree in (node.run_dir, node.kubelet_root, node.cni_data):
        remove_tree(tree, log)
