"""Raw Kubernetes objects read into the model: what a reconcile decides on, and nothing more."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from modeldeploy.model.meta import BENTO_SOURCE_ENV, FETCH_CONTAINER, REVISION_LABEL, ROLE_LABEL
from modeldeploy.model.observed import DeploymentState, PodProblem

# The operator's field manager: its applies, its creates, its status writes.
FIELD_MANAGER = "modeldeploy"


def created_not_applied(meta: Mapping[str, Any]) -> bool:
    """The object's fields are still under the Update entry its create (POST) recorded for the operator's field
    manager, not yet under the Apply entry that the operator's applies own (see Client.adopt)."""
    return any(
        entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Update" and not entry.get("subresource")
        for entry in meta.get("managedFields") or ()
    )


def deployment_state(obj: Mapping[str, Any]) -> DeploymentState:
    meta = obj.get("metadata", {})
    spec = obj.get("spec", {})
    status = obj.get("status", {}) or {}
    labels = spec.get("template", {}).get("metadata", {}).get("labels", {}) or {}
    conditions = {c.get("type"): c for c in status.get("conditions", []) or []}
    progressing = conditions.get("Progressing", {})
    failure = conditions.get("ReplicaFailure", {})
    owners = frozenset(
        entry.get("manager", "")
        for entry in meta.get("managedFields", []) or []
        if "f:replicas" in (entry.get("fieldsV1", {}).get("f:spec", {}) or {})
    )
    return DeploymentState(
        name=meta.get("name", ""),
        revision=labels.get(REVISION_LABEL),
        generation=int(meta.get("generation", 0)),
        observed_generation=int(status.get("observedGeneration", 0)),
        spec_replicas=int(spec.get("replicas", 1)),
        replicas=int(status.get("replicas", 0)),
        updated_replicas=int(status.get("updatedReplicas", 0)),
        ready_replicas=int(status.get("readyReplicas", 0)),
        available_replicas=int(status.get("availableReplicas", 0)),
        progress_deadline_exceeded=progressing.get("reason") == "ProgressDeadlineExceeded",
        replica_failure=failure.get("message") if failure.get("status") == "True" else None,
        replicas_owned_by=owners,
    )


# How much of what a failed container said goes into a condition (its last line, at most).
MESSAGE_LIMIT = 300

_WAITING_REASONS = {
    "ImagePullBackOff": ("ImagePullFailed", True),
    "ErrImagePull": ("ImagePullFailed", True),
    "InvalidImageName": ("ImagePullFailed", True),
    "CrashLoopBackOff": ("CrashLoop", True),
    "CreateContainerConfigError": ("ContainerConfigError", True),
    "CreateContainerError": ("ContainerConfigError", True),
    "RunContainerError": ("ContainerConfigError", True),
}


def _fetch_problem(pod: Mapping[str, Any], cs: Mapping[str, Any], role: str) -> PodProblem | None:
    """The bento could not be fetched: named with the store URI and what the import said.

    Reported from the first failed attempt; it is fatal (a canary is rolled back) once the kubelet
    is backing off, that is, when retrying has not helped.
    """
    state, last = cs.get("state") or {}, cs.get("lastState") or {}
    terminated = state.get("terminated") or last.get("terminated") or {}
    if not terminated or terminated.get("exitCode") == 0:
        return None
    init: Mapping[str, Any] = next(
        (c for c in pod.get("spec", {}).get("initContainers", []) if c.get("name") == FETCH_CONTAINER), {}
    )
    source = next((e.get("value") for e in init.get("env", []) if e.get("name") == BENTO_SOURCE_ENV), None)
    said = [line.strip() for line in (terminated.get("message") or "").splitlines() if line.strip()]
    detail = said[-1][:MESSAGE_LIMIT] if said else f"exit code {terminated.get('exitCode')}"
    backing_off = (state.get("waiting") or {}).get("reason") == "CrashLoopBackOff"
    name = pod.get("metadata", {}).get("name", "")
    message = f"init container {FETCH_CONTAINER} of pod {name} could not import {source or 'the bento'}: {detail}"
    return PodProblem(role, "BentoFetchFailed", message, fatal=backing_off)


# How the kubelet says a container's Secret or ConfigMap (or a key of one) is missing. The operator reads
# no Secret itself: this is how it learns that one the spec names does not exist.
_MISSING = re.compile(r'\b(secret|configmap)s? "([^"]+)" not found', re.IGNORECASE)
_MISSING_KEY = re.compile(r"couldn't find key (\S+) in (Secret|ConfigMap) [^/\s]+/(\S+)")
_KINDS = {"secret": "Secret", "configmap": "ConfigMap"}


def _missing_reference(what: str, cs: Mapping[str, Any], pod: str, role: str) -> PodProblem | None:
    waiting = (cs.get("state") or {}).get("waiting") or {}
    if waiting.get("reason") != "CreateContainerConfigError":
        return None
    said = waiting.get("message") or ""
    found = _MISSING.search(said)
    if found is not None:
        missing = (_KINDS[found.group(1).lower()], found.group(2))
    elif (key := _MISSING_KEY.search(said)) is not None:
        missing = (key.group(2), key.group(3))
    else:
        return None
    message = f"{what} {cs.get('name')} of pod {pod} cannot start: {said[:MESSAGE_LIMIT]}"
    # Not fatal: the kubelet tries again, and the pods start once the object is created.
    return PodProblem(role, "MissingReference", message, fatal=False, missing=missing)


def pod_problems(pods: Iterable[Mapping[str, Any]]) -> tuple[PodProblem, ...]:
    """The distinct problems of the given pods, one per (role, reason), and per missing object."""
    found: dict[tuple[str, str], PodProblem] = {}
    for pod in pods:
        meta = pod.get("metadata", {})
        if meta.get("deletionTimestamp"):
            continue
        role = (meta.get("labels") or {}).get(ROLE_LABEL, "stable")
        status = pod.get("status", {}) or {}
        name = meta.get("name", "")
        for cond in status.get("conditions", []) or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                message = f"pod {name} cannot be scheduled: {cond.get('message', '')}".strip()
                found.setdefault((role, "Unschedulable"), PodProblem(role, "Unschedulable", message, False))
        statuses = [("init container", s) for s in status.get("initContainerStatuses", []) or []]
        statuses += [("container", s) for s in status.get("containerStatuses", []) or []]
        for what, cs in statuses:
            if what == "init container" and cs.get("name") == FETCH_CONTAINER:
                fetch = _fetch_problem(pod, cs, role)
                if fetch is not None:
                    found.setdefault((role, fetch.reason), fetch)
                    continue
            absent = _missing_reference(what, cs, name, role)
            if absent is not None:
                found.setdefault((role, f"{absent.reason}/{absent.missing}"), absent)
                continue
            waiting = (cs.get("state") or {}).get("waiting") or {}
            mapped = _WAITING_REASONS.get(waiting.get("reason", ""))
            if mapped is None:
                continue
            reason, fatal = mapped
            detail = waiting.get("message") or waiting.get("reason")
            message = f"{what} {cs.get('name')} of pod {name}: {waiting.get('reason')}: {detail}"
            found.setdefault((role, reason), PodProblem(role, reason, message, fatal))
    return tuple(found.values())
