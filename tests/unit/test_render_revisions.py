"""A revision's pods are drawn from that revision's template alone, whatever the spec says now."""

from __future__ import annotations

from modeldeploy.model.revision import RevisionPlan, template_of
from modeldeploy.render.deployment import render_deployment

from factories import md


class TestStablePodsDuringACanary:
    def test_a_canary_of_another_bento_leaves_the_stable_pod_template_as_it_was(self) -> None:
        before = md(bento={"image": "registry.example.com/iris-classifier:v1"})
        # The spec now names another bento (iris-onnx): the canary serves it, the stable keeps v1.
        after = md(bento={"image": "registry.example.com/iris-onnx:v1"})
        template = template_of(before.spec)
        stable = RevisionPlan("stable", template.revision, template, 2)
        old = render_deployment(before, stable)["spec"]["template"]
        new = render_deployment(after, stable)["spec"]["template"]
        assert new == old, "the stable pods would be replaced because the spec names another bento"
        assert new["metadata"]["labels"]["app.kubernetes.io/name"] == "iris-classifier"
