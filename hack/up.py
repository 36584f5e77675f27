"""`make up` / `make down`: the local cluster, the operator and the iris model, answering.

up:   the local cluster with its real node; the operator image, the iris bento and its image
      (each built once, then found in the local registry); `helm install` of the chart, whose
      operator Deployment runs from that image on the real node with the chart's RBAC; the iris
      sample applied; wait until it is Ready; print `kubectl get modeldeployments` and a
      prediction made through the model's Service.
down: stop the cluster: pods and containers, the node, the control plane.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from localcluster import LocalCluster, bentoimages
from localcluster.kit import CHART, OPERATOR_NAMESPACE, RELEASE, ROOT, Cluster, condition, wait_for

STATE = ROOT / ".cluster"
SAMPLE = ROOT / "bentos" / "iris-classifier" / "modeldeployment.yaml"
PREDICT_BODY = {"input_series": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def install_chart(cluster: Cluster, operator_image: str) -> None:
    repository, _, tag = operator_image.rpartition(":")
    cluster.helm(
        "upgrade", "--install", RELEASE, str(CHART),
        "--namespace", OPERATOR_NAMESPACE, "--create-namespace",
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--wait", "--timeout", "180s",
    )  # fmt: skip


def predict(cluster: Cluster, name: str, namespace: str) -> tuple[str, str]:
    """A real prediction through the model's Service: (the curl command, its answer)."""
    service = cluster.json("get", "service", name, "-n", namespace)
    address = f"{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
    command = [
        "curl", "-s", "--fail-with-body", "-X", "POST", f"http://{address}/classify",
        "-H", "content-type: application/json", "-d", json.dumps(PREDICT_BODY),
    ]  # fmt: skip

    def answered() -> str | None:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        return result.stdout.strip() if result.returncode == 0 else None

    # kube-proxy programs a new Service's rules about a second after its endpoints appear.
    answer = wait_for(answered, timeout=30, what=f"a prediction from http://{address}")
    shown = " ".join(f"'{part}'" if " " in part or "{" in part else part for part in command)
    return shown, answer


def up() -> int:
    started = time.monotonic()
    local = LocalCluster(STATE)
    info = local.up()
    cluster = Cluster("local", info.kubeconfig, info.kubectl, info.helm)
    say(f"cluster up ({time.monotonic() - started:.0f}s); images (built once, then taken from the local registry)")
    builder = info.image_builder(say)
    operator_image = builder.operator()
    iris_image = bentoimages.ensure(builder, "iris-classifier", "v1")
    say(f"operator image {operator_image}, model image {iris_image}; installing the chart")
    install_chart(cluster, operator_image)
    pod = cluster.json("get", "pods", "-n", OPERATOR_NAMESPACE, "-l", "app.kubernetes.io/name=modeldeploy-operator")
    node = pod["items"][0]["spec"].get("nodeName") if pod["items"] else None
    say(f"operator running in a pod on {node} ({time.monotonic() - started:.0f}s); applying the iris sample")
    cluster.apply(SAMPLE.read_text())
    wait_for(
        lambda: condition(cluster.get("modeldeployment", "iris", "default") or {}, "Ready").get("status") == "True",
        timeout=300,
        what="ModelDeployment default/iris Ready",
    )
    print(cluster.kubectl("get", "modeldeployments", "-A").stdout, end="")
    command, answer = predict(cluster, "iris", "default")
    say("a prediction through the iris Service:")
    print(f"$ {command}\n{answer}")
    say(f"up in {time.monotonic() - started:.0f}s. Try:")
    print(f"  export KUBECONFIG={info.kubeconfig} PATH={info.bin_dir}:$PATH")
    print("  kubectl get md -A; kubectl describe md iris; kubectl get pods -o wide")
    return 0


def down() -> int:
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
