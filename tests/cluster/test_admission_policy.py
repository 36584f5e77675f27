"""A platform team restricts what authors get from the operator: its flags (the chart's policy values) and,
for the rules that need no cluster state, the chart's ValidatingAdmissionPolicy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from localcluster.kit import CHART, OPERATOR_NAMESPACE, RELEASE, Cluster, Operator, condition, sample, wait_for

POLICY = (
    "--allowed-service-type",
    "ClusterIP",
    "--forbid-service-account-name",
    "--metrics-allow",
    "http://127.0.0.1:1",
)


@pytest.fixture(scope="module")
def strict(operator: Operator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The operator with a policy, in place of the session's (two operators must never share objects)."""
    operator.stop()
    log = tmp_path_factory.mktemp("strict") / "operator.log"
    process = Operator(operator.kubeconfig, log, "--workers", "4", "--resync-seconds", "20", *POLICY)
    process.start()
    try:
        yield process
    finally:
        process.stop()
        operator.start()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"service": {"type": "LoadBalancer"}}, "spec.service.type: LoadBalancer is not allowed in this cluster"),
        (
            {"serviceAccountName": "default"},
            "spec.serviceAccountName: not allowed in this cluster: model servers run as the default ServiceAccount",
        ),
        (
            {"rollout": {"analysis": {"prometheus": {"address": "http://169.254.169.254"}}}},
            "spec.rollout.analysis.prometheus.address: http://169.254.169.254 is not a metrics endpoint",
        ),
    ],
)
def test_the_operator_refuses_what_its_policy_does_not_allow(
    cluster: Cluster, strict: Operator, namespace: str, spec: dict[str, Any], expected: str
) -> None:
    cluster.apply(sample("iris", namespace, **spec))

    def refused() -> dict[str, Any] | None:
        md = cluster.get("modeldeployment", "iris", namespace)
        return md if md and condition(md, "Degraded").get("reason") == "NotAllowed" else None

    md = wait_for(refused, timeout=60, what="a NotAllowed condition")
    assert condition(md, "Degraded")["message"].startswith(expected)
    assert md["status"]["phase"] == "Failed"
    assert cluster.get("deployment", "iris", namespace) is None
    assert strict.alive


@pytest.fixture
def chart_policy(chart: Cluster) -> Iterator[Cluster]:
    """The chart upgraded with a restrictive policy, put back as it was afterwards."""

    def upgrade(*values: str) -> None:
        chart.helm(
            "upgrade", RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE, "--reset-values",
            "--set", "replicas=0", *(a for v in values for a in ("--set", v)), "--wait", "--timeout", "120s",
        )  # fmt: skip

    upgrade("policy.allowedServiceTypes={ClusterIP}", "policy.allowServiceAccountName=false")
    try:
        yield chart
    finally:
        upgrade()


def test_the_chart_makes_the_api_server_refuse_it_at_admission(chart_policy: Cluster, namespace: str) -> None:
    cluster = chart_policy

    def refused(**spec: Any) -> str | None:
        result = cluster.kubectl(
            "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(sample("iris", namespace, **spec)), check=False
        )
        return result.stderr if result.returncode != 0 else None

    message = wait_for(lambda: refused(service={"type": "NodePort"}), timeout=30, what="the policy to be enforced")
    assert "spec.service.type: NodePort is not allowed in this cluster (allowed: ClusterIP)" in message
    by_account = refused(serviceAccountName="default")
    assert by_account is not None
    assert "spec.serviceAccountName: not allowed in this cluster" in by_account
    assert refused() is None, "what the policy allows is admitted"
