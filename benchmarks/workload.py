"""What the benchmarks put on the cluster and how they watch it: ModelDeployments, the children the operator
would make for them (the floor), unrelated objects, and cheap watches that timestamp what they see."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from localcluster.kit import sample, wait_for
from modeldeploy.api.v1alpha1 import API_VERSION, KIND, ModelDeployment
from modeldeploy.k8s.children import render_children
from modeldeploy.k8s.client import ApiError, Client, resource_path
from modeldeploy.model.observed import Observed
from modeldeploy.rollout.plan import plan

# Threads the benchmarks write with, the operator's workers excepted: enough to keep two cores busy.
WRITERS = 8


def small(name: str, namespace: str, replicas: int = 1) -> dict[str, Any]:
    """A ModelDeployment as small as a real one gets: one tiny pod, on the kwok nodes."""
    body = sample(name, namespace, replicas=replicas)
    body["spec"]["resources"] = {"requests": {"cpu": "10m", "memory": "16Mi"}}
    return body


def create_namespaces(client: Client, names: Iterable[str]) -> None:
    for name in names:
        client.request(
            "POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )
    for name in names:
        wait_for(
            lambda n=name: client.get("v1", "ServiceAccount", n, "default") is not None,  # type: ignore[misc]
            timeout=60,
            what=f"{name}/default",
        )


def create(client: Client, body: dict[str, Any]) -> None:
    client.request("POST", resource_path(body["apiVersion"], body["kind"], body["metadata"]["namespace"]), body=body)


def create_all(client: Client, bodies: Iterable[dict[str, Any]], writers: int = WRITERS) -> None:
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(lambda body: create(client, body), bodies))


def children_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    """What the operator applies for a new ModelDeployment: the floor applies exactly this."""
    model = ModelDeployment.model_validate(body)
    result = plan(model, Observed(now=datetime.now(UTC)))
    return render_children(model, result.stable, result.canary)


def unrelated(namespace: str, i: int) -> list[dict[str, Any]]:
    """A Deployment (no pods) and a Service of somebody else: labelled, but not with the operator's labels."""
    labels = {"app": f"other-{i}", "team": "someone-else"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"other-{i}", "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.example.com/other:1"}]},
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"other-{i}", "namespace": namespace, "labels": labels},
        "spec": {"selector": labels, "ports": [{"port": 80}]},
    }
    return [deployment, service]


@dataclass(frozen=True)
class Timeline:
    """One timed sample: when it started, when each of its stages ended, when its result was seen
    (monotonic seconds). The marks come from independent watches, so one seen late (or not at all:
    math.inf) is clamped to the mark after it: a stage is never negative."""

    marks: tuple[float, ...]

    @classmethod
    def of(cls, *marks: float) -> Timeline:
        clamped = [marks[-1]]
        for mark in reversed(marks[:-1]):
            clamped.append(min(mark, clamped[-1]))
        return cls(tuple(reversed(clamped)))

    @property
    def total(self) -> float:
        return self.marks[-1] - self.marks[0]

    def stage(self, i: int) -> float:
        return self.marks[i + 1] - self.marks[i]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class Stream:
    """A watch of one resource on a thread of its own, timestamping each event as it arrives.

    Raw JSON lines instead of the kubernetes client's models: the benchmark shares the machine's
    two cores with the cluster and the operator, and must cost as little as it can.
    """

    def __init__(
        self,
        client: Client,
        api_version: str,
        kind: str,
        on_event: Callable[[str, dict[str, Any], float], None],
        *,
        label_selector: str | None = None,
    ) -> None:
        self.client = client
        self.path = resource_path(api_version, kind, None)
        self.on_event = on_event
        self.label_selector = label_selector
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"watch-{kind}")

    def __enter__(self) -> Stream:
        self._thread.start()
        if not self.synced.wait(120):
            raise AssertionError(f"the watch of {self.path} did not sync")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()

    def _run(self) -> None:
        version = ""
        while not self._stop.is_set():
            try:
                version = self._watch(version)
            except Exception:
                if self._stop.is_set():
                    return  # the cluster is going away under a watch nobody reads any more
                time.sleep(0.5)

    def _watch(self, version: str) -> str:
        """One watch request, until the server ends it; the resourceVersion to go on from."""
        query = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": "300"}
        if version:
            query["resourceVersion"] = version
        else:
            query |= {"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan"}
        if self.label_selector:
            query["labelSelector"] = self.label_selector
        api = self.client.api
        request = api.param_serialize(
            "GET", f"{self.path}?{urlencode(query)}", header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )  # fmt: skip
        response = api.call_api(*request, _request_timeout=(10, 330)).response
        buffer = b""
        for chunk in response.stream(1 << 16):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                event = json.loads(line)
                obj = event["object"]
                version = obj.get("metadata", {}).get("resourceVersion", version)
                if event["type"] == "BOOKMARK":
                    if obj["metadata"].get("annotations", {}).get("k8s.io/initial-events-end") == "true":
                        self.synced.set()
                    continue
                if event["type"] == "ERROR":
                    return ""  # too old: start over with a fresh list
                self.on_event(event["type"], obj, time.monotonic())
            if self._stop.is_set():
                break
        response.release_conn()
        return version


def ready_condition(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def settled(obj: dict[str, Any]) -> bool:
    """Its spec is rolled out: Ready, or at replicas 0 complete (a ModelDeployment scaled to zero is not Ready)."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return False
    done = {"type": "Progressing", "status": "False", "reason": "Complete"}
    conditions = status.get("conditions", [])
    return ready_condition(obj) or any(done.items() <= c.items() for c in conditions)


class ReadyClock:
    """When each ModelDeployment (or, for the floor, each Deployment) was first seen Ready."""

    def __init__(self, expected: int, is_ready: Callable[[dict[str, Any]], bool]) -> None:
        self.expected = expected
        self.is_ready = is_ready
        self.at: dict[str, float] = {}
        self.done = threading.Event()

    def __call__(self, type_: str, obj: dict[str, Any], at: float) -> None:
        if type_ == "DELETED" or not self.is_ready(obj):
            return
        self.at.setdefault(f"{obj['metadata']['namespace']}/{obj['metadata']['name']}", at)
        if len(self.at) >= self.expected:
            self.done.set()

    def wait(self, timeout: float) -> bool:
        return self.done.wait(timeout)

    def times(self, since: float) -> list[float]:
        return sorted(t - since for t in self.at.values())


def deployment_ready(obj: dict[str, Any]) -> bool:
    wanted = obj.get("spec", {}).get("replicas", 1)
    status = obj.get("status") or {}
    return status.get("observedGeneration", 0) >= obj["metadata"].get("generation", 1) and (
        status.get("readyReplicas", 0) >= wanted
    )


def apply_all(client: Client, objects: Iterable[list[dict[str, Any]]], writers: int = WRITERS) -> None:
    """Each list in order (a ModelDeployment's children), the lists in parallel."""

    def one(children: list[dict[str, Any]]) -> None:
        for obj in children:
            client.apply(obj)

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(one, objects))


def patch_spec(client: Client, namespace: str, name: str, spec: dict[str, Any]) -> None:
    client.request(
        "PATCH",
        resource_path(API_VERSION, KIND, namespace, name),
        body={"spec": spec},
        content_type="application/merge-patch+json",
    )


def ignore_conflicts(call: Callable[[], object]) -> None:
    try:
        call()
    except ApiError as err:
        if not err.conflict:
            raise
