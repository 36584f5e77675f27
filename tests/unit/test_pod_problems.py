"""What pods say, read into problems a person can act on; a missing Secret is learnt from them, never read."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy.handlers.observe import named
from modeldeploy.k8s.objects import pod_problems
from modeldeploy.model.revision import template_of

from factories import md


def pod(waiting_reason: str, message: str, *, init: bool = False, role: str = "stable") -> dict[str, Any]:
    """A pod as the kubelet reports one whose container cannot be created."""
    status = {
        "name": "fetch-bento" if init else "bento",
        "state": {"waiting": {"reason": waiting_reason, "message": message}},
    }
    key = "initContainerStatuses" if init else "containerStatuses"
    return {
        "metadata": {"name": "iris-7c9d8-x2l", "labels": {"modeldeploy.dev/role": role}},
        "status": {"phase": "Pending", key: [status]},
    }


class TestMissingReferences:
    @pytest.mark.parametrize(
        ("message", "missing"),
        [
            ('secret "model-token" not found', ("Secret", "model-token")),
            ('configmap "settings" not found', ("ConfigMap", "settings")),
            ("couldn't find key token in Secret ml/model-token", ("Secret", "model-token")),
        ],
    )
    def test_the_kubelets_words_name_the_missing_object(self, message: str, missing: tuple[str, str]) -> None:
        [problem] = pod_problems([pod("CreateContainerConfigError", message)])
        assert (problem.reason, problem.missing, problem.fatal) == ("MissingReference", missing, False)
        assert message in problem.message

    def test_where_the_spec_names_it_is_said(self) -> None:
        spec = md(env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "model-token", "key": "token"}}}])
        problems = pod_problems([pod("CreateContainerConfigError", 'secret "model-token" not found')])
        [problem] = named(problems, "ml", template_of(spec.spec))
        assert problem.message == (
            "Secret ml/model-token (named in spec.env[0].valueFrom.secretKeyRef) is missing: container bento of pod "
            'iris-7c9d8-x2l cannot start: secret "model-token" not found'
        )

    def test_the_store_secret_of_the_fetching_container(self) -> None:
        spec = md(bento={"tag": "iris:v1", "store": {"uri": "s3://b/p", "secretRef": {"name": "s3-creds"}}})
        problems = pod_problems([pod("CreateContainerConfigError", 'secret "s3-creds" not found', init=True)])
        [problem] = named(problems, "ml", template_of(spec.spec, "registry.example.com/rt:1"))
        assert problem.message.startswith("Secret ml/s3-creds (named in spec.bento.store.secretRef) is missing")

    def test_any_other_config_error_stays_fatal(self) -> None:
        [problem] = pod_problems(
            [pod("CreateContainerConfigError", "container has runAsNonRoot and image will run as root")]
        )
        assert (problem.reason, problem.fatal, problem.missing) == ("ContainerConfigError", True, None)
