"""Renderers: BentoML-correct, restricted-compliant pods, valid against Kubernetes' own OpenAPI schemas."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.k8s.children import render_children
from modeldeploy.model.revision import RevisionPlan, template_of
from modeldeploy.render.autoscaler import render_hpa
from modeldeploy.render.deployment import render_deployment
from modeldeploy.render.service import render_service
from modeldeploy.routing.gateway import render_route

from factories import IMAGE_V1, md

K8S_VERSION = "1.37.0"


def valid(obj: dict[str, Any]) -> dict[str, Any]:
    """Validate against the real schema of the object's kind (strict: unknown fields fail too)."""
    if obj["apiVersion"].startswith("gateway.networking.k8s.io"):
        return obj  # not a core kind; checked against the real CRD in the cluster tier
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    return obj


def stable(model: ModelDeployment, replicas: int | None = 2) -> RevisionPlan:
    template = template_of(model.spec, "registry.example.com/bento-runtime:1.4")
    return RevisionPlan("stable", template.revision, template, replicas)


def deployment(model: ModelDeployment, replicas: int | None = 2) -> dict[str, Any]:
    return valid(render_deployment(model, stable(model, replicas)))


def container(dep: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = dep["spec"]["template"]["spec"]["containers"]
    return containers[0]


def env(dep: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(dep)["env"]}


TAG = "iris_classifier:jkolwkxiewz4eax4"


def tag_md(store: dict[str, Any] | None = None, tag: str = TAG) -> ModelDeployment:
    return md(bento={"tag": tag, "store": store or {"uri": "s3://models/bentos"}})


class TestRenderDeployment:
    def test_serves_bentoml_on_3000_with_probes(self) -> None:
        c = container(deployment(md()))
        assert c["ports"] == [{"name": "http", "containerPort": 3000, "protocol": "TCP"}]
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        assert c["image"] == IMAGE_V1
        assert "command" not in c  # the containerize entrypoint serves the bento

    def test_startup_probe_covers_the_startup_timeout(self) -> None:
        probe = container(deployment(md(startupTimeout="20m")))["startupProbe"]
        assert probe["periodSeconds"] * probe["failureThreshold"] >= 20 * 60

    def test_bentoml_environment(self) -> None:
        values = env(deployment(md()))
        assert values["BENTOML_DO_NOT_TRACK"] == "1"
        assert values["BENTOML_PORT"] == "3000"
        assert values["TMPDIR"] == "/tmp"
        # Writable, and not /home/bentoml, which holds the image's bento.
        assert values["BENTOML_HOME"] == "/tmp/bentoml"

    def test_bento_config_becomes_overrides(self) -> None:
        dep = deployment(
            md(
                bentoConfig={
                    "service": "IrisClassifier",
                    "workers": 3,
                    "timeoutSeconds": 30,
                    "maxConcurrency": 8,
                    "options": {
                        "services.IrisClassifier.http.cors.enabled": "true",
                        "services.IrisClassifier.traffic.timeout": "2.5",
                        "services.Other.workers": "cpu_count",
                        "services.Other.threads": "4",
                    },
                }
            )
        )
        overrides = json.loads(env(dep)["BENTOML_CONFIG_OVERRIDES"])
        # Nested, keyed by the service (BentoML rejects dotted keys here), each value of its option's type;
        # an option of the same setting as a field wins.
        assert overrides == {
            "services": {
                "IrisClassifier": {
                    "workers": 3,
                    "traffic": {"timeout": 2.5, "max_concurrency": 8},
                    "http": {"cors": {"enabled": True}},
                },
                "Other": {"workers": "cpu_count", "threads": 4},
            },
        }

    def test_no_overrides_when_nothing_is_configured(self) -> None:
        assert "BENTOML_CONFIG_OVERRIDES" not in env(deployment(md()))

    def test_user_env_overrides_operator_env_without_duplicates(self) -> None:
        dep = deployment(md(env=[{"name": "BENTOML_DO_NOT_TRACK", "value": "0"}, {"name": "A", "value": "b"}]))
        names = [e["name"] for e in container(dep)["env"]]
        assert len(names) == len(set(names))
        assert env(dep)["BENTOML_DO_NOT_TRACK"] == "0"
        assert env(dep)["A"] == "b"

    def test_restricted_security_context(self) -> None:
        dep = deployment(md())
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        sc = container(dep)["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert pod["automountServiceAccountToken"] is False

    def test_writable_scratch_under_read_only_root(self) -> None:
        dep = deployment(md())
        mounts = {m["mountPath"] for m in container(dep)["volumeMounts"]}
        assert "/tmp" in mounts
        assert container(dep)["securityContext"]["readOnlyRootFilesystem"] is True

    def test_graceful_termination(self) -> None:
        dep = deployment(md())
        assert container(dep)["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
        assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30
        assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    def test_prometheus_scrape_annotations(self) -> None:
        annotations = deployment(md())["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == "3000"
        assert annotations["prometheus.io/path"] == "/metrics"

    def test_gpu_request_sets_limit_and_toleration(self) -> None:
        dep = deployment(md(resources={"requests": {"cpu": "2"}, "gpu": {"count": 2}}))
        assert container(dep)["resources"]["limits"]["nvidia.com/gpu"] == "2"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in dep["spec"]["template"][
            "spec"
        ]["tolerations"]

    def test_no_gpu_means_no_gpu_limit_or_toleration(self) -> None:
        dep = deployment(md())
        assert set(container(dep)["resources"]["limits"]) == {"ephemeral-storage"}
        assert "tolerations" not in dep["spec"]["template"]["spec"]

    def test_labels_names_and_owner(self) -> None:
        model = md()
        dep = deployment(model)
        assert dep["metadata"]["name"] == "iris"
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert labels["modeldeploy.dev/revision"] == template_of(model.spec).revision
        assert labels["app.kubernetes.io/managed-by"] == "modeldeploy"
        assert labels["app.kubernetes.io/instance"] == "iris"
        assert labels["app.kubernetes.io/name"] == "iris_classifier"
        selector = dep["spec"]["selector"]["matchLabels"]
        assert selector == {"modeldeploy.dev/name": "iris", "modeldeploy.dev/role": "stable"}
        assert all(labels[k] == v for k, v in selector.items())
        owner = dep["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "ModelDeployment"
        assert owner["controller"] is True
        assert owner["uid"] == "0b7c-uid"

    def test_canary_has_its_own_name_and_selector(self) -> None:
        model = md()
        plan = stable(model)
        dep = valid(render_deployment(model, RevisionPlan("canary", plan.revision, plan.template, 1)))
        assert dep["metadata"]["name"] == "iris-canary"
        assert dep["spec"]["selector"]["matchLabels"]["modeldeploy.dev/role"] == "canary"

    def test_replicas_left_out_when_autoscaled(self) -> None:
        assert "replicas" not in deployment(md(), replicas=None)["spec"]
        assert deployment(md(), replicas=3)["spec"]["replicas"] == 3

    def test_placement(self) -> None:
        dep = deployment(
            md(
                placement={
                    "nodeSelector": {"pool": "ml"},
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                                ]
                            }
                        }
                    },
                    "priorityClassName": "high",
                },
                serviceAccountName="model-reader",
                imagePullSecrets=[{"name": "registry"}],
            )
        )
        pod = dep["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"pool": "ml"}
        assert pod["tolerations"][0]["key"] == "dedicated"
        assert "nodeAffinity" in pod["affinity"]
        assert pod["priorityClassName"] == "high"
        assert pod["serviceAccountName"] == "model-reader"
        assert pod["automountServiceAccountToken"] is False, "a ServiceAccount is no reason for an API token"
        assert pod["imagePullSecrets"] == [{"name": "registry"}]

    def test_an_api_token_only_when_the_spec_asks_for_one(self) -> None:
        pod = deployment(md(serviceAccountName="model-reader", automountServiceAccountToken=True))["spec"]["template"]
        assert pod["spec"]["automountServiceAccountToken"] is True


def volume(dep: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == name)


def fetch(dep: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = dep["spec"]["template"]["spec"]["initContainers"]
    return next(c for c in containers if c["name"] == "fetch-bento")


class TestStorage:
    @pytest.mark.parametrize(("model", "size"), [(md(), "1Gi"), (tag_md(), "4Gi")], ids=["image", "tag"])
    def test_the_scratch_volume_is_bounded_and_requested_by_default(self, model: ModelDeployment, size: str) -> None:
        dep = deployment(model)
        assert volume(dep, "tmp")["emptyDir"] == {"sizeLimit": size}
        resources = container(dep)["resources"]
        assert resources["requests"]["ephemeral-storage"] == size
        # The limit leaves room for the container's logs beside a full emptyDir.
        assert resources["limits"]["ephemeral-storage"] == {"1Gi": "1280Mi", "4Gi": "4352Mi"}[size]

    def test_storage_from_the_spec_sizes_volume_request_and_limit(self) -> None:
        dep = deployment(md(resources={"storage": "20Gi", "requests": {"cpu": "1"}}))
        assert volume(dep, "tmp")["emptyDir"] == {"sizeLimit": "20Gi"}
        resources = container(dep)["resources"]
        assert resources["requests"] == {"cpu": "1", "ephemeral-storage": "20Gi"}
        assert resources["limits"] == {"ephemeral-storage": "20736Mi"}

    def test_a_decimal_storage_gets_a_limit_in_bytes(self) -> None:
        resources = container(deployment(md(resources={"storage": "2G"})))["resources"]
        assert resources["limits"]["ephemeral-storage"] == str(2 * 10**9 + 256 * 2**20)

    def test_explicit_ephemeral_storage_request_and_limit_win(self) -> None:
        spec = {"storage": "2Gi", "requests": {"ephemeral-storage": "3Gi"}, "limits": {"ephemeral-storage": "8Gi"}}
        dep = deployment(md(resources=spec))
        resources = container(dep)["resources"]
        assert resources["requests"]["ephemeral-storage"] == "3Gi"
        assert resources["limits"]["ephemeral-storage"] == "8Gi"
        assert volume(dep, "tmp")["emptyDir"] == {"sizeLimit": "2Gi"}

    def test_a_limit_below_the_default_storage_bounds_volume_and_request(self) -> None:
        dep = deployment(md(resources={"limits": {"ephemeral-storage": "512Mi"}}))
        assert volume(dep, "tmp")["emptyDir"] == {"sizeLimit": "512Mi"}
        assert container(dep)["resources"]["requests"]["ephemeral-storage"] == "512Mi"

    def test_a_request_above_the_storage_gets_a_limit_above_the_request(self) -> None:
        resources = container(deployment(md(resources={"requests": {"ephemeral-storage": "5Gi"}})))["resources"]
        assert resources["limits"]["ephemeral-storage"] == "5376Mi"

    @pytest.mark.parametrize(
        ("resources", "field", "message"),
        [
            ({"storage": "1Mi"}, "spec.resources.storage", "storage must be at least 64Mi"),
            ({"storage": "-1Gi"}, "spec.resources.storage", "is not a Kubernetes quantity"),
            (
                {"storage": "4Gi", "limits": {"ephemeral-storage": "2Gi"}},
                "spec.resources.storage",
                "storage must not be more than limits.ephemeral-storage",
            ),
            (
                {"fetch": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}},
                "spec.resources.fetch.requests.memory",
                "a request must not be more than its limit",
            ),
            ({"fetch": {"limits": {"nvidia.com/gpu": "1"}}}, "spec.resources.fetch.limits", "limits may name cpu"),
        ],
    )
    def test_bad_storage_and_fetch_resources_are_refused_with_the_field_named(
        self, resources: dict[str, Any], field: str, message: str
    ) -> None:
        from pydantic import ValidationError

        from modeldeploy.api.errors import describe

        with pytest.raises(ValidationError) as caught:
            md(resources=resources)
        [line] = describe(caught.value)
        assert line.startswith(f"{field}: ") and message in line, line

    def test_new_fields_left_unset_keep_the_revision(self) -> None:
        """Fields added to resources default to nothing on the wire, so existing revisions keep their hash."""
        template = template_of(md(resources={"requests": {"cpu": "1"}}).spec)
        assert template.wire()["resources"] == {"requests": {"cpu": "1"}, "limits": {}}


class TestFetchResources:
    def test_defaults_have_limits_and_the_serving_containers_storage(self) -> None:
        assert fetch(deployment(tag_md()))["resources"] == {
            "requests": {"cpu": "100m", "ephemeral-storage": "4Gi", "memory": "256Mi"},
            "limits": {"ephemeral-storage": "4352Mi", "memory": "1Gi"},
        }

    def test_the_serving_limits_apply_so_a_quota_on_limits_admits_the_pod(self) -> None:
        model = md(
            bento={"tag": TAG, "store": {"uri": "s3://models/bentos"}},
            resources={"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}},
        )
        dep = deployment(model)
        assert fetch(dep)["resources"]["limits"] == {"cpu": "2", "ephemeral-storage": "4352Mi", "memory": "8Gi"}
        for c in (container(dep), fetch(dep)):
            assert {"cpu", "memory", "ephemeral-storage"} <= set(c["resources"]["limits"]), c["name"]

    def test_a_default_request_above_a_small_serving_limit_is_lowered_to_it(self) -> None:
        model = md(bento={"tag": TAG, "store": {"uri": "s3://m/b"}}, resources={"limits": {"cpu": "50m"}})
        assert fetch(deployment(model))["resources"]["requests"]["cpu"] == "50m"

    def test_the_spec_overrides_key_by_key(self) -> None:
        model = md(
            bento={"tag": TAG, "store": {"uri": "s3://m/b"}},
            resources={"fetch": {"requests": {"memory": "1Gi"}, "limits": {"memory": "3Gi", "cpu": "1"}}},
        )
        assert fetch(deployment(model))["resources"] == {
            "requests": {"cpu": "100m", "ephemeral-storage": "4Gi", "memory": "1Gi"},
            "limits": {"cpu": "1", "ephemeral-storage": "4352Mi", "memory": "3Gi"},
        }

    def test_no_gpu_for_the_fetch(self) -> None:
        model = md(bento={"tag": TAG, "store": {"uri": "s3://m/b"}}, resources={"gpu": {"count": 1}})
        assert "nvidia.com/gpu" not in fetch(deployment(model))["resources"]["limits"]


class TestSpread:
    def test_soft_spread_by_host_and_by_zone_over_every_pod_of_the_model(self) -> None:
        spread = deployment(md())["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert [(s["topologyKey"], s["whenUnsatisfiable"], s["maxSkew"]) for s in spread] == [
            ("kubernetes.io/hostname", "ScheduleAnyway", 1),
            ("topology.kubernetes.io/zone", "ScheduleAnyway", 1),
        ]
        assert all(s["labelSelector"] == {"matchLabels": {"modeldeploy.dev/name": "iris"}} for s in spread)


class TestRenderDeploymentFromTag:
    def test_init_container_imports_the_archive_from_the_store(self) -> None:
        dep = deployment(tag_md())
        pod = dep["spec"]["template"]["spec"]
        fetch = pod["initContainers"][0]
        assert fetch["command"] == [
            "bentoml",
            "import",
            "s3://models/bentos/iris_classifier-jkolwkxiewz4eax4.bento",
        ]
        assert container(dep)["command"] == ["bentoml", "serve", "iris_classifier:jkolwkxiewz4eax4"]
        assert fetch["image"] == container(dep)["image"] == "registry.example.com/bento-runtime:1.4"
        shared = {m["mountPath"] for m in fetch["volumeMounts"]} & {
            m["mountPath"] for m in container(dep)["volumeMounts"]
        }
        assert "/tmp" in shared
        assert {"name": "BENTOML_HOME", "value": "/tmp/bentoml"} in fetch["env"]

    def test_store_secret_reaches_only_the_fetching_container(self) -> None:
        dep = deployment(tag_md({"uri": "s3://models/bentos", "secretRef": {"name": "s3-creds"}}))
        fetch = dep["spec"]["template"]["spec"]["initContainers"][0]
        assert fetch["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
        assert "envFrom" not in container(dep)

    def test_pvc_store_is_mounted_read_only(self) -> None:
        dep = deployment(tag_md({"uri": "pvc://model-store/bentos"}, tag="iris:v1"))
        pod = dep["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "bento-store")
        assert volume["persistentVolumeClaim"] == {"claimName": "model-store", "readOnly": True}
        assert pod["initContainers"][0]["command"][-1] == "/bento-store/bentos/iris-v1.bento"


class TestRenderService:
    def test_replicas_routing_selects_every_revision(self) -> None:
        svc = valid(render_service(md()))
        assert svc["spec"]["selector"] == {"modeldeploy.dev/name": "iris"}
        assert svc["spec"]["ports"][0] == {
            "name": "http",
            "port": 3000,
            "targetPort": "http",
            "protocol": "TCP",
            "appProtocol": "http",
        }

    def test_gateway_routing_keeps_the_main_service_on_stable(self) -> None:
        model = md(rollout={"trafficRouting": "GatewayAPI", "gateway": {"parentRefs": [{"name": "gw"}]}})
        assert valid(render_service(model))["spec"]["selector"]["modeldeploy.dev/role"] == "stable"
        canary = valid(render_service(model, canary=True))
        assert canary["metadata"]["name"] == "iris-canary"
        assert canary["spec"]["selector"]["modeldeploy.dev/role"] == "canary"

    def test_service_settings(self) -> None:
        svc = valid(render_service(md(service={"type": "LoadBalancer", "port": 80, "annotations": {"a": "b"}})))
        assert svc["spec"]["type"] == "LoadBalancer"
        assert svc["spec"]["ports"][0]["port"] == 80
        assert svc["metadata"]["annotations"] == {"a": "b"}


class TestRenderAutoscaler:
    def test_targets_the_stable_deployment(self) -> None:
        model = md(
            autoscaling={"minReplicas": 2, "maxReplicas": 8, "metrics": [{"type": "cpu", "target": 60}]},
            resources={"requests": {"cpu": "1"}},
        )
        hpa = valid(render_hpa(model))
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris"}
        assert hpa["spec"]["minReplicas"] == 2
        assert hpa["spec"]["maxReplicas"] == 8
        assert hpa["spec"]["metrics"][0]["resource"] == {
            "name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 60},
        }


class TestRenderDisruptionBudget:
    def test_one_budget_covers_stable_and_canary_pods(self) -> None:
        model = md(replicas=3)
        plan = stable(model, 3)
        objects = render_children(model, plan, RevisionPlan("canary", plan.revision, plan.template, 1))
        [pdb] = [valid(o) for o in objects if o["kind"] == "PodDisruptionBudget"]
        assert pdb["metadata"]["name"] == "iris"
        assert pdb["metadata"]["ownerReferences"][0]["uid"] == "0b7c-uid"
        assert pdb["spec"] == {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {"modeldeploy.dev/name": "iris"}},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        }
        selected = pdb["spec"]["selector"]["matchLabels"].items()
        for dep in (o for o in objects if o["kind"] == "Deployment"):
            assert selected <= dep["spec"]["template"]["metadata"]["labels"].items(), dep["metadata"]["name"]

    @pytest.mark.parametrize(
        ("spec", "wanted"),
        [
            ({"replicas": 0}, False),
            ({"replicas": 1}, False),
            ({"replicas": 2}, True),
            ({"replicas": 1, "autoscaling": {"minReplicas": 1, "maxReplicas": 1}}, False),
            # The autoscaler may scale out: one pod may always go, so a single pod never blocks a drain.
            ({"replicas": 1, "autoscaling": {"minReplicas": 1, "maxReplicas": 5}}, True),
            ({"replicas": 5, "autoscaling": {"minReplicas": 1, "maxReplicas": 1}}, False),
        ],
    )
    def test_a_budget_only_where_the_model_may_run_two_pods(self, spec: dict[str, Any], wanted: bool) -> None:
        model = md(resources={"requests": {"cpu": "1"}}, **spec)
        plan = stable(model, None if model.spec.autoscaling else model.spec.replicas)
        kinds = [o["kind"] for o in render_children(model, plan, None)]
        assert ("PodDisruptionBudget" in kinds) is wanted


PEERS = [
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway-system"}}},
    {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    },
    {"podSelector": {"matchExpressions": [{"key": "role", "operator": "In", "values": ["client"]}]}},
]


class TestRenderNetworkPolicy:
    def test_none_unless_enabled(self) -> None:
        for spec in ({}, {"networkPolicy": {"enabled": False, "from": PEERS}}):
            model = md(**spec)
            assert "NetworkPolicy" not in [o["kind"] for o in render_children(model, stable(model), None)]

    def test_ingress_to_the_serving_port_only_from_the_peers_named(self) -> None:
        model = md(networkPolicy={"enabled": True, "from": PEERS})
        plan = stable(model)
        objects = render_children(model, plan, RevisionPlan("canary", plan.revision, plan.template, 1))
        [policy] = [valid(o) for o in objects if o["kind"] == "NetworkPolicy"]
        assert policy["metadata"]["name"] == "iris"
        assert policy["spec"] == {
            "podSelector": {"matchLabels": {"modeldeploy.dev/name": "iris"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": PEERS, "ports": [{"protocol": "TCP", "port": 3000}]}],
        }
        port = container(render_deployment(model, plan))["ports"][0]["containerPort"]
        assert policy["spec"]["ingress"][0]["ports"][0]["port"] == port

    @pytest.mark.parametrize(
        ("settings", "expected"),
        [
            ({"enabled": True}, "spec.networkPolicy.from: from must name at least one peer when enabled"),
            ({"enabled": True, "from": [{}]}, "spec.networkPolicy.from[0]: a peer needs namespaceSelector"),
            (
                {"enabled": True, "from": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}]},
                "spec.networkPolicy.from[0].podSelector.matchExpressions[0].values: values must be given with In",
            ),
            (
                {"enabled": True, "from": [{"podSelector": {"matchLabels": {"a": "two words"}}}]},
                "spec.networkPolicy.from[0].podSelector.matchLabels.a: matchLabels keys must be qualified names",
            ),
        ],
    )
    def test_bad_settings_are_refused_with_the_field_named(self, settings: dict[str, Any], expected: str) -> None:
        from pydantic import ValidationError

        from modeldeploy.api.errors import describe

        with pytest.raises(ValidationError) as caught:
            md(networkPolicy=settings)
        assert describe(caught.value)[0].startswith(expected)


class TestRenderRoute:
    def test_weights_split_between_stable_and_canary(self) -> None:
        model = md(
            rollout={
                "trafficRouting": "GatewayAPI",
                "gateway": {"parentRefs": [{"name": "gw"}], "hostnames": ["iris.example.com"]},
            }
        )
        route = render_route(model, canary_weight=10, with_canary=True)
        backends = route["spec"]["rules"][0]["backendRefs"]
        assert [(b["name"], b["weight"]) for b in backends] == [("iris", 90), ("iris-canary", 10)]
        assert route["spec"]["parentRefs"] == [{"name": "gw"}]
        assert route["spec"]["hostnames"] == ["iris.example.com"]

    def test_without_canary_all_traffic_goes_to_stable(self) -> None:
        model = md(rollout={"trafficRouting": "GatewayAPI", "gateway": {"parentRefs": [{"name": "gw"}]}})
        backends = render_route(model, canary_weight=0, with_canary=False)["spec"]["rules"][0]["backendRefs"]
        assert backends == [{"kind": "Service", "name": "iris", "port": 3000, "weight": 100}]


class TestRenderChildren:
    def test_first_deployment_is_deployment_and_service(self) -> None:
        model = md()
        kinds = [(o["kind"], o["metadata"]["name"]) for o in render_children(model, stable(model), None)]
        assert kinds == [("Deployment", "iris"), ("Service", "iris"), ("PodDisruptionBudget", "iris")]

    def test_everything_for_an_autoscaled_gateway_canary(self) -> None:
        model = md(
            autoscaling={"maxReplicas": 4},
            resources={"requests": {"cpu": "1"}},
            rollout={"trafficRouting": "GatewayAPI", "gateway": {"parentRefs": [{"name": "gw"}]}},
        )
        plan = stable(model, None)
        canary = RevisionPlan("canary", plan.revision, plan.template, 1)
        objects = [valid(o) for o in render_children(model, plan, canary, route_weight=10)]
        kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
        assert kinds == [
            ("Deployment", "iris"),
            ("Deployment", "iris-canary"),
            ("Service", "iris"),
            ("Service", "iris-canary"),
            ("HorizontalPodAutoscaler", "iris"),
            ("PodDisruptionBudget", "iris"),
            ("HTTPRoute", "iris"),
        ]

    def test_no_route_when_the_cluster_lacks_gateway_api(self) -> None:
        model = md(rollout={"trafficRouting": "GatewayAPI", "gateway": {"parentRefs": [{"name": "gw"}]}})
        kinds = [o["kind"] for o in render_children(model, stable(model), None, unserved=frozenset({"HTTPRoute"}))]
        assert "HTTPRoute" not in kinds

    def test_output_is_plain_yaml(self) -> None:
        model = md()
        text = yaml.safe_dump_all(render_children(model, stable(model), None))
        assert "!!python" not in text


class TestRenderPodMonitor:
    def test_it_scrapes_every_revision_of_the_model_labelled_as_the_analysis_and_dashboards_select(self) -> None:
        model = md()
        plan = stable(model)
        rendered = render_children(model, plan, None, served=frozenset({"PodMonitor"}))
        [monitor] = [o for o in rendered if o["kind"] == "PodMonitor"]
        [deployment] = render_children(model, plan, None)[:1]
        pod = deployment["spec"]["template"]
        assert monitor["kind"] == "PodMonitor" and monitor["metadata"]["name"] == "iris"
        assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        [endpoint] = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["port"] in [p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])]
        assert endpoint["path"] == pod["metadata"]["annotations"]["prometheus.io/path"]
        assert {(r["sourceLabels"][0], r["targetLabel"]) for r in endpoint["relabelings"]} == {
            ("__meta_kubernetes_pod_label_modeldeploy_dev_revision", "modeldeploy_dev_revision"),
            ("__meta_kubernetes_pod_label_modeldeploy_dev_name", "modeldeploy_dev_name"),
        }

    def test_not_rendered_unless_the_cluster_serves_it(self) -> None:
        model = md()
        assert "PodMonitor" not in [o["kind"] for o in render_children(model, stable(model), None)]
