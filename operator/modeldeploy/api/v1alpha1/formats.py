"""String formats of the API: names as Kubernetes validates them, quantities, image references.

Each pattern is written once and used by both the CRD schema (the API server) and pydantic, in the
subset of regular expressions RE2 (CEL, OpenAPI) and Python agree on. A name the API server would
refuse in a child, or that could smuggle a path (`../x`), is refused here, in the ModelDeployment.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, Field, WithJsonSchema

from modeldeploy.api.rules import Rule, cel_string

# RFC 1123 subdomain: Secrets, ConfigMaps, ServiceAccounts, PriorityClasses, claims, Gateways.
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# RFC 1123 label: namespaces.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A label or annotation key: an optional DNS subdomain prefix, a name of at most 63 characters.
QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
# An extended resource (a GPU): a name with a domain, as the device plugin registers it.
EXTENDED_RESOURCE_PATTERN = (
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)

DNSSubdomain = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
DNSLabel = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]


def first_key(entries: Mapping[str, Any], bad: Callable[[str, Any], bool]) -> str:
    """The first key of a map whose entry is wrong: where a rule over the whole map names the problem."""
    return next((k for k, v in entries.items() if bad(k, v)), "")


def matches(pattern: str, text: object) -> bool:
    return isinstance(text, str) and re.fullmatch(pattern, text) is not None


def map_rule(name: str, cel_bad: str, bad: Callable[[str, Any], bool], message: str) -> Rule:
    """A rule no entry of the map `name` may break: CEL `cel_bad` over key k (and self[k]), Python `bad` alike.

    Both sides name the first offending key: the API server in its message, pydantic in the field path.
    """
    return Rule(
        cel=f"!self.exists(k, {cel_bad})",
        message=message,
        cel_message=f"{cel_string(name + '.')} + self.filter(k, {cel_bad})[0] + ': ' + {cel_string(message)}",
        locate=lambda m: first_key(m, bad),
        check=lambda m: not any(bad(k, v) for k, v in m.items()),
    )


def labels_rule(what: str, *, values: bool) -> Rule:
    """Keys (and values) of a map that becomes labels or annotations of a child."""
    key_ok = f"k.matches({cel_string(QUALIFIED_NAME_PATTERN)})"
    value_ok = f" && self[k].matches({cel_string(LABEL_VALUE_PATTERN)})" if values else ""

    def bad(k: str, v: Any) -> bool:
        return not matches(QUALIFIED_NAME_PATTERN, k) or (values and not matches(LABEL_VALUE_PATTERN, v))

    message = f"{what} keys must be qualified names (an optional DNS prefix and /, then up to 63 of A-Za-z0-9-_.)"
    if values:
        message += " and values label values (at most 63 of the same, alphanumeric at both ends)"
    return map_rule(what, f"!({key_ok}{value_ok})", bad, message)


# --- quantities -------------------------------------------------------------------

# Kubernetes resource.Quantity as the core API's OpenAPI schema writes it, without a minus sign:
# no request or limit of a model server can be negative.
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
    r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
QUANTITY_MAX_LENGTH = 64
MAX_INTEGER_QUANTITY = 10**15
_SUFFIX = {
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1)},
    **{s: Decimal(10) ** (3 * (i + 1)) for i, s in enumerate("kMGTPE")},
}


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, str) and (len(value) > QUANTITY_MAX_LENGTH or not re.fullmatch(QUANTITY_PATTERN, value)):
        raise ValueError(f"{value!r} is not a Kubernetes quantity such as 500m, 2Gi or 4 (never negative)")
    if isinstance(value, int) and not 0 <= value <= MAX_INTEGER_QUANTITY:
        raise ValueError(f"{value} is not a quantity between 0 and {MAX_INTEGER_QUANTITY}")
    return value


Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": MAX_INTEGER_QUANTITY},
                {"type": "string", "pattern": QUANTITY_PATTERN, "maxLength": QUANTITY_MAX_LENGTH},
            ]
        }
    ),
]


def quantity_value(quantity: int | str) -> Decimal:
    """The number a quantity stands for (2Gi -> 2147483648, 500m -> 0.5), to compare two of them."""
    if isinstance(quantity, int):
        return Decimal(quantity)
    match = re.fullmatch(r"\+?([0-9.]+)([eE][-+]?[0-9.]+|[KMGTPE]i|[numkMGTPE])?", quantity)
    if match is None:
        raise ValueError(f"{quantity!r} is not a quantity")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        if suffix in _SUFFIX:  # before the exponent: E and Ei are suffixes, 1E3 an exponent
            return Decimal(number) * _SUFFIX[suffix]
        return Decimal(number) * Decimal(10) ** Decimal(suffix[1:])
    except ArithmeticError as err:  # decimal's InvalidOperation, Overflow
        raise ValueError(f"{quantity!r} is not a quantity a Kubernetes object can hold") from err


# --- images -----------------------------------------------------------------------

IMAGE_PATTERN = r"^[^\s]+$"
IMAGE_MAX_LENGTH = 512
# A tag (never latest) or a digest on the last path segment: a re-pushed tag never changes a revision,
# so `latest` or no tag at all would never start a canary.
PINNED_IMAGE_PATTERN = (
    r"^([^/@\s]+/)*[^/:@\s]+((:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})(@sha256:[a-f0-9]{64})?|@sha256:[a-f0-9]{64})$"
)
LATEST_PATTERN = r":latest$"


def pinned(image: str) -> bool:
    return re.fullmatch(PINNED_IMAGE_PATTERN, image) is not None and re.search(LATEST_PATTERN, image) is None


def image_rule(field: str) -> Rule:
    """The rule for a field holding an image reference (`image`, `runtimeImage`)."""
    cel = f"self.{field}"
    return Rule(
        cel=(
            f"!has({cel}) || ({cel}.matches({cel_string(PINNED_IMAGE_PATTERN)}) && "
            f"!{cel}.matches({cel_string(LATEST_PATTERN)}))"
        ),
        message=(
            f"{field} must name a version: name:tag (not latest) or name@sha256:<digest>; an untagged or "
            "latest image never starts a canary when it is pushed again"
        ),
        field_path=f".{field}",
        check=lambda b: getattr(b, _snake(field)) is None or pinned(getattr(b, _snake(field))),
    )


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)
