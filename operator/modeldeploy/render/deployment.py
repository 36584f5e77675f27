"""The serving Deployment: BentoML model server pods, correct for BentoML and for the restricted policy."""

from __future__ import annotations

import json
import math
import posixpath
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from modeldeploy.api.v1alpha1 import BentoConfig, ModelDeployment
from modeldeploy.api.v1alpha1.bentoml import typed_value
from modeldeploy.api.v1alpha1.formats import quantity_value
from modeldeploy.model.desired import Desired
from modeldeploy.model.meta import (
    BENTO_SOURCE_ENV,
    FETCH_CONTAINER,
    REVISION_LABEL,
    child_name,
    labels,
    metadata,
    selector,
)
from modeldeploy.model.revision import RevisionPlan, RevisionTemplate

HTTP_PORT = 3000
# `bentoml containerize` images run as this user (bentoml's Dockerfile templates: BENTO_USER_UID).
BENTO_UID = 1034
# The root filesystem is read-only; BentoML writes its home (store, prometheus multiprocess files) and
# temporary files to one emptyDir. Not at /home/bentoml: that would hide the image's bento (BENTO_PATH).
TMP_DIR = "/tmp"
BENTOML_HOME = "/tmp/bentoml"
STORE_MOUNT = "/bento-store"
PROBE_PERIOD_SECONDS = 10
# Long enough for the Service's endpoints to drop a terminating pod before it stops accepting requests.
PRE_STOP_SLEEP_SECONDS = 5
TERMINATION_GRACE_SECONDS = 60
SPREAD_TOPOLOGY_KEYS = ("kubernetes.io/hostname", "topology.kubernetes.io/zone")


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = tree.setdefault(part, {})
        if not isinstance(child, dict):
            child = tree[part] = {}
        tree = child
    tree[leaf] = value


def bento_config_overrides(config: BentoConfig) -> dict[str, Any]:
    """BENTOML_CONFIG_OVERRIDES: BentoML's v2 configuration, nested (it rejects dotted keys there)."""
    tree: dict[str, Any] = {}
    if config.service is not None:
        prefix = f"services.{config.service}"
        if config.workers is not None:
            _set_dotted(tree, f"{prefix}.workers", config.workers)
        if config.timeout_seconds is not None:
            _set_dotted(tree, f"{prefix}.traffic.timeout", config.timeout_seconds)
        if config.max_concurrency is not None:
            _set_dotted(tree, f"{prefix}.traffic.max_concurrency", config.max_concurrency)
    for key, value in sorted(config.options.items()):
        _set_dotted(tree, key, typed_value(key, value))
    return tree


def _env(template: RevisionTemplate) -> list[dict[str, Any]]:
    """The operator's variables first, the user's after; a user variable replaces one of ours."""
    ours: dict[str, dict[str, Any]] = {
        "BENTOML_PORT": {"name": "BENTOML_PORT", "value": str(HTTP_PORT)},
        "BENTOML_HOST": {"name": "BENTOML_HOST", "value": "0.0.0.0"},
        "BENTOML_DO_NOT_TRACK": {"name": "BENTOML_DO_NOT_TRACK", "value": "1"},
        "BENTOML_HOME": {"name": "BENTOML_HOME", "value": BENTOML_HOME},
        "TMPDIR": {"name": "TMPDIR", "value": TMP_DIR},
    }
    overrides = bento_config_overrides(template.bento_config)
    if overrides:
        value = json.dumps(overrides, sort_keys=True, separators=(",", ":"))
        ours["BENTOML_CONFIG_OVERRIDES"] = {"name": "BENTOML_CONFIG_OVERRIDES", "value": value}
    for var in template.env:
        ours.pop(var.name, None)
    return list(ours.values()) + [var.wire() for var in template.env]


# What the writable emptyDir may hold when spec.resources.storage is unset: temporary files and metrics with an
# image; with a tag, also the bento imported from its store.
DEFAULT_STORAGE = {"image": "1Gi", "tag": "4Gi"}
# A container's own ephemeral storage beyond the emptyDir: its logs (the kubelet keeps 5 x 10Mi by default) and
# a read-only root's nothing else; its limit is its request plus this.
LOG_ALLOWANCE = 256 * 2**20
# The fetch-bento init container: what it asks for when the spec says nothing (bentoml import streams the
# archive; the memory limit bounds a runaway import).
FETCH_REQUESTS = {"cpu": "100m", "memory": "256Mi"}
FETCH_LIMITS = {"memory": "1Gi"}


def quantity_text(amount: Decimal) -> str:
    """A byte count as a quantity: in Mi when whole, else in bytes."""
    whole = int(amount)
    return f"{whole // 2**20}Mi" if whole % 2**20 == 0 else str(whole)


def storage(template: RevisionTemplate) -> str:
    """The size limit of the pod's writable emptyDir: spec.resources.storage, or the default of the bento's source."""
    configured = template.resources.storage
    if configured is not None:
        return str(configured)  # never above limits.ephemeral-storage: the API refuses that
    default = DEFAULT_STORAGE["tag" if template.bento.tag is not None else "image"]
    limit = template.resources.limits.get("ephemeral-storage")
    if limit is not None and quantity_value(limit) < quantity_value(default):
        return str(limit)  # the spec's limit is smaller than the default: the volume can hold no more anyway
    return default


def _resources(template: RevisionTemplate) -> dict[str, Any]:
    """The serving container's: the spec's, with ephemeral storage for its emptyDir (and logs) unless set."""
    res = template.resources
    requests = {k: str(v) for k, v in res.requests.items()}
    limits = {k: str(v) for k, v in res.limits.items()}
    requests.setdefault("ephemeral-storage", storage(template))
    if "ephemeral-storage" not in limits:
        floor = max(quantity_value(requests["ephemeral-storage"]), quantity_value(storage(template)))
        limits["ephemeral-storage"] = quantity_text(floor + LOG_ALLOWANCE)
    if res.gpu is not None and res.gpu.count > 0:
        limits[res.gpu.resource_name] = str(res.gpu.count)
    return {"requests": dict(sorted(requests.items())), "limits": dict(sorted(limits.items()))}


def fetch_resources(template: RevisionTemplate, serving: dict[str, Any]) -> dict[str, Any]:
    """The fetch-bento init container's: defaults, then the serving container's limits and ephemeral storage (so
    a ResourceQuota or LimitRange that admits one admits both), then spec.resources.fetch key by key."""
    served_limits = {k: v for k, v in serving["limits"].items() if k in ("cpu", "memory", "ephemeral-storage")}
    requests = {**FETCH_REQUESTS, "ephemeral-storage": serving["requests"]["ephemeral-storage"]}
    limits = {**FETCH_LIMITS, **served_limits}
    override = template.resources.fetch
    if override is not None:
        requests.update({k: str(v) for k, v in override.requests.items()})
        limits.update({k: str(v) for k, v in override.limits.items()})
    for name, limit in limits.items():
        # A default request above a limit the spec set: lowered to it, so the pod stays valid.
        if name in requests and quantity_value(requests[name]) > quantity_value(limit):
            requests[name] = limit
    return {"requests": dict(sorted(requests.items())), "limits": dict(sorted(limits.items()))}


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }


def archive_uri(template: RevisionTemplate) -> str:
    """The archive as the spec names it: the store URI and <name>-<version>.bento."""
    bento = template.bento
    assert bento.tag is not None
    assert bento.store is not None
    name, version = bento.name_and_version
    return bento.store.uri.rstrip("/") + f"/{name}-{version}.bento"


def archive_location(template: RevisionTemplate) -> str:
    """Where the init container finds the bento archive: a URL, or a path on the mounted claim."""
    uri = archive_uri(template)
    if uri.startswith("pvc://"):
        return posixpath.join(STORE_MOUNT, urlsplit(uri).path.lstrip("/"))
    return uri


def _probes(template: RevisionTemplate) -> dict[str, Any]:
    startup_seconds = template.startup_timeout.total_seconds()
    http = {"port": "http"}
    return {
        # BentoML answers /readyz only once the service (and its model) has loaded.
        "readinessProbe": {
            "httpGet": {"path": "/readyz", **http},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/livez", **http},
            "periodSeconds": PROBE_PERIOD_SECONDS,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        # Liveness only starts once this passes, so slow model loading is not a crash.
        "startupProbe": {
            "httpGet": {"path": "/livez", **http},
            "periodSeconds": PROBE_PERIOD_SECONDS,
            "timeoutSeconds": 5,
            "failureThreshold": max(1, math.ceil(startup_seconds / PROBE_PERIOD_SECONDS)),
        },
    }


def pod_spec(md: ModelDeployment, template: RevisionTemplate) -> dict[str, Any]:
    bento = template.bento
    mounts = [{"name": "tmp", "mountPath": TMP_DIR}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": storage(template)}}]
    resources = _resources(template)
    container: dict[str, Any] = {"name": "bento"}
    init_containers: list[dict[str, Any]] = []

    if bento.tag is not None:
        assert bento.store is not None
        # A tag without a runtime image is refused before anything is rendered (rollout.config.refusals).
        image = bento.runtime_image
        assert image is not None
        # The init container imports the bento into BENTOML_HOME on the shared emptyDir; the server reads it there.
        fetch_mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": TMP_DIR}]
        if bento.store.uri.startswith("pvc://"):
            claim = urlsplit(bento.store.uri).netloc
            volumes.append({"name": "bento-store", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
            fetch_mounts.append({"name": "bento-store", "mountPath": STORE_MOUNT, "readOnly": True})
        fetch: dict[str, Any] = {
            "name": FETCH_CONTAINER,
            "image": image,
            "command": ["bentoml", "import", archive_location(template)],
            "env": [
                {"name": BENTO_SOURCE_ENV, "value": archive_uri(template)},
                {"name": "BENTOML_HOME", "value": BENTOML_HOME},
                {"name": "BENTOML_DO_NOT_TRACK", "value": "1"},
                {"name": "TMPDIR", "value": TMP_DIR},
            ],
            "volumeMounts": fetch_mounts,
            # What made the import fail (bentoml's last line) becomes the container's termination
            # message, which the operator quotes in the BentoFetchFailed condition.
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": _container_security(),
            "resources": fetch_resources(template, resources),
        }
        if bento.store.secret_ref is not None:
            fetch["envFrom"] = [{"secretRef": {"name": bento.store.secret_ref.name}}]
        if bento.image_pull_policy:
            fetch["imagePullPolicy"] = bento.image_pull_policy
        init_containers.append(fetch)
        container["image"] = image
        container["command"] = ["bentoml", "serve", bento.tag]
    else:
        container["image"] = bento.image
    if bento.image_pull_policy:
        container["imagePullPolicy"] = bento.image_pull_policy

    container.update(
        {
            "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
            "env": _env(template),
            "resources": resources,
            **_probes(template),
            "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}},
            "securityContext": _container_security(),
            "volumeMounts": mounts,
        }
    )

    placement = template.placement
    tolerations = [t.wire() for t in placement.tolerations]
    gpu = template.resources.gpu
    if gpu is not None and gpu.count > 0 and not any(t.get("key") == gpu.resource_name for t in tolerations):
        # GPU nodes are commonly tainted with the device's resource name.
        tolerations.append({"key": gpu.resource_name, "operator": "Exists", "effect": "NoSchedule"})

    spec: dict[str, Any] = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": BENTO_UID,
            "runAsGroup": BENTO_UID,
            "fsGroup": BENTO_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "containers": [container],
        "volumes": volumes,
        # Soft spreads, by host and by zone: a node or a zone lost takes few of the replicas, and a cluster
        # with one node (or no zone labels) still places them all.
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": key,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector(md)},
            }
            for key in SPREAD_TOPOLOGY_KEYS
        ],
    }
    if init_containers:
        spec["initContainers"] = init_containers
    if template.service_account_name:
        spec["serviceAccountName"] = template.service_account_name
    # A model server has no business with the Kubernetes API: a token only when the spec asks for one.
    spec["automountServiceAccountToken"] = bool(template.automount_service_account_token)
    if template.image_pull_secrets:
        spec["imagePullSecrets"] = [s.wire() for s in template.image_pull_secrets]
    if placement.node_selector:
        spec["nodeSelector"] = dict(sorted(placement.node_selector.items()))
    if tolerations:
        spec["tolerations"] = tolerations
    if placement.affinity is not None and placement.affinity.wire():
        spec["affinity"] = placement.affinity.wire()
    if placement.priority_class_name:
        spec["priorityClassName"] = placement.priority_class_name
    return spec


def render_deployment(md: ModelDeployment, plan: RevisionPlan) -> dict[str, Any]:
    template = plan.template
    _, version = template.bento.name_and_version
    pod_labels = {**labels(md, plan.role, template.bento), REVISION_LABEL: plan.revision}
    if version:
        pod_labels["app.kubernetes.io/version"] = version[:63].strip("-_.") or "unknown"
    startup_seconds = template.startup_timeout.total_seconds()
    spec: dict[str, Any] = {
        "revisionHistoryLimit": 3,
        # The Deployment controller reports ProgressDeadlineExceeded only after a pod had its startup time.
        "progressDeadlineSeconds": int(startup_seconds) + 120,
        "selector": {"matchLabels": selector(md, plan.role)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(HTTP_PORT),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": pod_spec(md, template),
        },
    }
    if plan.replicas is not None:
        spec["replicas"] = plan.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(md, child_name(md, plan.role), plan.role),
        "spec": spec,
    }


def render_deployments(desired: Desired) -> list[dict[str, Any]]:
    plans = [desired.stable] if desired.canary is None else [desired.stable, desired.canary]
    return [render_deployment(desired.md, plan) for plan in plans]
