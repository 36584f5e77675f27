"""autoscaling.metrics on requests: a KEDA ScaledObject with Prometheus triggers; cpu/memory alone stay on the HPA."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from test_api import errors_of
from test_rollout import World

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.k8s.children import render_children
from modeldeploy.model.policy import Policy
from modeldeploy.model.revision import RevisionPlan, template_of
from modeldeploy.model.scaling import load_query
from modeldeploy.rollout.config import PlanConfig, refusal
from modeldeploy.routing import optional_kinds

from factories import IMAGE_V2, md, md_body

PROMETHEUS = {"address": "http://prometheus.monitoring.svc:9090"}
RPS = {"maxReplicas": 5, "metrics": [{"type": "requestsPerSecond", "target": 10}], "prometheus": PROMETHEUS}


def children(model: ModelDeployment) -> dict[str, dict[str, Any]]:
    template = template_of(model.spec)
    stable = RevisionPlan("stable", template.revision, template, None)
    return {o["kind"]: o for o in render_children(model, stable, None)}


class TestAdmission:
    @pytest.mark.parametrize(
        ("autoscaling", "expected"),
        [
            (
                {"maxReplicas": 3, "metrics": [{"type": "requestsPerSecond", "target": 10}]},
                "spec.autoscaling.prometheus: requestsPerSecond and inFlightRequests need prometheus",
            ),
            (
                {"maxReplicas": 3, "metrics": [{"type": "cpu", "target": 150}]},
                "spec.autoscaling.metrics[0].target: cpu and memory targets are a utilization",
            ),
            ({**RPS, "metrics": [{"type": "queueDepth", "target": 3}]}, "spec.autoscaling.metrics[0].type: Input"),
            ({**RPS, "scaleDownStabilization": "2h"}, "spec.autoscaling.scaleDownStabilization"),
            ({**RPS, "prometheus": {"address": "http://u@p:9090"}}, "spec.autoscaling.prometheus.address: String"),
        ],
    )
    def test_refused_naming_the_field(self, autoscaling: dict[str, Any], expected: str) -> None:
        problems = errors_of(md_body(autoscaling=autoscaling, resources={"requests": {"cpu": "1"}}))
        assert any(p.startswith(expected) for p in problems), problems


class TestRender:
    def test_cpu_alone_is_a_horizontal_pod_autoscaler_with_the_scale_down_window(self) -> None:
        model = md(
            autoscaling={"maxReplicas": 4, "scaleDownStabilization": "30s"}, resources={"requests": {"cpu": "1"}}
        )
        out = children(model)
        assert "ScaledObject" not in out
        hpa = out["HorizontalPodAutoscaler"]
        assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 30}}
        kubernetes_validate.validate(hpa, "1.33.0", strict=True)
        assert optional_kinds(model) == frozenset()

    def test_requests_per_second_is_a_scaled_object_counting_the_stable_pods(self) -> None:
        model = md(autoscaling=RPS)
        out = children(model)
        assert "HorizontalPodAutoscaler" not in out, "KEDA runs the HPA: two would fight over replicas"
        so = out["ScaledObject"]
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        assert so["metadata"]["name"] == "iris"
        spec = so["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris"}
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 5)
        assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == {
            "scaleDown": {"stabilizationWindowSeconds": 300}
        }
        [trigger] = spec["triggers"]
        assert trigger["type"] == "prometheus"
        assert trigger["metadata"] == {
            "serverAddress": PROMETHEUS["address"],
            "query": (
                'sum(rate(bentoml_service_request_total{namespace="ml",modeldeploy_dev_name="iris",'
                'endpoint!~"/(livez|readyz|healthz|metrics)"}[1m]))'
            ),
            "threshold": "10",
            "ignoreNullValues": "true",
        }
        assert optional_kinds(model) == {"ScaledObject"}

    def test_every_target_goes_to_the_scaled_object_when_one_is_a_request_metric(self) -> None:
        model = md(
            autoscaling={
                **RPS,
                "metrics": [{"type": "cpu", "target": 60}, {"type": "inFlightRequests", "target": 4}],
            },
            resources={"requests": {"cpu": "1"}},
        )
        triggers = children(model)["ScaledObject"]["spec"]["triggers"]
        assert triggers[0] == {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "60"}}
        assert triggers[1]["metadata"]["query"].startswith("sum(bentoml_service_request_in_progress{")

    def test_labels_follow_the_scrape_configuration(self) -> None:
        model = md(autoscaling={**RPS, "prometheus": {**PROMETHEUS, "nameLabel": "app", "namespaceLabel": "ns"}})
        assert model.spec.autoscaling is not None and model.spec.autoscaling.prometheus is not None
        query = load_query("requestsPerSecond", model.spec.autoscaling.prometheus, "ml", "iris")
        assert '{ns="ml",app="iris",' in query

    def test_the_query_is_the_same_for_every_revision(self) -> None:
        """A revision's query would change at each promotion: KEDA rewrites its HPA, and the new stable's series,
        which carried only the canary's share, read as a fraction of the load."""
        v1 = children(md(autoscaling=RPS))["ScaledObject"]["spec"]["triggers"]
        v2 = children(md(autoscaling=RPS, bento={"image": IMAGE_V2}))["ScaledObject"]["spec"]["triggers"]
        assert v1 == v2


class TestStatus:
    def test_without_keda_the_model_serves_and_degraded_says_why(self) -> None:
        w = World(body=md_body(autoscaling=RPS), unserved=frozenset({"ScaledObject"}))
        result = w.settle()
        assert result.stable is not None
        degraded = w.condition("Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "KEDAMissing")
        assert "install KEDA" in degraded["message"]
        w.unserved = frozenset()
        w.settle()
        assert w.condition("Ready")["status"] == "True"

    def test_a_canary_of_a_keda_scaled_model_is_added_beside_the_stable(self) -> None:
        w = World(body=md_body(autoscaling=RPS))
        w.settle()
        w.set_spec(autoscaling=RPS, bento={"image": IMAGE_V2})
        result = w.settle()
        assert result.stable is not None and result.stable.replicas is None, "the autoscaler keeps the stable size"
        assert result.canary is not None and result.canary.replicas == 1


class TestPolicy:
    def test_the_metrics_allow_list_covers_the_autoscaler_prometheus(self) -> None:
        config = PlanConfig(policy=Policy(metrics_allow=("http://prometheus.monitoring:9090",)))
        refused = refusal(md(autoscaling=RPS), config)
        assert refused is not None and refused.reason == "NotAllowed"
        assert refused.problems[0].startswith("spec.autoscaling.prometheus.address: http://prometheus.monitoring.svc")
