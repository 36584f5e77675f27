"""The opt-in NetworkPolicy in a real cluster: admitted or refused with the field named, made, changed, removed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from localcluster.kit import Cluster, Operator, sample, wait_for, wait_ready

PROMETHEUS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}
GATEWAY = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway-system"}}}


def policy(cluster: Cluster, namespace: str) -> dict[str, Any] | None:
    return cluster.get("networkpolicy", "iris", namespace)


class TestNetworkPolicy:
    def test_made_when_enabled_changed_with_the_spec_and_removed_when_disabled(
        self, cluster: Cluster, running: Operator, namespace: str
    ) -> None:
        cluster.apply(sample("iris", namespace, networkPolicy={"enabled": True, "from": [GATEWAY, PROMETHEUS]}))
        wait_ready(cluster, namespace, "iris")
        found = wait_for(lambda: policy(cluster, namespace), timeout=60, what="the NetworkPolicy")
        assert found["spec"]["podSelector"] == {"matchLabels": {"modeldeploy.dev/name": "iris"}}
        assert found["spec"]["ingress"] == [
            {"from": [GATEWAY, PROMETHEUS], "ports": [{"protocol": "TCP", "port": 3000}]}
        ]

        patch = {"spec": {"networkPolicy": {"from": [PROMETHEUS]}}}
        cluster.kubectl("patch", "md", "iris", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
        wait_for(
            lambda: (
                (policy(cluster, namespace) or {}).get("spec", {}).get("ingress", [{}])[0].get("from") == [PROMETHEUS]
            ),
            timeout=60,
            what="the NetworkPolicy to follow the spec",
        )
        patch = {"spec": {"networkPolicy": {"enabled": False}}}
        cluster.kubectl("patch", "md", "iris", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
        wait_for(lambda: policy(cluster, namespace) is None, timeout=60, what="the NetworkPolicy to go")

    @pytest.mark.parametrize(
        ("settings", "expected"),
        [
            ({"enabled": True}, "spec.networkPolicy.from: Invalid value"),
            ({"enabled": True, "from": [{}]}, "a peer needs namespaceSelector, podSelector or both"),
            (
                {"enabled": True, "from": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}]},
                "spec.networkPolicy.from[0].podSelector.matchExpressions[0].values: Invalid value",
            ),
        ],
    )
    def test_bad_settings_are_refused_at_admission_with_the_field_named(
        self, cluster: Cluster, chart: Cluster, namespace: str, settings: dict[str, Any], expected: str
    ) -> None:
        result = cluster.apply(sample("bad", namespace, networkPolicy=settings), check=False)
        assert result.returncode != 0
        assert expected in result.stderr, result.stderr
