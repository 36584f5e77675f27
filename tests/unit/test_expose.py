"""spec.expose: the model published through a Gateway at a hostname, in both routing modes."""

from __future__ import annotations

from typing import Any

import pytest
from test_api import errors_of
from test_rollout import World

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.k8s.children import render_children
from modeldeploy.model.revision import RevisionPlan, template_of
from modeldeploy.routing import optional_kinds

from factories import IMAGE_V2, md, md_body

EXPOSE: dict[str, Any] = {
    "hostname": "iris.example.com",
    "parentRefs": [{"name": "public", "namespace": "gateway-system"}],
}


def routes(model: ModelDeployment, *, canary: bool = False, weight: int = 0) -> list[dict[str, Any]]:
    template = template_of(model.spec)
    stable = RevisionPlan("stable", template.revision, template, 2)
    canary_plan = RevisionPlan("canary", "other", template, 1) if canary else None
    children = render_children(model, stable, canary_plan, route_weight=weight)
    return [c for c in children if c["kind"] == "HTTPRoute"]


class TestAdmission:
    @pytest.mark.parametrize(
        ("expose", "expected"),
        [
            ({**EXPOSE, "hostname": "Chat.Example.com:443"}, "spec.expose.hostname: String should match pattern"),
            ({**EXPOSE, "hostname": "*.example.com"}, "spec.expose.hostname: String should match pattern"),
            ({**EXPOSE, "parentRefs": []}, "spec.expose.parentRefs: List should have at least 1 item"),
            ({**EXPOSE, "parentRefs": [{"name": "gw", "namespace": "Bad_NS"}]}, "spec.expose.parentRefs[0].namespace"),
            (
                {**EXPOSE, "parentRefs": [{"name": "gw"}, {"name": "gw"}]},
                "spec.expose.parentRefs: each reference to a Gateway must name another sectionName",
            ),
            ({**EXPOSE, "port": 0}, "spec.expose.port: Input should be greater than or equal to 1"),
            ({**EXPOSE, "scheme": "ftp"}, "spec.expose.scheme: Input should be 'http' or 'https'"),
        ],
    )
    def test_a_bad_expose_is_refused_naming_the_field(self, expose: dict[str, Any], expected: str) -> None:
        problems = errors_of(md_body(expose=expose))
        assert any(p.startswith(expected) for p in problems), problems

    def test_expose_and_rollout_gateway_together_are_refused(self) -> None:
        rollout = {"trafficRouting": "GatewayAPI", "gateway": {"parentRefs": [{"name": "gw"}]}}
        problems = errors_of(md_body(expose=EXPOSE, rollout=rollout))
        assert any(p.startswith("spec.expose: expose and rollout.gateway both name") for p in problems), problems

    def test_expose_gives_gateway_routing_its_gateways(self) -> None:
        model = ModelDeployment.model_validate(md_body(expose=EXPOSE, rollout={"trafficRouting": "GatewayAPI"}))
        assert optional_kinds(model) == {"HTTPRoute"}


class TestRoute:
    def test_not_exposed_replicas_routing_has_no_route(self) -> None:
        model = md()
        assert routes(model) == []
        assert optional_kinds(model) == frozenset()

    def test_exposed_with_replicas_routing_sends_everything_to_the_service(self) -> None:
        model = md(expose=EXPOSE)
        assert optional_kinds(model) == {"HTTPRoute"}
        for route in (routes(model), routes(model, canary=True, weight=25)):
            assert len(route) == 1
            spec = route[0]["spec"]
            assert spec["hostnames"] == ["iris.example.com"]
            assert spec["parentRefs"] == [{"name": "public", "namespace": "gateway-system"}]
            # The Service `<name>` selects stable and canary pods: the approximate split happens there.
            assert spec["rules"] == [{"backendRefs": [{"kind": "Service", "name": "iris", "port": 3000}]}]

    def test_exposed_with_gateway_routing_splits_exactly_on_the_same_route(self) -> None:
        model = md(expose=EXPOSE, rollout={"trafficRouting": "GatewayAPI"})
        (route,) = routes(model, canary=True, weight=25)
        assert route["metadata"]["name"] == "iris"
        assert route["spec"]["hostnames"] == ["iris.example.com"]
        backends = route["spec"]["rules"][0]["backendRefs"]
        assert [(b["name"], b["weight"]) for b in backends] == [("iris", 75), ("iris-canary", 25)]


class TestStatus:
    def test_url_is_the_gateway_hostname(self) -> None:
        w = World(body=md_body(expose={**EXPOSE, "port": 8080}))
        w.settle()
        assert w.status["url"] == "http://iris.example.com:8080/"
        assert w.condition("Ready")["status"] == "True"

    @pytest.mark.parametrize(
        ("settings", "url"),
        [
            ({"scheme": "https"}, "https://iris.example.com/"),
            ({"scheme": "https", "port": 443}, "https://iris.example.com/"),
            ({"port": 80}, "http://iris.example.com/"),
            ({"scheme": "https", "port": 8443}, "https://iris.example.com:8443/"),
        ],
    )
    def test_default_ports_are_left_out(self, settings: dict[str, Any], url: str) -> None:
        assert md(expose={**EXPOSE, **settings}).spec.expose is not None
        assert md(expose={**EXPOSE, **settings}).spec.expose.url == url  # type: ignore[union-attr]

    def test_without_the_gateway_api_the_model_serves_in_cluster_and_degraded_says_why(self) -> None:
        w = World(body=md_body(expose=EXPOSE), gateway_api=False)
        result = w.settle()
        assert result.stable is not None
        assert w.status["url"] == "http://iris.ml.svc:3000"
        degraded = w.condition("Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "ExposeUnavailable")
        assert "install the Gateway API CRDs" in degraded["message"]
        w.gateway_api = True
        w.settle()
        assert w.status["url"] == "http://iris.example.com/"
        assert w.condition("Ready")["status"] == "True"

    def test_a_canary_of_an_exposed_model_walks_in_replicas_mode(self) -> None:
        w = World(body=md_body(replicas=4, expose=EXPOSE))
        w.settle()
        w.set_spec(replicas=4, expose=EXPOSE, bento={"image": IMAGE_V2})
        w.settle()
        assert w.status["canary"]["weight"] == 25
        assert w.status["url"] == "http://iris.example.com/"
