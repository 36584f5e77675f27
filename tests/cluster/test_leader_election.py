"""Two operator processes against one API server: one leads (holds the Lease) and writes, the other stands by
and writes nothing; SIGKILLed mid-canary, the leader is replaced by the standby, which finishes the rollout.

Who wrote what is counted three ways, each of which tells the processes apart: each process's own log of
the writes it sent (`--log-writes`), the `reportingInstance` of the Events the API server stored (each
process posts under its own identity), and the Lease's holder.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localcluster.kit import OPERATOR_NAMESPACE, Cluster, Operator, event_reasons, sample, wait_for, wait_ready

LEASE = "modeldeploy-operator"
V2 = {"image": "registry.example.com/iris-classifier:v2"}
TAKEOVER_LIMIT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Replica:
    name: str  # POD_NAME: the identity's prefix
    process: Operator
    port: int

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as err:
            return err.code, {}

    def writes(self, namespace: str | None = None) -> list[str]:
        """The writes this process sent (its own log), to one namespace or anywhere."""
        lines = [line for line in self.process.logs().splitlines() if line.startswith("write ")]
        return [line for line in lines if namespace is None or f"/namespaces/{namespace}/" in line]


def holder(cluster: Cluster) -> str:
    lease = cluster.get("lease", LEASE, OPERATOR_NAMESPACE) or {}
    identity: str = lease.get("spec", {}).get("holderIdentity") or ""
    return identity


def start(name: str, kubeconfig: Path, logs: Path) -> Replica:
    port = free_port()
    process = Operator(
        kubeconfig,
        logs / f"operator-{name}.log",
        "--workers", "4", "--resync-seconds", "20", "--log-writes",
        "--liveness", f"http://127.0.0.1:{port}/healthz",
        env={"POD_NAME": name},
    )  # fmt: skip
    process.log.unlink(missing_ok=True)
    process.start()
    return Replica(name, process, port)


@pytest.fixture
def pair(cluster: Cluster, operator: Operator, tmp_path: Path) -> Iterator[tuple[Replica, Replica]]:
    """Replicas a (leading) and b (standing by), in place of the session's operator."""
    operator.stop()  # releases the Lease
    a = start("replica-a", operator.kubeconfig, tmp_path)
    b: Replica | None = None
    try:
        wait_for(lambda: holder(cluster).startswith("replica-a_"), timeout=60, what="replica-a to take the Lease")
        b = start("replica-b", operator.kubeconfig, tmp_path)
        wait_for(lambda: b.health()[0] == 200, timeout=60, what="replica-b to answer its liveness endpoint")
        # Its liveness endpoint answers before its elector's first read of the Lease (one retry period at most)
        # and before kopf has started its watches: the test begins once the standby is all there.
        wait_for(
            lambda: b.health()[1]["leader"]["holder"] and b.health()[1]["watches"]["alive"] >= 4,
            timeout=30,
            what="replica-b to have read the Lease once and started its watches",
        )
        yield a, b
    finally:
        for replica in (a, b):
            if replica is not None:
                replica.process.stop()
                assert not replica.process.tracebacks(), replica.process.tracebacks()[0]
        operator.start()


def test_one_replica_leads_and_writes_and_a_standby_takes_over_a_canary_when_it_is_killed(
    cluster: Cluster, pair: tuple[Replica, Replica], namespace: str
) -> None:
    a, b = pair
    status, health = a.health()
    assert status == 200 and health["leader"]["leading"] is True
    status, health = b.health()
    assert status == 200 and health["leader"]["leading"] is False
    assert health["leader"]["holder"] == holder(cluster)
    assert health["watches"]["alive"] >= 4, "a standby watches all the leader does: its caches are warm"

    rollout = {"steps": [{"weight": 25, "pause": "5s"}, {"weight": 50, "pause": "5s"}, {"weight": 75, "pause": "5s"}]}
    cluster.apply(sample("iris", namespace, replicas=4, rollout=rollout))
    wait_ready(cluster, namespace, "iris")
    cluster.apply(sample("iris", namespace, replicas=4, rollout=rollout, bento=V2))

    def canary() -> dict[str, Any] | None:
        status = (cluster.get("modeldeployment", "iris", namespace) or {}).get("status", {})
        return status if status.get("canary", {}).get("stepReadyAt") else None

    at_step = wait_for(canary, timeout=90, what="the canary at its first step")
    assert b.writes() == [], "the standby wrote while the leader was alive"
    before = len(a.writes(namespace))
    assert before > 0, "the leader's writes are logged"

    a.process.kill()
    killed = time.monotonic()
    killed_wall = time.time()
    wait_for(lambda: holder(cluster).startswith("replica-b_"), timeout=TAKEOVER_LIMIT + 10, what="replica-b leads")
    leads = time.monotonic() - killed
    wait_for(lambda: b.writes(namespace), timeout=TAKEOVER_LIMIT, what="replica-b's first write", interval=0.1)
    writes = time.monotonic() - killed
    print(f"\ntakeover after SIGKILL of the leader: Lease taken {leads:.1f}s, first write {writes:.1f}s")
    assert writes < TAKEOVER_LIMIT

    def promoted() -> dict[str, Any] | None:
        status = (cluster.get("modeldeployment", "iris", namespace) or {}).get("status", {})
        return status if "canary" not in status else None

    final = wait_for(promoted, timeout=120, what="the canary promoted by replica-b")
    assert final["stable"]["revision"] == at_step["canary"]["revision"]

    def one_deployment() -> bool:
        items = cluster.json("get", "deployments", "-n", namespace, "-l", "modeldeploy.dev/name=iris")["items"]
        return [i["metadata"]["name"] for i in items if not i["metadata"].get("deletionTimestamp")] == ["iris"]

    wait_for(one_deployment, timeout=30, what="the canary's Deployment removed, the stable one left")
    reasons = event_reasons(cluster, namespace)
    assert reasons.count("CanaryStarted") == 1, reasons
    assert reasons.count("Promoted") == 1, reasons

    # Writers, as the API server recorded them: each decision's Event names the process that posted it.
    events = cluster.json("get", "events.events.k8s.io", "-n", namespace)["items"]
    ours = [e for e in events if e.get("reportingController") == "modeldeploy.dev/operator"]
    by = {e["reportingInstance"].split("_")[0] for e in ours}
    assert by == {"replica-a", "replica-b"}, by
    for event in ours:
        posted = _seconds(event["eventTime"])
        if event["reportingInstance"].startswith("replica-a_"):
            assert posted <= killed_wall + 1, f"replica-a posted after its death: {event['reason']}"
        else:
            assert posted >= killed_wall - 1, f"replica-b posted before it led: {event['reason']}"
    assert len(a.writes(namespace)) == before, "a killed process wrote"
    assert all("/leases/" in line for line in b.writes() if f"/namespaces/{namespace}/" not in line)


def _seconds(event_time: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(event_time.replace("Z", "+00:00")).timestamp()


def test_a_leader_that_finds_its_lease_taken_stops_writing_and_the_next_leader_resumes(
    cluster: Cluster, pair: tuple[Replica, Replica], namespace: str
) -> None:
    """Someone else holding the Lease (here: written by hand) makes the leader stand by at once; nobody
    writes while that holder's Lease runs; then replica-a leads again, a second term (its queue restarted,
    every ModelDeployment queued afresh), and carries out what was asked meanwhile."""
    a, b = pair
    rollout = {"steps": [{"weight": 50, "pause": "2s"}]}
    cluster.apply(sample("iris", namespace, replicas=2, rollout=rollout))
    wait_ready(cluster, namespace, "iris")
    cluster.kubectl(
        "patch", "lease", LEASE, "-n", OPERATOR_NAMESPACE, "--type", "merge",
        "-p", json.dumps({"spec": {"holderIdentity": "intruder_1", "leaseDurationSeconds": 15}}),
    )  # fmt: skip
    taken = time.monotonic()
    wait_for(lambda: "no longer leading" in a.process.logs(), timeout=15, what="replica-a to stand by")
    print(f"\nreplica-a stood by {time.monotonic() - taken:.1f}s after its Lease was taken")
    b.process.stop()  # so that the next leader is replica-a, in its second term
    writes = len(a.writes(namespace)), len(b.writes(namespace))
    generation = cluster.json("get", "modeldeployment", "iris", "-n", namespace)["metadata"]["generation"]
    cluster.apply(sample("iris", namespace, replicas=2, rollout=rollout, bento=V2))
    time.sleep(6)
    held = cluster.json("get", "modeldeployment", "iris", "-n", namespace)
    assert held["status"]["observedGeneration"] == generation, "reconciled while another held the Lease"
    assert (len(a.writes(namespace)), len(b.writes(namespace))) == writes
    assert holder(cluster) == "intruder_1"

    def promoted() -> dict[str, Any] | None:
        status = (cluster.get("modeldeployment", "iris", namespace) or {}).get("status", {})
        done = status.get("observedGeneration") == generation + 1 and "canary" not in status
        return status if done and status["stable"]["bento"].endswith(":v2") else None

    wait_for(promoted, timeout=90, what="the update rolled out by replica-a in its second term")
    assert holder(cluster).startswith("replica-a_")
    status, health = a.health()
    assert status == 200 and health["leader"]["leading"] is True and health["leader"]["terms"] == 2
    assert "reconciling as the leader (term 2" in a.process.logs()
    assert b.writes() == [], "the standby never wrote"
    assert event_reasons(cluster, namespace).count("CanaryStarted") == 1
