"""A watch dead for good ends the operator's liveness, so the kubelet restarts the operator.

A real way for a kopf watch to die: the API server refuses it (403) through all of kopf's retries, as
after an upgrade that left the operator's RBAC behind. kopf never restarts that watch. What happens
then, measured with kopf 1.45: the operator's `watches` probe records the dead watch (and would
answer 500), and kopf stops the whole operator, which exits 1 naming the cause; either way the
liveness endpoint stops answering 200 and the kubelet restarts the container.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.kit import RELEASE, Cluster, Operator, wait_for

pytestmark = pytest.mark.timeout(300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def liveness(port: int) -> int:
    """The endpoint's status; 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=15) as answer:
            json.loads(answer.read())
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


def without_services(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chart's rules with Services taken out: their watch is refused."""
    out = []
    for rule in rules:
        resources = [r for r in rule["resources"] if r != "services"]
        if resources:
            out.append({**rule, "resources": resources})
    return out


@pytest.fixture
def unwatchable(chart: Cluster, namespace: str, tmp_path: Path) -> Iterator[tuple[Operator, int]]:
    """An operator for one namespace whose RBAC there lacks Services (and no leader election: it is alone
    in that namespace, which holds nothing for it to reconcile)."""
    cluster = chart
    account = "operator-without-services"
    role_name = f"{RELEASE}-operator"
    role = cluster.json("get", "clusterrole", role_name)
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": namespace}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": account, "namespace": namespace},
            "rules": without_services(role["rules"]),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": account, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
        {  # kopf's discovery of resources, as the chart grants it
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{account}-{namespace}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": f"{role_name}-discovery",
            },
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
    ]
    cluster.apply(yaml.safe_dump_all(objects))
    kubeconfig = cluster.token_kubeconfig(namespace, account, tmp_path / "kubeconfig")
    port = free_port()
    process = Operator(
        kubeconfig, tmp_path / "operator.log",
        "--namespace", namespace, "--no-leader-election", "--liveness", f"http://127.0.0.1:{port}/healthz",
        # Three retries, not kopf's eight (about 54 s): the same path to a dead watch, in 3 s.
        "--api-error-backoffs", "1,1,1",
    )  # fmt: skip
    process.start()
    try:
        yield process, port
    finally:
        process.stop()
        cluster.kubectl("delete", "clusterrolebinding", f"{account}-{namespace}", check=False)


def test_liveness_fails_once_a_watch_is_dead_for_good(unwatchable: tuple[Operator, int]) -> None:
    process, port = unwatchable
    assert wait_for(lambda: liveness(port) == 200, timeout=60, what="the liveness endpoint answering 200")
    # kopf retries the refused request (1+1+1 s here; by default 1+1+2+3+5+8+13+21), then its watcher ends.
    wait_for(lambda: liveness(port) != 200, timeout=150, what="the liveness endpoint failing", interval=1)
    wait_for(lambda: not process.alive, timeout=30, what="the operator to exit")
    assert process.process is not None and process.process.returncode == 1
    logs = process.logs()
    dead = [line for line in logs.splitlines() if "ended for good" in line]
    assert dead and dead[0].startswith("the watch of services.v1@"), dead
    assert "error: the operator stopped: APIForbiddenError" in logs
