"""A reconcile's view of the cluster: the children it owns, their pods when they struggle, the objects the
pods need, and which optional child kinds the cluster serves."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.k8s.children import BY_KIND, Child
from modeldeploy.k8s.client import Client
from modeldeploy.k8s.objects import pod_problems
from modeldeploy.model.meta import NAME_LABEL, child_name
from modeldeploy.model.observed import DeploymentState, Observed, PodProblem
from modeldeploy.model.revision import RevisionTemplate, template_of
from modeldeploy.routing import optional_kinds

# Whether the cluster serves an optional kind is asked again after this long (sooner while it does not:
# someone is likely installing the CRDs in answer to the condition).
SERVED_RECHECK_ABSENT = 10.0
SERVED_RECHECK_PRESENT = 300.0

Children = Mapping[tuple[str, str], Child]


def owned(child: Child, md: ModelDeployment) -> bool:
    """The one owner check every child goes through: its controller is this ModelDeployment (not an earlier
    one of the same name, nor someone else's object that shares a name or the labels)."""
    return child.owner is not None and child.owner == md.metadata.uid


@dataclass
class Observer:
    client: Client
    clock: Callable[[], datetime]
    default_runtime_image: str | None = None
    # kind -> (when it was asked, whether the cluster serves it)
    _served: dict[str, tuple[float, bool]] = field(default_factory=dict)

    def observe(self, md: ModelDeployment, children: Children) -> Observed:
        now = self.clock()
        stable = _deployment(children, child_name(md, "stable"))
        canary = _deployment(children, child_name(md, "canary"))
        problems: tuple[PodProblem, ...] = ()
        if any(state is not None and state.struggling and state.replicas > 0 for state in (stable, canary)):
            # Only when pods are not all Ready, and some exist to say why: listing pods on every reconcile
            # would cost the API server (a new Deployment's first reconciles come before its first pod).
            problems = pod_problems(self.client.list("v1", "Pod", md.namespace, {NAME_LABEL: md.name}))

        template = template_of(md.spec, self.default_runtime_image)
        problems = named(problems, md.namespace, template)
        settled = (
            md.status is not None
            and md.status.stable is not None
            and md.status.stable.revision == template.revision
            and md.status.canary is None
            and not (stable is not None and stable.struggling)
        )
        return Observed(
            now=now,
            stable=stable,
            canary=canary,
            pod_problems=problems,
            missing_references=() if settled else self.missing_references(md.namespace, template),
            unserved=frozenset(kind for kind in optional_kinds(md) if not self.served(kind)),
        )

    def missing_references(self, namespace: str, template: RevisionTemplate) -> tuple[str, ...]:
        """Objects the pods need that do not exist, read by metadata only. Secrets are not read at all (the
        operator may not): a missing one is reported from what its pods say (`named`)."""
        missing = []
        for kind, name, where in references(template):
            if kind != "Secret" and not self.client.exists_metadata_only("v1", kind, namespace, name):
                missing.append(f"{kind} {namespace}/{name} (named in {where}) does not exist")
        return tuple(missing)

    def served(self, kind: str) -> bool:
        """Whether the cluster serves an optional child kind (its CRD is installed)."""
        checked_at, present = self._served.get(kind, (float("-inf"), False))
        ttl = SERVED_RECHECK_PRESENT if present else SERVED_RECHECK_ABSENT
        if time.monotonic() - checked_at > ttl:
            child = BY_KIND[kind]
            present = self.client.has_api(child.api_version, child.plural)
            self._served[kind] = (time.monotonic(), present)
        return present

    def forget_served(self, kind: str) -> None:
        """The API server answered 404 for the kind: its CRD went away, ask again next time."""
        self._served.pop(kind, None)


def _deployment(children: Children, name: str) -> DeploymentState | None:
    child = children.get(("Deployment", name))
    return child.state if child is not None else None


def references(template: RevisionTemplate) -> list[tuple[str, str, str]]:
    """(kind, name, where the spec names it) of every object the pods of a revision need."""
    wanted: list[tuple[str, str, str]] = []
    bento = template.bento
    if bento.store is not None and bento.store.secret_ref is not None:
        wanted.append(("Secret", bento.store.secret_ref.name, "spec.bento.store.secretRef"))
    if bento.store is not None and bento.store.uri.startswith("pvc://"):
        claim = bento.store.uri.removeprefix("pvc://").split("/", 1)[0]
        wanted.append(("PersistentVolumeClaim", claim, "spec.bento.store.uri"))
    for i, var in enumerate(template.env):
        source = var.value_from
        if source is None:
            continue
        if source.secret_key_ref is not None and not source.secret_key_ref.optional:
            wanted.append(("Secret", source.secret_key_ref.name, f"spec.env[{i}].valueFrom.secretKeyRef"))
        if source.config_map_key_ref is not None and not source.config_map_key_ref.optional:
            wanted.append(("ConfigMap", source.config_map_key_ref.name, f"spec.env[{i}].valueFrom.configMapKeyRef"))
    for i, ref in enumerate(template.image_pull_secrets):
        wanted.append(("Secret", ref.name, f"spec.imagePullSecrets[{i}]"))
    if template.service_account_name:
        wanted.append(("ServiceAccount", template.service_account_name, "spec.serviceAccountName"))
    return wanted


def named(problems: tuple[PodProblem, ...], namespace: str, template: RevisionTemplate) -> tuple[PodProblem, ...]:
    """Pod problems of a missing Secret or ConfigMap, with where the spec names it."""
    where = {(kind, name): at for kind, name, at in reversed(references(template))}

    def with_where(problem: PodProblem) -> PodProblem:
        if problem.missing is None:
            return problem
        kind, name = problem.missing
        named_in = f" (named in {where[problem.missing]})" if problem.missing in where else ""
        return replace(problem, message=f"{kind} {namespace}/{name}{named_in} is missing: {problem.message}")

    return tuple(with_where(problem) for problem in problems)
