"""What a platform team lets ModelDeployment authors ask of the operator: the operator's policy.

Set with `modeldeploy run` flags (the chart's `policy` values). The operator refuses a spec that
asks for more with `Degraded: NotAllowed` naming the field; where a rule needs no cluster state the
chart also installs it as a ValidatingAdmissionPolicy (`admission_rules`, checked against the chart
by tests/unit/test_policy.py), so the API server refuses such a spec at admission.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from modeldeploy.api.rules import cel_string

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Policy:
    allowed_service_types: tuple[str, ...] = SERVICE_TYPES
    allow_service_account_name: bool = True
    # Base URLs analysis may query (scheme, host, port, path prefix); empty: any the API admits.
    metrics_allow: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        unknown = set(self.allowed_service_types) - set(SERVICE_TYPES)
        if unknown or not self.allowed_service_types:
            raise ValueError(f"allowed Service types must be some of {', '.join(SERVICE_TYPES)}, not {unknown or '{}'}")
        for allowed in self.metrics_allow:
            if _base(allowed) is None:
                raise ValueError(f"{allowed!r} is not a base URL such as http://prometheus.monitoring:9090")

    def metrics_allowed(self, address: str) -> bool:
        return not self.metrics_allow or any(_within(address, allowed) for allowed in self.metrics_allow)

    # Each rule's words, for the operator's condition and the admission policy's message alike.

    def service_type_refused(self, service_type: str) -> str | None:
        if service_type in self.allowed_service_types:
            return None
        return f"spec.service.type: {service_type} {self._service_types_note}"

    @property
    def _service_types_note(self) -> str:
        return f"is not allowed in this cluster (allowed: {', '.join(sorted(self.allowed_service_types))})"

    def service_account_refused(self, name: str | None) -> str | None:
        return None if name is None or self.allow_service_account_name else _SERVICE_ACCOUNT_REFUSED

    def metrics_refused(self, address: str, field: str = "spec.rollout.analysis.prometheus.address") -> str | None:
        if self.metrics_allowed(address):
            return None
        return (
            f"{field}: {address} is not a metrics endpoint this cluster's operator "
            f"may query (allowed: {', '.join(self.metrics_allow)})"
        )

    def admission_rules(self) -> list[tuple[str, str]]:
        """(CEL expression, CEL message expression) of the rules a ValidatingAdmissionPolicy enforces."""
        rules = []
        if set(self.allowed_service_types) != set(SERVICE_TYPES):
            allowed = sorted(self.allowed_service_types)
            rules.append(
                (
                    f"!has(object.spec.service) || object.spec.service.type in {allowed}",
                    "'spec.service.type: ' + object.spec.service.type + ' ' + " + cel_string(self._service_types_note),
                )
            )
        if not self.allow_service_account_name:
            rules.append(("!has(object.spec.serviceAccountName)", cel_string(_SERVICE_ACCOUNT_REFUSED)))
        return rules


_SERVICE_ACCOUNT_REFUSED = (
    "spec.serviceAccountName: not allowed in this cluster: model servers run as the default ServiceAccount"
)


def _base(url: str) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, path without trailing /) of a base URL; None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    return parts.scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[parts.scheme], parts.path.rstrip("/")


def _within(address: str, allowed: str) -> bool:
    """Whether address is the allowed base URL or under its path (compared by parts, never as text)."""
    a, b = _base(address), _base(allowed)
    if a is None or b is None or a[:3] != b[:3]:
        return False
    return not b[3] or a[3] == b[3] or a[3].startswith(b[3] + "/")
