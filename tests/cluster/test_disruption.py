"""Disruption budgets of models in a real cluster: one PodDisruptionBudget per ModelDeployment, its pods counted
by the disruption controller, following the spec's replicas."""

from __future__ import annotations

from typing import Any

from localcluster.kit import Cluster, Operator, sample, wait_for, wait_ready


def pdb(cluster: Cluster, namespace: str, name: str = "iris") -> dict[str, Any] | None:
    return cluster.get("poddisruptionbudget", name, namespace)


def budget_counts(cluster: Cluster, namespace: str, expected: int) -> dict[str, Any]:
    """The budget once the disruption controller counts `expected` pods, all healthy."""

    def counted() -> dict[str, Any] | None:
        found = pdb(cluster, namespace)
        status = (found or {}).get("status") or {}
        return found if status.get("expectedPods") == expected and status.get("currentHealthy") == expected else None

    return wait_for(counted, timeout=90, what=f"the budget to count {expected} healthy pods")


class TestDisruptionBudget:
    def test_the_budget_follows_the_replicas_and_goes_away_at_one(
        self, cluster: Cluster, running: Operator, namespace: str
    ) -> None:
        cluster.apply(sample("iris", namespace, replicas=3))
        md = wait_ready(cluster, namespace, "iris")
        found = budget_counts(cluster, namespace, 3)
        assert found["spec"]["maxUnavailable"] == 1
        assert found["spec"]["selector"] == {"matchLabels": {"modeldeploy.dev/name": "iris"}}
        owner = found["metadata"]["ownerReferences"][0]
        assert (owner["uid"], owner["controller"]) == (md["metadata"]["uid"], True)
        assert found["status"]["disruptionsAllowed"] == 1
        assert found["status"]["desiredHealthy"] == 2

        cluster.kubectl("patch", "md", "iris", "-n", namespace, "--type=merge", "-p", '{"spec":{"replicas":1}}')
        wait_for(lambda: pdb(cluster, namespace) is None, timeout=60, what="the budget to go at one replica")

        cluster.kubectl("patch", "md", "iris", "-n", namespace, "--type=merge", "-p", '{"spec":{"replicas":4}}')
        again = budget_counts(cluster, namespace, 4)
        assert again["status"]["disruptionsAllowed"] == 1

    def test_a_budget_changed_by_hand_is_put_back(self, cluster: Cluster, running: Operator, namespace: str) -> None:
        cluster.apply(sample("iris", namespace, replicas=2))
        budget_counts(cluster, namespace, 2)
        cluster.kubectl("patch", "pdb", "iris", "-n", namespace, "--type=merge", "-p", '{"spec":{"maxUnavailable":0}}')
        wait_for(
            lambda: (pdb(cluster, namespace) or {}).get("spec", {}).get("maxUnavailable") == 1,
            timeout=60,
            what="the operator to put maxUnavailable back",
        )
