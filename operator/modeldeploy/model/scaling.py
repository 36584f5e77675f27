"""Autoscaling on what a model server serves: the KEDA ScaledObject kind and the PromQL it scales on.

cpu and memory go to a HorizontalPodAutoscaler; a request metric (requestsPerSecond,
inFlightRequests, from BentoML's bentoml_service_request_* series) needs KEDA, whose Prometheus
trigger asks the query below and keeps its value per replica at the target. Only the stable
revision's pods are counted: the ScaledObject scales the stable Deployment, and a canary's share
of traffic is not its load.
"""

from __future__ import annotations

from modeldeploy.api.v1alpha1 import ModelDeployment, PrometheusSource

SCALED_OBJECT_API_VERSION = "keda.sh/v1alpha1"
SCALED_OBJECT_KIND = "ScaledObject"
# BentoML counts its health endpoints in its request metrics; kubelet probes are not load.
NOT_LOAD = 'endpoint!~"/(livez|readyz|healthz|metrics)"'
# The window requestsPerSecond is averaged over.
RATE_WINDOW = "1m"


def uses_keda(md: ModelDeployment) -> bool:
    """Whether the spec's autoscaling needs a KEDA ScaledObject (it names a request metric)."""
    return md.spec.autoscaling is not None and md.spec.autoscaling.request_based


def load_query(metric: str, source: PrometheusSource, namespace: str, revision: str) -> str:
    """The PromQL of a request metric over a revision's pods: the total, which KEDA divides by replicas."""
    selector = f'{{{source.namespace_label}="{namespace}",{source.revision_label}="{revision}",{NOT_LOAD}}}'
    if metric == "requestsPerSecond":
        return f"sum(rate(bentoml_service_request_total{selector}[{RATE_WINDOW}]))"
    if metric == "inFlightRequests":
        return f"sum(bentoml_service_request_in_progress{selector})"
    raise ValueError(f"not a request metric: {metric}")
