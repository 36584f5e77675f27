"""A real local Kubernetes cluster without Docker, for development and tests.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as plain processes on free
loopback ports; kwok plays the kubelet for a few fake nodes (some with ``nvidia.com/gpu``
capacity); and a real node (containerd, runc, CNI, kubelet, kube-proxy, CoreDNS and a local
registry) runs the pods that must really run. Every binary is built from upstream Go modules by
``build.sh`` and cached by version (``versions.env``); images are built from Debian packages and
PyPI wheels (``images.py``).

The cluster itself needs only the standard library, so it starts before any project dependency
is installed. Modules, one per component: ``versions`` (pins, cache, binaries), ``process``
(start, check, stop a process), ``pki``, ``api``, ``controlplane``, ``node``, ``registry``,
``images``, ``teardown``, ``cluster`` (LocalCluster), ``info`` (ClusterInfo). ``kit`` (driving a
cluster from tests: kubectl, helm, the operator) and ``realstack`` (Prometheus, ``bentoml serve``,
load on loopback) need the project's dependencies.

Command line: ``python -m localcluster up|down|status|env|images|...`` (see ``--help``).

Python::

    from localcluster import LocalCluster
    info = LocalCluster(".cluster").up()     # ClusterInfo
    subprocess.run([info.kubectl, "get", "nodes"], env=info.env())
    LocalCluster(".cluster").down()
"""

from localcluster.cluster import DEFAULT_DIR, LocalCluster
from localcluster.controlplane import DEFAULT_NODES, KWOK_TOLERATION, FakeNode
from localcluster.info import ClusterInfo
from localcluster.node import NODE_NAME, REGISTRY_HOST
from localcluster.process import ClusterError
from localcluster.versions import cache_dir, gateway_api_crds_dir, install_gateway_api_crds, load_versions

__all__ = [
    "DEFAULT_DIR",
    "DEFAULT_NODES",
    "KWOK_TOLERATION",
    "NODE_NAME",
    "REGISTRY_HOST",
    "ClusterError",
    "ClusterInfo",
    "FakeNode",
    "LocalCluster",
    "cache_dir",
    "gateway_api_crds_dir",
    "install_gateway_api_crds",
    "load_versions",
]
