"""`modeldeploy`: run the operator; print the CRD; render a ModelDeployment; build a bento's image; steer a rollout."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TextIO

import yaml
from pydantic import ValidationError

from modeldeploy import __version__
from modeldeploy.api.errors import describe
from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.model.policy import SERVICE_TYPES

if TYPE_CHECKING:
    from modeldeploy.rollout.config import PlanConfig

EXIT_INVALID = 2


def _backoffs(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated seconds, e.g. 1,1,2,3") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: one or more seconds, none negative")
    return values


def _yaml_stream(objects: Sequence[dict[str, Any]], out: TextIO) -> None:
    out.write(yaml.safe_dump_all(objects, sort_keys=False, explicit_start=True, width=120))


def cmd_crd(args: argparse.Namespace) -> int:
    from modeldeploy.api.crd import crd

    _yaml_stream([crd()], sys.stdout)
    return 0


def _load_modeldeployments(path: str) -> list[dict[str, Any]]:
    with sys.stdin if path == "-" else open(path, encoding="utf-8") as handle:
        docs = [d for d in yaml.safe_load_all(handle) if d]
    return [d for d in docs if isinstance(d, dict) and d.get("kind") == "ModelDeployment"]


def cmd_render(args: argparse.Namespace) -> int:
    """Print what the operator creates for a ModelDeployment that is deployed for the first time."""
    from datetime import UTC, datetime

    from modeldeploy.k8s.children import render_children
    from modeldeploy.model.observed import Observed
    from modeldeploy.rollout.config import refusal
    from modeldeploy.rollout.plan import plan

    try:
        config = _plan_config(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID

    try:
        docs = _load_modeldeployments(args.filename)
    except (OSError, yaml.YAMLError) as err:
        print(f"error: cannot read {args.filename}: {err}", file=sys.stderr)
        return EXIT_INVALID
    if not docs:
        print(f"error: {args.filename} holds no ModelDeployment", file=sys.stderr)
        return EXIT_INVALID
    out: list[dict[str, Any]] = []
    failed = False
    for doc in docs:
        doc.setdefault("metadata", {}).setdefault("namespace", args.namespace)
        try:
            md = ModelDeployment.model_validate(doc)
        except ValidationError as err:
            name = doc.get("metadata", {}).get("name", "<unnamed>")
            for line in describe(err):
                print(f"error: ModelDeployment {name}: {line}", file=sys.stderr)
            failed = True
            continue
        refused = refusal(md, config)
        if refused is not None:
            for line in refused.problems:
                print(f"error: ModelDeployment {md.name}: {line}", file=sys.stderr)
            failed = True
            continue
        result = plan(md, Observed(now=datetime.now(UTC)), config)
        out += render_children(md, result.stable, result.canary, route_weight=result.route_weight)
    _yaml_stream(out, sys.stdout)
    return EXIT_INVALID if failed else 0


def _plan_config(args: argparse.Namespace) -> PlanConfig:
    """The operator's settings from its flags; ValueError naming a flag that is wrong."""
    from modeldeploy.api.v1alpha1.formats import pinned
    from modeldeploy.model.policy import Policy
    from modeldeploy.rollout.config import PlanConfig

    image = args.default_runtime_image
    if image is not None and not pinned(image):
        raise ValueError(f"--default-runtime-image {image}: name a version, name:tag (not latest) or name@sha256:...")
    policy = Policy(
        allowed_service_types=tuple(getattr(args, "allowed_service_type", None) or SERVICE_TYPES),
        allow_service_account_name=not getattr(args, "forbid_service_account_name", False),
        metrics_allow=tuple(getattr(args, "metrics_allow", None) or ()),
    )
    return PlanConfig(image, policy)


def cmd_run(args: argparse.Namespace) -> int:
    import kopf

    from modeldeploy.analysis.prometheus import measure_canary_async
    from modeldeploy.analysis.runner import Measurements
    from modeldeploy.handlers import operator as _handlers  # registers the handlers
    from modeldeploy.handlers.leader import Elector, Timing, identity
    from modeldeploy.handlers.operator import Settings
    from modeldeploy.handlers.reconciler import Reconciler
    from modeldeploy.k8s.client import Client
    from modeldeploy.k8s.lease import Leases

    del _handlers
    try:
        config = _plan_config(args)
        timing = Timing(args.lease_duration, args.renew_deadline, args.retry_period)
        lease_namespace = _lease_namespace(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    me = identity()
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.PLAIN)
    for noisy in ("kubernetes", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.verbose:
        # kopf logs every handler call of every watched object; the reconciler says what matters.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if args.metrics_address:
        from modeldeploy import metrics

        try:
            host, port = metrics.serve(args.metrics_address)
        except (ValueError, OSError) as err:
            print(f"error: --metrics-address {args.metrics_address}: {err}", file=sys.stderr)
            return EXIT_INVALID
        metrics.watch_gc()
        logging.getLogger("modeldeploy").info("metrics on http://%s:%d/metrics", host, port)
    if args.log_writes:
        logging.getLogger("modeldeploy.writes").setLevel(logging.DEBUG)
    client = Client.from_environment(pool_size=args.workers * 2, instance=me)
    reconciler = Reconciler(client=client, config=config, measurements=Measurements(measure_canary_async))
    elector = None
    if lease_namespace is not None:
        # A client of its own: renewals never queue behind reconciles, nor meet the reconciles' write gate.
        leases = Leases(Client.from_environment(pool_size=2, instance=me), lease_namespace, args.lease_name)
        elector = Elector(leases, me, timing)
    settings = Settings(
        reconciler=reconciler,
        workers=args.workers,
        resync=timedelta(seconds=args.resync_seconds),
        elector=elector,
        api_error_backoffs=args.api_error_backoffs,
    )
    namespaces = args.namespace or []
    # Everything imported and set up so far lives as long as the process: out of the garbage collector's
    # sight, so that a full collection walks only what the operator holds of the cluster (a full
    # collection stops every reconcile and watch while it runs: in 500 applies of benchmarks/latency.py,
    # 8 full collections took over 50 ms before this, 2 and 3 in two runs after).
    gc.freeze()
    try:
        kopf.run(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=args.liveness,
            memo=kopf.Memo(settings=settings),
        )
    except Exception as err:
        # kopf stops when a watch fails for good (a 403 through all its retries, say) and has logged why:
        # exit non-zero, so whatever runs the operator (the kubelet) restarts it and shows the failure.
        print(f"error: the operator stopped: {type(err).__name__}: {' '.join(str(err).split())[:500]}", file=sys.stderr)
        return 1
    return 0


SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _lease_namespace(args: argparse.Namespace) -> str | None:
    """Where the leader Lease lives: --lease-namespace, else the pod's own namespace; None without election."""
    if not args.leader_election:
        return None
    if args.lease_namespace:
        namespace: str = args.lease_namespace
        return namespace
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        raise ValueError(
            "leader election needs the Lease's namespace: --lease-namespace (or MODELDEPLOY_LEASE_NAMESPACE) "
            "outside a pod, or --no-leader-election for a single operator"
        ) from None


def _control(args: argparse.Namespace, annotation: str, verb: str) -> int:
    from modeldeploy.api.v1alpha1 import API_VERSION, KIND
    from modeldeploy.k8s.client import Client

    client = Client.from_environment()
    body = client.get(API_VERSION, KIND, args.namespace, args.name)
    if body is None:
        print(f"error: ModelDeployment {args.namespace}/{args.name} not found", file=sys.stderr)
        return 1
    canary = (body.get("status") or {}).get("canary")
    if not canary or canary.get("state") != "Progressing":
        print(
            f"error: ModelDeployment {args.namespace}/{args.name} has no canary in progress to {verb}", file=sys.stderr
        )
        return 1
    client.patch_annotations(body, {annotation: canary["revision"]})
    print(f"modeldeployment {args.name}: {verb} of canary {canary['revision']} ({canary.get('bento')}) requested")
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    """Build a bento's OCI image with BentoML's buildah backend, optionally push it."""
    from modeldeploy.image import ImageError, ImageRequest, build, parse_labels

    try:
        request = ImageRequest(
            bento=args.bento,
            image=args.image,
            push=args.push,
            tls_verify=args.tls_verify,
            network=args.network or None,
            build_volume=args.build_volume,
            labels=parse_labels(args.label),
        )
        image = build(request)
    except ImageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(image)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from modeldeploy.k8s.client import Client
    from modeldeploy.statusview import show

    return show(Client.from_environment(), args.namespace, args.name, watch=args.watch, interval=args.interval)


def cmd_promote(args: argparse.Namespace) -> int:
    from modeldeploy.api.v1alpha1 import PROMOTE_ANNOTATION

    return _control(args, PROMOTE_ANNOTATION, "promotion")


def cmd_abort(args: argparse.Namespace) -> int:
    from modeldeploy.api.v1alpha1 import ABORT_ANNOTATION

    return _control(args, ABORT_ANNOTATION, "abort")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modeldeploy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"modeldeploy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator against the current kubeconfig or in-cluster credentials")
    run.add_argument(
        "-n",
        "--namespace",
        action="append",
        help="watch this namespace (repeatable; globs allowed); all namespaces when absent",
    )
    run.add_argument("--workers", type=int, default=int(os.environ.get("MODELDEPLOY_WORKERS", "4")))
    run.add_argument(
        "--default-runtime-image",
        default=os.environ.get("MODELDEPLOY_DEFAULT_RUNTIME_IMAGE") or None,
        help="image with bentoml for ModelDeployments that give a bento tag but no runtimeImage",
    )
    run.add_argument(
        "--liveness", default=os.environ.get("MODELDEPLOY_LIVENESS") or None, help="e.g. http://0.0.0.0:8080/healthz"
    )
    run.add_argument(
        "--metrics-address",
        default=os.environ.get("MODELDEPLOY_METRICS_ADDRESS") or None,
        metavar="HOST:PORT",
        help="serve the operator's Prometheus metrics at http://HOST:PORT/metrics (e.g. 0.0.0.0:8081); off when absent",
    )
    run.add_argument("--resync-seconds", type=float, default=300.0, help="period of the full resync backstop")
    run.add_argument(
        "--allowed-service-type",
        action="append",
        choices=SERVICE_TYPES,
        help="a Service type ModelDeployments may ask for (repeatable); all when absent",
    )
    run.add_argument(
        "--forbid-service-account-name",
        action="store_true",
        help="refuse ModelDeployments that set spec.serviceAccountName (pods run as the namespace default)",
    )
    run.add_argument(
        "--metrics-allow",
        action="append",
        metavar="BASE_URL",
        help="a Prometheus base URL analysis may query, with the paths under it (repeatable); any when absent",
    )
    run.add_argument(
        "--api-error-backoffs",
        type=_backoffs,
        metavar="SECONDS,...",
        help="seconds between kopf's retries of a failing API request (kopf's 1,1,2,3,5,8,13,21: about 54 s); "
        "after the last a watch ends for good and the liveness probe fails, so the kubelet restarts the pod",
    )
    election = run.add_argument_group(
        "leader election", "of several replicas, the one holding a coordination.k8s.io Lease reconciles"
    )
    election.add_argument(
        "--no-leader-election",
        dest="leader_election",
        action="store_false",
        help="reconcile without a Lease: only where a single operator can ever run",
    )
    election.add_argument("--lease-name", default="modeldeploy-operator")
    election.add_argument(
        "--lease-namespace",
        default=os.environ.get("MODELDEPLOY_LEASE_NAMESPACE") or None,
        help="namespace of the Lease (default: the pod's own)",
    )
    election.add_argument(
        "--lease-duration", type=float, default=15.0, help="seconds a standby waits for an unrenewed Lease (15)"
    )
    election.add_argument(
        "--renew-deadline", type=float, default=10.0, help="seconds the leader keeps writing without a renewal (10)"
    )
    election.add_argument("--retry-period", type=float, default=2.0, help="seconds between tries and renewals (2)")
    run.add_argument("--log-writes", action="store_true", help="log every write sent to the API server")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=cmd_run)

    crd = sub.add_parser("crd", help="print the ModelDeployment CustomResourceDefinition")
    crd.set_defaults(func=cmd_crd)

    render = sub.add_parser("render", help="print the objects the operator creates for a ModelDeployment")
    render.add_argument("-f", "--filename", required=True, help="YAML file with ModelDeployments, or - for stdin")
    render.add_argument("-n", "--namespace", default="default", help="namespace for objects that name none")
    render.add_argument("--default-runtime-image", default=None, help="as the operator's; tag needs one of the two")
    render.set_defaults(func=cmd_render)

    image = sub.add_parser(
        "image",
        help="build the OCI image of a bento without Docker (bentoml containerize --backend buildah), push it",
        description=(
            "The image `bentoml containerize` makes (entrypoint serving the bento on port 3000, user 1034, "
            "BENTO_PATH), built with buildah on the bento's docker.base_image."
        ),
    )
    image.add_argument("bento", help="bento tag, name:version, in the local BentoML store ($BENTOML_HOME)")
    image.add_argument("-t", "--image", help="image name (default: the bento's name:version)")
    image.add_argument(
        "--push",
        nargs="?",
        const="",
        metavar="DEST",
        help="push after building, to DEST (a containers-transports reference; default docker://IMAGE)",
    )
    image.add_argument("--no-tls-verify", dest="tls_verify", action="store_false", help="push over plain http")
    image.add_argument("--network", default="host", help="buildah's network for RUN steps (default: host)")
    image.add_argument("--build-volume", metavar="SRC:DST[:OPTS]", help="a mount for RUN steps, e.g. a CA bundle")
    image.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="an image label")
    image.set_defaults(func=cmd_image)

    status = sub.add_parser(
        "status",
        help="a ModelDeployment's rollout: revisions, pods, traffic, step, analysis, events",
        description="Also the kubectl plugin kubectl-modeldeploy: kubectl modeldeploy status NAME -w",
    )
    status.add_argument("name")
    status.add_argument("-n", "--namespace", default="default")
    status.add_argument("-w", "--watch", action="store_true", help="refresh until interrupted")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes with --watch")
    status.set_defaults(func=cmd_status)

    for verb, func, text in (
        ("promote", cmd_promote, "promote the canary in progress now, skipping its remaining steps"),
        ("abort", cmd_abort, "abort the canary in progress: roll back to the stable revision"),
    ):
        p = sub.add_parser(verb, help=text)
        p.add_argument("name")
        p.add_argument("-n", "--namespace", default="default")
        p.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
