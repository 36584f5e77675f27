"""The BentoML options `bentoConfig.options` may set: BentoML 1.4's configuration (v2), per service.

BentoML ignores a key it does not know (a typo is silently lost) and refuses a value of the wrong
type only when the server starts (a crash loop that names no field). So each option it reads is
listed here with its type; the same table gives the CRD's CEL rules (refused at admission), the
pydantic rules (refused by `modeldeploy render` and the operator) and the typed values the pods get
in BENTOML_CONFIG_OVERRIDES. tests/unit/test_bentoml_options.py checks the table against BentoML's
own configuration schema.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modeldeploy.api.rules import Rule, cel_string
from modeldeploy.api.v1alpha1.formats import map_rule

SERVICE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


@dataclass(frozen=True)
class OptionType:
    description: str
    # Anchored, in the subset of RE2 (CEL) and Python regular expressions that agree; None: any text.
    pattern: str | None
    convert: Callable[[str], Any]


def _number(text: str) -> int | float:
    return float(text) if "." in text else int(text)


BOOL = OptionType("true or false", r"^(true|false)$", lambda text: text == "true")
INT = OptionType("a whole number", r"^-?[0-9]{1,9}$", int)
POSITIVE_INT = OptionType("a whole number from 1", r"^[1-9][0-9]{0,8}$", int)
BACKLOG = OptionType("a whole number above 64", r"^(6[5-9]|[7-9][0-9]|[1-9][0-9]{2,8})$", int)
_POSITIVE = r"^([1-9][0-9]{0,8}(\.[0-9]{1,9})?|0?\.[0-9]{0,8}[1-9][0-9]{0,8})$"
POSITIVE_NUMBER = OptionType("a number above 0", _POSITIVE, _number)
POSITIVE_FLOAT = OptionType("a number above 0", _POSITIVE, float)
FRACTION = OptionType("a number from 0 to 1", r"^(0(\.[0-9]{1,9})?|1(\.0{1,9})?|\.[0-9]{1,9})$", float)
FACTOR = OptionType(
    "a number above 1", r"^(([2-9]|[1-9][0-9]{1,8})(\.[0-9]{1,9})?|1\.[0-9]{0,8}[1-9][0-9]{0,8})$", float
)
WORKERS = OptionType(
    "cpu_count or a whole number from 1", r"^(cpu_count|[1-9][0-9]{0,8})$", lambda t: t if t == "cpu_count" else int(t)
)
TEXT = OptionType("text", None, str)


def one_of(*values: str) -> OptionType:
    return OptionType(f"one of {', '.join(values)}", "^(" + "|".join(values) + ")$", str)


# Per service: services.<Service>.<option>.
OPTIONS: dict[str, OptionType] = {
    "batching.enabled": BOOL,
    "batching.max_batch_size": POSITIVE_INT,
    "batching.max_latency_ms": POSITIVE_INT,
    "resources.cpu": TEXT,
    "resources.memory": TEXT,
    "resources.gpu": POSITIVE_NUMBER,
    "resources.gpu_type": TEXT,
    "resources.tpu_type": TEXT,
    "workers": WORKERS,
    "threads": POSITIVE_INT,
    "traffic.timeout": POSITIVE_NUMBER,
    "traffic.max_concurrency": POSITIVE_INT,
    "traffic.concurrency": POSITIVE_INT,
    "traffic.external_queue": BOOL,
    "backlog": BACKLOG,
    "max_runner_connections": POSITIVE_INT,
    "runner_connection.max_requests": POSITIVE_INT,
    "runner_connection.max_age": POSITIVE_FLOAT,
    "metrics.duration.min": POSITIVE_FLOAT,
    "metrics.duration.max": POSITIVE_FLOAT,
    "metrics.duration.factor": FACTOR,
    "logging.access.enabled": BOOL,
    "logging.access.request_content_length": BOOL,
    "logging.access.request_content_type": BOOL,
    "logging.access.response_content_length": BOOL,
    "logging.access.response_content_type": BOOL,
    "logging.access.format.trace_id": TEXT,
    "logging.access.format.span_id": TEXT,
    "http.cors.enabled": BOOL,
    "http.cors.access_control_allow_origins": TEXT,
    "http.cors.access_control_allow_origin_regex": TEXT,
    "http.cors.access_control_allow_credentials": BOOL,
    "http.cors.access_control_allow_headers": TEXT,
    "http.cors.access_control_allow_methods": TEXT,
    "http.cors.access_control_max_age": INT,
    "http.cors.access_control_expose_headers": TEXT,
    "http.response.trace_id": BOOL,
    "runner_probe.enabled": BOOL,
    "runner_probe.timeout": INT,
    "runner_probe.period": INT,
    "monitoring.enabled": BOOL,
    "monitoring.type": TEXT,
    "tracing.exporter_type": one_of("zipkin", "jaeger", "otlp", "in_memory"),
    "tracing.sample_rate": FRACTION,
    "tracing.timeout": POSITIVE_INT,
    "tracing.max_tag_value_length": INT,
    "tracing.excluded_urls": TEXT,
    "tracing.zipkin.endpoint": TEXT,
    "tracing.jaeger.protocol": one_of("thrift", "grpc"),
    "tracing.jaeger.collector_endpoint": TEXT,
    "tracing.jaeger.thrift.agent_host_name": TEXT,
    "tracing.jaeger.thrift.agent_port": INT,
    "tracing.jaeger.thrift.udp_split_oversized_batches": BOOL,
    "tracing.jaeger.grpc.insecure": BOOL,
    "tracing.otlp.protocol": one_of("grpc", "http"),
    "tracing.otlp.endpoint": TEXT,
    "tracing.otlp.compression": one_of("gzip", "none", "deflate"),
    "tracing.otlp.http.certificate_file": TEXT,
    "tracing.otlp.grpc.insecure": BOOL,
}
# What the serving contract rests on: plain HTTP on port 3000 on every address (probes, the Service),
# and the request metrics canary analysis reads.
RESERVED = ("http.host", "http.port", "http.proxy_port", "ssl", "grpc", "metrics.enabled", "metrics.namespace")
# Service-level sections: BentoML reads services.<section> as settings for every service, not as a service.
SECTIONS = tuple(sorted({key.split(".", 1)[0] for key in (*OPTIONS, *RESERVED)}))

MAX_OPTIONS = 64
MAX_VALUE_LENGTH = 1024


def _alternatives(keys: Any) -> str:
    return "(" + "|".join(re.escape(key) for key in sorted(keys)) + ")"


_SERVICE = SERVICE_NAME_PATTERN.strip("^$")
_SECTION_AS_SERVICE = r"^services\." + _alternatives(SECTIONS) + r"\."


def keys_pattern(options: Any) -> str:
    return r"^services\." + _SERVICE + r"\." + _alternatives(options) + "$"


KNOWN_PATTERN = keys_pattern(OPTIONS)
RESERVED_PATTERN = r"^services\." + _SERVICE + r"\." + _alternatives(RESERVED) + r"(\..*)?$"


def option_type(key: str) -> OptionType | None:
    """The type of services.<Service>.<option>, None when it is not an option of the table."""
    if not re.fullmatch(KNOWN_PATTERN, key) or re.match(_SECTION_AS_SERVICE, key):
        return None
    return OPTIONS[key.split(".", 2)[2]]


def typed_value(key: str, text: str) -> Any:
    """The value as BentoML reads it (true -> True, 8 -> 8); text for an option outside the table."""
    kind = option_type(key)
    return text if kind is None else kind.convert(text)


def _known(key: str) -> bool:
    return option_type(key) is not None or re.fullmatch(RESERVED_PATTERN, key) is not None


def _reserved(key: str) -> bool:
    return re.fullmatch(RESERVED_PATTERN, key) is not None


def _rules() -> tuple[Rule, ...]:
    known, reserved = cel_string(KNOWN_PATTERN), cel_string(RESERVED_PATTERN)
    section = cel_string(_SECTION_AS_SERVICE)
    rules = [
        map_rule(
            "bentoConfig.options",
            f"!k.matches({known}) && !k.matches({reserved}) || k.matches({section})",
            lambda k, _: not _known(k) or re.match(_SECTION_AS_SERVICE, k) is not None,
            "not a BentoML option this operator knows: keys are services.<Service>.<option>, for example "
            "services.IrisClassifier.traffic.timeout (BentoML would ignore a key it does not know)",
        ),
        map_rule(
            "bentoConfig.options",
            f"k.matches({reserved})",
            lambda k, _: _reserved(k),
            "set by the operator: the model server serves plain HTTP on port 3000 with its request metrics",
        ),
    ]
    by_type: dict[OptionType, list[str]] = {}
    for option, kind in OPTIONS.items():
        if kind.pattern is not None:
            by_type.setdefault(kind, []).append(option)
    for kind, options in by_type.items():
        keys, pattern = keys_pattern(options), kind.pattern
        assert pattern is not None
        rules.append(
            map_rule(
                "bentoConfig.options",
                f"k.matches({cel_string(keys)}) && !self[k].matches({cel_string(pattern)})",
                _mistyped(keys, pattern),
                f"must be {kind.description}",
            )
        )
    return tuple(rules)


def _mistyped(keys: str, pattern: str) -> Callable[[str, str], bool]:
    def bad(key: str, value: str) -> bool:
        return re.fullmatch(keys, key) is not None and re.fullmatch(pattern, value) is None

    return bad


OPTION_RULES = _rules()
