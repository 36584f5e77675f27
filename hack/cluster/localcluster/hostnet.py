"""What the real node changes on this host, and how it is put back: the bridge, its routes and
rules, the nftables tables iptables-nft creates, the kernel settings the kubelet writes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from localcluster.controlplane import KWOK_POD_CIDR, SERVICE_CLUSTER_IP_RANGE
from localcluster.node import BRIDGE, FORWARD_CHAIN, KUBELET_SYSCTLS, NODE_IP, POD_CIDR, NodeLayout
from localcluster.process import ClusterError


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def setup_network() -> None:
    """The bridge, its routes and rules; idempotent (a leftover bridge is reused)."""
    if sh("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
    prefix = POD_CIDR.split("/")[1]
    if NODE_IP not in sh("ip", "-4", "addr", "show", "dev", BRIDGE).stdout:
        sh("ip", "addr", "add", f"{NODE_IP}/{prefix}", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    # The host reaches Services through the bridge, never through its real interface.
    sh("ip", "route", "replace", SERVICE_CLUSTER_IP_RANGE, "dev", BRIDGE, "src", NODE_IP)
    # kwok's fake pod IPs are written into Endpoints: traffic to them must not leave the host.
    sh("ip", "route", "replace", "unreachable", KWOK_POD_CIDR)
    # Pods reach Services (DNAT on the host, back out of the bridge); global forwarding stays off.
    Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/forwarding").write_text("1")
    # Nothing from a pod may leave the bridge for another interface (pods have no egress). In the
    # mangle table, which the kernel passes before filter, where kube-proxy's ACCEPT rules are.
    if sh("iptables", "-w", "-t", "mangle", "-N", FORWARD_CHAIN, check=False).returncode == 0:
        sh("iptables", "-w", "-t", "mangle", "-A", FORWARD_CHAIN, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP")
    if sh("iptables", "-w", "-t", "mangle", "-C", "FORWARD", "-j", FORWARD_CHAIN, check=False).returncode != 0:
        sh("iptables", "-w", "-t", "mangle", "-I", "FORWARD", "1", "-j", FORWARD_CHAIN)


def teardown_network() -> None:
    sh("iptables", "-w", "-t", "mangle", "-D", "FORWARD", "-j", FORWARD_CHAIN, check=False)
    sh("iptables", "-w", "-t", "mangle", "-F", FORWARD_CHAIN, check=False)
    sh("iptables", "-w", "-t", "mangle", "-X", FORWARD_CHAIN, check=False)
    sh("ip", "route", "del", "unreachable", KWOK_POD_CIDR, check=False)
    sh("ip", "route", "del", SERVICE_CLUSTER_IP_RANGE, "dev", BRIDGE, check=False)
    # Leftover veths of pods whose sandbox could not be removed go with the bridge's ports.
    for port in _bridge_ports():
        sh("ip", "link", "del", port, check=False)
    sh("ip", "link", "del", BRIDGE, check=False)


def _bridge_ports() -> list[str]:
    result = sh("ip", "-j", "link", "show", "master", BRIDGE, check=False)
    try:
        return [link["ifname"] for link in json.loads(result.stdout or "[]")]
    except (ValueError, KeyError):
        return []


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


def remove_created_nft_tables(node: NodeLayout) -> None:
    """The iptables-nft tables that did not exist before the node started and hold no rule now."""
    before = set(_recorded(node).get("nft_tables", []))
    for table in set(nft_tables()) - before:
        listing = sh("nft", "-j", "list", "table", *table.split(), check=False).stdout
        try:
            objects = json.loads(listing or "{}").get("nftables", [])
        except ValueError:
            continue
        if not any("rule" in obj for obj in objects):
            sh("nft", "delete", "table", *table.split(), check=False)


def nft_tables() -> list[str]:
    """The host's nftables tables as "family name" (iptables-nft keeps its tables there)."""
    out = sh("nft", "list", "tables", check=False).stdout
    return [line.removeprefix("table ").strip() for line in out.splitlines() if line.startswith("table ")]
