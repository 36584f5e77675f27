"""What the operator refuses to do for a spec the API server admitted: its policy, and a tag it cannot serve.

The same words reach the operator's condition, `modeldeploy render` and (for the rules that need no
cluster state) the chart's ValidatingAdmissionPolicy, which is checked here against the Python rules.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import yaml

from modeldeploy.model.policy import Policy
from modeldeploy.rollout.config import PlanConfig, refusal

from factories import md
from helm import render_chart

TAG = {"tag": "iris:v1", "store": {"uri": "s3://models/bentos"}}


class TestRefusals:
    def test_by_default_everything_the_api_admits_is_allowed(self) -> None:
        spec = md(service={"type": "LoadBalancer"}, serviceAccountName="reader")
        assert refusal(spec, PlanConfig()) is None

    def test_a_tag_without_a_runtime_image_anywhere_is_invalid(self) -> None:
        refused = refusal(md(bento=TAG), PlanConfig())
        assert refused is not None and refused.reason == "InvalidSpec"
        assert refused.problems[0].startswith("spec.bento.runtimeImage: required with tag")
        assert refusal(md(bento=TAG), PlanConfig("registry.example.com/bento-runtime:1.4")) is None
        assert refusal(md(bento={**TAG, "runtimeImage": "registry.example.com/rt:1"}), PlanConfig()) is None

    def test_each_policy_rule_names_its_field(self) -> None:
        policy = Policy(
            ("ClusterIP",), allow_service_account_name=False, metrics_allow=("http://prometheus.monitoring:9090",)
        )
        spec = md(
            service={"type": "NodePort"},
            serviceAccountName="reader",
            rollout={"analysis": {"prometheus": {"address": "http://169.254.169.254:80/latest"}}},
        )
        refused = refusal(spec, PlanConfig(policy=policy))
        assert refused is not None and refused.reason == "NotAllowed"
        assert refused.problems == (
            "spec.service.type: NodePort is not allowed in this cluster (allowed: ClusterIP)",
            "spec.serviceAccountName: not allowed in this cluster: model servers run as the default ServiceAccount",
            "spec.rollout.analysis.prometheus.address: http://169.254.169.254:80/latest is not a metrics endpoint "
            "this cluster's operator may query (allowed: http://prometheus.monitoring:9090)",
        )

    @pytest.mark.parametrize(
        ("address", "allowed"),
        [
            ("http://prometheus.monitoring:9090", True),
            ("http://Prometheus.monitoring:9090/", True),
            ("http://prometheus.monitoring:9090/sub/path", True),
            ("https://prometheus.monitoring:9090", False),
            ("http://prometheus.monitoring:9091", False),
            ("http://prometheus.monitoring:9090.evil.example.com", False),
            ("http://prometheus.monitoring.evil.example.com:9090", False),
            ("http://thanos:80/prometheus/api", True),
            ("http://thanos/prometheus", True),
            ("http://thanos/prometheus-other", False),
            ("http://thanos/", False),
        ],
    )
    def test_the_metrics_allow_list_compares_urls_by_their_parts(self, address: str, allowed: bool) -> None:
        policy = Policy(metrics_allow=("http://prometheus.monitoring:9090", "http://thanos/prometheus"))
        assert policy.metrics_allowed(address) is allowed

    @pytest.mark.parametrize("bad", ["prometheus:9090", "http://p:9090/?q=1", "http://u@p:9090", "ftp://p"])
    def test_an_allow_list_entry_must_be_a_base_url(self, bad: str) -> None:
        with pytest.raises(ValueError, match="is not a base URL"):
            Policy(metrics_allow=(bad,))


def admission_policy(*values: str) -> dict[str, Any] | None:
    return next((d for d in render_chart(*values) if d["kind"] == "ValidatingAdmissionPolicy"), None)


class TestChart:
    @pytest.mark.parametrize(
        ("values", "policy"),
        [
            (("policy.allowedServiceTypes={ClusterIP}",), Policy(("ClusterIP",))),
            (("policy.allowedServiceTypes={NodePort,ClusterIP}",), Policy(("NodePort", "ClusterIP"))),
            (("policy.allowServiceAccountName=false",), Policy(allow_service_account_name=False)),
            (
                ("policy.allowedServiceTypes={ClusterIP}", "policy.allowServiceAccountName=false"),
                Policy(("ClusterIP",), allow_service_account_name=False),
            ),
        ],
    )
    def test_the_admission_policy_enforces_the_operators_own_rules(
        self, values: tuple[str, ...], policy: Policy
    ) -> None:
        found = admission_policy(*values)
        assert found is not None
        rules = [(v["expression"], v["messageExpression"]) for v in found["spec"]["validations"]]
        assert rules == policy.admission_rules()

    def test_no_admission_policy_when_nothing_is_restricted(self) -> None:
        assert admission_policy() is None
        assert admission_policy("policy.allowedServiceTypes={ClusterIP}", "policy.admissionPolicy=false") is None

    def test_the_operator_is_given_the_policy(self) -> None:
        values = (
            "policy.allowedServiceTypes={ClusterIP}",
            "policy.allowServiceAccountName=false",
            "policy.metricsAllowList={http://prometheus.monitoring:9090}",
        )
        [deployment] = [d for d in render_chart(*values) if d["kind"] == "Deployment"]
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--allowed-service-type=ClusterIP" in args
        assert "--forbid-service-account-name" in args
        assert "--metrics-allow=http://prometheus.monitoring:9090" in args


def modeldeploy(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modeldeploy.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestRender:
    def manifest(self, **spec: Any) -> str:
        body = {"apiVersion": "modeldeploy.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"}}
        return yaml.safe_dump({**body, "spec": {"bento": TAG, **spec}})

    def test_a_tag_with_no_runtime_image_fails_with_the_field_named(self) -> None:
        result = modeldeploy("render", "-f", "-", stdin=self.manifest())
        assert result.returncode == 2
        assert "error: ModelDeployment iris: spec.bento.runtimeImage: required with tag" in result.stderr
        assert "image: ''" not in result.stdout

    def test_with_a_default_runtime_image_it_renders(self) -> None:
        result = modeldeploy(
            "render", "-f", "-", "--default-runtime-image", "registry.example.com/rt:1", stdin=self.manifest()
        )
        assert result.returncode == 0, result.stderr
        assert "image: registry.example.com/rt:1" in result.stdout

    def test_an_unpinned_default_runtime_image_is_refused(self) -> None:
        result = modeldeploy("render", "-f", "-", "--default-runtime-image", "python:latest", stdin=self.manifest())
        assert result.returncode == 2
        assert "--default-runtime-image python:latest: name a version" in result.stderr
