{{/*
Names are fixed, not derived from the release: one operator runs per cluster (it
owns a cluster-scoped CRD), and the raw manifests in manifests/operator use the
same names, so either install is found the same way.
*/}}
{{- define "driftline.name" -}}driftline-operator{{- end -}}

{{- define "driftline.labels" -}}
app.kubernetes.io/name: driftline-operator
app.kubernetes.io/part-of: driftline
app.kubernetes.io/component: operator
{{ include "driftline.helmLabels" . }}
{{- end -}}

{{- define "driftline.helmLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "driftline.selectorLabels" -}}
app.kubernetes.io/name: driftline-operator
{{- end -}}

{{- define "driftline.tag" -}}{{ .Values.image.tag | default .Chart.AppVersion }}{{- end -}}

{{- define "driftline.operatorImage" -}}
{{- if .Values.image.operatorDigest -}}
{{ .Values.image.operator }}@{{ .Values.image.operatorDigest }}
{{- else -}}
{{ .Values.image.operator }}:{{ include "driftline.tag" . }}
{{- end -}}
{{- end -}}

{{/* The restricted Pod Security Standard, as the operator's builders write it. */}}
{{- define "driftline.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "driftline.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
  - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
RBAC rules: what driftline.operator.builders.install generates from the table of
kinds the operator writes (driftline/operator/kinds.py). tests/deploy checks that
the chart renders exactly those rules; change both together.
*/}}
{{- define "driftline.namespacedRules" -}}
# kopf watches DynamicModels and keeps its progress in their annotations.
- apiGroups: [driftline.io]
  resources: [dynamicmodels]
  verbs: [get, list, watch, patch]
- apiGroups: [driftline.io]
  resources: [dynamicmodels/status]
  verbs: [get, patch]
# Children name their DynamicModel with blockOwnerDeletion.
- apiGroups: [driftline.io]
  resources: [dynamicmodels/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# Credential Secrets are read by name, never listed or watched.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# Pods are listed, never written: why a part is not available goes in status.
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# Children: listed (to prune), applied (server-side apply creates), deleted when the
# spec no longer asks for them. The trainer's checkpoint claim is never deleted.
- apiGroups: [""]
  resources: [configmaps, serviceaccounts, services]
  verbs: [list, create, patch, delete]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [list, create, patch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [list, create, patch, delete]
# The import Job of `spec.model.initial`; the retrain CronJob of `training.mode: scheduled`.
- apiGroups: [batch]
  resources: [cronjobs, jobs]
  verbs: [list, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, create, patch, delete]
- apiGroups: [keda.sh]
  resources: [scaledobjects, triggerauthentications]
  verbs: [list, create, patch, delete]
- apiGroups: [http.keda.sh]
  resources: [httpscaledobjects]
  verbs: [list, create, patch, delete]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors]
  verbs: [list, create, patch, delete]
{{- end -}}

{{- define "driftline.clusterRules" -}}
- apiGroups: [karpenter.sh]
  resources: [nodepools]
  verbs: [list, create, patch, delete]
{{- end -}}

{{/* Endpoints of the dev-mode servers, for NOTES and the e2e sample. */}}
{{- define "driftline.dev.host" -}}
{{ printf "driftline-%s.%s.svc.cluster.local" .name .ctx.Release.Namespace }}
{{- end -}}

{{/* A dev-mode server's image: dev.<name>.image as it is when it names a tag or a
digest, else with the chart's tag (the operator's). */}}
{{- define "driftline.dev.image" -}}
{{- $image := index .ctx.Values.dev .name "image" -}}
{{- if regexMatch "(:[^/:@]+|@sha256:[0-9a-f]{64})$" $image -}}
{{ $image }}
{{- else -}}
{{ $image }}:{{ include "driftline.tag" .ctx }}
{{- end -}}
{{- end -}}

{{- define "driftline.dev.labels" -}}
app.kubernetes.io/name: driftline-{{ .name }}
app.kubernetes.io/part-of: driftline
app.kubernetes.io/component: dev-{{ .name }}
{{ include "driftline.helmLabels" .ctx }}
{{- end -}}

{{- define "driftline.monitoringLabels" -}}
app.kubernetes.io/name: driftline-monitoring
app.kubernetes.io/part-of: driftline
app.kubernetes.io/component: monitoring
{{ include "driftline.helmLabels" . }}
{{- end -}}
