{{- define "modeldeploy.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if or (contains .Chart.Name .Release.Name) (hasPrefix .Release.Name .Chart.Name) -}}
{{- /* release "modeldeploy" or "modeldeploy-operator": the chart's name says it all */ -}}
{{- ternary .Release.Name .Chart.Name (contains .Chart.Name .Release.Name) | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modeldeploy.serviceAccountName" -}}
{{- default (include "modeldeploy.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- /* One Lease per release: two releases in one namespace never share a leader. */ -}}
{{- define "modeldeploy.leaseName" -}}
{{- default (include "modeldeploy.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{- define "modeldeploy.labels" -}}
app.kubernetes.io/name: modeldeploy-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "modeldeploy.selectorLabels" -}}
app.kubernetes.io/name: modeldeploy-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* What the operator does to the objects it manages, in every namespace it watches. No wildcards.
Derived from the table of child kinds (operator/modeldeploy/k8s/children.py) and k8s/access.py:
tests/unit/test_child_kinds.py fails when the two disagree. */}}
{{- define "modeldeploy.namespacedRules" -}}
- apiGroups: ["modeldeploy.dev"]
  resources: ["modeldeployments"]
  verbs: ["get", "list", "watch", "patch"]
# Status is replaced whole (PUT), conditional on the resourceVersion the reconcile read.
- apiGroups: ["modeldeploy.dev"]
  resources: ["modeldeployments/status"]
  verbs: ["get", "update"]
# Owner references with blockOwnerDeletion on children.
- apiGroups: ["modeldeploy.dev"]
  resources: ["modeldeployments/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Optional kinds (their CRDs may be absent) are written and removed by name, never listed or watched: HTTPRoutes,
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "create", "patch", "delete"]
# KEDA ScaledObjects (autoscaling on request metrics), likewise by name.
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "create", "patch", "delete"]
# PodMonitors likewise, where the Prometheus Operator's CRDs are installed.
- apiGroups: ["monitoring.coreos.com"]
  resources: ["podmonitors"]
  verbs: ["get", "create", "patch", "delete"]
# Why pods of a ModelDeployment are not Ready (listed by label, only then).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Whether referenced objects exist, read by name, metadata only. Never Secrets: RBAC cannot limit a get
# to metadata; a missing Secret is reported from what the pods say.
- apiGroups: [""]
  resources: ["configmaps", "serviceaccounts", "persistentvolumeclaims"]
  verbs: ["get"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
