"""The rollout view (`modeldeploy status`): what a person reads in one frame."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from modeldeploy.statusview import Snapshot, render

NOW = datetime(2026, 12, 1, 12, 0, 30, tzinfo=UTC)


def pod(name: str, role: str, ready: bool, waiting: str | None = None) -> dict[str, Any]:
    statuses = [
        {
            "name": "bento",
            "restartCount": 2 if waiting else 0,
            "state": {"waiting": {"reason": waiting}} if waiting else {},
        }
    ]
    return {
        "metadata": {"name": name, "labels": {"modeldeploy.dev/role": role}},
        "spec": {"nodeName": "real-node"},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": statuses,
        },
    }


def canary_md() -> dict[str, Any]:
    return {
        "metadata": {"name": "iris", "namespace": "ml"},
        "spec": {
            "rollout": {"trafficRouting": "Replicas", "steps": [{"weight": 25, "pause": "60s"}, {"weight": 50}]},
        },
        "status": {
            "phase": "Progressing",
            "url": "http://iris.ml.svc:3000",
            "readyReplicas": 4,
            "conditions": [{"type": "Ready", "status": "False", "reason": "CanaryAnalysis"}],
            "stable": {"revision": "79df71b5bd", "bento": "iris-classifier:v1", "replicas": 3, "readyReplicas": 3},
            "canary": {
                "revision": "31ec9b3914",
                "bento": "iris-onnx:v1",
                "replicas": 1,
                "readyReplicas": 1,
                "step": 0,
                "stepWeight": 25,
                "weight": 25,
                "state": "Progressing",
                "stepReadyAt": "2026-12-01T12:00:00Z",
                "analysis": {
                    "verdict": "Passed",
                    "failures": 0,
                    "lastMeasuredAt": "2026-12-01T12:00:20Z",
                    "checks": [{"name": "errorRate", "passed": True, "message": "0 of 120 requests failed with 5xx"}],
                },
            },
        },
    }


def test_a_canary_shows_both_revisions_their_pods_the_split_and_the_pause_left() -> None:
    pods = [pod("iris-a", "stable", True), pod("iris-b", "stable", True), pod("iris-c", "stable", True)]
    pods.append(pod("iris-canary-d", "canary", True))
    events = [{"metadata": {"creationTimestamp": "2026-12-01T12:00:00Z"}, "reason": "CanaryStarted", "message": "x"}]
    text = render(Snapshot(canary_md(), pods, events), now=NOW)
    assert "ModelDeployment ml/iris  Progressing  Ready=False CanaryAnalysis" in text
    assert "canary 25% (Replicas, approximate: 1 of 4 Ready pods are canary pods)" in text
    assert "step 1/2 at 25%, 30s left in its 60s pause" in text
    assert "├─ stable 79df71b5bd  iris-classifier:v1  3/3 Ready" in text
    assert "└─ canary 31ec9b3914  iris-onnx:v1  1/1 Ready" in text
    assert "   └─ iris-canary-d  Ready  on real-node" in text
    assert "Analysis Passed at 2026-12-01T12:00:20Z (0 failed so far)" in text
    assert "errorRate ok: 0 of 120 requests failed with 5xx" in text
    assert "12:00:00 CanaryStarted x" in text
    assert "\x1b[" not in text, "plain text unless asked for colour"


def test_a_crash_looping_pod_says_so_and_colour_is_only_for_terminals() -> None:
    md = canary_md()
    md["status"]["canary"]["readyReplicas"] = 0
    pods = [pod("iris-canary-d", "canary", False, waiting="CrashLoopBackOff")]
    plain = render(Snapshot(md, pods, []), now=NOW)
    assert "iris-canary-d  CrashLoopBackOff  on real-node, 2 restarts" in plain
    assert "0/1 Ready" in plain
    coloured = render(Snapshot(md, pods, []), now=NOW, colour=True)
    assert "\x1b[31mCrashLoopBackOff\x1b[0m" in coloured
