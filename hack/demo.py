"""`make demo`: a canary of the `make up` iris model on the real node, judged on real metrics.

The model's pods run on the local cluster's real node; Prometheus (3.x, in the cluster) discovers
them with the scrape job of docs/analysis.md; a bounded client load goes through the Gateway at
the model's status.url (the `make up` sample is exposed), or its Service when it is not exposed.
The demo changes iris to the other example bento (iris-classifier <-> iris-onnx, built into the
local registry on first use) with an analysis reading that Prometheus, prints `kubectl get md iris`
whenever the line changes, each analysis measurement, the events, and what the client saw.

    python hack/demo.py                  # a healthy canary: promoted
    python hack/demo.py --fail-rate 0.3  # the canary answers 30% of requests with HTTP 500: rolled back
    python hack/demo.py --baseline       # judged against the stable revision (analysis.baseline)

Needs `make up` running.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from localcluster import LocalCluster, addons, bentoimages
from localcluster.kit import ROOT, Cluster, condition, service_url
from localcluster.loadgen import Load

NAME, NAMESPACE = "iris", "default"
RATE = 20  # client requests per second
SERVICE_CLASSES = {"iris-classifier": "IrisClassifier", "iris-onnx": "IrisOnnxClassifier"}
TIMEOUT_S = 300  # the whole rollout; the load stops then too


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def analysis(prometheus_url: str, *, baseline: bool = False) -> dict[str, Any]:
    judged: dict[str, Any] = {
        "prometheus": {"address": prometheus_url},
        "interval": "10s",
        "failureLimit": 2,
        "minRequests": 30,
        "maxErrorRate": 0.05,
        "maxLatencyP99": "500ms",
        "noDataTimeout": "2m",
    }
    if baseline:
        # Against the stable revision's same window instead (docs/analysis.md).
        judged["baseline"] = {"maxErrorRateIncrease": 0.02, "maxLatencyP99Ratio": 3}
    return judged


def canary_of(cluster: Cluster, md: dict[str, Any] | None = None) -> dict[str, Any] | None:
    md = md if md is not None else cluster.get("modeldeployment", NAME, NAMESPACE) or {}
    canary: dict[str, Any] | None = md.get("status", {}).get("canary")
    return canary


def watch(cluster: Cluster, timeout: float) -> dict[str, Any]:
    """Print `kubectl get md iris` each time its line changes (AGE aside), until no canary is left.

    Returns the final object. T+ is the time since the watch started.
    """
    started = time.monotonic()
    header_done, last, saw_canary, last_measured = False, "", False, ""
    while time.monotonic() - started < timeout:
        md = cluster.get("modeldeployment", NAME, NAMESPACE) or {}
        canary = canary_of(cluster, md)
        measured = (canary or {}).get("analysis", {})
        if measured.get("lastMeasuredAt") and measured["lastMeasuredAt"] != last_measured:
            last_measured = measured["lastMeasuredAt"]
            checks = "; ".join(
                f"{c['name']} {'ok' if c['passed'] else 'FAILED'}: {c['message']}" for c in measured["checks"]
            )
            print(f"{'':7}analysis {measured.get('verdict')}: {checks}", flush=True)
        # Read after the object above, so the line is never older than what was just printed.
        lines = cluster.kubectl("get", "md", NAME, "-n", NAMESPACE).stdout.splitlines()
        if not header_done:
            print(f"{'T+':>5}  {lines[0]}")
            header_done = True
        if lines[1].rsplit(None, 1)[0] != last:
            last = lines[1].rsplit(None, 1)[0]
            print(f"{time.monotonic() - started:4.0f}s  {lines[1]}", flush=True)
        saw_canary = saw_canary or canary is not None
        if saw_canary and canary is None:
            return md
        time.sleep(0.3)
    raise SystemExit(f"the rollout did not end within {timeout:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fail-rate", type=float, default=0.0, help="share of the canary's requests answered 500")
    parser.add_argument("--baseline", action="store_true", help="judge the canary against the stable revision")
    args = parser.parse_args()
    if not 0.0 <= args.fail_rate <= 1.0:
        parser.error(f"--fail-rate {args.fail_rate}: must be between 0 and 1")

    local = LocalCluster(ROOT / ".cluster")
    info = local.info()
    if info is None or not local.is_up() or not info.real_node:
        raise SystemExit("no local cluster in .cluster/: run `make up` first")
    cluster = Cluster("local", info.kubeconfig, info.kubectl, info.helm)
    md = cluster.get("modeldeployment", NAME, NAMESPACE)
    # Available, not necessarily Ready: after a rollback, Ready stays False until the spec changes.
    if md is None or condition(md, "Available").get("status") != "True":
        raise SystemExit(f"{NAMESPACE}/{NAME} is not there and Available: run `make up` first")
    if md.get("status", {}).get("canary"):
        raise SystemExit(f"{NAMESPACE}/{NAME} already has a canary; wait for it to end")
    # The version that serves now (after a rollback the spec still names the one that failed).
    serving = md["status"]["stable"]["bento"]
    say("Prometheus in the cluster, and the other model version's image (built once)")
    builder = info.image_builder(say)
    prometheus = addons.ensure_prometheus(info, builder)
    other = "iris-onnx" if serving.startswith("iris-classifier:") else "iris-classifier"
    new_image = bentoimages.ensure(builder, other, "v1")
    env = [e for e in md["spec"].get("env", []) if e["name"] != "IRIS_FAULT_RATE"]
    if args.fail_rate:
        env.append({"name": "IRIS_FAULT_RATE", "value": str(args.fail_rate)})
    spec = {
        "bento": {"image": new_image},
        "env": env,
        # BentoML's settings name the service class of the bento they apply to.
        "bentoConfig": {"service": SERVICE_CLASSES[other]},
        "rollout": {"analysis": analysis(prometheus.in_cluster_url, baseline=args.baseline)},
    }

    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    expose = md["spec"].get("expose")
    if expose:
        # As the model's users call it: through the Gateway, at status.url's host.
        gateway = addons.ensure_gateway(local)
        url, headers = f"http://{gateway.address}", {"Host": expose["hostname"]}
        where = f"through the Gateway at {md['status']['url']} ({gateway.address}, Host {expose['hostname']})"
    else:
        url, headers = service_url(cluster, NAME, NAMESPACE), {}
        where = f"to the iris Service ({url})"
    # A connection per request, as many short-lived clients make: Replicas routing splits connections.
    with Load([url], rate=RATE, duration=TIMEOUT_S, concurrency=4, keepalive=False, headers=headers) as load:
        say(f"client: {RATE} requests/s {where}; the canary fails {args.fail_rate:.0%}")
        patch = json.dumps({"spec": spec})
        say(f"kubectl patch md {NAME} --type merge -p '{patch}'")
        cluster.kubectl("patch", "md", NAME, "-n", NAMESPACE, "--type", "merge", "-p", patch)
        final = watch(cluster, TIMEOUT_S)
    stats = load.stats[url]
    print(f"\n{'REASON':<18}MESSAGE")
    events = cluster.json("get", "events", "-n", NAMESPACE, "--field-selector", f"involvedObject.name={NAME}")["items"]

    # An event the recorder folded into an older one ("combined from similar events") is as recent
    # as its lastTimestamp, not its creation; resourceVersion orders those of the same second.
    def when(event: dict[str, Any]) -> tuple[str, int]:
        last = event.get("lastTimestamp") or event.get("eventTime") or event["metadata"]["creationTimestamp"]
        return str(last)[:19], int(event["metadata"]["resourceVersion"])

    for event in sorted(events, key=when):
        if event["involvedObject"]["kind"] == "ModelDeployment" and when(event)[0] >= started_at[:19]:
            print(f"{event['reason']:<18}{event.get('message') or event.get('note', '')}")
    print()
    status = final.get("status", {})
    failed = status.get("failed")
    if failed and failed.get("at", "") >= started_at:
        say(f"rolled back: {failed['reason']}: {failed['message']}")
    else:
        say(f"promoted: stable is now {status.get('stable', {}).get('bento')}")
    say(
        f"client side: {stats.sent} requests, {stats.ok} answered 2xx, {stats.server_errors} 5xx "
        f"({stats.injected_errors} injected by the failing canary), {stats.failures} unanswered"
    )
    for at, code, body in stats.unexpected:
        say(f"  unexpected {code} at T+{at:.1f}s: {body}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
