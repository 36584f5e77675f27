"""LocalCluster: the control plane, kwok's fake nodes and the real node, started and stopped as one.

Layout of ``dir``: ``kubeconfig`` (admin), ``bin/`` (kubectl, helm), ``logs/<component>.log``,
``pki/``, ``etcd/`` (data), ``node/`` (the real node's configuration and kubelet data),
``images/`` (buildah's configuration for this run), ``state.json`` (PIDs, ports, command lines).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import time
import urllib.error
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from localcluster import controlplane as cp
from localcluster import health, hostnet, images, node, nodeconfig, pki, registry, teardown
from localcluster.api import Api
from localcluster.info import ClusterInfo, stderr_log
from localcluster.process import ClusterError, failure, free_ports, gone, is_ours, spawn, stop
from localcluster.process import wait as wait_until
from localcluster.state import STATE_VERSION, StateFile, record
from localcluster.versions import (
    CONTROL_PLANE_COMPONENTS,
    NODE_COMPONENTS,
    REPO_ROOT,
    Binaries,
    ensure_binaries,
    install_gateway_api_crds,
    load_versions,
)

DEFAULT_DIR = REPO_ROOT / ".cluster"
NODE_PORTS = ("registry", "kubelet", "kubelet-healthz", "kube-proxy-healthz", "kube-proxy-metrics", "coredns-health")


class LocalCluster:
    """A local control plane, kwok nodes and (unless real_node=False) a real node."""

    def __init__(
        self,
        directory: Path | str = DEFAULT_DIR,
        *,
        nodes: Sequence[cp.FakeNode] = cp.DEFAULT_NODES,
        real_node: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.layout = cp.Layout(Path(directory).resolve())
        self.dir = self.layout.dir
        self.nodes = tuple(nodes)
        self.real_node = real_node
        self.node = node.NodeLayout.of(self.layout)
        self._log = log or stderr_log
        self.kubeconfig = self.layout.kubeconfig
        self.bin_dir = self.layout.bin
        self.state = StateFile(self.dir)

    # ---- public API -----------------------------------------------------

    def up(self, timeout: float = 180.0) -> ClusterInfo:
        """Start the cluster, or return at once if it is already up and healthy.

        Builds missing binaries and images first (cold: many minutes). ``timeout`` bounds the
        start of the processes, not the builds.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.state.lock():
            info = self._healthy_info()
            if info is not None and info.real_node >= self.real_node:
                self._log(f"already up: {info.server}")
                return info
            if self.state.exists():
                self._log("stale state (a process died, is unhealthy, or no real node): cleaning up")
                self._stop_recorded()
            components = CONTROL_PLANE_COMPONENTS + (NODE_COMPONENTS if self.real_node else ())
            if self.real_node:
                _require_system_packages()
            binaries = ensure_binaries(components)
            started = time.monotonic()
            info = self._start(binaries, deadline=started + timeout)
            self._log(f"up in {time.monotonic() - started:.1f}s: {info.server}, KUBECONFIG={info.kubeconfig}")
            return info

    def down(self) -> None:
        """Stop what this cluster started (nothing else): processes, pods, the node's network."""
        if not self.dir.exists():
            return
        with self.state.lock():
            self._stop_recorded()

    def is_up(self) -> bool:
        return self._healthy_info() is not None

    def info(self) -> ClusterInfo | None:
        """The recorded cluster, whether or not it is healthy."""
        state = self.state.read()
        return self._info_from_state(state) if state else None

    def status(self) -> dict[str, Any]:
        """Per-component liveness and health, for humans and `status`."""
        state = self.state.read()
        if state is None:
            return {"dir": str(self.dir), "up": False, "components": {}}
        components: dict[str, Any] = {}
        for name in state["processes"]:
            rec = record(state, name)
            alive = rec is not None and is_ours(rec)
            components[name] = {
                "pid": rec.pid if rec else None,
                "running": alive,
                "healthy": alive and self._component_healthy(name, state),
                "log": rec.log if rec else None,
            }
        return {
            "dir": str(self.dir),
            "up": all(c["healthy"] for c in components.values()),
            "server": state["server"],
            "ports": state["ports"],
            "real_node": state.get("real_node", False),
            "components": components,
        }

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this cluster."""
        cmd = [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(cmd, input=input, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise ClusterError(f"{shlex.join(cmd)} failed ({result.returncode}):\n{result.stderr.strip()}")
        return result

    def install_gateway_api_crds(self) -> None:
        install_gateway_api_crds(self.kubeconfig, self.bin_dir / "kubectl")

    def wait_for_default_service_account(self, namespace: str, timeout: float = 30.0) -> None:
        """Pods are rejected until a new namespace's `default` ServiceAccount exists."""
        state = self.state.read()
        if state is None:
            raise ClusterError("cluster is not up")
        api = Api(state["server"], self.layout.pki)
        wait_until(
            f"ServiceAccount {namespace}/default",
            lambda: api.ok(f"/api/v1/namespaces/{namespace}/serviceaccounts/default"),
            time.monotonic() + timeout,
            self._log,
        )

    def start_component(
        self,
        name: str,
        args: list[str],
        *,
        health_url: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> None:
        """Start one more process for a running cluster (an add-on such as the Gateway), recorded
        with the others so that `down` stops it, and wait until HEALTH_URL answers 200."""
        with self.state.lock():
            state = self.state.read()
            if state is None:
                raise ClusterError(f"the cluster in {self.dir} is not up")
            old = record(state, name)
            if old is not None:
                stop([[old]], log=self._log)
            state.setdefault("health", {})[name] = health_url
            self._spawn(state, name, args, env)
            api = Api(state["server"], self.layout.pki)
            self._wait_healthy(state, name, api, time.monotonic() + timeout)

    def restart_component(self, name: str, *, kill: bool = True, timeout: float = 60.0) -> float:
        """Stop one recorded process (SIGKILL, or SIGTERM with kill=False) and start it again with the same
        command line, ports and data (etcd keeps its store): a crash or a restart, for chaos tests.
        Returns the seconds from the stop until its health check passed again."""
        with self.state.lock():
            state = self.state.read()
            old = record(state, name) if state else None
            if state is None or old is None:
                raise ClusterError(f"the cluster in {self.dir} has no process {name!r} to restart")
            stopped = time.monotonic()
            if kill and is_ours(old):
                os.kill(old.pid, signal.SIGKILL)
            stop([[old]], log=self._log)
            # A process stops being "ours" as it starts exiting, but its other threads hold its sockets (the port)
            # until the last one is gone and the process reaped: by us if it is our child, else by init.
            wait_until(f"{name} (pid {old.pid}) gone", lambda: gone(old.pid), time.monotonic() + 15)
            self._spawn(state, name, old.cmdline, state.get("env", {}).get(name), append=True)
            self._wait_healthy(state, name, Api(state["server"], self.layout.pki), time.monotonic() + timeout)
            return time.monotonic() - stopped

    def component_alive(self, name: str) -> bool:
        state = self.state.read()
        rec = record(state, name) if state else None
        return rec is not None and is_ours(rec)

    # ---- start ----------------------------------------------------------

    def _start(self, b: Binaries, deadline: float) -> ClusterInfo:
        layout = self.layout
        for d in (layout.logs, layout.bin):
            d.mkdir(parents=True, exist_ok=True)
        if self.real_node:
            node.NodeLock.claim(self.dir)
        pki.ensure_pki(
            layout.pki, kubernetes_service_ip=cp.KUBERNETES_SERVICE_IP, node_name=node.NODE_NAME, node_ip=node.NODE_IP
        )
        names = cp.PORTS + (NODE_PORTS if self.real_node else ())
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        server = f"https://127.0.0.1:{ports['kube-apiserver']}"
        self._write_kubeconfigs(server)
        self._link_tools(b)
        (layout.dir / "kwok").mkdir(exist_ok=True)
        (layout.dir / "kwok" / "kwok.yaml").write_text(cp.kwok_config(b))
        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "server": server,
            "ports": ports,
            "versions": load_versions(),
            "real_node": self.real_node,
            "processes": {},
            "started_at": time.time(),
        }
        api = Api(server, layout.pki)
        try:
            self._start_control_plane(state, b, ports, api, deadline)
            if self.real_node:
                self._start_node(state, b, ports, api, deadline)
        except BaseException:
            # Whatever failed (or Ctrl-C): leave nothing running behind.
            self._stop_everything(state)
            raise
        self.state.write(state)
        return self._info_from_state(state)

    def _spawn(
        self,
        state: dict[str, Any],
        name: str,
        args: list[str],
        env: Mapping[str, str] | None = None,
        *,
        append: bool = False,
    ) -> None:
        record = spawn(args, self.layout.logs / f"{name}.log", env, append=append)
        state["processes"][name] = dataclasses.asdict(record)
        if env:  # for restart_component
            state.setdefault("env", {})[name] = dict(env)
        # Written after each spawn so that an interrupted `up` can be cleaned up.
        self.state.write(state)
        self._log(f"started {name} (pid {record.pid}), log: {record.log}")

    def _start_control_plane(
        self, state: dict[str, Any], b: Binaries, ports: Mapping[str, int], api: Api, deadline: float
    ) -> None:
        layout = self.layout
        shutil.rmtree(layout.etcd_data, ignore_errors=True)
        self._spawn(state, "etcd", cp.etcd_args(b, layout, ports))
        self._wait_healthy(state, "etcd", api, deadline)
        self._spawn(state, "kube-apiserver", cp.apiserver_args(b, layout, ports))
        self._wait_healthy(state, "kube-apiserver", api, deadline)
        # These three only need the API server: start them together.
        self._spawn(state, "kube-controller-manager", cp.controller_manager_args(b, layout, ports))
        self._spawn(state, "kube-scheduler", cp.scheduler_args(b, layout, ports))
        self._spawn(state, "kwok", cp.kwok_args(b, layout, ports), env={"HOME": str(layout.dir / "kwok")})
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            self._wait_healthy(state, name, api, deadline)
        for fake in self.nodes:
            api.request("POST", "/api/v1/nodes", fake.manifest())
        names = [n.name for n in self.nodes]
        self._wait_component(
            state,
            "kwok",
            lambda: cp.nodes_ready(api.items("/api/v1/nodes"), names),
            deadline,
            what="fake nodes Ready and untainted",
        )
        self._wait_component(
            state,
            "kube-controller-manager",
            lambda: api.ok("/api/v1/namespaces/default/serviceaccounts/default"),
            deadline,
            what="ServiceAccount default/default",
        )

    def _start_node(
        self, state: dict[str, Any], b: Binaries, ports: Mapping[str, int], api: Api, deadline: float
    ) -> None:
        n = self.node
        n.dir.mkdir(parents=True, exist_ok=True)
        hostnet.record_host_state(n)
        hostnet.setup_network()
        nodeconfig.prepare(n, b, ports["registry"])
        registry_config = n.dir / "registry.yaml"
        registry_config.write_text(registry.config(ports["registry"]))
        registry.storage_dir().mkdir(parents=True, exist_ok=True)
        self._spawn(state, "registry", registry.args(b, registry_config))
        self._spawn(state, "containerd", nodeconfig.containerd_args(n), env=nodeconfig.containerd_env(n))
        self._spawn(state, "apiserver-relay", nodeconfig.relay_args(ports["kube-apiserver"]))
        for manifest in nodeconfig.COREDNS_RBAC:
            kind = manifest["kind"].lower() + "s"
            api.apply(f"/apis/rbac.authorization.k8s.io/v1/{kind}/{manifest['metadata']['name']}", manifest)
        self._spawn(state, "coredns", nodeconfig.coredns_args(b, n, ports["coredns-health"]))
        self._wait_healthy(state, "registry", api, deadline)
        # The sandbox image must be in the registry before the kubelet's first pod.
        images.Builder(ports["registry"], self.dir / "images", self._log).prepare().pause()
        self._wait_healthy(state, "containerd", api, deadline)
        self._spawn(state, "kubelet", nodeconfig.kubelet_args(b, n, ports["kubelet"], ports["kubelet-healthz"]))
        api.apply(
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes",
            nodeconfig.kubernetes_endpoints(ports["kube-apiserver"]),
        )
        self._spawn(
            state,
            "kube-proxy",
            nodeconfig.kube_proxy_args(b, n, ports["kube-proxy-healthz"], ports["kube-proxy-metrics"]),
        )
        self._wait_healthy(state, "kubelet", api, deadline)
        self._wait_component(
            state,
            "kubelet",
            lambda: cp.nodes_ready(api.items("/api/v1/nodes"), [node.NODE_NAME]),
            deadline,
            what=f"node {node.NODE_NAME} Ready and untainted",
        )
        for name in ("kube-proxy", "coredns", "apiserver-relay"):
            self._wait_healthy(state, name, api, deadline)

    def _wait_healthy(self, state: dict[str, Any], name: str, api: Api, deadline: float) -> None:
        self._wait_component(state, name, health.check(name, state, api, self.node), deadline)

    def _wait_component(
        self, state: dict[str, Any], name: str, check: Callable[[], bool], deadline: float, what: str | None = None
    ) -> None:
        rec = record(state, name)
        if rec is None:
            raise ClusterError(f"{name} was never started")

        def ready() -> bool:
            if not is_ours(rec):
                raise ClusterError(failure(name, rec, "exited during start-up"))
            return check()

        try:
            wait_until(what or name, ready, deadline, self._log)
        except TimeoutError:
            raise ClusterError(failure(name, rec, f"not ready in time ({what or 'health check'})")) from None

    def _write_kubeconfigs(self, server: str) -> None:
        layout = self.layout
        # The admin kubeconfig embeds its certificates: it stays valid when copied.
        layout.kubeconfig.write_text(pki.kubeconfig(server, layout.pki, "admin", "admin", embed=True))
        layout.kubeconfig.chmod(0o600)
        for name, user in self._component_identities():
            path = layout.component_kubeconfig(name)
            path.write_text(pki.kubeconfig(server, layout.pki, user, name, embed=False))
            path.chmod(0o600)

    @staticmethod
    def _component_identities() -> tuple[tuple[str, str], ...]:
        """(certificate and kubeconfig name, user) of the components with their own identity."""
        return (
            ("controller-manager", "system:kube-controller-manager"),
            ("scheduler", "system:kube-scheduler"),
            ("kubelet", f"system:node:{node.NODE_NAME}"),
            ("kube-proxy", "system:kube-proxy"),
            ("coredns", "system:coredns"),
        )

    def _link_tools(self, b: Binaries) -> None:
        for name in ("kubectl", "helm"):
            link = self.layout.bin / name
            link.unlink(missing_ok=True)
            link.symlink_to(b[name])

    # ---- stop -------------------------------------------------------------

    def _stop_recorded(self) -> None:
        state = self.state.read()
        if state is not None:
            self._stop_everything(state)
        self.state.remove()
        self.layout.kubeconfig.unlink(missing_ok=True)
        for name, _ in self._component_identities():
            self.layout.component_kubeconfig(name).unlink(missing_ok=True)
        shutil.rmtree(self.layout.etcd_data, ignore_errors=True)

    def _stop_everything(self, state: Mapping[str, Any]) -> None:
        teardown.stop_cluster(state, self.node, self.dir, self._log)

    # ---- state ------------------------------------------------------------

    def _component_healthy(self, name: str, state: Mapping[str, Any]) -> bool:
        return health.check(name, state, Api(state["server"], self.layout.pki), self.node)()

    def _healthy_info(self) -> ClusterInfo | None:
        """Info of a running cluster whose processes are ours and whose API server is ready, else None."""
        state = self.state.read()
        if state is None or not self.layout.kubeconfig.exists():
            return None
        for name in state["processes"]:
            rec = record(state, name)
            if rec is None or not is_ours(rec):
                return None
        try:
            if not Api(state["server"], self.layout.pki).ok("/readyz"):
                return None
        except (OSError, urllib.error.URLError):
            return None
        return self._info_from_state(state)

    def _info_from_state(self, state: Mapping[str, Any]) -> ClusterInfo:
        layout = self.layout
        return ClusterInfo(
            dir=self.dir,
            kubeconfig=layout.kubeconfig,
            bin_dir=layout.bin,
            kubectl=layout.bin / "kubectl",
            helm=layout.bin / "helm",
            server=state["server"],
            ports=dict(state["ports"]),
            pids={n: p["pid"] for n, p in state["processes"].items()},
            versions=dict(state["versions"]),
            real_node=bool(state.get("real_node")),
        )


def _require_system_packages() -> None:
    missing = sorted(set(node.system_packages_missing()) | set(images.missing_tools()))
    if missing:
        raise ClusterError(
            f"the real node needs these Debian packages: {' '.join(missing)} "
            "(make system-packages installs them; or start without the real node: --no-node)"
        )
