"""What the operator keeps of each ModelDeployment between events: only what a reconcile reads.

A body as the watch delivers it holds managedFields, kubectl's last-applied copy of the spec and
kopf's annotations; as Python objects it is ten times its JSON size. The index keeps compact
JSON of the parts a reconcile reads, and each reconcile decodes its own copy (which is also why
no deep copy is needed to keep a reconcile from changing the cache).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from modeldeploy.api.v1alpha1 import GROUP

# Of metadata, what the reconcile reads: identity, the version a status write is conditional on,
# the generation status reports, deletion, and the operator's own annotations (promote, abort).
KEPT_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion", "deletionTimestamp")
OWN_ANNOTATIONS = f"{GROUP}/"
KOPF_ANNOTATIONS = "kopf.zalando.org/"


def compact(body: Mapping[str, Any]) -> bytes:
    """The parts of a ModelDeployment a reconcile reads, as compact JSON."""
    meta = body.get("metadata", {})
    kept_meta = {k: meta[k] for k in KEPT_METADATA if k in meta}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(OWN_ANNOTATIONS)}
    if annotations:
        kept_meta["annotations"] = annotations
    kept: dict[str, Any] = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": kept_meta}
    for part in ("spec", "status"):
        if part in body:
            kept[part] = body[part]
    return json.dumps(kept, separators=(",", ":")).encode()


def expand(snapshot: bytes) -> dict[str, Any]:
    """A fresh, mutable copy of a compacted body."""
    body: dict[str, Any] = json.loads(snapshot)
    return body


def fingerprint(body: Mapping[str, Any]) -> bytes:
    """What, besides status, can change a reconcile's outcome; hashed, since annotations can be large."""
    meta = body.get("metadata", {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith(KOPF_ANNOTATIONS)}
    text = json.dumps(
        [meta.get("uid"), meta.get("generation"), annotations, meta.get("labels"), meta.get("deletionTimestamp")],
        sort_keys=True,
    )
    return hashlib.blake2b(text.encode(), digest_size=16).digest()
