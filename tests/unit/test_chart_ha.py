"""The chart runs the operator highly available: two replicas, one leading, spread over nodes, a budget for
disruptions, rolling updates."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from helm import render_chart


def kind(docs: list[dict[str, Any]], kind_: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind_]


def operator_args(deployment: dict[str, Any]) -> list[str]:
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


class TestReplicas:
    def test_two_replicas_with_leader_election_by_default(self) -> None:
        [deployment] = kind(render_chart(), "Deployment")
        assert deployment["spec"]["replicas"] == 2
        args = operator_args(deployment)
        assert "--lease-name=modeldeploy-operator" in args
        assert {"--lease-duration=15", "--renew-deadline=10", "--retry-period=2"} <= set(args)
        assert "--no-leader-election" not in args

    def test_a_rolling_update_starts_a_new_pod_before_it_stops_an_old_one(self) -> None:
        [deployment] = kind(render_chart(), "Deployment")
        assert deployment["spec"]["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }

    def test_more_than_one_replica_without_leader_election_is_refused(self) -> None:
        with pytest.raises(subprocess.CalledProcessError) as failed:
            render_chart("leaderElection.enabled=false")
        assert "replicas > 1 needs leaderElection.enabled" in failed.value.stderr

    def test_one_replica_without_leader_election_runs_without_a_lease(self) -> None:
        [deployment] = kind(render_chart("leaderElection.enabled=false", "replicas=1"), "Deployment")
        assert "--no-leader-election" in operator_args(deployment)

    def test_the_identity_starts_with_the_pods_name(self) -> None:
        [deployment] = kind(render_chart(), "Deployment")
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in env


class TestDisruptions:
    def test_a_budget_keeps_one_replica_through_drains(self) -> None:
        docs = render_chart()
        [budget] = kind(docs, "PodDisruptionBudget")
        [deployment] = kind(docs, "Deployment")
        assert budget["spec"]["minAvailable"] == 1
        assert budget["spec"]["selector"] == deployment["spec"]["selector"]
        assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"

    @pytest.mark.parametrize("replicas", ["0", "1"])
    def test_no_budget_that_would_block_every_drain(self, replicas: str) -> None:
        docs = render_chart(f"replicas={replicas}", "leaderElection.enabled=true")
        assert kind(docs, "PodDisruptionBudget") == []

    def test_replicas_prefer_different_nodes(self) -> None:
        [deployment] = kind(render_chart(), "Deployment")
        affinity = deployment["spec"]["template"]["spec"]["affinity"]
        [term] = affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]

    def test_an_affinity_given_replaces_the_default(self) -> None:
        rule = "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
        docs = render_chart(f"{rule}.matchExpressions[0].key=pool", f"{rule}.matchExpressions[0].operator=Exists")
        [deployment] = kind(docs, "Deployment")
        assert set(deployment["spec"]["template"]["spec"]["affinity"]) == {"nodeAffinity"}

    def test_priority_class_name_is_set_only_when_given(self) -> None:
        [plain] = kind(render_chart(), "Deployment")
        assert "priorityClassName" not in plain["spec"]["template"]["spec"]
        [given] = kind(render_chart("priorityClassName=system-cluster-critical"), "Deployment")
        assert given["spec"]["template"]["spec"]["priorityClassName"] == "system-cluster-critical"

    def test_each_release_has_its_own_lease_and_may_write_only_that_one(self) -> None:
        docs = render_chart("fullnameOverride=models-a")
        [deployment] = kind(docs, "Deployment")
        assert "--lease-name=models-a" in operator_args(deployment)
        [role] = [d for d in kind(docs, "Role") if d["metadata"]["name"] == "models-a-leader-election"]
        assert [r.get("resourceNames") for r in role["rules"] if "update" in r["verbs"]] == [["models-a"]]
