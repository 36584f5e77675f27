"""Writing a ModelDeployment's children, and only objects it controls.

Every ModelDeployment author is untrusted as far as the operator's own rights go: a child's name is
the ModelDeployment's, so a spec could name someone else's Service. A child is therefore written only
when the operator knows it controls the object:

- known (the watch index, or this process created it): server-side apply pinned to its uid, so the
  apply can neither create an object nor land on another one that took the name meanwhile;
- in the index but controlled by someone else (it carries the labels): left alone, `NameConflict`;
- unknown: created (POST); if the name is taken, the existing object's controller is read and the
  object is applied only when it is this ModelDeployment's, left alone (`NameConflict`) otherwise.

Removal goes through the same owner check (`observe.owned`): only children whose controller is the
ModelDeployment are deleted, each with its uid as a precondition.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.handlers.observe import Children, Observer, owned
from modeldeploy.k8s.children import (
    APPLIED_ANNOTATION,
    BY_KIND,
    IF_SERVED,
    OPTIONAL,
    Child,
    ChildKind,
    read_child,
    render_children,
)
from modeldeploy.k8s.client import ApiError, Client, ObjectRef
from modeldeploy.k8s.objects import FIELD_MANAGER
from modeldeploy.model.digest import digest
from modeldeploy.model.meta import child_name
from modeldeploy.model.observed import DeploymentState
from modeldeploy.rollout.conditions import Problem
from modeldeploy.rollout.plan import Plan

log = logging.getLogger(__name__)

HANDOFF_MANAGER = "modeldeploy-handoff"
# Children are applied in full at least this often anyway, which puts back any change made by hand.
FULL_APPLY_PERIOD = 300.0
APPLIED_DIGEST_LENGTH = 16
# A name taken and freed again while a child is written: tried this often before the reconcile gives up.
ATTEMPTS = 2

Key = tuple[str, str]
Ref = tuple[str, str]  # kind, name


@dataclass
class Applier:
    client: Client
    observer: Observer
    # When each ModelDeployment's children were last applied in full, and what generation each child
    # had after the operator's own last apply (a different one means someone else changed it).
    _full_apply: dict[Key, float] = field(default_factory=dict)
    _generations: dict[Key, dict[Ref, int | None]] = field(default_factory=dict)
    # The uids of the children the operator knows it controls: from the index, or created by this process.
    _uids: dict[Key, dict[Ref, str]] = field(default_factory=dict)
    # What the operator last wrote of each optional child (those kinds are not watched, so there is no
    # cached copy to compare with): an unchanged one is written again only by the periodic full apply.
    _optional_applied: dict[Key, dict[Ref, str]] = field(default_factory=dict)
    # What the operator wrote of each watched child the watch has not shown yet (the digest): a reconcile
    # that runs before the watch delivers a child just created does not write it a second time. Dropped
    # once the index has the child, or the watch says it was deleted (`child_deleted`).
    _unseen: dict[Key, dict[Ref, str]] = field(default_factory=dict)
    # Children this process created (POST) and has not adopted (Client.adopt) since, until the index has them
    # (then Child.unadopted says it).
    _created: dict[Key, set[Ref]] = field(default_factory=dict)

    def forget(self, key: Key) -> None:
        self._full_apply.pop(key, None)
        self._generations.pop(key, None)
        self._uids.pop(key, None)
        self._optional_applied.pop(key, None)
        self._unseen.pop(key, None)
        self._created.pop(key, None)

    def child_deleted(self, key: Key, ref: Ref) -> None:
        """The watch saw a child of KEY deleted: the next reconcile creates it again if it is still wanted."""
        for memo in (self._unseen, self._uids):
            kept = memo.get(key)
            if kept is not None:
                kept.pop(ref, None)
        self._created.get(key, set()).discard(ref)

    def apply(self, md: ModelDeployment, result: Plan, indexed: Children, unserved: frozenset[str]) -> list[Problem]:
        """Apply what the plan wants, remove what it no longer wants; the problems of children not written."""
        key = (md.namespace, md.name)
        mine = {ref: child for ref, child in indexed.items() if owned(child, md)}
        known = self._uids.setdefault(key, {})
        known.update({ref: child.uid for ref, child in mine.items()})
        unseen, created = self._unseen.get(key), self._created.get(key)
        if unseen or created:
            for ref in mine:  # the index has it now: its copy is what is compared with
                if unseen:
                    unseen.pop(ref, None)
                if created:
                    created.discard(ref)
        # Optional kinds nothing needs (a PodMonitor) are written where the cluster serves them, and only there.
        served = frozenset(kind.kind for kind in IF_SERVED if self.observer.served(kind.kind))
        desired = render_children(
            md, result.stable, result.canary, route_weight=result.route_weight, unserved=unserved, served=served
        )
        stable_child = mine.get(("Deployment", child_name(md, "stable")))
        if md.spec.autoscaling is not None and stable_child is not None and stable_child.state is not None:
            self._hand_replicas_to_autoscaler(md, stable_child)
        full = time.monotonic() - self._full_apply.get(key, float("-inf")) > FULL_APPLY_PERIOD
        problems = []
        for obj in desired:
            ref = (obj["kind"], obj["metadata"]["name"])
            stranger = indexed.get(ref) if ref not in mine else None
            problem = self._apply_child(md, obj, mine.get(ref), stranger, known, full=full)
            if problem is not None:
                problems.append(problem)
        if full and not problems:
            self._full_apply[key] = time.monotonic()
        self._remove_unwanted(md, mine, {(obj["kind"], obj["metadata"]["name"]) for obj in desired})
        return problems

    def _apply_child(
        self,
        md: ModelDeployment,
        obj: dict[str, Any],
        child: Child | None,
        stranger: Child | None,
        known: dict[Ref, str],
        *,
        full: bool,
    ) -> Problem | None:
        """Write one desired child unless it is unchanged; the problem when it is not written."""
        kind = BY_KIND[obj["kind"]]
        if kind.optional and not self.observer.served(kind.kind):
            # A kind the traffic router needs was left out already, with the router's reason; any other is
            # said here, and the other children are applied all the same.
            return (
                "ChildKindNotServed",
                f"this cluster does not serve {kind.kind} ({kind.api_version}): install its CRDs",
            )
        ref = (obj["kind"], obj["metadata"]["name"])
        if stranger is not None:
            known.pop(ref, None)
            return name_conflict(obj, stranger)
        applied_digest = digest(obj, APPLIED_DIGEST_LENGTH)
        obj["metadata"].setdefault("annotations", {})[APPLIED_ANNOTATION] = applied_digest
        generations = self._generations.setdefault((md.namespace, md.name), {})
        if (
            not full
            and child is not None
            and child.applied == applied_digest
            and child.generation == generations.get(ref, child.generation)
        ):
            return None  # applied already, and nobody changed it since
        if child is None and not full and self._unseen.get((md.namespace, md.name), {}).get(ref) == applied_digest:
            return None  # written by this process a moment ago; the watch has not shown it yet
        if (
            kind.optional
            and not full
            and self._optional_applied.get((md.namespace, md.name), {}).get(ref) == applied_digest
        ):
            return None  # written by this process already, unchanged since
        try:
            written = self._write(md, kind, obj, known, child)
        except ApiError as err:
            if err.not_found and kind.optional:
                self.observer.forget_served(kind.kind)  # the CRD went away: ask again next time
                raise
            if err.status >= 500 or err.status in (409, 429) or err.unreachable or err.namespace_terminating:
                raise  # transient, or the object is going: the caller decides
            where = f"{obj['kind']} {obj['metadata']['name']}"
            log.warning("%s/%s: applying %s failed: %s", md.namespace, md.name, where, err)
            return ("ChildRejected", f"{where} was rejected by the API server: {err.message}")
        if isinstance(written, Child):
            return name_conflict(obj, written)
        generations[ref] = written.get("metadata", {}).get("generation")
        if child is None and not kind.optional:
            self._unseen.setdefault((md.namespace, md.name), {})[ref] = applied_digest
        if kind.optional:
            self._optional_applied.setdefault((md.namespace, md.name), {})[ref] = applied_digest
        return None

    def _write(
        self, md: ModelDeployment, kind: ChildKind, obj: dict[str, Any], known: dict[Ref, str], child: Child | None
    ) -> dict[str, Any] | Child:
        """The object as written, or the Child of someone else's object that has the name."""
        meta = obj["metadata"]
        ref = (obj["kind"], meta["name"])
        key = (md.namespace, md.name)
        for _ in range(ATTEMPTS):
            uid = known.get(ref)
            if uid is None:
                created = self.client.create(obj)
                if created is not None:
                    known[ref] = created["metadata"]["uid"]
                    self._created.setdefault(key, set()).add(ref)
                    log.info("%s/%s: created %s %s", md.namespace, md.name, *ref)
                    return created
                found = self.client.get(kind.api_version, kind.kind, meta["namespace"], meta["name"])
                if found is None:
                    continue  # gone again: create it
                existing = read_child(kind, found)
                if not owned(existing, md):
                    return existing
                uid = known[ref] = existing.uid
                if existing.unadopted:
                    self.client.adopt(found)
            elif (child.unadopted and child.uid == uid) if child is not None else ref in self._created.get(key, ()):
                # Its first apply since the operator created it: the create's fields are taken as applied first.
                found = self.client.get(kind.api_version, kind.kind, meta["namespace"], meta["name"])
                if found is not None and found["metadata"].get("uid") == uid:
                    self.client.adopt(found)
            self._created.get(key, set()).discard(ref)
            try:
                return self.client.apply(obj, uid=uid)
            except ApiError as err:
                if not err.uid_mismatch:
                    raise
                known.pop(ref, None)  # deleted, or replaced by another object: look again
        raise ApiError(409, "Conflict", f"{obj['kind']} {meta['name']} kept changing while it was being written")

    def _remove_unwanted(self, md: ModelDeployment, mine: Children, wanted: set[Ref]) -> None:
        known = self._uids.get((md.namespace, md.name), {})
        for (kind, name), child in mine.items():
            if (kind, name) not in wanted:
                log.info("%s/%s: removing %s %s", md.namespace, md.name, kind, name)
                self.client.delete(ObjectRef(child.api_version, kind, md.namespace, name), uid=child.uid)
                known.pop((kind, name), None)
        # Optional kinds are not watched: when the spec changed and wants none, delete the one there is.
        for optional in OPTIONAL:
            name = child_name(md)
            if (optional.kind, name) in wanted or not _spec_changed(md) or not self.observer.served(optional.kind):
                continue
            found = self.client.get(optional.api_version, optional.kind, md.namespace, name)
            if found is None:
                continue
            child = read_child(optional, found)
            if not owned(child, md):
                continue  # someone else's object that happens to share the name
            if self.client.delete(ObjectRef(optional.api_version, optional.kind, md.namespace, name), uid=child.uid):
                log.info("%s/%s: removed %s %s", md.namespace, md.name, optional.kind, name)
            known.pop((optional.kind, name), None)
            self._optional_applied.get((md.namespace, md.name), {}).pop((optional.kind, name), None)

    def _hand_replicas_to_autoscaler(self, md: ModelDeployment, stable: Child) -> None:
        """Stop owning spec.replicas without resetting it.

        Server-side apply removes a field its manager stops sending unless another manager
        owns it too; a one-field apply under a second manager keeps the current count until
        the autoscaler writes its own.
        """
        state: DeploymentState | None = stable.state
        if state is None or FIELD_MANAGER not in state.replicas_owned_by or HANDOFF_MANAGER in state.replicas_owned_by:
            return
        self.client.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": state.name, "namespace": md.namespace},
                "spec": {"replicas": state.spec_replicas},
            },
            field_manager=HANDOFF_MANAGER,
            uid=stable.uid,
        )


def name_conflict(obj: dict[str, Any], other: Child) -> Problem:
    """Someone else's object has the child's name: said, and left untouched."""
    controller = "it has no controller" if other.owner is None else f"its controller has uid {other.owner}"
    return (
        "NameConflict",
        f"{obj['kind']} {obj['metadata']['name']} already exists and is not controlled by this ModelDeployment "
        f"({controller}); it is left untouched: delete or rename it, or give the ModelDeployment another name",
    )


def _spec_changed(md: ModelDeployment) -> bool:
    observed = md.status.observed_generation if md.status else None
    return observed != md.metadata.generation
