"""Fixtures of the cluster tier beyond tests/clusterstack.py."""

from __future__ import annotations

import pytest

from localcluster.kit import Cluster, wait_for


@pytest.fixture(scope="module")
def gateway_api(cluster: Cluster) -> Cluster:
    """The Gateway API CRDs (from the sigs.k8s.io/gateway-api module), installed for a module's tests."""
    from localcluster import install_gateway_api_crds

    install_gateway_api_crds(cluster.kubeconfig, cluster.kubectl_bin)
    wait_for(
        lambda: cluster.kubectl("get", "httproutes", "-A", check=False).returncode == 0,
        timeout=60,
        what="HTTPRoute to be served",
    )
    return cluster
