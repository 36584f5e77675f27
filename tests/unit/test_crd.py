"""The CRD generated from the API types: checked in, structural, described, with columns and CEL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.api.crd import PRINTER_COLUMNS, crd

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = [
    ROOT / "crds" / "modeldeploy.dev_modeldeployments.yaml",
    ROOT / "charts" / "modeldeploy-operator" / "crds" / "modeldeploy.dev_modeldeployments.yaml",
]


def walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, child in node.get("properties", {}).items():
        out += walk(child, f"{path}.{name}")
    if "items" in node:
        out += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += walk(node["additionalProperties"], f"{path}{{}}")
    return out


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


class TestDrift:
    @pytest.mark.parametrize("path", CHECKED_IN, ids=lambda p: str(p.relative_to(ROOT)))
    def test_checked_in_crd_matches_the_api_types(self, path: Path) -> None:
        checked_in = yaml.safe_load(path.read_text())
        assert checked_in == crd(), f"{path.relative_to(ROOT)} is stale: run `make crds`"


class TestStructuralSchema:
    def test_no_refs_or_nulls_survive(self, schema: dict[str, Any]) -> None:
        text = yaml.safe_dump(schema)
        assert "$ref" not in text
        assert "type: 'null'" not in text
        assert "type: null" not in text
        for path, node in walk(schema):
            assert "title" not in node, path
            assert "anyOf" not in node or node.get("x-kubernetes-int-or-string"), path

    def test_every_field_is_described_for_kubectl_explain(self, schema: dict[str, Any]) -> None:
        undocumented = [
            path
            for path, node in walk(schema)
            if path and not path.endswith(("[]", "{}")) and path != ".metadata" and not node.get("description")
        ]
        assert undocumented == []

    def test_every_node_has_a_type(self, schema: dict[str, Any]) -> None:
        untyped = [p for p, n in walk(schema) if "type" not in n and not n.get("x-kubernetes-int-or-string")]
        assert untyped == []

    def test_defaults_contain_no_nulls(self, schema: dict[str, Any]) -> None:
        for path, node in walk(schema):
            if "default" in node:
                assert "null" not in yaml.safe_dump(node["default"]), path

    def test_status_has_no_defaults(self, schema: dict[str, Any]) -> None:
        assert [p for p, n in walk(schema["properties"]["status"]) if "default" in n] == []


class TestCrdShape:
    def test_names_scope_and_subresources(self) -> None:
        spec = crd()["spec"]
        assert spec["names"]["shortNames"] == ["md"]
        assert spec["scope"] == "Namespaced"
        version = spec["versions"][0]
        assert version["subresources"]["status"] == {}
        assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"

    def test_printer_columns(self) -> None:
        names = [c["name"] for c in crd()["spec"]["versions"][0]["additionalPrinterColumns"]]
        for required in ("Ready", "Phase", "Stable", "Canary", "Weight", "Replicas", "URL", "Age"):
            assert required in names
        assert PRINTER_COLUMNS[0]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'

    @pytest.mark.parametrize(
        ("path", "fragment"),
        [
            (".spec.bento", "has(self.image) != has(self.tag)"),
            (".spec.autoscaling", "self.minReplicas <= self.maxReplicas"),
            (".spec.rollout", "isSorted()"),
            ("", "self.metadata.name.size() <= 56"),
        ],
    )
    def test_cross_field_rules_are_cel(self, schema: dict[str, Any], path: str, fragment: str) -> None:
        node = dict(walk(schema))[path]
        assert any(fragment in rule["rule"] for rule in node["x-kubernetes-validations"])

    def test_env_and_conditions_are_list_maps(self, schema: dict[str, Any]) -> None:
        nodes = dict(walk(schema))
        assert nodes[".spec.env"]["x-kubernetes-list-map-keys"] == ["name"]
        assert nodes[".status.conditions"]["x-kubernetes-list-map-keys"] == ["type"]

    def test_quantities_are_int_or_string(self, schema: dict[str, Any]) -> None:
        node = dict(walk(schema))[".spec.resources.requests{}"]
        assert node["x-kubernetes-int-or-string"] is True
        assert "pattern" in node
