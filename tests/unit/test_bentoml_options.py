"""The table of BentoML options against BentoML's own configuration: what the operator admits, BentoML
takes with the value it meant; what it refuses, BentoML would have refused when the server starts (or
would have ignored)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from modeldeploy.api.errors import describe
from modeldeploy.api.v1alpha1 import BentoConfig
from modeldeploy.api.v1alpha1.bentoml import (
    BACKLOG,
    BOOL,
    FACTOR,
    FRACTION,
    INT,
    OPTIONS,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    RESERVED,
    TEXT,
    WORKERS,
    OptionType,
)
from modeldeploy.render.deployment import bento_config_overrides

pytestmark = pytest.mark.bento

SERVICE = "IrisClassifier"
# For each type: values it admits (and what BentoML must then hold), values it refuses.
VALID: dict[OptionType, list[tuple[str, Any]]] = {
    BOOL: [("true", True), ("false", False)],
    INT: [("-1", -1), ("0", 0), ("42", 42)],
    POSITIVE_INT: [("1", 1), ("64", 64)],
    BACKLOG: [("65", 65), ("2048", 2048)],
    POSITIVE_NUMBER: [("2", 2), ("2.5", 2.5), ("0.1", 0.1)],
    POSITIVE_FLOAT: [("10", 10.0), ("0.5", 0.5)],
    FRACTION: [("0", 0.0), ("0.25", 0.25), ("1", 1.0)],
    FACTOR: [("1.5", 1.5), ("2", 2.0)],
    WORKERS: [("cpu_count", "cpu_count"), ("3", 3)],
    TEXT: [("anything at all", "anything at all")],
}
INVALID: dict[OptionType, list[str]] = {
    BOOL: ["yes", "True", "1", "["],
    INT: ["1.5", "", "1e3"],
    POSITIVE_INT: ["0", "-1", "1.0", "["],
    BACKLOG: ["64", "0", "x"],
    POSITIVE_NUMBER: ["0", "0.0", "-2", "[", "1e3"],
    POSITIVE_FLOAT: ["0", "-0.5"],
    FRACTION: ["1.5", "-0.1"],
    FACTOR: ["1", "1.0", "0.5"],
    WORKERS: ["0", "cpu"],
}


def bentoml_config(options: dict[str, str]) -> dict[str, Any]:
    """BentoML's configuration, validated by its own schema, given the overrides the operator renders."""
    from bentoml._internal.configuration.containers import BentoMLConfiguration

    overrides = bento_config_overrides(BentoConfig(options=options))
    config: dict[str, Any] = BentoMLConfiguration(
        override_config_json=json.loads(json.dumps(overrides)), use_version=2
    ).config
    return config


def leaf(config: dict[str, Any], option: str) -> Any:
    node: Any = config["services"][SERVICE]
    for part in option.split("."):
        node = node[part]
    return node


def valid_values(kind: OptionType) -> list[tuple[str, Any]]:
    if kind.pattern is not None and kind.pattern.startswith("^(") and kind not in VALID:
        first = kind.pattern[2:].split("|", 1)[0].rstrip(")$")
        return [(first, first)]  # an enum: its first value
    return VALID[kind]


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_every_option_reaches_bentoml_with_its_value(option: str) -> None:
    for text, expected in valid_values(OPTIONS[option]):
        key = f"services.{SERVICE}.{option}"
        BentoConfig(options={key: text})  # admitted
        got = leaf(bentoml_config({key: text}), option)
        assert got == expected and type(got) is type(expected), (option, text, got)


@pytest.mark.parametrize("option", sorted(o for o, kind in OPTIONS.items() if kind in INVALID))
def test_what_the_table_refuses_bentoml_refuses_too(option: str) -> None:
    from bentoml.exceptions import BentoMLConfigException

    for text in INVALID[OPTIONS[option]]:
        key = f"services.{SERVICE}.{option}"
        assert refused({key: text}) == [f"options.{key}: must be {OPTIONS[option].description}"], text
        if OPTIONS[option] in (INT, POSITIVE_INT, BACKLOG, POSITIVE_NUMBER, POSITIVE_FLOAT, FRACTION, FACTOR, WORKERS):
            # Sent as text, as a value BentoML does not read, the server would not start.
            with pytest.raises(BentoMLConfigException):
                bentoml_config_raw({"services": {SERVICE: nested(option, text)}})


def nested(option: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    *parents, last = option.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return out


def bentoml_config_raw(overrides: dict[str, Any]) -> dict[str, Any]:
    from bentoml._internal.configuration.containers import BentoMLConfiguration

    config: dict[str, Any] = BentoMLConfiguration(override_config_json=overrides, use_version=2).config
    return config


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_bentoml_knows_every_option(option: str) -> None:
    """BentoML keeps a key it does not know as it is; only a key of its schema refuses a value of another type."""
    from bentoml.exceptions import BentoMLConfigException

    with pytest.raises(BentoMLConfigException):
        bentoml_config_raw({"services": {SERVICE: nested(option, {"not": "a leaf value"})}})


def test_an_option_bentoml_does_not_know_would_be_ignored_so_it_is_refused() -> None:
    typo = f"services.{SERVICE}.trafic.timeout"
    assert "trafic" in leaf_or_none(bentoml_config_raw({"services": {SERVICE: {"trafic": {"timeout": 3}}}}))
    [problem] = refused({typo: "3"})
    assert problem.startswith(f"options.{typo}: not a BentoML option this operator knows")


def leaf_or_none(config: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = config["services"][SERVICE]
    return found


@pytest.mark.parametrize("reserved", RESERVED)
def test_what_serving_rests_on_cannot_be_set(reserved: str) -> None:
    key = f"services.{SERVICE}.{reserved}"
    assert [p.split(": ", 1) for p in refused({key: "1"})] == [
        [
            f"options.{key}",
            "set by the operator: the model server serves plain HTTP on port 3000 with its request metrics",
        ]
    ]


def refused(options: dict[str, str]) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        BentoConfig(options=options)
    return describe(caught.value)
