"""The reconcile shell against a fake client that records what it is asked: what is written, applied and removed."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy.handlers import apply as apply_module
from modeldeploy.handlers import observe as observe_module
from modeldeploy.k8s import children as children_module
from modeldeploy.k8s.children import ChildKind
from modeldeploy.k8s.client import ApiError
from modeldeploy.model.desired import Desired
from modeldeploy.model.meta import metadata

from factories import IMAGE_V2, md_body
from fakes import GATEWAY, FakeClient, condition, owned_by, reconcile


class TestReconcile:
    def test_the_decision_is_recorded_before_any_child_is_written(self) -> None:
        client = FakeClient(md_body())
        reconcile(client)
        verbs = [call[0] for call in client.calls if call[0] in ("status", "apply", "create")]
        assert verbs == ["status", "create", "create", "create", "create"]
        # The fake serves every optional kind: the PodMonitor is created too.
        assert client.kinds("create") == [
            ("Deployment", "iris"),
            ("Service", "iris"),
            ("PodDisruptionBudget", "iris"),
            ("PodMonitor", "iris"),
        ]
        assert ("Normal", "Deploying") in [(t, r) for t, r, _ in client.events]

    def test_no_pod_monitor_and_nothing_wrong_where_the_prometheus_operator_is_not_installed(self) -> None:
        client = FakeClient(md_body(), served=False)
        reconcile(client)
        assert client.kinds("create") == [("Deployment", "iris"), ("Service", "iris"), ("PodDisruptionBudget", "iris")]
        degraded = condition(client, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("False", "Healthy")

    def test_an_invalid_spec_is_failed_with_the_field_named_and_nothing_is_applied(self) -> None:
        client = FakeClient(md_body(replicas=-1))
        reconciler = reconcile(client)
        status = client.md["status"]
        assert status["phase"] == "Failed"
        assert condition(client, "Ready")["status"] == "False"
        degraded = condition(client, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
        assert degraded["message"].startswith("spec.replicas: Input should be greater than or equal to 0")
        assert client.written() == []
        assert [r for _, r, _ in client.events] == ["InvalidSpec"]
        reconcile(client, reconciler)
        assert ("status",) not in client.calls, "an unchanged verdict is not written again"
        assert len(client.events) == 1

    def test_a_child_the_api_server_rejects_is_degraded_in_its_words(self) -> None:
        client = FakeClient(md_body())
        client.rejected["Service"] = ApiError(422, "Invalid", 'Service "iris" is invalid: spec.ports[0]: bad')
        reconcile(client)
        degraded = condition(client, "Degraded")
        assert degraded["reason"] == "ChildRejected"
        assert degraded["message"] == (
            'Service iris was rejected by the API server: Service "iris" is invalid: spec.ports[0]: bad'
        )
        assert condition(client, "Ready")["reason"] == "ChildRejected"
        assert client.md["status"]["phase"] == "Failed", "no pod is Ready yet"
        assert ("Warning", "ChildRejected") in [(t, r) for t, r, _ in client.events]

    def test_an_unreadable_stored_template_stops_the_rollout_and_leaves_children_untouched(self) -> None:
        client = FakeClient(md_body())
        reconcile(client)
        body = client.md
        body["status"]["stable"]["template"]["fieldOfALaterVersion"] = True
        body["spec"]["bento"] = {"image": IMAGE_V2}
        body["metadata"]["generation"] = 2
        client.add(body)
        reconcile(client)
        assert client.written() == [] and client.kinds("delete") == []
        degraded = condition(client, "Degraded")
        assert degraded["reason"] == "UnreadableTemplate"
        assert "status.stable.template" in degraded["message"] and "fieldOfALaterVersion" in degraded["message"]
        assert "canary" not in client.md["status"], "no canary starts from a stable it cannot render"
        assert ("Warning", "UnreadableTemplate") in [(t, r) for t, r, _ in client.events]

    def test_children_the_model_deployment_does_not_control_are_neither_used_nor_removed(self) -> None:
        client = FakeClient(md_body())
        reconcile(client)
        service = client.objects["v1", "Service", "ml", "iris"]
        # Same labels, another controller: an earlier ModelDeployment of the same name, say.
        client.add(owned_by(service, "an-earlier-iris", "iris-old"))
        client.add(owned_by(service, "0b7c-uid", "iris-stray"))
        reconcile(client)
        assert client.kinds("delete") == [("Service", "iris-stray")]


class TestOptionalKinds:
    def test_a_route_is_removed_by_name_when_the_spec_no_longer_wants_it(self) -> None:
        client = FakeClient(md_body(rollout=GATEWAY))
        reconciler = reconcile(client)
        assert ("HTTPRoute", "iris") in client.written()
        body = client.md
        body["spec"]["rollout"] = {"trafficRouting": "Replicas"}
        body["metadata"]["generation"] = 2
        client.add(body)
        reconcile(client, reconciler)
        assert ("HTTPRoute", "iris") in client.kinds("delete")

    def test_a_route_of_the_same_name_owned_by_someone_else_stays(self) -> None:
        client = FakeClient(md_body(rollout=GATEWAY))
        reconciler = reconcile(client)
        route = client.objects["gateway.networking.k8s.io/v1", "HTTPRoute", "ml", "iris"]
        client.add(owned_by(route, "someone-else"))
        body = client.md
        body["spec"]["rollout"] = {"trafficRouting": "Replicas"}
        body["metadata"]["generation"] = 2
        client.add(body)
        reconcile(client, reconciler)
        assert client.kinds("delete") == []

    def test_without_the_gateway_api_no_route_is_rendered_and_the_cluster_is_asked_once(self) -> None:
        client = FakeClient(md_body(rollout=GATEWAY), served=False)
        reconciler = reconcile(client)
        assert "HTTPRoute" not in [kind for kind, _ in client.written()]
        assert condition(client, "Degraded")["reason"] == "GatewayAPIMissing"
        reconcile(client, reconciler)
        assert ("discovery", "httproutes") not in client.calls, "the answer is kept for a while"

    def test_a_route_whose_crd_went_away_is_asked_about_again(self) -> None:
        client = FakeClient(md_body(rollout=GATEWAY))
        reconciler = reconcile(client)
        client.rejected["HTTPRoute"] = ApiError(404, "NotFound", "the server could not find the requested resource")
        # An unchanged route is not written again (until the periodic full apply): change it.
        body = client.md
        body["spec"]["rollout"]["gateway"]["hostnames"] = ["iris.example.com"]
        body["metadata"]["generation"] = body["metadata"].get("generation", 1) + 1
        client.add(body)
        with pytest.raises(ApiError):
            reconciler._reconcile("ml", "iris", client.indexed(), client.md)
        client.served = False
        reconcile(client, reconciler)
        assert ("discovery", "httproutes") in client.calls
        assert condition(client, "Degraded")["reason"] == "GatewayAPIMissing"


class TestAddingAChildKind:
    """A new kind is its renderer plus one row of the table; the reconcile needs nothing else."""

    @pytest.fixture
    def scaled_object(self, monkeypatch: pytest.MonkeyPatch) -> ChildKind:
        def render(desired: Desired) -> list[dict[str, Any]]:
            meta = metadata(desired.md, desired.md.name)
            return [{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": meta, "spec": {}}]

        row = ChildKind("keda.sh/v1alpha1", "ScaledObject", "scaledobjects", render, optional=True)
        table = (*children_module.CHILD_KINDS, row)
        monkeypatch.setattr(children_module, "CHILD_KINDS", table)
        for module in (apply_module, observe_module):
            monkeypatch.setattr(module, "BY_KIND", {kind.kind: kind for kind in table})
        monkeypatch.setattr(apply_module, "OPTIONAL", tuple(kind for kind in table if kind.optional))
        return row

    def test_it_is_applied_where_the_cluster_serves_it(self, scaled_object: ChildKind) -> None:
        client = FakeClient(md_body())
        reconcile(client)
        assert client.written()[-1] == ("ScaledObject", "iris")
        assert ("discovery", "scaledobjects") in client.calls

    def test_where_it_is_not_served_the_rest_is_applied_and_the_reason_named(self, scaled_object: ChildKind) -> None:
        client = FakeClient(md_body(), served=False)
        reconcile(client)
        assert client.written() == [("Deployment", "iris"), ("Service", "iris"), ("PodDisruptionBudget", "iris")]
        degraded = condition(client, "Degraded")
        assert degraded["reason"] == "ChildKindNotServed"
        assert degraded["message"] == "this cluster does not serve ScaledObject (keda.sh/v1alpha1): install its CRDs"
