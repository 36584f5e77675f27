"""The reconcile shell (handlers/reconciler.py, handlers/apply.py) against the recording fake API server: the
requests each situation sends, in order, the way Argo Rollouts' controller tests list expected actions.

Covered elsewhere against the same fake: the order of record and apply, an invalid spec, optional kinds
(test_reconciler.py); takeover refusal and ReconcileError (test_untrusted_children.py).
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

from modeldeploy.handlers.apply import HANDOFF_MANAGER
from modeldeploy.handlers.reconciler import CHILD_RECHECK, CONFLICT_RETRY, Reconciler
from modeldeploy.k8s.client import ApiError
from modeldeploy.k8s.objects import FIELD_MANAGER

from factories import md_body
from fakes import NOW, FakeClient, condition, reconcile

MD = ("ModelDeployment", "iris")


class Clock:
    """A clock the test moves: a timestamp that should not change then visibly does not."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float = 30) -> None:
        self.now += timedelta(seconds=seconds)


def shell(client: FakeClient, clock: Clock | None = None) -> Reconciler:
    return Reconciler(client=client, clock=clock or Clock())  # type: ignore[arg-type]


def run(reconciler: Reconciler, client: FakeClient, cached: dict[str, Any] | None = None) -> timedelta | None:
    client.calls.clear()
    return reconciler.reconcile("ml", "iris", client.indexed(), client.md if cached is None else cached)


def change_spec(client: FakeClient, **spec: object) -> None:
    body = client.md
    body["spec"].update(spec)
    body["metadata"]["generation"] += 1
    body["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)
    client.add(body)


class TestCacheConsistency:
    def test_a_cache_behind_the_operators_own_write_is_read_past_once(self) -> None:
        client = FakeClient(md_body())
        stale = client.md  # what the watch cache holds before the status write reaches it
        reconciler = shell(client)
        run(reconciler, client, stale)
        run(reconciler, client, stale)
        assert client.calls[0] == ("get", *MD), "the object is read from the API server, not decided on stale"
        assert ("status",) not in client.calls, "the fresh copy already says it all: nothing written twice"
        assert client.written() == []
        run(reconciler, client, client.md)  # the cache caught up
        assert ("get", *MD) not in client.calls

    def test_a_cache_holding_someone_elses_later_write_is_taken_as_caught_up(self) -> None:
        client = FakeClient(md_body())
        reconciler = shell(client)
        run(reconciler, client)
        change_spec(client, replicas=3)  # a later write by someone else: the cache has it
        run(reconciler, client)
        assert ("get", *MD) in client.calls, "the version written is not the one cached: asked once"
        run(reconciler, client)
        assert ("get", *MD) not in client.calls


class TestConflict:
    def test_a_status_write_refused_with_409_touches_no_child_and_retries_soon(self) -> None:
        client = FakeClient(md_body())
        stale = client.md
        change_spec(client, replicas=3)  # the object changed after the cache's copy was taken
        again = run(shell(client), client, stale)
        assert again == CONFLICT_RETRY
        assert client.calls == [("status",)], "no child is written on a decision made on a stale copy"
        assert client.events == []
        assert "status" not in client.md

    def test_a_child_write_refused_with_409_is_a_reconcile_error_with_backoff(self) -> None:
        client = FakeClient(md_body())
        client.rejected["Service"] = ApiError(409, "Conflict", "Operation cannot be fulfilled on services")
        reconciler = shell(client)
        assert run(reconciler, client) == timedelta(seconds=1)
        degraded = condition(client, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "ReconcileError")
        assert degraded["message"] == "409 Conflict: Operation cannot be fulfilled on services"
        assert run(reconciler, client) == timedelta(seconds=2), "the retry backs off"
        del client.rejected["Service"]
        run(reconciler, client)
        assert condition(client, "Degraded")["reason"] == "Healthy", "the next reconcile that succeeds clears it"


class TestAutoscalerHandoff:
    def test_replicas_are_handed_to_the_autoscaler_once_without_a_reset(self) -> None:
        client = FakeClient(md_body(replicas=5))
        reconciler = shell(client)
        run(reconciler, client)
        deployment = client.objects["apps/v1", "Deployment", "ml", "iris"]
        deployment["metadata"]["managedFields"] = [
            {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
        ]
        uid = deployment["metadata"]["uid"]
        change_spec(
            client,
            autoscaling={"minReplicas": 2, "maxReplicas": 8},
            resources={"requests": {"cpu": "1"}},
        )
        client.applies.clear()
        run(reconciler, client)
        handoff, *rest = client.applies
        assert handoff == (
            HANDOFF_MANAGER,
            uid,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "iris", "namespace": "ml"},
                "spec": {"replicas": 5},
            },
        ), "the count it has, kept under a second manager, before the operator stops sending it"
        [ours] = [obj for _, _, obj in rest if obj["kind"] == "Deployment"]
        assert "replicas" not in ours["spec"]
        assert ("create", "HorizontalPodAutoscaler", "iris") in client.calls
        # The handoff manager owns replicas now: never handed again.
        client.objects["apps/v1", "Deployment", "ml", "iris"]["metadata"]["managedFields"] = [
            {"manager": HANDOFF_MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            {"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        ]
        client.applies.clear()
        run(reconciler, client)
        assert [m for m, _, _ in client.applies if m == HANDOFF_MANAGER] == []


class TestApplySkipping:
    def test_an_unchanged_child_is_not_applied_again(self) -> None:
        client = FakeClient(md_body())
        reconciler = shell(client)
        run(reconciler, client)
        run(reconciler, client)
        assert client.written() == [] and client.kinds("delete") == []

    def test_only_the_child_the_spec_change_reaches_is_applied(self) -> None:
        client = FakeClient(md_body())
        reconciler = shell(client)
        run(reconciler, client)
        change_spec(client, service={"port": 8080})
        run(reconciler, client)
        assert client.written() == [("Service", "iris")]

    def test_a_child_created_is_adopted_before_its_first_apply_and_only_then(self) -> None:
        client = FakeClient(md_body())
        reconciler = shell(client)
        run(reconciler, client)
        assert ("adopt", "Service", "iris") not in client.calls, "a create is one request"
        run(reconciler, client)
        change_spec(client, service={"port": 8080})
        run(reconciler, client)
        service = [call for call in client.calls if call[1:] == ("Service", "iris")]
        assert service == [("get", "Service", "iris"), ("adopt", "Service", "iris"), ("apply", "Service", "iris")]
        change_spec(client, service={"port": 8081})
        run(reconciler, client)
        assert client.kinds("adopt") == [] and client.written() == [("Service", "iris")]
        assert ("get", "Service", "iris") not in client.calls

    def test_a_child_created_and_changed_before_the_watch_shows_it_is_adopted_too(self) -> None:
        client = FakeClient(md_body())
        reconciler = shell(client)
        run(reconciler, client, {**client.md})
        change_spec(client, service={"port": 8080})
        client.calls.clear()
        reconciler.reconcile("ml", "iris", {}, client.md)
        assert ("adopt", "Service", "iris") in client.calls
        assert client.written() == [("Service", "iris")]

    def test_a_child_just_created_is_not_written_again_before_the_watch_shows_it(self) -> None:
        client = FakeClient(md_body())
        reconciler = shell(client)
        run(reconciler, client, {**client.md})
        client.calls.clear()
        # The next reconcile (its own status write, a requeue) comes before the watch delivered the children.
        reconciler.reconcile("ml", "iris", {}, client.md)
        assert client.written() == [], "one write per child at creation, not a POST and then a PATCH"
        run(reconciler, client)  # the watch caught up
        assert client.written() == []

    def test_a_child_deleted_before_the_watch_showed_it_is_created_again(self) -> None:
        client = FakeClient(md_body())
        reconciler = shell(client)
        run(reconciler, client, {**client.md})
        del client.objects["v1", "Service", "ml", "iris"]
        reconciler.child_deleted("ml", "iris", "Service", "iris")  # the watch's DELETED event
        client.calls.clear()
        reconciler.reconcile("ml", "iris", client.indexed(), client.md)
        assert client.written() == [("Service", "iris")]

    def test_a_child_the_watch_showed_and_then_lost_is_created_again(self) -> None:
        client = FakeClient(md_body())
        reconciler = shell(client)
        run(reconciler, client, {**client.md})
        run(reconciler, client)  # the index has every child now
        del client.objects["v1", "Service", "ml", "iris"]
        reconciler.child_deleted("ml", "iris", "Service", "iris")
        run(reconciler, client)
        assert client.written() == [("Service", "iris")], "created, not applied to a uid that is gone"

    def test_a_child_changed_by_hand_is_applied_again(self) -> None:
        client = FakeClient(md_body())
        reconciler = shell(client)
        run(reconciler, client)
        service = client.objects["v1", "Service", "ml", "iris"]
        service["metadata"]["generation"] += 1  # someone edited it: its annotation still says ours
        run(reconciler, client)
        assert client.written() == [("Service", "iris")]
        run(reconciler, client)
        assert client.written() == []

    def test_a_budget_no_longer_wanted_is_removed_pinned_to_its_uid(self) -> None:
        client = FakeClient(md_body(replicas=3))
        reconciler = shell(client)
        run(reconciler, client)
        assert ("policy/v1", "PodDisruptionBudget", "ml", "iris") in client.objects
        change_spec(client, replicas=1)
        run(reconciler, client)
        assert client.kinds("delete") == [("PodDisruptionBudget", "iris")]
        assert ("policy/v1", "PodDisruptionBudget", "ml", "iris") not in client.objects


class TestRejectedChild:
    def test_degraded_holds_still_while_the_api_server_keeps_refusing(self) -> None:
        """No flapping: one transition, one event; later reconciles write nothing and keep lastTransitionTime."""
        clock = Clock()
        client = FakeClient(md_body())
        client.rejected["PodDisruptionBudget"] = ApiError(
            422, "Invalid", 'PodDisruptionBudget "iris" is invalid: denied by the cluster policy'
        )
        reconciler = shell(client, clock)
        assert run(reconciler, client) == CHILD_RECHECK
        first = copy.deepcopy(condition(client, "Degraded"))
        assert (first["status"], first["reason"]) == ("True", "ChildRejected")
        for _ in range(5):
            clock.tick()
            assert run(reconciler, client) == CHILD_RECHECK
            assert ("PodDisruptionBudget", "iris") in client.written(), "the child is asked for again"
            assert ("status",) not in client.calls, "an unchanged verdict is not written, not even in between"
            assert condition(client, "Degraded") == first
        assert [r for _, r, _ in client.events].count("ChildRejected") == 1

    def test_the_condition_clears_once_the_child_is_taken(self) -> None:
        clock = Clock()
        client = FakeClient(md_body())
        client.rejected["Service"] = ApiError(422, "Invalid", 'Service "iris" is invalid: denied')
        reconciler = shell(client, clock)
        run(reconciler, client)
        del client.rejected["Service"]
        clock.tick(60)
        run(reconciler, client)
        degraded = condition(client, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("False", "Healthy")
        assert degraded["lastTransitionTime"] == "2026-11-24T12:01:00Z"
        assert ("create", "Service", "iris") in client.calls

    def test_an_operator_restarted_meanwhile_keeps_the_condition_as_it_was(self) -> None:
        """The refusal is in status, not in memory: a new process sees it and does not flip it."""
        clock = Clock()
        client = FakeClient(md_body())
        client.rejected["Service"] = ApiError(422, "Invalid", 'Service "iris" is invalid: denied')
        run(shell(client, clock), client)
        first = condition(client, "Degraded")
        clock.tick(300)
        run(shell(client, clock), client)
        assert ("status",) not in client.calls
        assert condition(client, "Degraded") == first


def test_reconcile_of_a_deleted_object_sends_nothing_but_the_read() -> None:
    client = FakeClient(md_body())
    reconciler = reconcile(client)
    del client.objects["modeldeploy.dev/v1alpha1", "ModelDeployment", "ml", "iris"]
    client.calls.clear()
    assert reconciler.reconcile("ml", "iris", {}, None) is None
    assert client.calls == [("get", *MD)]
