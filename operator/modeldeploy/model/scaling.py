"""Autoscaling on what a model server serves: the KEDA ScaledObject kind and the PromQL it scales on.

cpu and memory go to a HorizontalPodAutoscaler; a request metric (requestsPerSecond,
inFlightRequests, from BentoML's bentoml_service_request_* series) needs KEDA, whose Prometheus
trigger asks the query below and keeps its value per replica at the target.

The query counts every pod of the ModelDeployment (its name label), not the stable revision's: a
revision's query would change at each promotion, KEDA would rewrite its HorizontalPodAutoscaler, and
the new stable revision's series, which carried only the canary's share until then, would read as
a fraction of the load: measured, a model at 4 replicas under 20 requests per second went to 1 the
moment its canary was promoted. Counted whole, the load carries on through a promotion unchanged;
while a canary runs, the stable is sized for the canary's share too (over-provisioned by at most
that share, the safe side).
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


def load_query(metric: str, source: PrometheusSource, namespace: str, name: str) -> str:
    """The PromQL of a request metric over a ModelDeployment's pods: the total, which KEDA divides by replicas."""
    selector = f'{{{source.namespace_label}="{namespace}",{source.name_label}="{name}",{NOT_LOAD}}}'
    if metric == "requestsPerSecond":
        return f"sum(rate(bentoml_service_request_total{selector}[{RATE_WINDOW}]))"
    if metric == "inFlightRequests":
        return f"sum(bentoml_service_request_in_progress{selector})"
    raise ValueError(f"not a request metric: {metric}")
