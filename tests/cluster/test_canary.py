"""Canary rollouts in a real cluster: full walks, promotion, rollback, Gateway API routing, operator restarts."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any, ClassVar

from localcluster.kit import Cluster, Operator, condition, event_reasons, sample, table, wait_for, wait_ready

V2 = {"image": "registry.example.com/iris-classifier:v2"}


def md(cluster: Cluster, namespace: str, name: str = "iris") -> dict[str, Any]:
    found = cluster.get("modeldeployment", name, namespace)
    assert found is not None, f"ModelDeployment {namespace}/{name} is gone"
    return found


def status_when(cluster: Cluster, namespace: str, what: str, check: Any, timeout: float = 90) -> dict[str, Any]:
    return wait_for(
        lambda: (s := md(cluster, namespace).get("status", {})) and check(s) and s, timeout=timeout, what=what
    )


def children(cluster: Cluster, namespace: str) -> dict[str, list[str]]:
    out = {}
    for kind in ("deployments", "services", "horizontalpodautoscalers", "replicasets"):
        items = cluster.json("get", kind, "-n", namespace, "-l", "modeldeploy.dev/name=iris")["items"]
        out[kind] = sorted(i["metadata"]["name"] for i in items if not i["metadata"].get("deletionTimestamp"))
    return out


def live_pod_revisions(cluster: Cluster, namespace: str) -> set[str]:
    pods = cluster.json("get", "pods", "-n", namespace, "-l", "modeldeploy.dev/name=iris")["items"]
    return {
        p["metadata"]["labels"]["modeldeploy.dev/revision"] for p in pods if not p["metadata"].get("deletionTimestamp")
    }


def modeldeploy_cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modeldeploy.cli", *args],
        capture_output=True,
        text=True,
        env=cluster.env(),
        check=False,
        timeout=60,
    )


class TestCanaryWalk:
    def test_canary_walks_its_steps_and_is_promoted(self, cluster: Cluster, running: Operator, namespace: str) -> None:
        rollout = {"steps": [{"weight": 25, "pause": "4s"}, {"weight": 50, "pause": "4s"}]}
        cluster.apply(sample("iris", namespace, replicas=4, rollout=rollout))
        v1 = wait_ready(cluster, namespace, "iris")["status"]["stable"]["revision"]
        cluster.apply(sample("iris", namespace, replicas=4, rollout=rollout, bento=V2))

        first = status_when(cluster, namespace, "the canary at 25%", lambda s: s.get("canary", {}).get("weight") == 25)
        v2 = first["canary"]["revision"]
        assert v2 != v1
        assert first["stable"]["revision"] == v1
        assert first["phase"] == "Progressing"
        # Replicas routing: 1 canary pod beside 3 stable ones, the total capacity kept.
        assert cluster.json("get", "deployment", "iris-canary", "-n", namespace)["spec"]["replicas"] == 1
        assert cluster.json("get", "deployment", "iris", "-n", namespace)["spec"]["replicas"] == 3
        [row] = table(cluster.kubectl("get", "md", "-n", namespace).stdout)
        assert row["CANARY"] == "iris-classifier:v2"
        assert row["WEIGHT"] == "25"
        assert row["STABLE"] == "iris-classifier:v1"

        status_when(cluster, namespace, "step 2 at 50%", lambda s: s.get("canary", {}).get("weight") == 50)
        final = status_when(
            cluster, namespace, "promotion", lambda s: "canary" not in s and s["stable"]["revision"] == v2
        )
        wait_ready(cluster, namespace, "iris")
        assert final["stable"]["bento"] == "iris-classifier:v2"
        wait_for(lambda: children(cluster, namespace)["deployments"] == ["iris"], timeout=30, what="the canary removed")
        assert cluster.json("get", "deployment", "iris", "-n", namespace)["spec"]["replicas"] == 4
        wait_for(lambda: live_pod_revisions(cluster, namespace) == {v2}, timeout=60, what="only new pods")
        assert [
            r
            for r in event_reasons(cluster, namespace)
            if r in {"CanaryStarted", "StepAdvanced", "Promoting", "Promoted"}
        ] == ["CanaryStarted", "StepAdvanced", "Promoting", "Promoted"]

    def test_abort_rolls_back_stable_first_and_is_not_retried(
        self, cluster: Cluster, running: Operator, namespace: str
    ) -> None:
        rollout = {"steps": [{"weight": 50, "pause": "1h"}]}
        cluster.apply(sample("iris", namespace, replicas=2, rollout=rollout))
        v1 = wait_ready(cluster, namespace, "iris")["status"]["stable"]["revision"]
        cluster.apply(sample("iris", namespace, replicas=2, rollout=rollout, bento=V2))
        status_when(cluster, namespace, "the canary at 50%", lambda s: s.get("canary", {}).get("weight") == 50)

        result = modeldeploy_cli(cluster, "abort", "iris", "-n", namespace)
        assert result.returncode == 0, result.stderr
        assert "abort of canary" in result.stdout
        final = status_when(cluster, namespace, "the rollback", lambda s: "canary" not in s and "failed" in s)
        assert final["failed"]["reason"] == "ManualAbort"
        assert final["stable"]["revision"] == v1
        assert final["phase"] == "Degraded"
        assert condition(md(cluster, namespace), "Degraded")["reason"] == "RolledBack"
        wait_for(lambda: children(cluster, namespace)["deployments"] == ["iris"], timeout=30, what="the canary removed")
        assert cluster.json("get", "deployment", "iris", "-n", namespace)["spec"]["replicas"] == 2
        assert {"ManualAbort", "RollingBack", "RolledBack"} <= set(event_reasons(cluster, namespace))
        # The rolled-back revision stays out until the spec changes again.
        time.sleep(3)
        assert "canary" not in md(cluster, namespace)["status"]
        again = modeldeploy_cli(cluster, "abort", "iris", "-n", namespace)
        assert again.returncode == 1
        assert "has no canary in progress" in again.stderr

    def test_promote_now_skips_the_remaining_steps(self, cluster: Cluster, running: Operator, namespace: str) -> None:
        rollout = {"steps": [{"weight": 10, "pause": "1h"}, {"weight": 60, "pause": "1h"}]}
        cluster.apply(sample("iris", namespace, rollout=rollout))
        wait_ready(cluster, namespace, "iris")
        cluster.apply(sample("iris", namespace, rollout=rollout, bento=V2))
        canary = status_when(cluster, namespace, "a canary", lambda s: s.get("canary", {}).get("stepReadyAt"))["canary"]
        assert modeldeploy_cli(cluster, "promote", "iris", "-n", namespace).returncode == 0
        annotations = md(cluster, namespace)["metadata"]["annotations"]
        assert annotations["modeldeploy.dev/promote"] == canary["revision"]
        status_when(
            cluster,
            namespace,
            "promotion",
            lambda s: "canary" not in s and s["stable"]["revision"] == canary["revision"],
        )
        assert "ManualPromote" in event_reasons(cluster, namespace)

    def test_pause_in_the_spec_holds_the_canary(self, cluster: Cluster, running: Operator, namespace: str) -> None:
        steps = [{"weight": 25, "pause": "2s"}, {"weight": 50, "pause": "2s"}]
        cluster.apply(sample("iris", namespace, replicas=4, rollout={"steps": steps}))
        wait_ready(cluster, namespace, "iris")
        cluster.apply(sample("iris", namespace, replicas=4, rollout={"steps": steps, "paused": True}, bento=V2))
        status_when(cluster, namespace, "a paused canary", lambda s: s.get("canary", {}).get("paused") is True)
        time.sleep(6)
        held = md(cluster, namespace)
        assert held["status"]["canary"]["step"] == 0
        assert condition(held, "Progressing")["reason"] == "CanaryPaused"
        cluster.apply(sample("iris", namespace, replicas=4, rollout={"steps": steps, "paused": False}, bento=V2))
        status_when(cluster, namespace, "promotion after resume", lambda s: "canary" not in s)
        assert {"Paused", "Resumed", "Promoted"} <= set(event_reasons(cluster, namespace))


class TestOperatorRestart:
    def test_killed_mid_rollout_it_resumes_and_converges_without_duplicates(
        self, cluster: Cluster, running: Operator, namespace: str
    ) -> None:
        rollout = {"steps": [{"weight": 25, "pause": "6s"}, {"weight": 50, "pause": "6s"}]}
        cluster.apply(sample("iris", namespace, replicas=4, rollout=rollout))
        wait_ready(cluster, namespace, "iris")
        cluster.apply(sample("iris", namespace, replicas=4, rollout=rollout, bento=V2))
        at_step = status_when(
            cluster, namespace, "the canary at step 1", lambda s: s.get("canary", {}).get("stepReadyAt")
        )
        running.kill()
        assert not running.alive
        # While the operator is down nothing moves on; the status still says where it was.
        time.sleep(8)
        frozen = md(cluster, namespace)["status"]
        assert frozen["canary"]["revision"] == at_step["canary"]["revision"]
        assert frozen["canary"]["step"] == 0
        running.start()
        final = status_when(cluster, namespace, "promotion after restart", lambda s: "canary" not in s, timeout=120)
        assert final["stable"]["revision"] == at_step["canary"]["revision"]
        wait_for(lambda: children(cluster, namespace)["deployments"] == ["iris"], timeout=30, what="one Deployment")
        found = children(cluster, namespace)
        assert found["services"] == ["iris"]
        started = [r for r in event_reasons(cluster, namespace) if r == "CanaryStarted"]
        assert len(started) == 1, "the restarted operator continued the canary instead of starting another"


class TestGatewayAPI:
    gateway: ClassVar[dict[str, Any]] = {
        "trafficRouting": "GatewayAPI",
        "gateway": {"parentRefs": [{"name": "public"}], "hostnames": ["iris.example.com"]},
    }

    def test_missing_gateway_api_is_a_condition_not_a_silent_failure(
        self, cluster: Cluster, running: Operator, namespace: str
    ) -> None:
        if cluster.kubectl("get", "crd", "httproutes.gateway.networking.k8s.io", check=False).returncode == 0:
            cluster.kubectl("delete", "crd", "httproutes.gateway.networking.k8s.io", "--wait=true")
            time.sleep(11)  # the operator asks again after 10 s while HTTPRoute is served
        rollout = {**self.gateway, "steps": [{"weight": 20, "pause": "1s"}]}
        cluster.apply(sample("iris", namespace, rollout=rollout))

        def serving_but_degraded() -> dict[str, Any] | None:
            m = md(cluster, namespace)
            degraded = condition(m, "Degraded").get("reason") == "GatewayAPIMissing"
            return m if degraded and m.get("status", {}).get("readyReplicas") == 2 else None

        first = wait_for(serving_but_degraded, timeout=60, what="serving, Degraded with GatewayAPIMissing")
        assert "install the Gateway API CRDs" in condition(first, "Degraded")["message"]
        assert condition(first, "Ready")["status"] == "False"
        assert first["status"]["phase"] == "Degraded"
        stable = first["status"]["stable"]["revision"]
        cluster.apply(sample("iris", namespace, rollout=rollout, bento=V2))
        time.sleep(5)
        held = md(cluster, namespace)
        assert "canary" not in held["status"], "no canary without the routing it needs"
        assert held["status"]["stable"]["revision"] == stable
        assert condition(held, "Degraded")["reason"] == "GatewayAPIMissing"

    def test_exact_weights_through_an_httproute(self, gateway_api: Cluster, running: Operator, namespace: str) -> None:
        cluster = gateway_api
        rollout = {**self.gateway, "steps": [{"weight": 10, "pause": "4s"}, {"weight": 40, "pause": "4s"}]}
        cluster.apply(sample("iris", namespace, replicas=2, rollout=rollout))
        wait_ready(cluster, namespace, "iris", timeout=60)
        route = cluster.json("get", "httproute", "iris", "-n", namespace)
        assert route["spec"]["hostnames"] == ["iris.example.com"]
        assert route["spec"]["rules"][0]["backendRefs"] == [
            {"group": "", "kind": "Service", "name": "iris", "port": 3000, "weight": 100}
        ]
        assert (
            cluster.json("get", "service", "iris", "-n", namespace)["spec"]["selector"]["modeldeploy.dev/role"]
            == "stable"
        )

        cluster.apply(sample("iris", namespace, replicas=2, rollout=rollout, bento=V2))

        def split() -> list[tuple[str, int]] | None:
            backends = cluster.json("get", "httproute", "iris", "-n", namespace)["spec"]["rules"][0]["backendRefs"]
            weights = [(b["name"], b["weight"]) for b in backends]
            return weights if weights == [("iris", 90), ("iris-canary", 10)] else None

        wait_for(split, timeout=60, what="a 90/10 split")
        assert cluster.get("service", "iris-canary", namespace) is not None
        # The stable keeps its full size: exact weights need no replica arithmetic.
        assert cluster.json("get", "deployment", "iris", "-n", namespace)["spec"]["replicas"] == 2
        status_when(cluster, namespace, "promotion", lambda s: "canary" not in s)
        backends = cluster.json("get", "httproute", "iris", "-n", namespace)["spec"]["rules"][0]["backendRefs"]
        assert [(b["name"], b["weight"]) for b in backends] == [("iris", 100)]
        wait_for(
            lambda: cluster.get("service", "iris-canary", namespace) is None,
            timeout=30,
            what="the canary Service removed",
        )

    def test_switching_to_replicas_routing_removes_the_route_and_keeps_foreign_ones(
        self, gateway_api: Cluster, running: Operator, namespace: str
    ) -> None:
        cluster = gateway_api
        cluster.apply(sample("iris", namespace, rollout=self.gateway))
        wait_ready(cluster, namespace, "iris", timeout=60)
        assert cluster.get("httproute", "iris", namespace) is not None
        foreign = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "iris-docs", "namespace": namespace},
            "spec": {"parentRefs": [{"name": "public"}], "rules": [{"backendRefs": [{"name": "iris", "port": 3000}]}]},
        }
        cluster.apply(foreign)
        cluster.apply(sample("iris", namespace, rollout={"trafficRouting": "Replicas"}))
        wait_for(lambda: cluster.get("httproute", "iris", namespace) is None, timeout=60, what="the route removed")
        wait_ready(cluster, namespace, "iris")
        assert cluster.json("get", "service", "iris", "-n", namespace)["spec"]["selector"] == {
            "modeldeploy.dev/name": "iris"
        }
        assert cluster.get("httproute", "iris-docs", namespace) is not None, "a route the operator does not own stays"
