"""A ModelDeployment never takes over an object it does not control, and every reconcile ends as status.

Against the fake API server of tests/unit/fakes.py; the same cases run against the real one in
tests/cluster/test_untrusted.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy.handlers import reconciler as reconciler_module
from modeldeploy.handlers.reconciler import Reconciler
from modeldeploy.k8s.client import ApiError

from factories import IMAGE_V2, md_body
from fakes import GATEWAY, NOW, FakeClient, condition, owned_by, reconcile


def someone_elses_service(name: str = "iris", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "ml", "uid": "victim-uid", "labels": labels or {"app": "victim"}},
        "spec": {"selector": {"app": "victim"}, "ports": [{"port": 80}]},
    }


class TestNoTakeover:
    def test_an_unlabelled_object_of_the_childs_name_is_left_untouched_and_named(self) -> None:
        client = FakeClient(md_body())
        client.add(someone_elses_service())
        reconcile(client)
        assert client.objects["v1", "Service", "ml", "iris"]["spec"]["selector"] == {"app": "victim"}
        assert ("apply", "Service", "iris") not in client.calls
        assert ("get", "Service", "iris") in client.calls, "the owner is read after the create found the name taken"
        degraded = condition(client, "Degraded")
        assert degraded["reason"] == "NameConflict"
        assert degraded["message"].startswith(
            "Service iris already exists and is not controlled by this ModelDeployment (it has no controller)"
        )
        assert ("Deployment", "iris") in client.kinds("create"), "the other children are written all the same"
        assert ("Warning", "NameConflict") in [(t, r) for t, r, _ in client.events]

    def test_a_labelled_impostor_in_the_index_is_named_without_a_request(self) -> None:
        client = FakeClient(md_body())
        labels = {"app.kubernetes.io/managed-by": "modeldeploy", "modeldeploy.dev/name": "iris"}
        client.add(someone_elses_service(labels=labels))
        reconcile(client)
        assert [c for c in client.calls if c[1:] == ("Service", "iris")] == []
        assert condition(client, "Degraded")["reason"] == "NameConflict"

    def test_someone_elses_object_is_never_deleted(self) -> None:
        client = FakeClient(md_body())
        reconcile(client)
        # An earlier ModelDeployment's Service, found by its labels: same name pattern, another controller.
        old = owned_by(client.objects["v1", "Service", "ml", "iris"], "an-earlier-iris", "iris-canary")
        client.add(old)
        reconcile(client)
        assert ("v1", "Service", "ml", "iris-canary") in client.objects
        assert client.kinds("delete") == []

    def test_a_child_created_by_this_process_is_applied_pinned_to_its_uid_before_the_index_has_it(self) -> None:
        client = FakeClient(md_body())
        reconciler = Reconciler(client=client, clock=lambda: NOW)  # type: ignore[arg-type]
        client.calls.clear()
        reconciler.reconcile("ml", "iris", {}, client.md)  # the index knows nothing yet
        body = client.md
        body["spec"]["replicas"] = 3
        body["metadata"]["generation"] = 2
        client.add(body)
        client.calls.clear()
        reconciler.reconcile("ml", "iris", {}, client.md)
        assert client.kinds("create") == []
        assert client.objects["apps/v1", "Deployment", "ml", "iris"]["spec"]["replicas"] == 3

    def test_a_child_replaced_by_someone_else_is_not_written_to(self) -> None:
        client = FakeClient(md_body())
        reconciler = reconcile(client)
        client.objects.pop(("v1", "Service", "ml", "iris"))
        client.add(someone_elses_service())
        body = client.md
        body["spec"]["service"] = {"port": 8080}
        body["metadata"]["generation"] = 2
        client.add(body)
        reconcile(client, reconciler)
        assert client.objects["v1", "Service", "ml", "iris"]["metadata"]["uid"] == "victim-uid"
        assert client.objects["v1", "Service", "ml", "iris"]["spec"]["ports"] == [{"port": 80}]
        assert condition(client, "Degraded")["reason"] == "NameConflict"

    def test_the_conflict_clears_once_the_name_is_free(self) -> None:
        client = FakeClient(md_body())
        client.add(someone_elses_service())
        reconciler = reconcile(client)
        client.objects.pop(("v1", "Service", "ml", "iris"))
        reconcile(client, reconciler)
        assert client.objects["v1", "Service", "ml", "iris"]["spec"]["selector"] == {"modeldeploy.dev/name": "iris"}
        assert condition(client, "Degraded")["reason"] == "Healthy"


class TestHeldRollout:
    def test_a_refused_child_holds_the_canary_at_its_step_until_it_is_taken(self) -> None:
        steps = {**GATEWAY, "steps": [{"weight": 25, "pause": "0s"}, {"weight": 50, "pause": "0s"}]}
        client = FakeClient(md_body(replicas=4, rollout=steps))
        reconciler = reconcile(client)
        self._pods_ready(client)
        reconcile(client, reconciler)
        body = client.md
        body["spec"]["bento"] = {"image": IMAGE_V2}
        body["metadata"]["generation"] = 2
        client.add(body)
        refused = 'httproutes "iris" is forbidden: ValidatingAdmissionPolicy denied request: hostnames'
        client.rejected["HTTPRoute"] = ApiError(403, "Forbidden", refused)
        for _ in range(4):
            reconcile(client, reconciler)
            self._pods_ready(client)
        canary = client.md["status"]["canary"]
        assert canary["step"] == 0, "no step is passed while a child is refused"
        degraded = condition(client, "Degraded")
        assert (degraded["reason"], degraded["message"]) == (
            "ChildRejected",
            f"HTTPRoute iris was rejected by the API server: {refused}",
        )
        # A restarted operator reads the refusal from status: it holds as well.
        reconcile(client, Reconciler(client=client, clock=lambda: NOW))  # type: ignore[arg-type]
        assert client.md["status"]["canary"]["step"] == 0
        del client.rejected["HTTPRoute"]
        for _ in range(3):
            reconcile(client, reconciler)
            self._pods_ready(client)
        assert client.md["status"].get("canary", {}).get("step", 1) >= 1
        assert condition(client, "Degraded")["reason"] != "ChildRejected"

    @staticmethod
    def _pods_ready(client: FakeClient) -> None:
        for key, obj in client.objects.items():
            if key[1] == "Deployment":
                replicas = obj["spec"].get("replicas", 1)
                obj["status"] = {
                    "observedGeneration": obj["metadata"]["generation"],
                    "replicas": replicas,
                    "updatedReplicas": replicas,
                    "readyReplicas": replicas,
                    "availableReplicas": replicas,
                }


class TestReconcileError:
    def test_an_error_of_the_api_server_becomes_a_condition_in_one_line_without_a_traceback(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        client = FakeClient(md_body(rollout={"strategy": "Rolling"}))
        reconciler = reconcile(client)
        client.add(owned_by(client.objects["v1", "Service", "ml", "iris"], "0b7c-uid", "iris-stray"))
        client.fail_delete = ApiError(403, "Forbidden", 'services "iris-stray" is forbidden:\ndenied by policy')
        ready = condition(client, "Ready")
        client.calls.clear()
        again = reconciler.reconcile("ml", "iris", client.indexed(), client.md)
        degraded = condition(client, "Degraded")
        assert degraded["status"] == "True" and degraded["reason"] == "ReconcileError"
        assert degraded["message"] == '403 Forbidden: services "iris-stray" is forbidden: denied by policy'
        assert again is not None and again.total_seconds() == 1
        client.calls.clear()
        again = reconciler.reconcile("ml", "iris", client.indexed(), client.md)
        assert again is not None and again.total_seconds() == 2, "backs off"
        assert ("status",) not in client.calls, "a reconcile failing the same way again writes nothing"
        assert not [r for r in caplog.records if r.exc_info], "a known cause is logged without a traceback"
        assert condition(client, "Ready") == ready, "the rest of status is as the last reconcile left it"
        client.fail_delete = None
        reconciler.reconcile("ml", "iris", client.indexed(), client.md)
        assert condition(client, "Degraded")["reason"] == "Healthy"

    def test_an_unplanned_exception_is_recorded_and_raised_for_the_work_queue(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        client = FakeClient(md_body())

        def broken(*_: Any) -> Any:
            raise KeyError("stable")

        monkeypatch.setattr(reconciler_module, "plan", broken)
        with pytest.raises(KeyError):
            reconcile(client)
        degraded = condition(client, "Degraded")
        assert (degraded["reason"], degraded["message"]) == ("ReconcileError", "KeyError: 'stable'")
