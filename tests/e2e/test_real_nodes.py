"""The e2e tier: a real model server in a real pod, on kind or any cluster with nodes that run containers.

Needs:
  MODELDEPLOY_CLUSTER=kind (Docker) or MODELDEPLOY_CLUSTER=existing with KUBECONFIG, kubectl and helm;
  MODELDEPLOY_E2E_IMAGE: the iris bento containerized (`bentoml containerize iris-classifier:<v>`),
  pushed where the nodes can pull it.
The operator runs as a local process with the chart's ServiceAccount, as in the cluster tier.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import pytest

from localcluster.kit import Cluster, Operator, condition, sample, wait_for

IMAGE = os.environ.get("MODELDEPLOY_E2E_IMAGE")


@pytest.fixture
def image() -> str:
    if os.environ.get("MODELDEPLOY_CLUSTER", "local") == "local":
        pytest.skip("e2e needs real nodes: set MODELDEPLOY_CLUSTER=kind (with Docker) or existing (with KUBECONFIG)")
    if not IMAGE:
        pytest.skip("e2e needs MODELDEPLOY_E2E_IMAGE: the iris bento built with `bentoml containerize`, pushed")
    return IMAGE


def test_the_model_answers_through_its_service(image: str, cluster: Cluster, running: Operator, namespace: str) -> None:
    cluster.apply(sample("iris", namespace, bento={"image": image}, replicas=1))

    def ready() -> dict[str, Any] | None:
        md = cluster.get("modeldeployment", "iris", namespace)
        return md if md and condition(md, "Ready").get("status") == "True" else None

    wait_for(ready, timeout=600, what="the model server Ready in a real pod")
    forward = subprocess.Popen(
        [str(cluster.kubectl_bin), "port-forward", "-n", namespace, "service/iris", "13000:3000"],
        env=cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(3)
        out = subprocess.run(
            [
                "curl", "-sf", "-X", "POST", "http://127.0.0.1:13000/classify",
                "-H", "content-type: application/json", "-d", '{"input_series": [[5.1, 3.5, 1.4, 0.2]]}',
            ],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        assert json.loads(out.stdout) == ["setosa"]
    finally:
        forward.terminate()
        forward.wait(timeout=10)
