"""The foundation in a real cluster: install, admission, children, status, updates, garbage collection."""

from __future__ import annotations

import json
from typing import Any

import pytest

from localcluster.kit import Cluster, Operator, condition, sample, table, wait_for, wait_ready


class TestInstall:
    def test_helm_install_serves_the_crd_and_kubectl_explain_shows_descriptions(self, chart: Cluster) -> None:
        crd = chart.json("get", "crd", "modeldeployments.modeldeploy.dev")
        assert crd["spec"]["names"]["shortNames"] == ["md"]
        explained = chart.kubectl("explain", "md.spec").stdout
        assert "The desired state." in explained
        assert "bento" in explained and "The bento to serve." in explained
        deeper = chart.kubectl("explain", "md.spec.rollout.steps.weight").stdout
        assert "Percent of traffic the canary receives at this step." in deeper

    def test_chart_rbac_has_no_wildcards_and_cannot_read_secrets(self, chart: Cluster) -> None:
        sa = "system:serviceaccount:modeldeploy-system:modeldeploy-operator"
        can = lambda *args: chart.kubectl("auth", "can-i", *args, "--as", sa, check=False).stdout.strip()  # noqa: E731
        assert can("list", "secrets", "-A") == "no"
        assert can("watch", "secrets", "-A") == "no"
        assert can("get", "secrets", "-n", "default") == "no"
        assert can("get", "configmaps", "-n", "default") == "yes"
        assert can("patch", "deployments.apps", "-n", "default") == "yes"
        assert can("delete", "nodes") == "no"
        assert can("create", "pods", "-n", "default") == "no"
        for role in chart.json("get", "clusterroles", "-l", "app.kubernetes.io/name=modeldeploy-operator")["items"]:
            for rule in role["rules"]:
                assert "*" not in rule.get("verbs", []) + rule.get("resources", []) + rule.get("apiGroups", [])


class TestServing:
    def test_sample_becomes_ready_with_children_owned_and_columns_filled(
        self, cluster: Cluster, running: Operator, namespace: str
    ) -> None:
        spec = sample(
            "iris",
            namespace,
            autoscaling={"minReplicas": 2, "maxReplicas": 4, "metrics": [{"type": "cpu", "target": 70}]},
        )
        cluster.apply(spec)
        md = wait_ready(cluster, namespace, "iris")
        uid = md["metadata"]["uid"]
        for kind in ("deployment", "service", "horizontalpodautoscaler"):
            child = cluster.json("get", kind, "iris", "-n", namespace)
            owners = child["metadata"]["ownerReferences"]
            assert owners[0]["uid"] == uid and owners[0]["controller"] is True, kind
        pods = cluster.json("get", "pods", "-n", namespace, "-l", "modeldeploy.dev/name=iris")["items"]
        assert len(pods) == 2
        for pod in pods:
            assert any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])
        status = md["status"]
        assert status["phase"] == "Ready"
        assert status["readyReplicas"] == 2
        assert status["url"] == f"http://iris.{namespace}.svc:3000"
        assert status["observedGeneration"] == md["metadata"]["generation"]
        [row] = table(cluster.kubectl("get", "modeldeployments", "-n", namespace).stdout)
        assert list(row) == [
            "NAME",
            "READY",
            "PHASE",
            "STABLE",
            "CANARY",
            "WEIGHT",
            "REPLICAS",
            "AVAILABLE",
            "URL",
            "AGE",
        ]
        assert row["NAME"] == "iris"
        assert row["READY"] == "True"
        assert row["PHASE"] == "Ready"
        assert row["STABLE"] == "iris-classifier:v1"
        assert row["CANARY"] == row["WEIGHT"] == ""
        assert row["REPLICAS"] == row["AVAILABLE"] == "2"
        assert row["URL"] == f"http://iris.{namespace}.svc:3000"
        events = cluster.kubectl(
            "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=iris"
        ).stdout
        assert "Ready" in events

    def test_update_of_the_bento_rolls_the_deployment_and_status_follows(
        self, cluster: Cluster, running: Operator, namespace: str
    ) -> None:
        cluster.apply(sample("iris", namespace, rollout={"strategy": "Rolling"}))
        first = wait_ready(cluster, namespace, "iris")
        first_revision = first["status"]["stable"]["revision"]
        cluster.apply(
            sample(
                "iris",
                namespace,
                rollout={"strategy": "Rolling"},
                bento={"image": "registry.example.com/iris-classifier:v2"},
            )
        )

        def rolled() -> dict[str, Any] | None:
            md = cluster.get("modeldeployment", "iris", namespace)
            if not md or md["status"]["stable"]["bento"] != "iris-classifier:v2":
                return None
            return md if condition(md, "Ready").get("status") == "True" else None

        md = wait_for(rolled, timeout=90, what="the rolling update to finish")
        assert md["status"]["stable"]["revision"] != first_revision
        dep = cluster.json("get", "deployment", "iris", "-n", namespace)
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v2")
        assert (
            dep["spec"]["template"]["metadata"]["labels"]["modeldeploy.dev/revision"]
            == md["status"]["stable"]["revision"]
        )
        pods = cluster.json("get", "pods", "-n", namespace, "-l", "modeldeploy.dev/name=iris")["items"]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        assert {p["metadata"]["labels"]["modeldeploy.dev/revision"] for p in live} == {
            md["status"]["stable"]["revision"]
        }

    def test_scaling_is_applied_without_a_new_revision(
        self, cluster: Cluster, running: Operator, namespace: str
    ) -> None:
        cluster.apply(sample("iris", namespace))
        before = wait_ready(cluster, namespace, "iris")["status"]["stable"]["revision"]
        cluster.kubectl("scale", "md", "iris", "-n", namespace, "--replicas=3")
        md = wait_for(
            lambda: (
                (m := cluster.get("modeldeployment", "iris", namespace)) and m["status"].get("readyReplicas") == 3 and m
            ),
            timeout=60,
            what="3 ready replicas",
        )
        assert md["status"]["stable"]["revision"] == before
        assert "canary" not in md["status"]

    def test_hand_edits_of_a_deployment_are_undone(self, cluster: Cluster, running: Operator, namespace: str) -> None:
        cluster.apply(sample("iris", namespace))
        wait_ready(cluster, namespace, "iris")
        cluster.kubectl("scale", "deployment", "iris", "-n", namespace, "--replicas=5")
        cluster.kubectl("set", "env", "deployment/iris", "-n", namespace, "-c", "bento", "BENTOML_DO_NOT_TRACK=0")

        def restored() -> bool:
            dep = cluster.json("get", "deployment", "iris", "-n", namespace)
            env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
            return dep["spec"]["replicas"] == 2 and env["BENTOML_DO_NOT_TRACK"] == "1"

        wait_for(restored, timeout=30, what="the operator to put the Deployment back")

    def test_delete_lets_the_garbage_collector_remove_every_child(
        self, cluster: Cluster, running: Operator, namespace: str
    ) -> None:
        cluster.apply(
            sample(
                "iris",
                namespace,
                autoscaling={"maxReplicas": 3},
            )
        )
        wait_ready(cluster, namespace, "iris")
        cluster.kubectl("delete", "md", "iris", "-n", namespace, "--wait=true", "--timeout=60s")

        def gone() -> bool:
            for kind in ("deployments", "services", "horizontalpodautoscalers", "pods"):
                items = cluster.json("get", kind, "-n", namespace, "-l", "modeldeploy.dev/name=iris")["items"]
                if [i for i in items if not i["metadata"].get("deletionTimestamp") or kind != "pods"]:
                    return False
            return True

        wait_for(gone, timeout=90, what="the garbage collector to delete the children")

    def test_pods_are_admitted_under_the_restricted_pod_security_standard(
        self, cluster: Cluster, running: Operator, namespace: str
    ) -> None:
        cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "--overwrite")
        # The same namespace refuses a pod that is not restricted-compliant: the policy is really enforced.
        refused = cluster.kubectl("run", "privileged", "-n", namespace, "--image=busybox", "--privileged", check=False)
        assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr
        cluster.apply(sample("iris", namespace))
        md = wait_ready(cluster, namespace, "iris")
        assert md["status"]["readyReplicas"] == 2
        rs_events = cluster.kubectl("get", "events", "-n", namespace).stdout
        assert "violates PodSecurity" not in rs_events


class TestAdmission:
    @pytest.mark.parametrize(
        ("spec", "expected"),
        [
            ({"bento": {"image": "x:1", "tag": "iris:v1"}}, "spec.bento: Invalid value"),
            ({"bento": {"image": "x:1", "tag": "iris:v1"}}, "exactly one of image or tag must be set"),
            ({"bento": {"tag": "iris:v1"}}, "spec.bento.store: Invalid value"),
            ({"replicas": -1}, "spec.replicas: Invalid value: -1"),
            ({"rollout": {"strategy": "BlueGreen"}}, 'spec.rollout.strategy: Unsupported value: "BlueGreen"'),
            (
                {"rollout": {"steps": [{"weight": 50}, {"weight": 10}]}},
                "spec.rollout.steps: Invalid value: step weights must be strictly increasing",
            ),
            ({"rollout": {"steps": [{"weight": 120}]}}, "spec.rollout.steps[0].weight: Invalid value: 120"),
            (
                {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
                "spec.autoscaling.minReplicas: Invalid value: minReplicas must be less than or equal to maxReplicas",
            ),
            (
                {"autoscaling": {"maxReplicas": 2}, "resources": {}},
                "autoscaling on cpu needs resources.requests.cpu",
            ),
            ({"resources": {"requests": {"cpu": "lots"}}}, 'spec.resources.requests.cpu: Invalid value: "lots"'),
            (
                {"rollout": {"trafficRouting": "GatewayAPI"}},
                "spec.rollout.gateway: Invalid value: rollout.gateway (or expose) is required when trafficRouting is "
                "GatewayAPI",
            ),
            (
                {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
                'spec.env[1]: Duplicate value: {"name":"A"}',
            ),
            # What the operator or a child's validation could not use, refused at admission instead (issue 10).
            (
                {"bentoConfig": {"options": {"api_server.traffic.timeout": "["}}},
                "spec.bentoConfig.options: Invalid value: bentoConfig.options.api_server.traffic.timeout: not a "
                "BentoML option",
            ),
            (
                {"bentoConfig": {"options": {"services.IrisClassifier.traffic.timeout": "["}}},
                "bentoConfig.options.services.IrisClassifier.traffic.timeout: must be a number above 0",
            ),
            ({"rollout": {"steps": [{"weight": 10, "pause": "99999999999h"}]}}, "spec.rollout.steps[0].pause: Invalid"),
            ({"rollout": {"steps": [{"weight": 10, "pause": "200h"}]}}, "must be between 0s and 168h"),
            (
                {"rollout": {"analysis": {"prometheus": {"address": "http://p:9090"}, "interval": "0s"}}},
                'spec.rollout.analysis.interval: Invalid value: "0s": must be between 1s and 24h',
            ),
            ({"rollout": {"progressDeadline": "0s"}}, "spec.rollout.progressDeadline: Invalid value"),
            ({"startupTimeout": "0s"}, 'spec.startupTimeout: Invalid value: "0s": must be between 10s and 24h'),
            (
                {
                    "env": [
                        {
                            "name": "T",
                            "valueFrom": {"secretKeyRef": {"name": "../../kube-system/secrets/x", "key": "k"}},
                        }
                    ]
                },
                "spec.env[0].valueFrom.secretKeyRef.name: Invalid value",
            ),
            ({"serviceAccountName": "../default"}, "spec.serviceAccountName: Invalid value"),
            # spec.expose, with the Gateway API's own patterns: refused here, not by the HTTPRoute later.
            (
                {"expose": {"hostname": "Chat.Example.com:443", "parentRefs": [{"name": "gw"}]}},
                'spec.expose.hostname: Invalid value: "Chat.Example.com:443"',
            ),
            ({"expose": {"hostname": "*", "parentRefs": [{"name": "gw"}]}}, "spec.expose.hostname: Invalid value"),
            (
                {"expose": {"hostname": "iris.example.com", "parentRefs": [{"name": "gw", "namespace": "Bad_NS"}]}},
                "spec.expose.parentRefs[0].namespace: Invalid value",
            ),
            (
                {
                    "expose": {"hostname": "iris.example.com", "parentRefs": [{"name": "gw"}]},
                    "rollout": {"trafficRouting": "GatewayAPI", "gateway": {"parentRefs": [{"name": "gw"}]}},
                },
                "spec.expose: Invalid value: expose and rollout.gateway both name",
            ),
            ({"imagePullSecrets": [{"name": "a/b"}]}, "spec.imagePullSecrets[0].name: Invalid value"),
            ({"resources": {"requests": {"cpu": -1}}}, "spec.resources.requests.cpu: Invalid value: -1"),
            (
                {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
                "spec.resources.requests: Invalid value: a request must not be more than its limit",
            ),
            ({"bento": {"image": "registry.example.com/iris:latest"}}, "spec.bento.image: Invalid value"),
            ({"bento": {"image": "registry.example.com:5000/iris"}}, "image must name a version"),
            ({"env": [{"name": "BENTOML_PORT", "value": "8080"}]}, "spec.env: Invalid value"),
            (
                {
                    "rollout": {
                        "trafficRouting": "GatewayAPI",
                        "gateway": {"parentRefs": [{"name": "g"}], "hostnames": ["a_b"]},
                    }
                },
                "spec.rollout.gateway.hostnames[0]: Invalid value",
            ),
            ({"placement": {"nodeSelector": {"pool": "two words"}}}, "spec.placement.nodeSelector: Invalid value"),
        ],
    )
    def test_invalid_specs_are_rejected_with_the_field_named(
        self, cluster: Cluster, chart: Cluster, namespace: str, spec: dict[str, Any], expected: str
    ) -> None:
        body = sample("bad", namespace)
        body["spec"].update(spec)
        result = cluster.apply(body, check=False)
        assert result.returncode != 0
        assert expected in result.stderr, result.stderr
        assert cluster.get("modeldeployment", "bad", namespace) is None

    def test_name_too_long_for_children_is_rejected(self, cluster: Cluster, chart: Cluster, namespace: str) -> None:
        result = cluster.apply(sample("x" * 57, namespace), check=False)
        assert result.returncode != 0
        assert "metadata.name must be at most 56 characters" in result.stderr

    def test_unknown_fields_are_rejected_by_kubectl_with_the_field_named(
        self, cluster: Cluster, chart: Cluster, namespace: str
    ) -> None:
        body = sample("typo", namespace)
        body["spec"]["replica"] = 3
        result = cluster.apply(body, check=False)
        assert result.returncode != 0
        assert 'unknown field "spec.replica"' in result.stderr


class TestUnsatisfiable:
    def test_no_gpu_node_big_enough_shows_unschedulable(
        self, cluster: Cluster, running: Operator, namespace: str
    ) -> None:
        cluster.apply(sample("big", namespace, replicas=1, resources={"requests": {"cpu": "1"}, "gpu": {"count": 8}}))

        def degraded() -> dict[str, Any] | None:
            md = cluster.get("modeldeployment", "big", namespace)
            return md if md and condition(md, "Degraded").get("reason") == "Unschedulable" else None

        md = wait_for(degraded, timeout=90, what="an Unschedulable condition")
        message = condition(md, "Degraded")["message"]
        assert "Insufficient nvidia.com/gpu" in message
        assert condition(md, "Ready")["status"] == "False"
        assert md["status"]["phase"] == "Failed"

    def test_gpu_pods_land_on_gpu_nodes(self, cluster: Cluster, running: Operator, namespace: str) -> None:
        cluster.apply(sample("gpu", namespace, replicas=1, resources={"requests": {"cpu": "1"}, "gpu": {"count": 1}}))
        wait_ready(cluster, namespace, "gpu")
        pod = cluster.json("get", "pods", "-n", namespace, "-l", "modeldeploy.dev/name=gpu")["items"][0]
        node = cluster.json("get", "node", pod["spec"]["nodeName"])
        assert int(node["status"]["allocatable"].get("nvidia.com/gpu", "0")) >= 1

    def test_missing_secret_is_reported_from_what_the_pods_say_and_clears_when_created(
        self, cluster: Cluster, running: Operator, namespace: str
    ) -> None:
        env = [{"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "model-token", "key": "token"}}}]
        cluster.apply(sample("creds", namespace, env=env))
        # The operator reads no Secret: it deploys, and the pods say what is missing. kwok's pods run
        # without one, so the test plays the kubelet of a pod whose container is recreated after its
        # Secret went away (the kubelet's own words, its phase still Running).
        pods = wait_for(
            lambda: cluster.json("get", "pods", "-n", namespace, "-l", "modeldeploy.dev/name=creds")["items"],
            timeout=60,
            what="the pods of creds",
        )
        for pod in pods:
            kubelet_cannot_find_secret(cluster, namespace, pod["metadata"]["name"], "model-token")

        def waiting() -> dict[str, Any] | None:
            md = cluster.get("modeldeployment", "creds", namespace)
            return md if md and condition(md, "Degraded").get("reason") == "MissingReference" else None

        md = wait_for(waiting, timeout=60, what="a MissingReference condition")
        message = condition(md, "Degraded")["message"]
        assert message.startswith(
            f"Secret {namespace}/model-token (named in spec.env[0].valueFrom.secretKeyRef) is missing: container bento"
        )
        assert message.endswith('cannot start: secret "model-token" not found')
        cluster.kubectl("create", "secret", "generic", "model-token", "-n", namespace, "--from-literal=token=s3cret")
        cluster.kubectl("delete", "pods", "-n", namespace, "-l", "modeldeploy.dev/name=creds", "--wait=false")
        ready = wait_ready(cluster, namespace, "creds", timeout=90)
        assert condition(ready, "Degraded")["reason"] == "Healthy"


def kubelet_cannot_find_secret(cluster: Cluster, namespace: str, pod: str, secret: str) -> None:
    """The status a kubelet writes for a pod whose container cannot be created: its Secret is not found."""
    status = {
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
                {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady"},
            ],
            "containerStatuses": [
                {
                    "name": "bento",
                    "image": "registry.example.com/iris-classifier:v1",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 1,
                    "state": {
                        "waiting": {"reason": "CreateContainerConfigError", "message": f'secret "{secret}" not found'}
                    },
                }
            ],
        }
    }
    cluster.kubectl(
        "patch", "pod", pod, "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )
