"""One level-based reconcile of one ModelDeployment: observe, plan (pure), apply, report.

Runs on a worker thread. Reads the object fresh from the API server, takes its children
from the operator's in-memory index (kept by kopf's watches), asks `rollout` what should
run, `render` for the manifests, applies them with server-side apply, removes children
no longer wanted, and writes status only when it changed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from modeldeploy.api.errors import describe
from modeldeploy.api.measurement import Measurement
from modeldeploy.api.v1alpha1 import API_VERSION, KIND, ModelDeployment, ModelDeploymentStatus
from modeldeploy.api.v1alpha1.revision import NAME_LABEL, RevisionTemplate, template_of
from modeldeploy.api.v1alpha1.types import Condition
from modeldeploy.k8s.client import FIELD_MANAGER, ApiError, Client, ObjectRef
from modeldeploy.render import RenderConfig, render_children
from modeldeploy.render.meta import child_name
from modeldeploy.rollout.clock import timestamp
from modeldeploy.rollout.conditions import transitions
from modeldeploy.rollout.observed import DeploymentState, Observed, pod_problems
from modeldeploy.rollout.plan import Event, Plan, PlanConfig, analysis_due, plan

log = logging.getLogger(__name__)

HANDOFF_MANAGER = "modeldeploy-handoff"
# On every child: a digest of what the operator last applied, so an unchanged child is not applied again.
APPLIED_ANNOTATION = "modeldeploy.dev/applied"
# Children are applied in full at least this often anyway, which puts back any change made by hand.
FULL_APPLY_PERIOD = 300.0
# Whether the cluster serves HTTPRoute is asked again after this long (sooner while it does not:
# someone is likely installing the CRDs in answer to the condition).
GATEWAY_RECHECK_ABSENT = 10.0
GATEWAY_RECHECK_PRESENT = 300.0
CONFLICT_RETRY = timedelta(seconds=1)
# A ModelDeployment that can't be fixed by waiting is looked at again only this often.
INVALID_RECHECK = timedelta(minutes=5)


@dataclass(frozen=True)
class Child:
    """What the operator's index keeps of a child object."""

    api_version: str
    kind: str
    name: str
    uid: str
    deployment: DeploymentState | None = None
    applied: str | None = None  # the APPLIED_ANNOTATION it carries
    generation: int | None = None


def applied_digest(obj: Mapping[str, Any]) -> str:
    """A digest of a desired child, written onto it as APPLIED_ANNOTATION."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


Measure = Callable[[ModelDeployment, str], Measurement]


@dataclass
class Reconciler:
    client: Client
    config: PlanConfig = field(default_factory=PlanConfig)
    measure: Measure | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _gateway_checked: tuple[float, bool] = (0.0, False)
    # Per ModelDeployment: the resourceVersion its last status write produced, until the cache has it.
    _written: dict[tuple[str, str], str] = field(default_factory=dict)
    # When each ModelDeployment's children were last applied in full, and what generation each child
    # had after the operator's own last apply (a different one means someone else changed it).
    _full_apply: dict[tuple[str, str], float] = field(default_factory=dict)
    _generations: dict[tuple[str, str], dict[tuple[str, str], int | None]] = field(default_factory=dict)

    # -- entry point -----------------------------------------------------------------

    def reconcile(
        self,
        namespace: str,
        name: str,
        children: Mapping[tuple[str, str], Child],
        cached: Mapping[str, Any] | None = None,
    ) -> timedelta | None:
        """Reconcile one ModelDeployment; `cached` is its body from the watch cache (read fresh when None)."""
        try:
            return self._reconcile(namespace, name, children, cached)
        except ApiError as err:
            if err.not_found or err.namespace_terminating:
                log.debug("%s/%s went away during its reconcile: %s", namespace, name, err)
                return None  # deleted meanwhile: the garbage collector takes the children
            raise

    def forget(self, namespace: str, name: str) -> None:
        """The ModelDeployment is gone: drop what was kept about it."""
        key = (namespace, name)
        self._written.pop(key, None)
        self._full_apply.pop(key, None)
        self._generations.pop(key, None)

    def _latest(self, key: tuple[str, str], cached: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The object to decide on: never older than the operator's own last write to it.

        The watch cache is used once it has reached the version the last status write produced;
        until then (a few milliseconds, usually) the object is read from the API server. The cache
        has caught up when it holds that version or when it holds what the API server returns (a
        later write by someone else may have come first).
        """
        written = self._written.get(key)
        cached_rv = None if cached is None else cached["metadata"].get("resourceVersion")
        if cached is not None and (written is None or written == cached_rv):
            self._written.pop(key, None)
            return copy.deepcopy(dict(cached))
        fresh = self.client.get(API_VERSION, KIND, *key)
        if fresh is None or fresh["metadata"].get("resourceVersion") == cached_rv:
            self._written.pop(key, None)
        return fresh

    def _reconcile(
        self,
        namespace: str,
        name: str,
        children: Mapping[tuple[str, str], Child],
        cached: Mapping[str, Any] | None,
    ) -> timedelta | None:
        body = self._latest((namespace, name), cached)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None  # gone, or going: the garbage collector removes the children
        try:
            md = parse(body)
        except ValidationError as err:
            return INVALID_RECHECK if self._report_invalid(body, describe(err)) else CONFLICT_RETRY

        observed = self.observe(md, children)
        revision = analysis_due(md, observed)
        if revision is not None and self.measure is not None:
            observed = replace(observed, measurement=self.measure(md, revision))
        result = plan(md, observed, self.config)
        for note in result.notes:
            log.warning("%s/%s: %s", namespace, name, note)

        # The decision is recorded before it is acted on: a decision made on a stale copy is refused
        # here (409) before it touches a child, and an operator stopped between the two steps
        # resumes from what the status says it was doing.
        written = self._write_status(body, result.status)
        if written is None:
            return CONFLICT_RETRY
        problems = self._apply(md, result, children, observed.gateway_api)
        status = _with_apply_problems(result.status, problems, observed.now)
        if problems and self._write_status(written, status) is None:
            return CONFLICT_RETRY
        events = [*result.events, *(Event(*e) for e in transitions(md.status or ModelDeploymentStatus(), status))]
        for event in events:
            self.client.post_event(
                body, type_=event.type, reason=event.reason, message=event.message, action="Reconcile"
            )
        return result.requeue_after

    # -- observe -----------------------------------------------------------------------

    def observe(self, md: ModelDeployment, children: Mapping[tuple[str, str], Child]) -> Observed:
        now = self.clock()
        stable = children.get(("Deployment", child_name(md, "stable")))
        canary = children.get(("Deployment", child_name(md, "canary")))
        stable_state = stable.deployment if stable else None
        canary_state = canary.deployment if canary else None

        problems: tuple[Any, ...] = ()
        if _struggling(stable_state) or _struggling(canary_state):
            # Only when pods are not all Ready: listing pods on every reconcile would cost the API server.
            pods = self.client.list("v1", "Pod", md.namespace, {NAME_LABEL: md.name})
            problems = pod_problems(pods)

        template = template_of(md.spec, self.config.default_runtime_image)
        settled = (
            md.status is not None
            and md.status.stable is not None
            and md.status.stable.revision == template.revision
            and md.status.canary is None
            and not _struggling(stable_state)
        )
        missing = () if settled else self.missing_references(md.namespace, template)
        gateway = self.gateway_api() if md.spec.rollout.traffic_routing == "GatewayAPI" else True
        return Observed(
            now=now,
            stable=stable_state,
            canary=canary_state,
            children=frozenset((c.kind, c.name) for c in children.values()),
            pod_problems=problems,
            missing_references=missing,
            gateway_api=gateway,
        )

    def missing_references(self, namespace: str, template: RevisionTemplate) -> tuple[str, ...]:
        """Objects the pods need that do not exist. Secrets are checked by metadata only."""
        wanted: list[tuple[str, str, str, str]] = []
        bento = template.bento
        if bento.store is not None and bento.store.secret_ref is not None:
            wanted.append(("v1", "Secret", bento.store.secret_ref.name, "spec.bento.store.secretRef"))
        if bento.store is not None and bento.store.uri.startswith("pvc://"):
            claim = bento.store.uri.removeprefix("pvc://").split("/", 1)[0]
            wanted.append(("v1", "PersistentVolumeClaim", claim, "spec.bento.store.uri"))
        for i, var in enumerate(template.env):
            source = var.value_from
            if source is None:
                continue
            if source.secret_key_ref is not None and not source.secret_key_ref.optional:
                wanted.append(("v1", "Secret", source.secret_key_ref.name, f"spec.env[{i}].valueFrom.secretKeyRef"))
            if source.config_map_key_ref is not None and not source.config_map_key_ref.optional:
                wanted.append(
                    ("v1", "ConfigMap", source.config_map_key_ref.name, f"spec.env[{i}].valueFrom.configMapKeyRef")
                )
        for i, ref in enumerate(template.image_pull_secrets):
            wanted.append(("v1", "Secret", ref.name, f"spec.imagePullSecrets[{i}]"))
        if template.service_account_name:
            wanted.append(("v1", "ServiceAccount", template.service_account_name, "spec.serviceAccountName"))
        missing = []
        for api_version, kind, name, where in wanted:
            if not self.client.exists_metadata_only(api_version, kind, namespace, name):
                missing.append(f"{kind} {namespace}/{name} (named in {where}) does not exist")
        return tuple(missing)

    def gateway_api(self) -> bool:
        checked_at, present = self._gateway_checked
        ttl = GATEWAY_RECHECK_PRESENT if present else GATEWAY_RECHECK_ABSENT
        if time.monotonic() - checked_at > ttl:
            present = self.client.has_api("gateway.networking.k8s.io/v1", "httproutes")
            self._gateway_checked = (time.monotonic(), present)
        return present

    # -- act -----------------------------------------------------------------------------

    def _apply(
        self, md: ModelDeployment, result: Plan, children: Mapping[tuple[str, str], Child], gateway_api: bool
    ) -> list[tuple[str, str]]:
        desired = render_children(
            md, result.stable, result.canary, route_weight=result.route_weight, config=RenderConfig(gateway_api)
        )
        problems: list[tuple[str, str]] = []
        stable_child = children.get(("Deployment", child_name(md, "stable")))
        if md.spec.autoscaling is not None and stable_child is not None and stable_child.deployment is not None:
            self._hand_replicas_to_autoscaler(md, stable_child.deployment)
        key = (md.namespace, md.name)
        full = time.monotonic() - self._full_apply.get(key, float("-inf")) > FULL_APPLY_PERIOD
        generations = self._generations.setdefault(key, {})
        for obj in desired:
            digest = applied_digest(obj)
            obj["metadata"].setdefault("annotations", {})[APPLIED_ANNOTATION] = digest
            ref = (obj["kind"], obj["metadata"]["name"])
            child = children.get(ref)
            if (
                not full
                and child is not None
                and child.applied == digest
                and child.generation == generations.get(ref, child.generation)
            ):
                continue  # applied already, and nobody changed it since
            try:
                applied = self.client.apply(obj)
                generations[ref] = applied.get("metadata", {}).get("generation")
            except ApiError as err:
                if err.not_found and obj["kind"] == "HTTPRoute":
                    self._gateway_checked = (0.0, False)  # the CRDs went away: ask again next time
                    raise
                if err.status >= 500 or err.status in (409, 429) or err.namespace_terminating:
                    raise  # transient, or the object is going: the caller decides
                where = f"{obj['kind']} {obj['metadata']['name']}"
                log.warning("%s/%s: applying %s failed: %s", md.namespace, md.name, where, err)
                problems.append(("ChildRejected", f"{where} was rejected by the API server: {err.message}"))
        if full and not problems:
            self._full_apply[key] = time.monotonic()
        wanted = {(obj["kind"], obj["metadata"]["name"]) for obj in desired}
        for (kind, name), child in children.items():
            if (kind, name) not in wanted:
                log.info("%s/%s: removing %s %s", md.namespace, md.name, kind, name)
                self.client.delete(ObjectRef(child.api_version, kind, md.namespace, name), uid=child.uid)
        self._remove_unwanted_route(md, wanted)
        return problems

    def _remove_unwanted_route(self, md: ModelDeployment, wanted: set[tuple[str, str]]) -> None:
        """Routes are not watched: when the spec changed and wants no route, delete any there is."""
        if ("HTTPRoute", md.name) in wanted or not self._spec_changed(md) or not self.gateway_api():
            return
        ref = ObjectRef("gateway.networking.k8s.io/v1", "HTTPRoute", md.namespace, md.name)
        route = self.client.get(ref.api_version, ref.kind, ref.namespace, ref.name)
        owners = (route or {}).get("metadata", {}).get("ownerReferences", [])
        if not any(o.get("uid") == md.metadata.get("uid") for o in owners):
            return  # none, or someone else's route that happens to share the name
        if self.client.delete(ref, uid=route["metadata"]["uid"] if route else None):
            log.info("%s/%s: removed HTTPRoute %s", md.namespace, md.name, md.name)

    @staticmethod
    def _spec_changed(md: ModelDeployment) -> bool:
        observed = md.status.observed_generation if md.status else None
        return observed != md.metadata.get("generation")

    def _hand_replicas_to_autoscaler(self, md: ModelDeployment, stable: DeploymentState) -> None:
        """Stop owning spec.replicas without resetting it.

        Server-side apply removes a field its manager stops sending unless another manager
        owns it too; a one-field apply under a second manager keeps the current count until
        the autoscaler writes its own.
        """
        if FIELD_MANAGER not in stable.replicas_owned_by or HANDOFF_MANAGER in stable.replicas_owned_by:
            return
        self.client.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": stable.name, "namespace": md.namespace},
                "spec": {"replicas": stable.spec_replicas},
            },
            field_manager=HANDOFF_MANAGER,
        )

    def _write_status(
        self, body: dict[str, Any], status: ModelDeploymentStatus | dict[str, Any]
    ) -> dict[str, Any] | None:
        """Write status if it changed; the object as it is now, or None when it changed under us.

        The write is conditional on the resourceVersion the reconcile read, so a decision made
        on a stale copy is refused by the API server, never recorded.
        """
        old = body.get("status") or {}
        new = status.wire() if isinstance(status, ModelDeploymentStatus) else status
        if new == old:
            return body
        meta = body["metadata"]
        try:
            written = self.client.replace_status(body, new)
        except ApiError as err:
            if err.conflict:
                return None
            raise
        self._written[(meta["namespace"], meta["name"])] = written["metadata"].get("resourceVersion", "")
        return written

    def _report_invalid(self, body: dict[str, Any], problems: list[str]) -> bool:
        """A spec the API server let through but the operator cannot use: say so in status.

        False when the object changed under us (reconcile again).
        """
        message = "; ".join(problems)
        old = body.get("status") or {}
        now = timestamp(self.clock())
        previous = {c.get("type"): c for c in old.get("conditions", []) or []}
        conditions = []
        for type_, ok in (("Ready", False), ("Degraded", True)):
            status = "True" if ok else "False"
            prev = previous.get(type_, {})
            since = prev.get("lastTransitionTime") if prev.get("status") == status else now
            conditions.append(
                Condition(
                    type=type_,
                    status=status,
                    reason="InvalidSpec",
                    message=message,
                    last_transition_time=since,
                    observed_generation=body["metadata"].get("generation"),
                ).wire()
            )
        new = {
            **old,
            "phase": "Failed",
            "observedGeneration": body["metadata"].get("generation"),
            "conditions": conditions,
        }
        if new == old:
            return True
        if self._write_status(body, new) is None:
            return False
        self.client.post_event(body, type_="Warning", reason="InvalidSpec", message=message, action="Validate")
        return True


def parse(body: Mapping[str, Any]) -> ModelDeployment:
    """The typed object; a status the operator cannot read is dropped rather than fatal."""
    data = {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body}
    md = ModelDeployment.model_validate(data)
    if body.get("status"):
        try:
            md.status = ModelDeploymentStatus.model_validate(body["status"])
        except ValidationError as err:
            log.warning("%s: unreadable status ignored: %s", md.name, "; ".join(describe(err)))
    return md


def _struggling(state: DeploymentState | None) -> bool:
    return state is not None and (not state.current or state.ready_replicas < state.spec_replicas)


def _with_apply_problems(
    status: ModelDeploymentStatus, problems: list[tuple[str, str]], now: datetime
) -> ModelDeploymentStatus:
    if not problems:
        return status
    message = "; ".join(m for _, m in problems)
    reason = problems[0][0]
    conditions = []
    for cond in status.conditions:
        if cond.type in ("Ready", "Degraded"):
            value = "True" if cond.type == "Degraded" else "False"
            since = cond.last_transition_time if cond.status == value else timestamp(now)
            update = {"status": value, "reason": reason, "message": message, "last_transition_time": since}
            conditions.append(cond.model_copy(update=update))
        else:
            conditions.append(cond)
    phase = "Degraded" if (status.ready_replicas or 0) > 0 else "Failed"
    return status.model_copy(update={"conditions": conditions, "phase": phase})
