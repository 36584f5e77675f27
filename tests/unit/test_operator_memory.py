"""What the operator holds and watches: only its own children reach it, and of each ModelDeployment only
what a reconcile reads."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import kopf
from kopf._cogs.structs.references import Resource

from modeldeploy.handlers import operator as wiring
from modeldeploy.handlers.snapshot import compact, expand, fingerprint
from modeldeploy.k8s.children import WATCHED

from factories import md_body


def watched_body() -> dict[str, Any]:
    """A ModelDeployment as the watch delivers it after `kubectl apply` and a few reconciles."""
    body = md_body()
    body["metadata"] |= {
        "resourceVersion": "42",
        "labels": {"team": "ml"},
        "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": json.dumps({"spec": body["spec"]}),
            "modeldeploy.dev/promote": "abc123",
            "kopf.zalando.org/touch-dummy": "x",
        },
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:replicas": {}}}}] * 5,
    }
    body["status"] = {"phase": "Ready", "stable": {"revision": "abc", "bento": "b", "template": {"env": []}}}
    return body


class TestSnapshot:
    def test_it_keeps_what_a_reconcile_reads(self) -> None:
        body = watched_body()
        kept = expand(compact(body))
        assert kept["spec"] == body["spec"]
        assert kept["status"] == body["status"]
        assert kept["metadata"] == {
            "name": "iris",
            "namespace": "ml",
            "uid": "0b7c-uid",
            "generation": 1,
            "resourceVersion": "42",
            "annotations": {"modeldeploy.dev/promote": "abc123"},
        }

    def test_it_drops_managed_fields_and_copies_of_the_spec(self) -> None:
        body = watched_body()
        snapshot = compact(body)
        assert b"managedFields" not in snapshot
        assert b"last-applied" not in snapshot
        assert len(snapshot) < len(json.dumps(body)) / 2

    def test_each_reconcile_gets_its_own_copy(self) -> None:
        snapshot = compact(watched_body())
        first = expand(snapshot)
        first["spec"]["replicas"] = 99
        assert expand(snapshot)["spec"]["replicas"] == 2

    def test_the_fingerprint_moves_with_the_spec_and_annotations_not_with_status_or_kopf(self) -> None:
        body = watched_body()
        before = fingerprint(body)
        status_only = watched_body() | {"status": {"phase": "Degraded"}}
        kopf_only = watched_body()
        kopf_only["metadata"]["annotations"]["kopf.zalando.org/other"] = "y"
        assert fingerprint(status_only) == before
        assert fingerprint(kopf_only) == before
        changed = watched_body()
        changed["metadata"]["generation"] = 2
        aborted = watched_body()
        aborted["metadata"]["annotations"]["modeldeploy.dev/abort"] = "abc123"
        assert fingerprint(changed) != before
        assert fingerprint(aborted) != before


class FakeReconciler:
    client = type("C", (), {"requests": Counter[str]()})()


def test_every_child_watch_carries_the_label_selector_to_the_api_server() -> None:
    async def scenario() -> kopf.OperatorSettings:
        settings = kopf.OperatorSettings()
        memo = kopf.Memo(settings=wiring.Settings(reconciler=FakeReconciler(), workers=1))  # type: ignore[arg-type]
        indices: dict[str, Any] = {wiring._index_id(kind.plural): {} for kind in WATCHED}
        await wiring.start(settings=settings, memo=memo, modeldeployments={}, **indices)
        await wiring.stop(memo=memo)
        return settings

    settings = asyncio.run(scenario())
    selectors = settings.watching.label_selectors
    for kind in WATCHED:
        resource = Resource(kind.group, kind.version, kind.plural, kind=kind.kind, namespaced=True, preferred=True)
        assert selectors.collect(resource) == [wiring.CHILD_SELECTOR], kind.kind
    own = Resource("modeldeploy.dev", "v1alpha1", "modeldeployments", kind="ModelDeployment", namespaced=True)
    assert selectors.collect(own) == []
    assert wiring.CHILD_SELECTOR == "app.kubernetes.io/managed-by=modeldeploy,modeldeploy.dev/name"
    # No change-detecting handler exists: no diff base is built (a deep copy per event) or stored.
    assert settings.persistence.diffbase_storage.build(body=kopf.Body({"spec": {"a": 1}})) == {}
