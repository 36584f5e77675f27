"""The table of child kinds is the one place a kind is registered: renderers, paths, routers and the chart's RBAC
agree with it."""

from __future__ import annotations

import typing
from typing import Any

import pytest

from modeldeploy.api.v1alpha1 import Rollout
from modeldeploy.k8s.access import LEADER_ELECTION_GRANTS, namespaced_grants
from modeldeploy.k8s.children import CHILD_KINDS, IF_SERVED, WATCHED, render_children
from modeldeploy.k8s.client import PLURALS, resource_path
from modeldeploy.model.revision import RevisionPlan, template_of
from modeldeploy.routing import ROUTERS

from factories import md
from helm import render_chart

Triple = tuple[str, str, str]  # (apiGroup, resource, verb)


def renders() -> list[list[dict[str, Any]]]:
    """Every kind of child: an autoscaled canary behind an HTTPRoute, with a NetworkPolicy, once on cpu (a
    HorizontalPodAutoscaler) and once on requests per second (a KEDA ScaledObject: the two never stand together)."""
    out = []
    for metrics, prometheus in (
        ([{"type": "cpu", "target": 80}], None),
        ([{"type": "requestsPerSecond", "target": 10}], {"address": "http://prometheus.monitoring:9090"}),
    ):
        model = md(
            autoscaling={"maxReplicas": 4, "metrics": metrics, **({"prometheus": prometheus} if prometheus else {})},
            resources={"requests": {"cpu": "1"}},
            rollout={"trafficRouting": "GatewayAPI", "gateway": {"parentRefs": [{"name": "gw"}]}},
            networkPolicy={"enabled": True, "from": [{"namespaceSelector": {}}]},
        )
        template = template_of(model.spec)
        stable = RevisionPlan("stable", template.revision, template, None)
        canary = RevisionPlan("canary", template.revision, template, 1)
        served = frozenset(k.kind for k in IF_SERVED)  # in a cluster serving PodMonitors
        out.append(render_children(model, stable, canary, route_weight=10, served=served))
    return out


def everything() -> list[dict[str, Any]]:
    return [obj for render in renders() for obj in render]


class TestTable:
    def test_each_row_renders_objects_of_its_own_kind_and_version(self) -> None:
        rendered = {(o["apiVersion"], o["kind"]) for o in everything()}
        assert rendered == {(kind.api_version, kind.kind) for kind in CHILD_KINDS}

    def test_children_are_applied_in_table_order(self) -> None:
        order = [kind.kind for kind in CHILD_KINDS]
        for render in renders():
            kinds = [o["kind"] for o in render]
            assert kinds == sorted(kinds, key=order.index)

    def test_an_optional_kind_has_one_object_named_after_the_model_deployment(self) -> None:
        for render in renders():
            for kind in CHILD_KINDS:
                if kind.optional:
                    assert [o["metadata"]["name"] for o in render if o["kind"] == kind.kind] in ([], ["iris"])

    @pytest.mark.parametrize("kind", CHILD_KINDS, ids=lambda k: k.kind)
    def test_client_path_comes_from_the_table(self, kind: Any) -> None:
        prefix = "/api" if not kind.group else "/apis"
        assert resource_path(kind.api_version, kind.kind, "ml", "iris") == (
            f"{prefix}/{kind.api_version}/namespaces/ml/{kind.plural}/iris"
        )

    def test_optional_kinds_are_not_watched(self) -> None:
        assert [k.kind for k in WATCHED] == [k.kind for k in CHILD_KINDS if not k.optional]
        assert "HTTPRoute" not in {k.kind for k in WATCHED}


class TestRouters:
    def test_every_traffic_routing_mode_of_the_api_has_a_router(self) -> None:
        modes = typing.get_args(Rollout.model_fields["traffic_routing"].annotation)
        assert set(ROUTERS) == set(modes)

    def test_what_a_router_needs_is_an_optional_child_kind(self) -> None:
        optional = {k.kind for k in CHILD_KINDS if k.optional}
        for router in ROUTERS.values():
            assert router.needs <= optional, router.mode


def triples(rules: list[dict[str, Any]]) -> set[Triple]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def derived() -> set[Triple]:
    return {(g.group, r, v) for g in namespaced_grants() for r in g.resources for v in g.verbs}


def namespaced_roles(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The roles holding what the operator does in watched namespaces (not the cluster-wide discovery one, nor
    the leader election's in its own namespace)."""
    return [
        d
        for d in docs
        if d["kind"] in ("ClusterRole", "Role")
        and not d["metadata"]["name"].endswith(("-discovery", "-leader-election"))
    ]


class TestChartRbac:
    def test_cluster_wide_role_grants_exactly_what_the_table_derives(self) -> None:
        [role] = namespaced_roles(render_chart())
        assert role["kind"] == "ClusterRole"
        granted = triples(role["rules"])
        assert granted - derived() == set(), "the chart grants more than the operator needs"
        assert derived() - granted == set(), "the chart lacks rules: see modeldeploy.k8s.access"

    def test_each_watched_namespace_gets_the_same_rules(self) -> None:
        roles = namespaced_roles(render_chart("watchNamespaces={ml,staging}"))
        assert sorted(r["metadata"]["namespace"] for r in roles) == ["ml", "staging"]
        for role in roles:
            assert role["kind"] == "Role"
            assert triples(role["rules"]) == derived()

    @pytest.mark.parametrize("values", [(), ("watchNamespaces={ml,staging}",)])
    def test_no_role_can_read_secrets(self, values: tuple[str, ...]) -> None:
        """trivy KSV-0041: RBAC cannot limit a get to metadata, so a token that may get Secrets reads them all."""
        for doc in render_chart(*values):
            if doc["kind"] in ("ClusterRole", "Role"):
                for rule in doc["rules"]:
                    assert "secrets" not in rule["resources"] and "*" not in rule["resources"], doc["metadata"]["name"]

    @pytest.mark.parametrize("values", [(), ("watchNamespaces={ml,staging}",)])
    def test_the_leader_lease_is_granted_in_the_release_namespace_only(self, values: tuple[str, ...]) -> None:
        docs = render_chart(*values)
        [role] = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-leader-election")]
        assert role["metadata"]["namespace"] == "default"  # helm template's release namespace
        expected = {(g.group, r, v) for g in LEADER_ELECTION_GRANTS for r in g.resources for v in g.verbs}
        assert triples(role["rules"]) == expected
        named = [rule for rule in role["rules"] if "update" in rule["verbs"]]
        assert named and all(rule["resourceNames"] == ["modeldeploy-operator"] for rule in named)
        for doc in namespaced_roles(docs):
            assert "leases" not in {r for rule in doc["rules"] for r in rule["resources"]}

    def test_no_lease_role_without_leader_election(self) -> None:
        docs = render_chart("leaderElection.enabled=false", "replicas=1")
        assert not [d for d in docs if d["metadata"]["name"].endswith("-leader-election")]

    def test_everything_the_client_addresses_is_granted(self) -> None:
        granted = {(group, resource) for group, resource, _ in derived()}
        granted |= {(g.group, r) for g in LEADER_ELECTION_GRANTS for r in g.resources}
        addressed = {(api_version.rpartition("/")[0], plural) for (api_version, _), plural in PLURALS.items()}
        assert addressed - granted == set()
