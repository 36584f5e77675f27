"""k8s/client.py against a recording transport: the HTTP requests each call sends, and how answers are read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
import urllib3

from modeldeploy.k8s.client import ApiError, Client, ObjectRef


@dataclass
class Answer:
    status: int
    body: Any = None
    reason: str = ""

    def read(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body).encode()


@dataclass
class Transport:
    """Stands in for kubernetes.client.ApiClient: records each request, answers from a script."""

    answers: list[Answer | Exception] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)

    def param_serialize(
        self, method: str, resource_path: str, header_params: dict[str, str], body: Any, auth_settings: list[str]
    ) -> tuple[Any, ...]:
        return method, resource_path, header_params, body

    def call_api(self, method: str, url: str, headers: dict[str, str], body: Any, _request_timeout: float) -> Answer:
        self.sent.append({"method": method, "url": url, "headers": headers, "body": body})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def transport() -> Transport:
    return Transport()


@pytest.fixture
def client(transport: Transport) -> Client:
    return Client(transport)  # type: ignore[arg-type]


def service(name: str = "iris") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "ml"}, "spec": {}}


def status(code: int, reason: str, message: str) -> Answer:
    return Answer(code, {"kind": "Status", "status": "Failure", "reason": reason, "message": message, "code": code})


class TestPaths:
    def test_a_name_is_quoted_whole_so_it_cannot_reach_another_path(self, client: Client, transport: Transport) -> None:
        transport.answers = [Answer(404, {"reason": "NotFound", "message": "not found"})]
        assert client.get("v1", "Service", "ml", "../../kube-system/secrets/x") is None
        assert transport.sent[0]["url"] == "/api/v1/namespaces/ml/services/..%2F..%2Fkube-system%2Fsecrets%2Fx"

    def test_requests_are_counted_by_method_and_resource(self, client: Client, transport: Transport) -> None:
        transport.answers = [Answer(200, {}), Answer(200, {}), Answer(200, {"items": []})]
        client.get("apps/v1", "Deployment", "ml", "iris")
        client.replace_status({**service(), "apiVersion": "modeldeploy.dev/v1alpha1", "kind": "ModelDeployment"}, {})
        client.list("v1", "Pod", "ml", {"b": "2", "a": "1"})
        assert dict(client.requests) == {
            "GET deployments": 1,
            "PUT modeldeployments/status": 1,
            "GET pods": 1,
        }
        assert transport.sent[2]["url"] == "/api/v1/namespaces/ml/pods?labelSelector=a%3D1%2Cb%3D2"


class TestWrites:
    def test_apply_is_server_side_under_the_field_manager_pinned_to_the_uid(
        self, client: Client, transport: Transport
    ) -> None:
        transport.answers = [Answer(200, service())]
        client.apply(service(), uid="u-1")
        [sent] = transport.sent
        assert sent["method"] == "PATCH"
        assert sent["url"] == "/api/v1/namespaces/ml/services/iris?fieldManager=modeldeploy&force=true"
        assert sent["headers"]["Content-Type"] == "application/apply-patch+yaml"
        assert sent["body"]["metadata"]["uid"] == "u-1"

    def test_a_create_is_one_post(self, client: Client, transport: Transport) -> None:
        created = service()
        created["metadata"]["managedFields"] = [{"manager": "modeldeploy", "operation": "Update", "fieldsV1": {}}]
        transport.answers = [Answer(201, created)]
        assert client.create(service()) == created
        [post] = transport.sent
        assert (post["method"], post["url"]) == ("POST", "/api/v1/namespaces/ml/services?fieldManager=modeldeploy")

    def test_adopt_takes_the_fields_of_a_create_as_applied_pinned_to_the_uid(
        self, client: Client, transport: Transport
    ) -> None:
        current = service()
        current["metadata"] |= {
            "uid": "u-1",
            "managedFields": [
                {"manager": "modeldeploy", "operation": "Update", "fieldsV1": {"f:spec": {}}},
                {"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {}},
            ],
        }
        transport.answers = [Answer(200, current)]
        client.adopt(current)
        [patch] = transport.sent
        assert patch["method"] == "PATCH" and patch["headers"]["Content-Type"] == "application/merge-patch+json"
        assert patch["body"]["metadata"]["uid"] == "u-1"
        assert [e["operation"] for e in patch["body"]["metadata"]["managedFields"]] == ["Apply", "Update"]

    def test_adopt_of_an_object_applied_already_sends_nothing(self, client: Client, transport: Transport) -> None:
        current = service()
        current["metadata"]["managedFields"] = [{"manager": "modeldeploy", "operation": "Apply", "fieldsV1": {}}]
        client.adopt(current)
        assert transport.sent == []

    def test_a_create_of_a_taken_name_returns_none_and_sends_nothing_more(
        self, client: Client, transport: Transport
    ) -> None:
        transport.answers = [status(409, "AlreadyExists", 'services "iris" already exists')]
        assert client.create(service()) is None
        assert len(transport.sent) == 1

    def test_status_is_replaced_conditional_on_the_version_read_without_managed_fields(
        self, client: Client, transport: Transport
    ) -> None:
        body = {
            "apiVersion": "modeldeploy.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ml", "resourceVersion": "7", "managedFields": [{}]},
            "spec": {"replicas": 2},
        }
        transport.answers = [status(409, "Conflict", "the object has been modified")]
        with pytest.raises(ApiError) as caught:
            client.replace_status(body, {"phase": "Ready"})
        assert caught.value.conflict
        [sent] = transport.sent
        assert sent["method"] == "PUT"
        assert sent["url"] == "/apis/modeldeploy.dev/v1alpha1/namespaces/ml/modeldeployments/iris/status"
        assert sent["body"]["metadata"] == {"name": "iris", "namespace": "ml", "resourceVersion": "7"}
        assert sent["body"]["status"] == {"phase": "Ready"}

    def test_delete_carries_the_uid_as_a_precondition_and_gone_is_false(
        self, client: Client, transport: Transport
    ) -> None:
        transport.answers = [Answer(200, {}), status(404, "NotFound", "gone")]
        ref = ObjectRef("policy/v1", "PodDisruptionBudget", "ml", "iris")
        assert client.delete(ref, uid="u-2") is True
        assert client.delete(ref) is False
        first, second = transport.sent
        assert first["url"] == "/apis/policy/v1/namespaces/ml/poddisruptionbudgets/iris"
        assert first["body"]["preconditions"] == {"uid": "u-2"}
        assert first["body"]["propagationPolicy"] == "Background"
        assert "preconditions" not in second["body"]


class TestErrors:
    def test_the_api_servers_message_is_kept(self, client: Client, transport: Transport) -> None:
        transport.answers = [status(422, "Invalid", 'Service "iris" is invalid: spec.ports[0].port: Invalid value')]
        with pytest.raises(ApiError) as caught:
            client.apply(service())
        err = caught.value
        assert (err.status, err.reason, err.invalid) == (422, "Invalid", True)
        assert err.message == 'Service "iris" is invalid: spec.ports[0].port: Invalid value'

    @pytest.mark.parametrize(
        ("answer", "flag"),
        [
            (status(409, "Conflict", "uid mismatch: the provided object specified uid x"), "uid_mismatch"),
            (status(422, "Invalid", 'metadata.uid: Invalid value: "x": field is immutable'), "uid_mismatch"),
            (
                status(403, "Forbidden", 'services "iris" is forbidden: ... because it is being terminated'),
                "namespace_terminating",
            ),
            (status(409, "AlreadyExists", "exists"), "already_exists"),
        ],
    )
    def test_answers_the_shell_decides_on_are_told_apart(
        self, client: Client, transport: Transport, answer: Answer, flag: str
    ) -> None:
        transport.answers = [answer]
        with pytest.raises(ApiError) as caught:
            client.apply(service())
        assert getattr(caught.value, flag) is True

    def test_no_answer_at_all_is_status_zero(self, client: Client, transport: Transport) -> None:
        transport.answers = [urllib3.exceptions.MaxRetryError(None, "/", "connection refused")]  # type: ignore[arg-type]
        with pytest.raises(ApiError) as caught:
            client.get("v1", "Service", "ml", "iris")
        assert caught.value.unreachable
        assert "no answer from the API server: MaxRetryError" in str(caught.value)

    def test_a_body_that_is_not_json_is_quoted_as_text(self, client: Client, transport: Transport) -> None:
        class Plain(Answer):
            def read(self) -> bytes:
                return b"upstream connect error"

        transport.answers = [Plain(503, reason="Service Unavailable")]
        with pytest.raises(ApiError) as caught:
            client.get("v1", "Service", "ml", "iris")
        assert (caught.value.status, caught.value.reason, caught.value.message) == (
            503,
            "Service Unavailable",
            "upstream connect error",
        )
