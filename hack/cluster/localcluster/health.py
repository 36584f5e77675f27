"""How the local cluster tells that each of its processes is healthy: one check per component,
used while starting it and by `status`."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from localcluster import controlplane as cp
from localcluster import node, registry
from localcluster.api import Api
from localcluster.process import http_ok


def unix_socket_ok(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def tcp_ok(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def check(name: str, state: Mapping[str, Any], api: Api, node_layout: node.NodeLayout) -> Callable[[], bool]:
    """The health check of component NAME of the cluster STATE describes."""
    ports = state["ports"]
    loopback = {
        "kubelet": f"http://127.0.0.1:{ports.get('kubelet-healthz')}/healthz",
        "kube-proxy": f"http://127.0.0.1:{ports.get('kube-proxy-healthz')}/healthz",
        "coredns": f"http://127.0.0.1:{ports.get('coredns-health')}/health",
        "registry": registry.health_url(ports.get("registry", 0)),
        **state.get("health", {}),  # add-ons started with LocalCluster.start_component
        **cp.health_urls(ports),
    }
    if name == "kube-apiserver":
        # Verified TLS with the admin certificate: this is what clients see.
        return lambda: api.ok("/readyz")
    if name == "containerd":
        return lambda: unix_socket_ok(node_layout.containerd_socket)
    if name == "apiserver-relay":
        return lambda: tcp_ok(node.NODE_IP, ports["kube-apiserver"])
    url = loopback[name]
    return lambda: http_ok(url)
