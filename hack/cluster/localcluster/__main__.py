"""`python -m localcluster`: up, down, status, env, gateway-api-crds, fake-nodes, images, restart, build."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from localcluster.cluster import DEFAULT_DIR, LocalCluster
from localcluster.info import ClusterInfo
from localcluster.process import ClusterError
from localcluster.versions import run_build


def _env_line(info_or_cluster: ClusterInfo | LocalCluster) -> str:
    kubeconfig = shlex.quote(str(info_or_cluster.kubeconfig))
    bin_dir = shlex.quote(str(info_or_cluster.bin_dir))
    return f"export KUBECONFIG={kubeconfig} PATH={bin_dir}:$PATH"


def _cmd_up(cluster: LocalCluster, args: argparse.Namespace) -> int:
    info = cluster.up(timeout=args.timeout)
    if args.gateway_api:
        cluster.install_gateway_api_crds()
    # stdout carries only this line: `eval "$(python -m localcluster up)"` works.
    print(_env_line(info))
    return 0


def _cmd_status(cluster: LocalCluster, args: argparse.Namespace) -> int:
    report = cluster.status()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if report["up"] else 1
    print(f"cluster {report['dir']}: {'up' if report['up'] else 'down'}")
    if report["components"]:
        print(f"  server {report['server']}{'' if report.get('real_node') else ' (no real node)'}")
    for name, c in report["components"].items():
        if c["healthy"]:
            health = "healthy"
        else:
            health = "running, unhealthy" if c["running"] else "not running"
        print(f"  {name:<24} pid {c['pid']!s:<8} {health}")
    return 0 if report["up"] else 1


def _cmd_down(cluster: LocalCluster, _: argparse.Namespace) -> int:
    cluster.down()
    return 0


def _cmd_env(cluster: LocalCluster, _: argparse.Namespace) -> int:
    print(_env_line(cluster))
    return 0


def _cmd_crds(cluster: LocalCluster, _: argparse.Namespace) -> int:
    cluster.install_gateway_api_crds()
    return 0


def _cmd_fake_nodes(cluster: LocalCluster, _: argparse.Namespace) -> int:
    # A v1 List that `kubectl apply -f -` accepts: the same fake nodes for another cluster, where
    # a kwok started by hand manages them.
    print(json.dumps({"apiVersion": "v1", "kind": "List", "items": [n.manifest() for n in cluster.nodes]}, indent=2))
    return 0


IMAGES = ("pause", "python-base", "bento-runtime", "operator")


def _image_name(name: str) -> str:
    if name not in IMAGES:
        raise argparse.ArgumentTypeError(f"no image {name!r} (choose from {', '.join(IMAGES)})")
    return name


def _cmd_images(cluster: LocalCluster, args: argparse.Namespace) -> int:
    """Build (if missing) and print the base images of a running cluster's registry."""
    info = cluster.info()
    if info is None or not cluster.is_up():
        raise ClusterError(f"the cluster in {cluster.dir} is not up")
    builder = info.image_builder()
    wanted: dict[str, Callable[[], str]] = {
        "pause": builder.pause,
        "python-base": builder.python_base,
        "bento-runtime": builder.runtime,
        "operator": builder.operator,
    }
    for name in args.names or list(wanted):
        print(f"{name}\t{wanted[name]()}")
    return 0


def _cmd_restart(cluster: LocalCluster, args: argparse.Namespace) -> int:
    seconds = cluster.restart_component(args.name, kill=not args.graceful)
    print(f"{args.name} healthy again {seconds:.1f}s after the {'SIGTERM' if args.graceful else 'SIGKILL'}")
    return 0


_COMMANDS: dict[str, Callable[[LocalCluster, argparse.Namespace], int]] = {
    "up": _cmd_up,
    "down": _cmd_down,
    "status": _cmd_status,
    "env": _cmd_env,
    "gateway-api-crds": _cmd_crds,
    "fake-nodes": _cmd_fake_nodes,
    "images": _cmd_images,
    "restart": _cmd_restart,
}


def _parser() -> argparse.ArgumentParser:
    import localcluster

    parser = argparse.ArgumentParser(
        prog="python -m localcluster",
        description=localcluster.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="cluster directory (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", parents=[common], help="build if needed, start, wait until ready")
    up.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for the processes (builds are not bounded)"
    )
    up.add_argument("--gateway-api", action="store_true", help="also install the Gateway API standard CRDs")
    up.add_argument("--no-node", action="store_true", help="control plane and kwok nodes only, no real node")
    sub.add_parser("down", parents=[common], help="stop what `up` started: processes, pods, the node's network")
    status = sub.add_parser("status", parents=[common], help="report; exit 0 only when up and healthy")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("env", parents=[common], help="print `export KUBECONFIG=... PATH=...` for eval")
    sub.add_parser("gateway-api-crds", parents=[common], help="install the Gateway API standard CRDs")
    sub.add_parser("fake-nodes", parents=[common], help="print the kwok Node manifests (for another cluster)")
    imgs = sub.add_parser("images", parents=[common], help="build the base images into the cluster's registry")
    # Checked by type=, not choices=: Python 3.11's argparse tests choices against the empty default of
    # nargs="*" and refused a bare `images`.
    imgs.add_argument("names", nargs="*", type=_image_name, metavar="{" + ",".join(IMAGES) + "}", help="default: all")
    restart = sub.add_parser("restart", parents=[common], help="SIGKILL one component and start it again (chaos)")
    restart.add_argument("name", help="a component of `status` (etcd, kube-apiserver, kubelet, ...)")
    restart.add_argument("--graceful", action="store_true", help="SIGTERM and wait, rather than SIGKILL")
    sub.add_parser("build", help="build and cache every binary (runs build.sh)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "build":
            run_build()
            return 0
        cluster = LocalCluster(args.dir, real_node=not getattr(args, "no_node", False))
        return _COMMANDS[args.command](cluster, args)
    except ClusterError as err:
        print(f"localcluster: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `... | head` closed our stdout: not an error; keep Python's exit flush from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
