"""Model pods in a namespace a platform team constrained: a ResourceQuota on limits and on ephemeral storage."""

from __future__ import annotations

from localcluster.kit import Cluster, Operator, sample, wait_ready

QUOTA = {
    "apiVersion": "v1",
    "kind": "ResourceQuota",
    "metadata": {"name": "models"},
    "spec": {
        "hard": {
            "limits.cpu": "8",
            "limits.memory": "16Gi",
            "requests.ephemeral-storage": "40Gi",
            "limits.ephemeral-storage": "40Gi",
        }
    },
}


class TestQuota:
    def test_a_tag_based_model_is_admitted_under_a_quota_on_limits_and_ephemeral_storage(
        self, cluster: Cluster, running: Operator, namespace: str
    ) -> None:
        """Every container of the pod states what the quota counts: the fetch-bento init container takes the
        serving container's cpu and memory limits and ephemeral storage, so no pod is refused."""
        cluster.apply({**QUOTA, "metadata": {"name": "models", "namespace": namespace}})
        body = sample(
            "iris",
            namespace,
            bento={
                "tag": "iris_classifier:v1",
                "store": {"uri": "s3://models/bentos"},
                "runtimeImage": "registry.example.com/bento-runtime:1.4",
            },
            resources={
                "requests": {"cpu": "250m", "memory": "256Mi"},
                "limits": {"cpu": "1", "memory": "1Gi"},
                "storage": "2Gi",
            },
        )
        cluster.apply(body)
        wait_ready(cluster, namespace, "iris")
        pods = cluster.json("get", "pods", "-n", namespace, "-l", "modeldeploy.dev/name=iris")["items"]
        assert len(pods) == 2
        for pod in pods:
            [fetch] = pod["spec"]["initContainers"]
            assert fetch["resources"]["limits"] == {"cpu": "1", "ephemeral-storage": "2304Mi", "memory": "1Gi"}
            [tmp] = [v for v in pod["spec"]["volumes"] if v["name"] == "tmp"]
            assert tmp["emptyDir"] == {"sizeLimit": "2Gi"}
        used = cluster.json("get", "resourcequota", "models", "-n", namespace)["status"]["used"]
        assert used["requests.ephemeral-storage"] == "4Gi"
        assert used["limits.memory"] == "2Gi"
