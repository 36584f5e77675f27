"""`make up` / `make down`: the local cluster, the chart, the operator and the iris sample.

up:   cluster-up, helm install of the chart, the operator started in the background with
      the chart's ServiceAccount (so it has exactly the chart's RBAC), the iris sample
      applied, wait until it is Ready, print `kubectl get modeldeployments`.
down: stop the operator (by its recorded PID) and the cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "cluster"))

from clusterkit import (  # noqa: E402
    CHART,
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
    RELEASE,
    ROOT,
    Cluster,
    Operator,
    condition,
    process_matches,
    wait_for,
)
from localcluster import LocalCluster  # noqa: E402

STATE = ROOT / ".cluster"
OPERATOR_RECORD = STATE / "operator.json"
SAMPLE = ROOT / "bentos" / "iris-classifier" / "modeldeployment.yaml"


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def up() -> int:
    started = time.monotonic()
    info = LocalCluster(STATE).up()
    cluster = Cluster("local", info.kubeconfig, info.kubectl, info.helm)
    say(f"cluster up ({time.monotonic() - started:.0f}s); installing the chart")
    cluster.helm(
        "upgrade", "--install", RELEASE, str(CHART),
        "--namespace", OPERATOR_NAMESPACE, "--create-namespace", "--wait", "--timeout", "120s",
    )  # fmt: skip
    stop_operator()
    kubeconfig = cluster.token_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, STATE / "operator.kubeconfig")
    operator = Operator(kubeconfig, STATE / "logs" / "operator.log")
    operator.start()
    assert operator.process is not None
    OPERATOR_RECORD.write_text(json.dumps({"pid": operator.process.pid, "cmdline": operator.command}))
    say(f"operator running (pid {operator.process.pid}, log {operator.log.relative_to(ROOT)})")
    cluster.apply(SAMPLE.read_text())
    say("iris sample applied; waiting for it to be Ready")
    wait_for(
        lambda: condition(cluster.get("modeldeployment", "iris", "default") or {}, "Ready").get("status") == "True",
        timeout=180,
        what="ModelDeployment default/iris Ready",
    )
    print(cluster.kubectl("get", "modeldeployments", "-A").stdout, end="")
    say(f"up in {time.monotonic() - started:.0f}s. Try:")
    print(f"  export KUBECONFIG={info.kubeconfig} PATH={info.bin_dir}:$PATH")
    print("  kubectl get md -A; kubectl describe md iris; kubectl get pods -l modeldeploy.dev/name=iris")
    return 0


def stop_operator() -> None:
    if not OPERATOR_RECORD.exists():
        return
    record = json.loads(OPERATOR_RECORD.read_text())
    pid = int(record["pid"])
    if process_matches(pid, record["cmdline"]):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while process_matches(pid, record["cmdline"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        if process_matches(pid, record["cmdline"]):
            os.killpg(pid, signal.SIGKILL)
        say(f"operator (pid {pid}) stopped")
    OPERATOR_RECORD.unlink()


def down() -> int:
    stop_operator()
    LocalCluster(STATE).down()
    say("cluster down")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down"])
    args = parser.parse_args()
    return up() if args.action == "up" else down()


if __name__ == "__main__":
    sys.exit(main())
