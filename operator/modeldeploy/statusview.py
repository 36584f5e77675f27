"""`modeldeploy status NAME [--watch]`: a ModelDeployment's rollout at a glance.

The revisions as a tree with their pods and readiness, the traffic split (and whether it is
exact), the current step and the time left in its pause, the last analysis measurement, and
recent events. Colours on a terminal, plain text when piped. Also installed as the kubectl
plugin `kubectl-modeldeploy` (`kubectl modeldeploy status iris -w`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from modeldeploy.api.duration import parse_duration
from modeldeploy.api.v1alpha1 import API_VERSION, KIND
from modeldeploy.k8s.client import Client
from modeldeploy.model.meta import NAME_LABEL, ROLE_LABEL
from modeldeploy.routing import ROUTERS

EVENTS_SHOWN = 8

COLOURS = {"ok": "32", "warn": "33", "bad": "31", "dim": "2", "bold": "1", "canary": "36"}


@dataclass(frozen=True)
class Snapshot:
    """What one frame shows, read from the API server."""

    md: Mapping[str, Any]
    pods: Sequence[Mapping[str, Any]]
    events: Sequence[Mapping[str, Any]]


def fetch(client: Client, namespace: str, name: str) -> Snapshot | None:
    md = client.get(API_VERSION, KIND, namespace, name)
    if md is None:
        return None
    pods = client.list("v1", "Pod", namespace, {NAME_LABEL: name})
    found = client.request(
        "GET",
        f"/api/v1/namespaces/{namespace}/events",
        query=[("fieldSelector", f"involvedObject.kind={KIND},involvedObject.name={name}")],
    )
    events = sorted(found.get("items", []), key=_event_time)
    return Snapshot(md, pods, events[-EVENTS_SHOWN:])


def _event_time(event: Mapping[str, Any]) -> str:
    return str(event.get("lastTimestamp") or event.get("eventTime") or event["metadata"].get("creationTimestamp", ""))


class Paint:
    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def __call__(self, text: str, style: str) -> str:
        return f"\x1b[{COLOURS[style]}m{text}\x1b[0m" if self.colour else text


def _condition(md: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for cond in (md.get("status") or {}).get("conditions", []):
        if cond.get("type") == type_:
            found: Mapping[str, Any] = cond
            return found
    return {}


def _pod_line(pod: Mapping[str, Any], paint: Paint) -> str:
    meta, status = pod["metadata"], pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))
    phase = status.get("phase", "Pending")
    waiting = [
        (cs.get("state") or {}).get("waiting", {}).get("reason")
        for cs in [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]
        if (cs.get("state") or {}).get("waiting")
    ]
    restarts = sum(cs.get("restartCount", 0) for cs in status.get("containerStatuses", []))
    if meta.get("deletionTimestamp"):
        state = paint("Terminating", "dim")
    elif ready:
        state = paint("Ready", "ok")
    else:
        state = paint(waiting[0] if waiting else f"{phase}, not Ready", "bad" if waiting else "warn")
    node = pod.get("spec", {}).get("nodeName") or "unscheduled"
    extra = f", {restarts} restarts" if restarts else ""
    return f"{meta['name']}  {state}  on {node}{extra}"


def _revision(
    label: str, revision: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], paint: Paint, last: bool
) -> list[str]:
    branch, indent = ("└─ ", "   ") if last else ("├─ ", "│  ")
    ready, total = revision.get("readyReplicas", 0), revision.get("replicas", 0)
    count = paint(f"{ready}/{total} Ready", "ok" if total and ready == total else "warn")
    style = "canary" if label == "canary" else "bold"
    lines = [f"{branch}{paint(label, style)} {revision.get('revision')}  {revision.get('bento')}  {count}"]
    for i, pod in enumerate(pods):
        lines.append(f"{indent}{'└─ ' if i == len(pods) - 1 else '├─ '}{_pod_line(pod, paint)}")
    return lines


def _pause_left(canary: Mapping[str, Any], spec: Mapping[str, Any], now: datetime) -> str:
    steps = (spec.get("rollout") or {}).get("steps") or []
    step = canary.get("step", 0)
    if not canary.get("stepReadyAt") or step >= len(steps):
        return "waiting for its pods to be Ready"
    pause = parse_duration(str(steps[step].get("pause", "1m"))).total_seconds()
    started = datetime.fromisoformat(str(canary["stepReadyAt"]).replace("Z", "+00:00"))
    left = max(0.0, pause - (now - started).total_seconds())
    return f"{left:.0f}s left in its {pause:.0f}s pause" if left else "pause over, waiting for its analysis"


def render(snap: Snapshot, *, now: datetime | None = None, colour: bool = False) -> str:
    """One frame, as text."""
    paint = Paint(colour)
    now = now or datetime.now(UTC)
    md, spec = snap.md, snap.md.get("spec") or {}
    status = md.get("status") or {}
    meta = md["metadata"]
    ready = _condition(md, "Ready")
    phase = status.get("phase") or "Pending"
    phase_style = {"Ready": "ok", "Progressing": "warn"}.get(phase, "bad")
    title = paint(f"ModelDeployment {meta['namespace']}/{meta['name']}", "bold")
    readiness = f"Ready={ready.get('status', 'Unknown')} {ready.get('reason', '')}".rstrip()
    lines = [
        f"{title}  {paint(phase, phase_style)}  {readiness}",
        f"URL      {status.get('url', '-')}",
    ]
    routing = (spec.get("rollout") or {}).get("trafficRouting", "Replicas")
    canary = status.get("canary")
    split = ROUTERS[routing].split(
        canary_ready=(canary or {}).get("readyReplicas", 0), ready=status.get("readyReplicas") or 0
    )
    if canary:
        steps = (spec.get("rollout") or {}).get("steps") or []
        lines.append(
            f"Traffic  canary {paint(str(canary.get('weight', 0)) + '%', 'canary')} ({routing}, {split}); "
            f"step {canary.get('step', 0) + 1}/{len(steps)} at {canary.get('stepWeight', 0)}%, "
            f"{_pause_left(canary, spec, now)}; {canary.get('state', 'Progressing')}"
            + (", paused" if canary.get("paused") else "")
        )
    else:
        lines.append(f"Traffic  all to stable ({routing})")
    by_role: dict[str, list[Mapping[str, Any]]] = {}
    for pod in sorted(snap.pods, key=lambda p: p["metadata"]["name"]):
        by_role.setdefault((pod["metadata"].get("labels") or {}).get(ROLE_LABEL, "stable"), []).append(pod)
    revisions = [("stable", status.get("stable"))] + ([("canary", canary)] if canary else [])
    shown = [(label, rev) for label, rev in revisions if rev]
    lines.append("Revisions")
    for i, (label, rev) in enumerate(shown):
        lines += _revision(label, rev, by_role.get(label, []), paint, last=i == len(shown) - 1)
    analysis = (canary or {}).get("analysis") or {}
    if analysis.get("lastMeasuredAt"):
        verdict = analysis.get("verdict", "")
        style = {"Passed": "ok", "Failed": "bad"}.get(verdict, "warn")
        lines.append(
            f"Analysis {paint(verdict, style)} at {analysis['lastMeasuredAt']} "
            f"({analysis.get('failures', 0)} failed so far)"
        )
        for check in analysis.get("checks", []):
            mark = paint("ok", "ok") if check.get("passed") else paint("FAILED", "bad")
            lines.append(f"  {check.get('name')} {mark}: {check.get('message', '')}")
    failed = status.get("failed")
    if failed:
        lines.append(f"Rolled back {failed.get('revision')} ({failed.get('bento')}): {failed.get('reason')}")
    if snap.events:
        lines.append("Events")
        for event in snap.events:
            when = _event_time(event)[11:19]
            style = "bad" if event.get("type") == "Warning" else "dim"
            note = event.get("message") or event.get("note") or ""
            lines.append(f"  {when} {paint(event.get('reason', ''), style)} {note}")
    return "\n".join(lines)


def show(
    client: Client,
    namespace: str,
    name: str,
    *,
    watch: bool = False,
    out: TextIO = sys.stdout,
    interval: float = 2.0,
    frames: int | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Print the view once, or every INTERVAL seconds with --watch (FRAMES bounds it, for tests)."""
    colour = out.isatty() and os.environ.get("NO_COLOR") is None
    shown = 0
    while True:
        snap = fetch(client, namespace, name)
        if snap is None:
            print(f"error: ModelDeployment {namespace}/{name} not found", file=sys.stderr)
            return 1
        frame = render(snap, now=clock(), colour=colour)
        if watch and colour:
            out.write("\x1b[H\x1b[2J")  # a terminal shows the latest frame in place
        out.write(frame + "\n")
        if watch and not colour:
            out.write("\n")  # frames one after another when piped
        out.flush()
        shown += 1
        if not watch or (frames is not None and shown >= frames):
            return 0
        time.sleep(interval)
