"""Untrusted authors on a real API server: no takeover, no request forgery, every admitted spec explained.

Issue 10's cases, each as a user would meet it: someone else's Service of the ModelDeployment's name,
a metrics address aimed at the cluster, specs the API server used to admit and the operator then
choked on, a child the cluster refuses, a reconcile that fails.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster.kit import Cluster, Operator, condition, sample, wait_for, wait_ready

from admission import admission_policy
from loopback import Servers, reply

V2 = {"image": "registry.example.com/iris-classifier:v2"}
SECRET = "AKIA-the-metadata-service-credentials"


def current(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    found = cluster.get("modeldeployment", name, namespace)
    assert found is not None, f"ModelDeployment {namespace}/{name} is gone"
    return found


def degraded(cluster: Cluster, namespace: str, name: str, reason: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        md = cluster.get("modeldeployment", name, namespace)
        return md if md and condition(md, "Degraded").get("reason") == reason else None

    return wait_for(check, timeout=timeout, what=f"{namespace}/{name} Degraded with {reason}")


def victim_service(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels or {"app": "victim"}},
        "spec": {"selector": {"app": "victim"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


@pytest.fixture
def servers() -> Iterator[Servers]:
    with Servers() as started:
        yield started


class TestNoTakeover:
    def test_someone_elses_service_of_the_same_name_is_left_untouched(
        self, cluster: Cluster, running: Operator, namespace: str
    ) -> None:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(victim_service("victim")))
        before = cluster.json("get", "service", "victim", "-n", namespace, "--show-managed-fields")
        cluster.apply(sample("victim", namespace))
        md = degraded(cluster, namespace, "victim", "NameConflict")
        assert condition(md, "Degraded")["message"].startswith(
            "Service victim already exists and is not controlled by this ModelDeployment (it has no controller); "
            "it is left untouched"
        )
        after = cluster.json("get", "service", "victim", "-n", namespace, "--show-managed-fields")
        assert after["spec"]["selector"] == {"app": "victim"}
        assert "ownerReferences" not in after["metadata"]
        assert after["metadata"]["managedFields"] == before["metadata"]["managedFields"]
        deployment = cluster.json("get", "deployment", "victim", "-n", namespace)
        assert deployment["metadata"]["ownerReferences"][0]["uid"] == md["metadata"]["uid"]
        cluster.kubectl("delete", "md", "victim", "-n", namespace, "--wait=true", "--timeout=60s")
        wait_for(
            lambda: cluster.get("deployment", "victim", namespace) is None, timeout=60, what="the GC of victim's own"
        )
        assert cluster.json("get", "service", "victim", "-n", namespace)["metadata"]["uid"] == after["metadata"]["uid"]

    def test_a_service_carrying_the_operators_labels_is_not_taken_as_its_own(
        self, cluster: Cluster, running: Operator, namespace: str
    ) -> None:
        labels = {"app.kubernetes.io/managed-by": "modeldeploy", "modeldeploy.dev/name": "imp"}
        for name in ("imp", "imp-canary"):
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(victim_service(name, labels)))
        cluster.apply(sample("imp", namespace))
        # Written after the children were, and unwanted ones removed, in the same reconcile.
        degraded(cluster, namespace, "imp", "NameConflict")
        assert cluster.get("deployment", "imp", namespace) is not None
        for name in ("imp", "imp-canary"):
            service = cluster.json("get", "service", name, "-n", namespace)
            assert service["spec"]["selector"] == {"app": "victim"}, name

    def test_a_field_removed_from_the_spec_leaves_a_child_the_operator_created(
        self, cluster: Cluster, running: Operator, namespace: str
    ) -> None:
        """Children are created (POST), never applied blindly; the create must not keep fields the spec drops."""
        rolling = {"strategy": "Rolling"}
        cluster.apply(sample("iris", namespace, rollout=rolling, env=[{"name": "EXTRA", "value": "1"}]))
        wait_ready(cluster, namespace, "iris")
        cluster.apply(sample("iris", namespace, rollout=rolling))

        def dropped() -> dict[str, Any] | None:
            dep = cluster.json("get", "deployment", "iris", "-n", namespace, "--show-managed-fields")
            env = {e["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
            return dep if "EXTRA" not in env else None

        dep = wait_for(dropped, timeout=60, what="EXTRA gone from the Deployment")
        ours = [
            (e["manager"], e["operation"]) for e in dep["metadata"]["managedFields"] if e["manager"] == "modeldeploy"
        ]
        assert ours == [("modeldeploy", "Apply")]


class TestMetricsQueries:
    @pytest.mark.parametrize(
        "address",
        [
            "http://127.0.0.1:9/any/path#",
            "http://127.0.0.1:9/api?x=1",
            "http://user:pass@127.0.0.1:9",
            "file:///etc/passwd",
        ],
    )
    def test_an_address_that_is_not_a_base_url_is_refused_at_admission(
        self, cluster: Cluster, chart: Cluster, namespace: str, address: str
    ) -> None:
        body = sample("bad", namespace, rollout={"analysis": {"prometheus": {"address": address}}})
        result = cluster.apply(body, check=False)
        assert result.returncode != 0
        assert "spec.rollout.analysis.prometheus.address: Invalid value" in result.stderr

    def test_no_redirect_is_followed_and_no_answer_is_echoed(
        self, cluster: Cluster, running: Operator, namespace: str, servers: Servers
    ) -> None:
        metadata = servers.http(reply(200, json.dumps({"secret": SECRET}).encode()))
        redirecting = servers.http(reply(302, b"", "text/html", Location=f"{metadata.url}/latest/meta-data/"))
        elsewhere = servers.http(reply(200, json.dumps({"secret": SECRET}).encode()))
        for name, address in (("redirected", redirecting.url), ("elsewhere", elsewhere.url)):
            rollout = {
                "steps": [{"weight": 50, "pause": "1s"}],
                "analysis": {"prometheus": {"address": address}, "interval": "1s", "failureLimit": 1},
            }
            cluster.apply(sample(name, namespace, rollout=rollout))
            wait_ready(cluster, namespace, name)
            cluster.apply(sample(name, namespace, rollout=rollout, bento=V2))
        for name, server in (("redirected", redirecting), ("elsewhere", elsewhere)):
            md = degraded(cluster, namespace, name, "RolledBack", timeout=90)
            text = json.dumps(md) + cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
            assert SECRET not in text
            assert f"{server.url} did not answer as a Prometheus API (HTTP" in md["status"]["failed"]["message"]
        assert (
            "HTTP 302, text/html, 0 bytes" in current(cluster, namespace, "redirected")["status"]["failed"]["message"]
        )
        assert metadata.paths == [], "the redirect was not followed"

    def test_hanging_metrics_servers_delay_no_other_model_deployment(
        self, cluster: Cluster, running: Operator, namespace: str, servers: Servers
    ) -> None:
        # More hanging measurements than the operator has workers: were they taken on the workers, nothing
        # else would be reconciled until they time out.
        hanging = [f"hang{i}" for i in range(6)]
        rollout = {
            "steps": [{"weight": 50, "pause": "1s"}],
            "analysis": {"prometheus": {"address": servers.silent().url}, "interval": "1s", "failureLimit": 1},
        }
        # All Ready first, then every canary started at once: started one by one, the first would be judged
        # (its measurement's deadline passed) and rolled back before the last began.
        for name in hanging:
            cluster.apply(sample(name, namespace, rollout=rollout))
        for name in hanging:
            wait_ready(cluster, namespace, name)
        for name in hanging:
            cluster.apply(sample(name, namespace, rollout=rollout, bento=V2))

        def measured(name: str) -> bool:
            status = current(cluster, namespace, name)["status"]
            return bool((status.get("canary") or {}).get("stepReadyAt") or status.get("failed"))

        for name in hanging:
            wait_for(lambda name=name: measured(name), timeout=60, what=f"{name}'s canary to be measured")
        started = time.monotonic()
        cluster.apply(sample("other", namespace))
        wait_ready(cluster, namespace, "other", timeout=30)
        assert time.monotonic() - started < 15, "another ModelDeployment waited for the hanging measurements"
        # The hanging ones end as failed measurements, in words: the deadline, never a stuck rollout.
        md = degraded(cluster, namespace, hanging[0], "RolledBack", timeout=60)
        assert "could not be queried" in md["status"]["failed"]["message"]


class TestEveryAdmittedSpecExplained:
    def test_a_tag_with_no_runtime_image_anywhere_is_refused_by_the_operator(
        self, cluster: Cluster, running: Operator, namespace: str
    ) -> None:
        cluster.apply(sample("tagged", namespace, bento={"tag": "iris:v1", "store": {"uri": "s3://models/bentos"}}))
        md = degraded(cluster, namespace, "tagged", "InvalidSpec")
        assert condition(md, "Degraded")["message"].startswith("spec.bento.runtimeImage: required with tag")
        assert md["status"]["phase"] == "Failed"
        assert cluster.get("deployment", "tagged", namespace) is None

    def test_a_child_the_api_server_rejects_holds_the_rollout_and_is_named(
        self, gateway_api: Cluster, running: Operator, namespace: str
    ) -> None:
        cluster = gateway_api
        rollout = {
            "trafficRouting": "GatewayAPI",
            "gateway": {"parentRefs": [{"name": "public"}]},
            "steps": [{"weight": 50, "pause": "1s"}],
        }
        cluster.apply(sample("iris", namespace, rollout=rollout))
        wait_ready(cluster, namespace, "iris")
        refused = "canary routes need the platform team's approval"
        canary_route = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "probe", "namespace": namespace},
            "spec": {"rules": [{"backendRefs": [{"name": "probe-canary", "port": 80}]}]},
        }
        with admission_policy(
            cluster,
            namespace,
            resources=[{"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"]}],
            operations=["CREATE", "UPDATE"],
            expression="!object.spec.rules.exists(r, r.backendRefs.exists(b, b.name.endsWith('-canary')))",
            message=refused,
            effective=lambda: cluster.apply(canary_route, check=False).returncode != 0,
        ):
            cluster.apply(sample("iris", namespace, rollout=rollout, bento=V2))
            md = degraded(cluster, namespace, "iris", "ChildRejected")
            assert condition(md, "Degraded")["message"].startswith("HTTPRoute iris was rejected by the API server: ")
            assert refused in condition(md, "Degraded")["message"]
            wait_for(
                lambda: (current(cluster, namespace, "iris")["status"].get("canary") or {}).get("stepReadyAt"),
                timeout=60,
                what="the canary's pods Ready, its pause started",
            )
            # Well past the 1s pause: the walk stays where it is for as long as the route is refused.
            for _ in range(10):
                held = current(cluster, namespace, "iris")["status"]["canary"]
                assert (held["state"], held["step"]) == ("Progressing", 0)
                time.sleep(0.5)
        promoted = wait_for(
            lambda: (s := current(cluster, namespace, "iris")["status"]) and "canary" not in s and s,
            timeout=90,
            what="the canary promoted once its route is taken",
        )
        assert promoted["stable"]["bento"] == "iris-classifier:v2"

    def test_a_failed_reconcile_is_a_condition_in_one_line_and_no_traceback(
        self, cluster: Cluster, running: Operator, namespace: str
    ) -> None:
        tracebacks = len(running.tracebacks())
        steps = {"steps": [{"weight": 50, "pause": "1s"}]}
        cluster.apply(sample("iris", namespace, rollout=steps))
        wait_ready(cluster, namespace, "iris")
        probe = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "probe-canary", "namespace": namespace},
        }
        cluster.apply(probe)
        with admission_policy(
            cluster,
            namespace,
            resources=[{"apiGroups": ["apps", ""], "resources": ["deployments", "configmaps"]}],
            operations=["DELETE"],
            expression="!oldObject.metadata.name.endsWith('-canary')",
            message="canaries are kept for the audit",
            effective=lambda: (
                cluster.kubectl(
                    "delete", "configmap", "probe-canary", "-n", namespace, "--dry-run=server", check=False
                ).returncode
                != 0
            ),
        ):
            cluster.apply(sample("iris", namespace, rollout=steps, bento=V2))
            md = degraded(cluster, namespace, "iris", "ReconcileError", timeout=90)
            message = condition(md, "Degraded")["message"]
            assert message.startswith("422 Invalid: ") and "canaries are kept for the audit" in message
            assert "\n" not in message
        wait_for(
            lambda: cluster.get("deployment", "iris-canary", namespace) is None, timeout=90, what="the canary gone"
        )
        md = wait_ready(cluster, namespace, "iris")
        assert condition(md, "Degraded")["reason"] == "Healthy"
        assert len(running.tracebacks()) == tracebacks, running.tracebacks()[tracebacks:]


class TestServingPods:
    def test_no_api_token_unless_the_spec_asks_for_one(
        self, cluster: Cluster, running: Operator, namespace: str
    ) -> None:
        cluster.apply(sample("quiet", namespace, serviceAccountName="default"))
        cluster.apply(sample("talks", namespace, serviceAccountName="default", automountServiceAccountToken=True))
        for name, token in (("quiet", False), ("talks", True)):
            wait_ready(cluster, namespace, name)
            [pod] = cluster.json("get", "pods", "-n", namespace, "-l", f"modeldeploy.dev/name={name}")["items"][:1]
            assert pod["spec"]["automountServiceAccountToken"] is token, name
            mounted = any(v.get("projected") for v in pod["spec"].get("volumes", []))
            assert mounted is token, f"{name}: the API server mounted a token: {mounted}"
