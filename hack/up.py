"""`make up` / `make down`: the local cluster, the operator and the iris model, answering.

up:   the local cluster with its real node; the operator image, the iris bento and its image
      (each built once, then found in the local registry); `helm install` of the chart, whose
      operator Deployment runs from that image on the real node with the chart's RBAC; the iris
      Gateway (Traefik on a loopback port); the iris sample applied, exposed through that Gateway at
      iris.localhost; wait until it is Ready; print `kubectl get modeldeployments` and a prediction
      made through the Gateway at the model's status.url (curl and browsers resolve *.localhost to
      the loopback address); the cluster's Prometheus, and the operator's own metrics in it.
down: stop the cluster: pods and containers, the node, the control plane.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import yaml

from localcluster import LocalCluster, addons, bentoimages
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


def predict(url: str) -> tuple[str, str]:
    """A real prediction at the model's URL, through the Gateway: (the curl command, its answer)."""
    command = [
        "curl", "-s", "--fail-with-body", "-X", "POST", f"{url}classify",
        "-H", "content-type: application/json", "-d", json.dumps(PREDICT_BODY),
    ]  # fmt: skip

    def answered() -> str | None:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        return result.stdout.strip() if result.returncode == 0 else None

    # The Gateway programs a new route within a second or two of the HTTPRoute.
    answer = wait_for(answered, timeout=60, what=f"a prediction from {url}")
    shown = " ".join(f"'{part}'" if " " in part or "{" in part else part for part in command)
    return shown, answer


def exposed_sample(gateway: addons.Gateway) -> str:
    """The sample as shipped, its expose pointed at the local cluster's Gateway (its port is picked at start)."""
    sample = yaml.safe_load(SAMPLE.read_text())
    expose = sample["spec"]["expose"]
    expose["parentRefs"] = [gateway.parent_ref]
    expose["port"] = int(gateway.address.rpartition(":")[2])
    return yaml.safe_dump(sample, sort_keys=False)


def up() -> int:
    started = time.monotonic()
    local = LocalCluster(STATE)
    info = local.up()
    cluster = Cluster("local", info.kubeconfig, info.kubectl, info.helm)
    gateway = addons.ensure_gateway(local)
    say(f"cluster up ({time.monotonic() - started:.0f}s), its Gateway on {gateway.address}; images (built once)")
    builder = info.image_builder(say)
    operator_image = builder.operator()
    iris_image = bentoimages.ensure(builder, "iris-classifier", "v1")
    say(f"operator image {operator_image}, model image {iris_image}; installing the chart")
    install_chart(cluster, operator_image)
    pod = cluster.json("get", "pods", "-n", OPERATOR_NAMESPACE, "-l", "app.kubernetes.io/name=modeldeploy-operator")
    node = pod["items"][0]["spec"].get("nodeName") if pod["items"] else None
    say(f"operator running in a pod on {node} ({time.monotonic() - started:.0f}s); applying the iris sample")
    cluster.apply(exposed_sample(gateway))
    wait_for(
        lambda: condition(cluster.get("modeldeployment", "iris", "default") or {}, "Ready").get("status") == "True",
        timeout=300,
        what="ModelDeployment default/iris Ready",
    )
    print(cluster.kubectl("get", "modeldeployments", "-A").stdout, end="")
    url = cluster.json("get", "modeldeployment", "iris", "-n", "default")["status"]["url"]
    command, answer = predict(url)
    say(f"a prediction through the Gateway at the model's URL (its UI: open {url} in a browser):")
    print(f"$ {command}\n{answer}")
    prometheus = addons.ensure_prometheus(info, builder)
    # The operator's own metrics, scraped from its pods by the cluster's Prometheus (the chart's annotations).
    query = "sum by (pod) (modeldeploy_leader)"
    replicas = len(
        cluster.json("get", "pods", "-n", OPERATOR_NAMESPACE, "-l", "app.kubernetes.io/name=modeldeploy-operator")[
            "items"
        ]
    )

    def scraped() -> list[dict[str, Any]] | None:
        found = prometheus.query(query)
        every_pod = len(found) == replicas and sum(float(s["value"][1]) for s in found) == 1
        return found if every_pod else None

    # Every operator pod scraped, exactly one of them the leader.
    leaders = wait_for(scraped, timeout=90, what="the operator's metrics in Prometheus, one leader")
    say(f"the operator's metrics in the cluster's Prometheus ({prometheus.url}): {query}")
    for series in sorted(leaders, key=lambda s: s["metric"].get("pod", "")):
        print(f"  {series['metric'].get('pod')}  {series['value'][1]}")
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
