"""kube-score (zegl/kube-score, built from the Go module proxy by hack/cluster/build.sh) on what the operator
renders and on the chart: no CRITICAL but the documented policy choices (docs/production.md, kube-score)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.versions import ensure_binaries
from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.k8s.children import render_children
from modeldeploy.model.revision import RevisionPlan, template_of

from factories import md
from helm import CHART

ROOT = Path(__file__).resolve().parents[2]
CRITICAL = 1
RUNTIME_IMAGE = "registry.example.com/bento-runtime:1.4"


@dataclass(frozen=True)
class Allowed:
    """A CRITICAL finding that is a policy choice, with the reason docs/production.md gives for it."""

    check: str
    summary: str
    reason: str
    # Where the choice applies (a kube-score object as its JSON output has it); everywhere by default.
    where: Callable[[dict[str, Any]], bool] = lambda _: True


def _model_server(obj: dict[str, Any]) -> bool:
    return obj["object_meta"].get("labels", {}).get("app.kubernetes.io/managed-by") == "modeldeploy"


def _one_replica(obj: dict[str, Any]) -> bool:
    return _model_server(obj) and obj["object_meta"]["name"] in ONE_REPLICA


def _operator(obj: dict[str, Any]) -> bool:
    return obj["object_meta"].get("labels", {}).get("app.kubernetes.io/name") == "modeldeploy-operator"


# Model Deployments rendered at one replica (no budget by rule).
ONE_REPLICA = {"single"}

POLICY = (
    Allowed(
        "container-resources",
        "CPU limit is not set",
        "no CPU limits on purpose: a CPU limit throttles a model server at its request's multiple even on an idle "
        "node (CFS quota), which shows as latency, not as an error; requests place the pods, and a spec that "
        "wants a limit sets resources.limits.cpu",
    ),
    Allowed(
        "container-security-context-user-group-id",
        "The container is running with a low user ID",
        "UID 1034 is the user `bentoml containerize` images are built with (BENTO_USER_UID); another UID would "
        "not own the image's files. kube-score wants 10000 or more",
        _model_server,
    ),
    Allowed(
        "container-security-context-user-group-id",
        "The container running with a low group ID",
        "GID 1034: the group of `bentoml containerize` images, as for the UID",
        _model_server,
    ),
    Allowed(
        "container-image-pull-policy",
        "ImagePullPolicy is not set to Always",
        "images are pinned (the API refuses latest and untagged ones), so IfNotPresent runs the same image and a "
        "registry outage does not stop pods from restarting; spec.bento.imagePullPolicy (image.pullPolicy in the "
        "chart) sets Always where pull secrets must be checked on every start",
    ),
    Allowed(
        "pod-networkpolicy",
        "The pod does not have a matching NetworkPolicy",
        "opt-in (spec.networkPolicy): who may call a model (a gateway, other namespaces, Prometheus) is the "
        "cluster's to say; the operator's own pod serves nothing but its probes",
    ),
    Allowed(
        "deployment-has-poddisruptionbudget",
        "No matching PodDisruptionBudget was found",
        "no budget at one replica by rule (docs/production.md): one that allows one disruption of one pod "
        "protects nothing, one that allows none blocks every drain of its node",
        _one_replica,
    ),
    Allowed(
        "pod-probes-identical",
        "Container has the same readiness and liveness probe",
        "the operator's only health endpoint is kopf's liveness probe until readiness says whether a replica "
        "leads (leader election, issue 9 item 1, done apart from this change)",
        _operator,
    ),
)


def kube_score(documents: list[dict[str, Any]], work: Path) -> list[dict[str, Any]]:
    """kube-score's JSON report of the documents (kube-score exits 1 when it finds a CRITICAL: not an error)."""
    binary = ensure_binaries(("kube-score",))["kube-score"]
    manifest = work / "objects.yaml"
    manifest.write_text(yaml.safe_dump_all(documents))
    result = subprocess.run(
        [str(binary), "score", "--output-format", "json", str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    report: list[dict[str, Any]] = json.loads(result.stdout)
    return report


def criticals(report: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, str, str]]:
    """(object, check id, container, summary) of every CRITICAL finding."""
    return [
        (obj, check["check"]["id"], comment.get("path", ""), comment["summary"])
        for obj in report
        for check in obj["checks"]
        if not check["skipped"] and check["grade"] == CRITICAL
        for comment in check["comments"] or [{"summary": check["check"]["name"]}]
    ]


def unexplained(report: list[dict[str, Any]]) -> list[str]:
    return [
        f"{obj['object_name']} ({container or 'pod'}): {check}: {summary}"
        for obj, check, container, summary in criticals(report)
        if not any(a.check == check and a.summary == summary and a.where(obj) for a in POLICY)
    ]


def first_deployment(model: ModelDeployment) -> list[dict[str, Any]]:
    template = template_of(model.spec, RUNTIME_IMAGE)
    replicas = None if model.spec.autoscaling else model.spec.replicas
    return render_children(model, RevisionPlan("stable", template.revision, template, replicas), None)


def canary_in_progress(model: ModelDeployment) -> list[dict[str, Any]]:
    template = template_of(model.spec, RUNTIME_IMAGE)
    stable = RevisionPlan("stable", "aaaaaaaaaa", template, model.spec.replicas)
    canary = RevisionPlan("canary", template.revision, template, 1)
    return render_children(model, stable, canary, route_weight=25)


SERVING = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
SAMPLES: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "tag from s3, autoscaled": lambda: first_deployment(
        md(
            "tagged",
            bento={"tag": "iris_classifier:v1", "store": {"uri": "s3://models/bentos", "secretRef": {"name": "s3"}}},
            resources={**SERVING, "storage": "8Gi"},
            autoscaling={"minReplicas": 2, "maxReplicas": 6, "metrics": [{"type": "cpu", "target": 70}]},
        )
    ),
    "gpu canary behind a Gateway": lambda: canary_in_progress(
        md(
            "gpu",
            replicas=3,
            resources={**SERVING, "gpu": {"count": 1}},
            rollout={"trafficRouting": "GatewayAPI", "gateway": {"parentRefs": [{"name": "gw"}]}},
        )
    ),
    "canary of a tag from a claim": lambda: canary_in_progress(
        md(
            "claimed",
            replicas=4,
            bento={"tag": "iris_classifier:v2", "store": {"uri": "pvc://bentos/store"}},
            resources={**SERVING, "limits": {"memory": "2Gi", "cpu": "2"}},
        )
    ),
    "one replica": lambda: first_deployment(md("single", replicas=1, resources=SERVING)),
}


def rendered_example() -> list[dict[str, Any]]:
    """`modeldeploy render` of the iris example, as a user runs it."""
    example = ROOT / "bentos" / "iris-classifier" / "modeldeployment.yaml"
    out = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "modeldeploy"), "render", "-f", str(example)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def helm_template(*values: str) -> list[dict[str, Any]]:
    helm = ensure_binaries(("helm",))["helm"]
    args = [str(helm), "template", "modeldeploy", str(CHART), "--namespace", "modeldeploy-system"]
    for value in values:
        args += ["--set", value]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


class TestModelObjects:
    def test_the_example_has_no_critical_but_policy(self, tmp_path: Path) -> None:
        assert unexplained(kube_score(rendered_example(), tmp_path)) == []

    @pytest.mark.parametrize("sample", SAMPLES, ids=list(SAMPLES))
    def test_samples_have_no_critical_but_policy(self, sample: str, tmp_path: Path) -> None:
        documents = SAMPLES[sample]()
        assert {"Deployment", "Service"} <= {d["kind"] for d in documents}
        assert unexplained(kube_score(documents, tmp_path)) == []

    def test_kube_score_finds_what_the_policy_does_not_allow(self, tmp_path: Path) -> None:
        """The check can fail: the budget left out of a model of three replicas is a CRITICAL no policy allows."""
        documents = first_deployment(md("three", replicas=3, resources=SERVING))
        without_budget = [d for d in documents if d["kind"] != "PodDisruptionBudget"]
        assert unexplained(kube_score(documents, tmp_path)) == []
        assert unexplained(kube_score(without_budget, tmp_path)) == [
            "Deployment/apps/v1/ml/three (pod): deployment-has-poddisruptionbudget: "
            "No matching PodDisruptionBudget was found"
        ]

    def test_an_enabled_network_policy_covers_every_pod_of_the_model(self, tmp_path: Path) -> None:
        peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway-system"}}}]
        model = md("fenced", replicas=3, resources=SERVING, networkPolicy={"enabled": True, "from": peers})
        report = kube_score(canary_in_progress(model), tmp_path)
        assert unexplained(report) == []
        found = {(obj["object_name"], check) for obj, check, _, _ in criticals(report)}
        assert not any(check == "pod-networkpolicy" for _, check in found), found
        checked = {
            check["check"]["id"]: check["grade"]
            for obj in report
            if obj["type_meta"]["kind"] == "NetworkPolicy"
            for check in obj["checks"]
            if not check["skipped"]
        }
        assert checked["networkpolicy-targets-pod"] == 10


class TestChart:
    @pytest.mark.parametrize("values", [(), ("watchNamespaces={ml,staging}",)], ids=["cluster-wide", "namespaces"])
    def test_the_chart_has_no_critical_but_policy(self, values: tuple[str, ...], tmp_path: Path) -> None:
        documents = helm_template(*values)
        assert "Deployment" in {d["kind"] for d in documents}
        assert unexplained(kube_score(documents, tmp_path)) == []


def test_every_policy_choice_is_documented() -> None:
    doc = (ROOT / "docs" / "production.md").read_text()
    for allowed in POLICY:
        assert f"`{allowed.check}`" in doc, allowed.check
