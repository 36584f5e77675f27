"""`make demo`: a canary of the `make up` iris sample, judged on real metrics, watched to its end.

The local cluster's pods are simulated by kwok, so the model servers of the two revisions run
beside it on loopback (`bentoml serve` of the iris bento), under a bounded load, and a local
Prometheus scrapes them with the labels its Kubernetes relabelling would give the pods
(namespace, modeldeploy_dev_revision: docs/analysis.md). The operator knows nothing of this:
it queries that Prometheus by revision, as it would in a real cluster.

    python hack/demo.py                  # a healthy canary: promoted
    python hack/demo.py --fail-rate 0.3  # the canary answers 30% of requests with HTTP 500: rolled back

It updates iris's image to the next tag (v1 -> v2 -> v3 ...), prints `kubectl get md iris` on
each change until the canary is gone, then the events and the verdict, and stops every process
it started. Needs `make up` running.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localcluster import LocalCluster
from localcluster.kit import ROOT, Cluster, condition
from localcluster.loadgen import Load
from localcluster.prometheus import Prometheus
from localcluster.realstack import BentoServer, BentoStore, serving

HERE = Path(__file__).resolve().parent

NAME, NAMESPACE = "iris", "default"
RATE = 15  # requests per second to each model server
TIMEOUT_S = 300  # the whole rollout; the load stops then too


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def next_image(image: str) -> str:
    """registry/iris-classifier:v1 -> registry/iris-classifier:v2 (any other tag gets -next)."""
    repo, _, tag = image.rpartition(":")
    match = re.fullmatch(r"v(\d+)", tag)
    return f"{repo}:v{int(match.group(1)) + 1}" if match else f"{image}-next"


def analysis(prometheus_url: str) -> dict[str, Any]:
    return {
        "prometheus": {"address": prometheus_url},
        "interval": "10s",
        "failureLimit": 2,
        "minRequests": 30,
        "maxErrorRate": 0.05,
        "maxLatencyP99": "500ms",
        "noDataTimeout": "2m",
    }


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
    args = parser.parse_args()
    if not 0.0 <= args.fail_rate <= 1.0:
        parser.error(f"--fail-rate {args.fail_rate}: must be between 0 and 1")

    local = LocalCluster(ROOT / ".cluster")
    if not local.is_up():
        raise SystemExit("no local cluster in .cluster/: run `make up` first")
    info = local.up()
    cluster = Cluster("local", info.kubeconfig, info.kubectl, info.helm)
    md = cluster.get("modeldeployment", NAME, NAMESPACE)
    # Available, not necessarily Ready: after a rollback, Ready stays False until the spec changes.
    if md is None or condition(md, "Available").get("status") != "True":
        raise SystemExit(f"{NAMESPACE}/{NAME} is not there and Available: run `make up` first")
    if md.get("status", {}).get("canary"):
        raise SystemExit(f"{NAMESPACE}/{NAME} already has a canary; wait for it to end")
    stable = md["status"]["stable"]["revision"]
    image = md["spec"]["bento"].get("image")
    if not image:
        raise SystemExit(f"{NAMESPACE}/{NAME} deploys a bento tag, not an image; the demo changes the image")

    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with tempfile.TemporaryDirectory(prefix="modeldeploy-demo-") as tmp:
        work = Path(tmp)
        say("building the iris bento (first time: trains the model) and starting Prometheus")
        store = BentoStore(work / "bentos")
        v1, v2 = store.bento("v1"), store.bento("v2")
        fault = {"IRIS_FAULT_RATE": str(args.fail_rate)} if args.fail_rate else {}
        old, new = BentoServer(v1, work / "stable"), BentoServer(v2, work / "canary", fault)
        with (
            Prometheus(work / "prometheus") as prometheus,
            serving([old, new]),
            Load([old.url, new.url], rate=RATE, duration=TIMEOUT_S) as load,
        ):
            say(f"model servers: stable {old.url}, canary {new.url} ({args.fail_rate:.0%} fail), {RATE} req/s each")
            spec = {"bento": {"image": next_image(image)}, "rollout": {"analysis": analysis(prometheus.url)}}
            say(f"kubectl patch md {NAME} --type merge -p '{json.dumps({'spec': spec})}'")
            cluster.kubectl("patch", "md", NAME, "-n", NAMESPACE, "--type", "merge", "-p", json.dumps({"spec": spec}))

            # The canary's revision is known once the operator has started it; scrape from then on.
            deadline = time.monotonic() + 60
            while not (canary := canary_of(cluster)):
                if time.monotonic() > deadline:
                    raise SystemExit("no canary was started within 60s: see .cluster/logs/operator.log")
                time.sleep(0.5)
            revision = canary["revision"]
            prometheus.scrape_revisions(NAMESPACE, {stable: old.address, revision: new.address}, wait=False)
            final = watch(cluster, TIMEOUT_S)
            answered = {url: (s.answered, s.error_rate) for url, s in load.stats.items()}
    print(f"\n{'REASON':<18}MESSAGE")
    events = cluster.json("get", "events", "-n", NAMESPACE, "--field-selector", f"involvedObject.name={NAME}")["items"]

    # An event the recorder folded into an older one ("combined from similar events") is as recent
    # as its lastTimestamp, not its creation; resourceVersion orders those of the same second.
    def when(event: dict[str, Any]) -> tuple[str, int]:
        last = event.get("lastTimestamp") or event.get("eventTime") or event["metadata"]["creationTimestamp"]
        return str(last)[:19], int(event["metadata"]["resourceVersion"])

    for event in sorted(events, key=when):
        if when(event)[0] >= started_at[:19]:
            print(f"{event['reason']:<18}{event['message']}")
    print()
    status = final.get("status", {})
    failed = status.get("failed")
    if failed and failed.get("revision") == revision:
        say(f"rolled back: {failed['reason']}: {failed['message']}")
    else:
        say(f"promoted: stable is now {status.get('stable', {}).get('bento')}")
    for url, (count, rate) in answered.items():
        role = "stable" if url == old.url else "canary"
        say(f"client side, {role}: {count} answers, {rate:.1%} errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
