"""The ModelDeployment API: defaults, validation that names the field, revisions."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from modeldeploy.api.duration import Duration, format_duration, parse_duration
from modeldeploy.api.errors import describe
from modeldeploy.api.rules import Rule, RuleViolation
from modeldeploy.api.v1alpha1 import ModelDeployment, ModelDeploymentStatus
from modeldeploy.model.revision import template_of

from factories import IMAGE_V1, IMAGE_V2, md, md_body


def errors_of(body: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        ModelDeployment.model_validate(body)
    return describe(caught.value)


class TestDefaults:
    def test_minimal_spec_gets_safe_defaults(self) -> None:
        model = ModelDeployment.model_validate({"metadata": {"name": "iris"}, "spec": {"bento": {"image": IMAGE_V1}}})
        spec = model.spec
        assert spec.replicas == 1
        assert spec.rollout.strategy == "Canary"
        assert [s.weight for s in spec.rollout.steps] == [10, 50]
        assert spec.rollout.traffic_routing == "Replicas"
        assert spec.service.port == 3000
        assert spec.startup_timeout == Duration("10m")
        assert model.namespace == "default"

    def test_wire_form_is_camel_case_without_unset_fields(self) -> None:
        wire = md(bentoConfig={"service": "IrisClassifier", "workers": 2}).spec.wire()
        assert wire["bentoConfig"] == {"service": "IrisClassifier", "workers": 2, "options": {}}
        assert "autoscaling" not in wire
        assert "serviceAccountName" not in wire


class TestValidation:
    @pytest.mark.parametrize(
        ("spec", "expected"),
        [
            ({"bento": {"image": IMAGE_V1, "tag": "iris:v1"}}, "spec.bento: exactly one of image or tag must be set"),
            ({"bento": {"tag": "iris:v1"}}, "spec.bento.store: store is required when tag is set"),
            ({"bento": {"tag": "iris"}, "replicas": 1}, "spec.bento.tag: String should match pattern"),
            (
                {"bento": {"image": IMAGE_V1, "runtimeImage": "python:3.11"}},
                "spec.bento: store and runtimeImage apply only to tag",
            ),
            ({"bento": {"tag": "iris:v1", "store": {"uri": "ftp://x"}}}, "spec.bento.store.uri: String should match"),
            ({"replicas": -1}, "spec.replicas: Input should be greater than or equal to 0"),
            (
                {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}, "resources": {"requests": {"cpu": "1"}}},
                "spec.autoscaling.minReplicas: minReplicas must be less than or equal to maxReplicas",
            ),
            ({"autoscaling": {"maxReplicas": 3}}, "spec.autoscaling: autoscaling on cpu needs resources.requests.cpu"),
            (
                {
                    "autoscaling": {"maxReplicas": 3, "metrics": [{"type": "cpu", "target": 50}] * 2},
                    "resources": {"requests": {"cpu": "1"}},
                },
                "spec.autoscaling.metrics: each metric type may appear only once",
            ),
            ({"resources": {"requests": {"cpu": "lots"}}}, "spec.resources.requests.cpu: 'lots' is not a Kubernetes"),
            ({"resources": {"gpu": {"count": -1}}}, "spec.resources.gpu.count: Input should be greater than or equal"),
            (
                {"rollout": {"steps": [{"weight": 50}, {"weight": 10}]}},
                "spec.rollout.steps: step weights must be strictly increasing",
            ),
            (
                {"rollout": {"steps": [{"weight": 20}, {"weight": 20}]}},
                "spec.rollout.steps: step weights must be strictly increasing",
            ),
            ({"rollout": {"steps": [{"weight": 101}]}}, "spec.rollout.steps[0].weight: Input should be less than"),
            ({"rollout": {"steps": [{"weight": 10, "pause": "soon"}]}}, "spec.rollout.steps[0].pause: String should"),
            ({"rollout": {"steps": []}}, "spec.rollout.steps: List should have at least 1 item"),
            (
                {"rollout": {"trafficRouting": "GatewayAPI"}},
                "spec.rollout.gateway: rollout.gateway (or expose) is required when trafficRouting is GatewayAPI",
            ),
            ({"rollout": {"strategy": "BlueGreen"}}, "spec.rollout.strategy: Input should be 'Canary' or 'Rolling'"),
            (
                {"rollout": {"analysis": {"prometheus": {"address": "prometheus:9090"}}}},
                "spec.rollout.analysis.prometheus.address: String should match pattern",
            ),
            (
                {"rollout": {"analysis": {"prometheus": {"address": "http://p:9090"}, "maxErrorRate": 2}}},
                "spec.rollout.analysis.maxErrorRate: Input should be less than or equal to 1",
            ),
            (
                {"env": [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
                "spec.env[0]: value and valueFrom are mutually exclusive",
            ),
            (
                {"env": [{"name": "A", "valueFrom": {}}]},
                "spec.env[0].valueFrom: exactly one of secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef",
            ),
            ({"env": [{"name": "1 bad"}]}, "spec.env[0].name: String should match pattern"),
            ({"placement": {"tolerations": [{"effect": "Sometimes"}]}}, "spec.placement.tolerations[0].effect"),
            ({"replica": 2}, "spec.replica: Extra inputs are not permitted"),
            ({"bentoConfig": {"workers": 2}}, "spec.bentoConfig.service: service (the BentoML service class name"),
        ],
    )
    def test_rejection_names_the_field(self, spec: dict[str, Any], expected: str) -> None:
        problems = errors_of(md_body(**spec))
        assert any(p.startswith(expected) for p in problems), problems

    @pytest.mark.parametrize(
        ("spec", "expected"),
        [
            (
                {"bentoConfig": {"options": {"api_server.traffic.timeout": "["}}},
                "spec.bentoConfig.options.api_server.traffic.timeout: not a BentoML option this operator knows",
            ),
            (
                {"bentoConfig": {"options": {"services.Iris.trafic.timeout": "3"}}},
                "spec.bentoConfig.options.services.Iris.trafic.timeout: not a BentoML option",
            ),
            (
                {"bentoConfig": {"options": {"services.Iris.traffic.timeout": "["}}},
                "spec.bentoConfig.options.services.Iris.traffic.timeout: must be a number above 0",
            ),
            (
                {"bentoConfig": {"options": {"services.Iris.http.port": "3001"}}},
                "spec.bentoConfig.options.services.Iris.http.port: set by the operator",
            ),
            ({"rollout": {"steps": [{"weight": 10, "pause": "99999999999h"}]}}, "spec.rollout.steps[0].pause: "),
            ({"rollout": {"steps": [{"weight": 10, "pause": "169h"}]}}, "spec.rollout.steps[0].pause: must be between"),
            (
                {"rollout": {"analysis": {"prometheus": {"address": "http://p:9090"}, "interval": "0s"}}},
                "spec.rollout.analysis.interval: must be between 1s and 24h",
            ),
            ({"rollout": {"progressDeadline": "0s"}}, "spec.rollout.progressDeadline: must be between 30s and 24h"),
            ({"startupTimeout": "0s"}, "spec.startupTimeout: must be between 10s and 24h"),
            (
                {"rollout": {"analysis": {"prometheus": {"address": "http://127.0.0.1:9/any/path#"}}}},
                "spec.rollout.analysis.prometheus.address: String should match pattern",
            ),
            (
                {"rollout": {"analysis": {"prometheus": {"address": "http://u:p@prometheus:9090"}}}},
                "spec.rollout.analysis.prometheus.address: String should match pattern",
            ),
            (
                {"rollout": {"analysis": {"prometheus": {"address": "http://prometheus:9090/?x=1"}}}},
                "spec.rollout.analysis.prometheus.address: String should match pattern",
            ),
            (
                {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "../../kube-system/x", "key": "k"}}}]},
                "spec.env[0].valueFrom.secretKeyRef.name: String should match pattern",
            ),
            ({"serviceAccountName": "a/b"}, "spec.serviceAccountName: String should match pattern"),
            ({"imagePullSecrets": [{"name": "../x"}]}, "spec.imagePullSecrets[0].name: String should match pattern"),
            (
                {"bento": {"tag": "iris:v1", "store": {"uri": "pvc://../etc/x"}}},
                "spec.bento.store.uri: String should match pattern",
            ),
            ({"resources": {"requests": {"cpu": -1}}}, "spec.resources.requests.cpu: -1 is not a quantity"),
            ({"resources": {"requests": {"cpu": "-1"}}}, "spec.resources.requests.cpu: '-1' is not a Kubernetes"),
            (
                {"resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}}},
                "spec.resources.requests.memory: a request must not be more than its limit",
            ),
            ({"resources": {"requests": {"nvidia.com/gpu": 1}}}, "spec.resources.requests: requests may name cpu"),
            ({"bento": {"image": "registry.example.com/iris:latest"}}, "spec.bento.image: image must name a version"),
            ({"bento": {"image": "registry.example.com:5000/iris"}}, "spec.bento.image: image must name a version"),
            (
                {"bento": {"tag": "iris:v1", "store": {"uri": "s3://b/p"}, "runtimeImage": "python"}},
                "spec.bento.runtimeImage: runtimeImage must name a version",
            ),
            (
                {"env": [{"name": "A", "value": "1"}, {"name": "BENTOML_PORT", "value": "1"}]},
                "spec.env[1].name: BENTOML_PORT cannot be set",
            ),
            ({"env": [{"name": "TMPDIR", "value": "/var"}]}, "spec.env[0].name: TMPDIR cannot be set"),
            (
                {"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.containers"}}}]},
                "spec.env[0].valueFrom.fieldRef.fieldPath: String should match pattern",
            ),
            (
                {"env": [{"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "2"}}}]},
                "spec.env[0].valueFrom.resourceFieldRef.divisor: divisor must be 1m or 1 for cpu",
            ),
            (
                {"placement": {"nodeSelector": {"bad key!": "v"}}},
                "spec.placement.nodeSelector.bad key!: nodeSelector keys",
            ),
            (
                {"placement": {"nodeSelector": {"pool": "not a value"}}},
                "spec.placement.nodeSelector.pool: nodeSelector",
            ),
            (
                {"placement": {"tolerations": [{"operator": "Exists", "value": "x"}]}},
                "spec.placement.tolerations[0].value: value must be empty with operator Exists",
            ),
            ({"placement": {"tolerations": [{"value": "x"}]}}, "spec.placement.tolerations[0].operator: a toleration"),
            (
                {"placement": {"tolerations": [{"key": "k", "tolerationSeconds": 5}]}},
                "spec.placement.tolerations[0].tolerationSeconds: tolerationSeconds applies only to effect NoExecute",
            ),
            ({"placement": {"priorityClassName": "High"}}, "spec.placement.priorityClassName: String should match"),
            ({"service": {"annotations": {"bad key": "v"}}}, "spec.service.annotations.bad key: annotation keys"),
            (
                {
                    "rollout": {
                        "trafficRouting": "GatewayAPI",
                        "gateway": {"parentRefs": [{"name": "g"}], "hostnames": ["Bad_Host"]},
                    }
                },
                "spec.rollout.gateway.hostnames[0]: String should match pattern",
            ),
            (
                {
                    "rollout": {
                        "trafficRouting": "GatewayAPI",
                        "gateway": {"parentRefs": [{"name": "g"}, {"name": "g"}]},
                    }
                },
                "spec.rollout.gateway.parentRefs: each reference to a Gateway must name another sectionName",
            ),
            (
                {
                    "rollout": {
                        "trafficRouting": "GatewayAPI",
                        "gateway": {"parentRefs": [{"name": "g"}, {"name": "g", "sectionName": "a"}]},
                    }
                },
                "spec.rollout.gateway.parentRefs: sectionName must be set on every reference",
            ),
            (
                {"resources": {"gpu": {"count": 1, "resourceName": "gpu"}}},
                "spec.resources.gpu.resourceName: String should",
            ),
        ],
    )
    def test_what_the_cluster_would_refuse_later_is_refused_now(self, spec: dict[str, Any], expected: str) -> None:
        problems = errors_of(md_body(**spec))
        assert any(p.startswith(expected) for p in problems), problems

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("a" * 57, "metadata.name must be at most 56 characters"),
            ("9lives", "metadata.name must be a DNS-1035 label"),
            ("Iris", "metadata.name must be a DNS-1035 label"),
        ],
    )
    def test_names_that_cannot_name_children_are_rejected(self, name: str, expected: str) -> None:
        problems = errors_of(md_body(name=name))
        assert any(expected in p for p in problems), problems

    @pytest.mark.parametrize(
        "spec",
        [
            {"bento": {"tag": "iris_classifier:jkolwkxiewz4eax4", "store": {"uri": "s3://models/bentos"}}},
            {"bento": {"tag": "iris:v1", "store": {"uri": "pvc://models/bentos", "secretRef": {"name": "c"}}}},
            {"resources": {"requests": {"cpu": 1, "memory": "2Gi"}, "gpu": {"count": 1}}},
            {
                "autoscaling": {"maxReplicas": 3, "metrics": [{"type": "memory", "target": 70}]},
                "resources": {"requests": {"memory": "1Gi"}},
            },
            {"rollout": {"steps": [{"weight": 5, "pause": "30s"}, {"weight": 100, "pause": "1h30m"}]}},
            {"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
            {"bento": {"image": "registry.example.com:5000/team/iris@sha256:" + "a" * 64}},
            {"bento": {"image": "registry.example.com/iris:latest@sha256:" + "b" * 64}},
            {"rollout": {"analysis": {"prometheus": {"address": "https://[::1]:9090/prometheus/"}}}},
            {
                "bentoConfig": {
                    "options": {"services.Iris.traffic.timeout": "2.5", "services.Iris.workers": "cpu_count"}
                }
            },
            {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 1, "memory": "1Gi"}}},
            {"placement": {"tolerations": [{"operator": "Exists"}], "nodeSelector": {"example.com/pool": "gpu-a"}}},
            {"serviceAccountName": "model-reader", "automountServiceAccountToken": True},
        ],
    )
    def test_valid_specs_are_accepted(self, spec: dict[str, Any]) -> None:
        ModelDeployment.model_validate(md_body(**spec))


class TestQuantities:
    @pytest.mark.parametrize(
        ("request_", "limit", "refused"),
        [
            ("256Mi", "+.111Ei", False),  # found by the fuzzer: Ei is a suffix, not an exponent
            ("2Ei", "1E", True),
            ("1E", "1e18", False),
            ("500m", 1, False),
            ("1.5", "1500m", False),
            ("1500001u", "1.5", True),
        ],
    )
    def test_a_request_is_compared_with_its_limit_as_the_api_server_does(
        self, request_: str | int, limit: str | int, refused: bool
    ) -> None:
        spec = {"resources": {"requests": {"memory": request_}, "limits": {"memory": limit}}}
        if refused:
            assert "spec.resources.requests.memory: a request must not be more than its limit" in errors_of(
                md_body(**spec)
            )
        else:
            ModelDeployment.model_validate(md_body(**spec))

    def test_a_rule_that_cannot_be_evaluated_refuses_the_value_as_cel_does(self) -> None:
        rule = Rule(cel="true", message="must be fine", check=lambda value: 1 / value > 0)
        with pytest.raises(RuleViolation, match=r"must be fine \(the rule could not be evaluated: ZeroDivisionError\)"):
            rule.enforce(0)

    def test_a_quantity_no_number_can_hold_is_refused_not_raised(self) -> None:
        problems = errors_of(md_body(resources={"requests": {"memory": "1e99999999"}, "limits": {"memory": "1"}}))
        assert problems == ["spec.resources: '1e99999999' is not a quantity a Kubernetes object can hold"]


class TestRevision:
    def test_revision_is_stable_and_short(self) -> None:
        first = template_of(md().spec).revision
        assert first == template_of(md().spec).revision
        assert len(first) == 10

    @pytest.mark.parametrize(
        "change",
        [
            {"bento": {"image": IMAGE_V2}},
            {"env": [{"name": "A", "value": "1"}]},
            {"resources": {"limits": {"memory": "2Gi"}}},
            {"bentoConfig": {"service": "IrisClassifier", "workers": 4}},
            {"placement": {"nodeSelector": {"pool": "gpu"}}},
        ],
    )
    def test_pod_affecting_changes_make_a_new_revision(self, change: dict[str, Any]) -> None:
        assert template_of(md(**change).spec).revision != template_of(md().spec).revision

    @pytest.mark.parametrize(
        "change",
        [
            {"replicas": 7},
            {"rollout": {"strategy": "Rolling"}},
            {"service": {"port": 8080}},
            {"autoscaling": {"maxReplicas": 4}, "resources": {"requests": {"cpu": "1"}}},
        ],
    )
    def test_scaling_and_rollout_settings_keep_the_revision(self, change: dict[str, Any]) -> None:
        base = md(resources={"requests": {"cpu": "1"}})
        changed = md(**change, **({} if "resources" in change else {"resources": {"requests": {"cpu": "1"}}}))
        assert template_of(changed.spec).revision == template_of(base.spec).revision

    def test_default_runtime_image_is_part_of_a_tag_revision(self) -> None:
        spec = md(bento={"tag": "iris:v1", "store": {"uri": "s3://b/p"}}).spec
        a = template_of(spec, "runtime:1")
        b = template_of(spec, "runtime:2")
        assert a.bento.runtime_image == "runtime:1"
        assert a.revision != b.revision


class TestDurations:
    @pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("2m", 120), ("1h30m", 5400), ("500ms", 0.5)])
    def test_parse(self, text: str, seconds: float) -> None:
        assert parse_duration(text).total_seconds() == seconds

    def test_bad_duration_names_the_text(self) -> None:
        with pytest.raises(ValueError, match="'10 minutes' is not a duration"):
            parse_duration("10 minutes")

    def test_format_round_trips(self) -> None:
        assert format_duration(parse_duration("1h2m3s")) == "1h2m3s"
        assert format_duration(parse_duration("0s")) == "0s"

    def test_a_duration_is_a_timedelta_that_keeps_its_text(self) -> None:
        model = md(startupTimeout="90s", rollout={"steps": [{"weight": 10, "pause": "1h30m"}]})
        assert model.spec.startup_timeout == timedelta(seconds=90)
        assert model.spec.wire()["startupTimeout"] == "90s", "never rewritten as 1m30s"
        assert f"{model.spec.rollout.steps[0].pause}" == "1h30m"
        assert datetime(2026, 1, 1, tzinfo=UTC) + model.spec.startup_timeout == datetime(
            2026, 1, 1, 0, 1, 30, tzinfo=UTC
        )
        assert copy.deepcopy(model).spec.startup_timeout.text == "90s"


class TestTypedStatusAndMetadata:
    def test_timestamps_are_aware_and_written_in_utc_with_whole_seconds(self) -> None:
        status = ModelDeploymentStatus.model_validate(
            {"failed": {"revision": "r", "bento": "b", "reason": "x", "at": "2026-11-24T13:00:00.75+01:00"}}
        )
        assert status.failed is not None and status.failed.at == datetime(2026, 11, 24, 12, 0, 0, 750000, tzinfo=UTC)
        assert status.wire()["failed"]["at"] == "2026-11-24T12:00:00Z"

    def test_a_timestamp_without_a_zone_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="timezone"):
            ModelDeploymentStatus.model_validate(
                {
                    "conditions": [
                        {"type": "Ready", "status": "True", "reason": "R", "lastTransitionTime": "2026-11-24T12:00:00"}
                    ]
                }
            )

    def test_metadata_is_typed_and_ignores_what_the_operator_does_not_read(self) -> None:
        body = md_body()
        body["metadata"] |= {
            "annotations": {"a": "b"},
            "managedFields": [{"manager": "kubectl"}],
            "resourceVersion": "7",
        }
        meta = ModelDeployment.model_validate(body).metadata
        assert (meta.name, meta.namespace, meta.uid, meta.generation) == ("iris", "ml", "0b7c-uid", 1)
        assert (meta.annotations, meta.resource_version) == ({"a": "b"}, "7")
