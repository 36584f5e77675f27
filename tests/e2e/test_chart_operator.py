"""The chart's own operator Deployment, running from the operator image on a real node.

The rest of the suite drives the operator as a local process with the chart's ServiceAccount;
here the session's process steps aside (one operator at a time) and the chart runs it as a pod,
from the image built by buildah from the project's Dockerfile, with the chart's RBAC.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster import NODE_NAME, LocalCluster
from localcluster.kit import (
    CHART,
    OPERATOR_NAMESPACE,
    RELEASE,
    Cluster,
    Operator,
    condition,
    sample,
    wait_for,
    wait_ready,
)

from clusterstack import TEST_CLUSTER_DIR, ModelImages

pytestmark = pytest.mark.timeout(600)
SELECTOR = "app.kubernetes.io/name=modeldeploy-operator"


@pytest.fixture
def operator_image(cluster: Cluster) -> str:
    if cluster.provider != "local":
        image = os.environ.get("MODELDEPLOY_E2E_OPERATOR_IMAGE")
        if not image:
            pytest.skip("e2e elsewhere needs MODELDEPLOY_E2E_OPERATOR_IMAGE: the Dockerfile built and pushed")
        return image
    info = LocalCluster(TEST_CLUSTER_DIR).info()
    assert info is not None and info.real_node
    return info.image_builder().operator()


def _chart(cluster: Cluster, *values: str) -> None:
    args = [f"--set={v}" for v in values]
    cluster.helm(
        "upgrade", "--install", RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE, "--reuse-values", *args,
        "--wait", "--timeout", "180s",
    )  # fmt: skip


@pytest.fixture
def chart_operator(chart: Cluster, operator: Operator, operator_image: str) -> Iterator[dict[str, Any]]:
    """The chart's operator pod, Ready; the session's operator process is stopped meanwhile."""
    repository, _, tag = operator_image.rpartition(":")
    operator.stop()
    try:
        _chart(chart, "replicas=1", f"image.repository={repository}", f"image.tag={tag}")
        pods = chart.json("get", "pods", "-n", OPERATOR_NAMESPACE, "-l", SELECTOR)["items"]
        assert len(pods) == 1
        yield pods[0]
    finally:
        _chart(chart, "replicas=0")
        wait_for(
            lambda: not chart.json("get", "pods", "-n", OPERATOR_NAMESPACE, "-l", SELECTOR)["items"],
            timeout=90,
            what="the chart's operator pod to be gone",
        )
        operator.start()


def test_the_charts_operator_runs_from_its_image_on_the_real_node_and_serves_a_model(
    chart: Cluster, chart_operator: dict[str, Any], namespace: str, model_images: ModelImages
) -> None:
    pod = chart_operator
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert pod["spec"]["serviceAccountName"] == "modeldeploy-operator"
    assert condition(pod, "Ready").get("status") == "True"
    body = sample("iris", namespace, kwok=False, bento={"image": model_images.v1}, replicas=1)
    chart.apply(body)
    md = wait_ready(chart, namespace, "iris", timeout=240)
    assert md["status"]["stable"]["bento"] == "iris-classifier:v1"
    logs = chart.kubectl("logs", "-n", OPERATOR_NAMESPACE, pod["metadata"]["name"]).stdout
    assert "modeldeploy operator started" in logs
    assert "Traceback" not in logs
