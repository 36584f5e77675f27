"""`modeldeploy status` (and the kubectl plugin) against the local cluster, read as a person reads it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from localcluster.kit import Cluster, Operator, sample, wait_for, wait_ready

V2 = {"image": "registry.example.com/iris-classifier:v2"}


def modeldeploy(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modeldeploy.cli", *args],
        capture_output=True, text=True, env=cluster.env(), check=False, timeout=60,
    )  # fmt: skip


def test_status_prints_the_revisions_tree_of_a_canary(cluster: Cluster, running: Operator, namespace: str) -> None:
    steps = {"steps": [{"weight": 25, "pause": "10m"}, {"weight": 50, "pause": "10m"}]}
    cluster.apply(sample("iris", namespace, replicas=4, rollout=steps))
    wait_ready(cluster, namespace, "iris")
    cluster.apply(sample("iris", namespace, replicas=4, rollout=steps, bento=V2))
    wait_for(
        lambda: (
            (cluster.get("modeldeployment", "iris", namespace) or {})
            .get("status", {})
            .get("canary", {})
            .get("stepReadyAt")
        ),
        timeout=60,
        what="the canary holding its first step",
    )
    shown = modeldeploy(cluster, "status", "iris", "-n", namespace)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert f"ModelDeployment {namespace}/iris  Progressing" in out
    assert "canary 25% (Replicas, approximate: 1 of 4 Ready pods are canary pods)" in out
    assert "step 1/2 at 25%" in out and "left in its 600s pause" in out
    assert "├─ stable" in out and "iris-classifier:v1  3/3 Ready" in out
    assert "└─ canary" in out and "iris-classifier:v2  1/1 Ready" in out
    assert out.count("  Ready  on kwok-") == 4
    assert "CanaryStarted" in out
    assert "\x1b[" not in out, "no colours when piped"
    missing = modeldeploy(cluster, "status", "nothing", "-n", namespace)
    assert missing.returncode == 1 and f"ModelDeployment {namespace}/nothing not found" in missing.stderr


def test_watch_follows_the_rollout_in_place_on_a_terminal(
    cluster: Cluster, running: Operator, namespace: str, tmp_path: Path
) -> None:
    cluster.apply(sample("iris", namespace, replicas=2))
    wait_ready(cluster, namespace, "iris")
    session = f"md-{uuid.uuid4().hex[:6]}"
    plugin = Path(sys.executable).with_name("kubectl-modeldeploy")
    env = {**cluster.env(), "TERM": "xterm-256color"}
    # kubectl finds the plugin on PATH, as a user's `kubectl modeldeploy status iris -w` does.
    env["PATH"] = f"{plugin.parent}{os.pathsep}{env['PATH']}"
    command = f"{cluster.kubectl_bin} modeldeploy status iris -n {namespace} -w"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "50", command], env=env, check=True)
    try:

        def showing(text: str) -> str | None:
            screen = subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=True
            ).stdout
            return screen if text in screen else None

        first = wait_for(lambda: showing("2/2 Ready"), timeout=30, what="the first frame")
        assert first.count(f"ModelDeployment {namespace}/iris") == 1, "a terminal shows one frame, in place"
        cluster.apply(sample("iris", namespace, replicas=3))
        later = wait_for(lambda: showing("3/3 Ready"), timeout=60, what="a later frame")
        assert later.count(f"ModelDeployment {namespace}/iris") == 1
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, capture_output=True)
        time.sleep(0.2)
