"""GitOps tools read a ModelDeployment right: real objects in each phase, read by kstatus (sigs.k8s.io/cli-utils,
what Flux health checks, `helm --wait` and kpt use; hack/kstatus) and by the Argo CD health check of
docs/argocd-health.lua (run by Lua 5.1, the language of Argo CD's gopher-lua, through lupa)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import lupa.lua51 as lua
import pytest

from localcluster.kit import ROOT, Cluster, Operator, condition, sample, wait_for, wait_ready
from localcluster.versions import kstatus_binary

HEALTH_LUA = ROOT / "docs" / "argocd-health.lua"
V2 = {"image": "registry.example.com/iris-classifier:v2"}
STEPS = [{"weight": 50, "pause": "10m"}]


@pytest.fixture(scope="module")
def kstatus() -> Path:
    return kstatus_binary()


def kstatus_of(binary: Path, objects: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """name -> (kstatus status, its message), for each object as kstatus reads it."""
    out = subprocess.run(
        [str(binary)], input=json.dumps({"items": objects}), capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return {r["name"]: (r["status"], r["message"]) for r in map(json.loads, out.splitlines())}


def argocd_health(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) of the Argo CD health check, run as Argo CD runs it: `obj` global, `hs` returned."""
    runtime = lua.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    hs = runtime.execute(HEALTH_LUA.read_text())
    return str(hs.status), str(hs.message)


def status_of(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return (cluster.get("modeldeployment", name, namespace) or {}).get("status") or {}


def canary_held(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return wait_for(
        lambda: (
            (status_of(cluster, namespace, name).get("canary") or {}).get("stepReadyAt")
            and cluster.get("modeldeployment", name, namespace)
        ),
        timeout=60,
        what=f"{name}'s canary holding its step",
    )


def degraded(cluster: Cluster, namespace: str, name: str, reason: str) -> dict[str, Any]:
    return wait_for(
        lambda: (
            (md := cluster.get("modeldeployment", name, namespace))
            and condition(md, "Degraded").get("reason") == reason
            and md
        ),
        timeout=60,
        what=f"{name} Degraded with {reason}",
    )


def test_kstatus_and_argocd_read_each_phase(cluster: Cluster, running: Operator, namespace: str, kstatus: Path) -> None:
    # Ready; a canary walking its steps; a canary held by spec.rollout.paused; a canary aborted (rolled back);
    # a spec the operator cannot use (a bento tag with no runtime image anywhere).
    for name in ("ready", "canary", "paused", "aborted"):
        cluster.apply(sample(name, namespace, rollout={"steps": STEPS}))
    cluster.apply(sample("tagged", namespace, bento={"tag": "iris:v1", "store": {"uri": "s3://models/bentos"}}))
    for name in ("ready", "canary", "paused", "aborted"):
        wait_ready(cluster, namespace, name)
    for name in ("canary", "aborted"):
        cluster.apply(sample(name, namespace, rollout={"steps": STEPS}, bento=V2))
    cluster.apply(sample("paused", namespace, rollout={"steps": STEPS, "paused": True}, bento=V2))
    for name in ("canary", "aborted", "paused"):
        canary_held(cluster, namespace, name)
    revision = status_of(cluster, namespace, "aborted")["canary"]["revision"]
    cluster.kubectl("annotate", "modeldeployment", "aborted", "-n", namespace, f"modeldeploy.dev/abort={revision}")
    degraded(cluster, namespace, "aborted", "RolledBack")
    degraded(cluster, namespace, "tagged", "InvalidSpec")
    wait_for(lambda: status_of(cluster, namespace, "paused")["canary"].get("paused"), timeout=30, what="the pause")

    objects = cluster.json("get", "modeldeployments", "-n", namespace)["items"]
    by_name = {o["metadata"]["name"]: o for o in objects}
    for name, obj in by_name.items():
        conds = {c["type"]: c["status"] for c in obj["status"]["conditions"]}
        assert not (conds["Reconciling"] == "True" and conds["Stalled"] == "True"), name

    read = kstatus_of(kstatus, objects)
    assert {name: status for name, (status, _) in read.items()} == {
        "ready": "Current",
        "canary": "InProgress",
        "paused": "InProgress",
        "aborted": "Failed",
        "tagged": "Failed",
    }
    assert "rolled back (ManualAbort" in read["aborted"][1]
    assert read["tagged"][1].startswith("spec.bento.runtimeImage: required with tag")
    assert "step 1/1" in read["canary"][1]

    health = {name: argocd_health(obj) for name, obj in by_name.items()}
    assert {name: status for name, (status, _) in health.items()} == {
        "ready": "Healthy",
        "canary": "Progressing",
        "paused": "Suspended",
        "aborted": "Degraded",
        "tagged": "Degraded",
    }
    assert health["aborted"][1].startswith("RolledBack: revision")
    assert health["tagged"][1].startswith("InvalidSpec: spec.bento.runtimeImage")
    assert "paused by spec.rollout.paused" in health["paused"][1]
    assert health["canary"][1].startswith("CanaryPause: canary")


def test_argocd_reads_an_object_the_operator_has_not_seen_yet_as_progressing(cluster: Cluster, namespace: str) -> None:
    """Straight after `kubectl apply`, before any status: the object as the API server would store it (a server-side
    dry run, so no operator gets to it). kstatus reads such an object Current (no status, no conditions: its rule
    for kinds it does not know; docs/gitops.md)."""
    created = cluster.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(sample("fresh", namespace))
    )
    fresh = json.loads(created.stdout)
    assert fresh["metadata"]["generation"] == 1 and "status" not in fresh
    assert argocd_health(fresh) == ("Progressing", "waiting for the operator to report status")
