#!/usr/bin/env bash
# Smoke test of a running local cluster (hack/cluster/localcluster.py up):
# versions, kwok nodes Ready, a Deployment becoming available, GPU-aware
# scheduling, garbage collection and PodSecurity admission. Leaves nothing
# behind (it works in a namespace of its own and deletes it).
#
# Usage: hack/cluster/smoke.sh [cluster dir, default .cluster at the repo root]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="$(cd "${1:-$HERE/../../.cluster}" && pwd)"
export KUBECONFIG="$DIR/kubeconfig" PATH="$DIR/bin:$PATH"
# shellcheck source=hack/cluster/versions.env disable=SC1091
source "$HERE/versions.env"

NS="smoke-$$"
PR="pod-security.kubernetes.io"
fail() { printf 'smoke: FAIL: %s\n' "$*" >&2; exit 1; }
ok() { printf 'smoke: ok: %s\n' "$*"; }
cleanup() { kubectl delete namespace "$NS" "$NS-restricted" --ignore-not-found --wait=false >/dev/null 2>&1 || true; }
trap cleanup EXIT

# Wait up to $1 seconds for a command to succeed.
retry() {
    local seconds="$1"; shift
    local end=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || return 1
        sleep 0.5
    done
}

versions="$(kubectl version -o json |
    python3 -c 'import json, sys; v = json.load(sys.stdin); print(v["clientVersion"]["gitVersion"], v["serverVersion"]["gitVersion"])')"
[[ "$versions" == "$KUBERNETES_VERSION $KUBERNETES_VERSION" ]] || fail "kubectl, server versions: $versions; want $KUBERNETES_VERSION"
ok "server and kubectl $KUBERNETES_VERSION, $(helm version --short)"

not_ready="$(kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -v '=True$' || true)"
[[ -z "$not_ready" ]] || fail "nodes not Ready: $not_ready"
ok "nodes Ready: $(kubectl get nodes -o jsonpath='{.items[*].metadata.name}')"

kubectl create namespace "$NS" >/dev/null
retry 30 kubectl -n "$NS" get serviceaccount default || fail "no default ServiceAccount in $NS"
kubectl -n "$NS" apply -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: nginx:1.27, resources: {requests: {cpu: 500m, memory: 256Mi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: gpu-hog}
spec:
  containers:
  - {name: c, image: vllm/vllm-openai, resources: {limits: {nvidia.com/gpu: 4}}}
EOF
kubectl -n "$NS" rollout status deployment/web --timeout=60s >/dev/null || fail "deployment web not available"
available="$(kubectl -n "$NS" get deployment web -o jsonpath='{.status.availableReplicas}')"
[[ "$available" == 2 ]] || fail "availableReplicas=$available"
ready="$(kubectl -n "$NS" get pods -l app=web -o jsonpath='{range .items[*]}{.status.phase}/{.status.conditions[?(@.type=="Ready")].status}/{.status.containerStatuses[0].ready} {end}')"
[[ "$ready" == "Running/True/true Running/True/true " ]] || fail "web pods: $ready"
ok "deployment available (2/2), pods Running and Ready"

gpu_msg() { kubectl -n "$NS" get pod gpu-hog -o jsonpath='{.status.conditions[?(@.type=="PodScheduled")].message}'; }
gpu_unschedulable() { gpu_msg | grep -q 'Insufficient nvidia.com/gpu'; }
retry 30 gpu_unschedulable || fail "gpu-hog: $(gpu_msg)"
ok "pod asking for 4 GPUs Pending: $(gpu_msg | cut -c1-60)..."

kubectl -n "$NS" create configmap owner >/dev/null
uid="$(kubectl -n "$NS" get configmap owner -o jsonpath='{.metadata.uid}')"
kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: child
  ownerReferences: [{apiVersion: v1, kind: ConfigMap, name: owner, uid: "$uid"}]
EOF
kubectl -n "$NS" delete configmap owner >/dev/null
child_gone() { ! kubectl -n "$NS" get configmap child; }
retry 60 child_gone || fail "garbage collector did not remove configmap child"
ok "garbage collector removed a dependent of a deleted owner"

kubectl create namespace "$NS-restricted" >/dev/null
kubectl label namespace "$NS-restricted" "$PR/enforce=restricted" >/dev/null
retry 30 kubectl -n "$NS-restricted" get serviceaccount default || fail "no default ServiceAccount in $NS-restricted"
privileged='{"apiVersion":"v1","kind":"Pod","metadata":{"name":"priv"},"spec":{"containers":[{"name":"c","image":"busybox","securityContext":{"privileged":true}}]}}'
if err="$(echo "$privileged" | kubectl -n "$NS-restricted" apply -f - 2>&1)"; then
    fail "privileged pod admitted in a restricted namespace"
fi
[[ "$err" == *'violates PodSecurity "restricted'* ]] || fail "unexpected error: $err"
echo "$privileged" | kubectl -n "$NS" apply -f - >/dev/null || fail "privileged pod rejected outside restricted namespaces"
ok "PodSecurity: privileged pod rejected in a restricted namespace, admitted elsewhere"

echo "smoke: all checks passed"
