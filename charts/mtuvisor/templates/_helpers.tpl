{{/* The chart's name, or nameOverride. */}}
{{- define "mtuvisor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's prefix for object names: fullnameOverride, else the
release name, with the chart's name added when the release name lacks it. */}}
{{- define "mtuvisor.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 58 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 58 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 58 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The node agent's objects: the DaemonSet, its Service and monitors. */}}
{{- define "mtuvisor.node" -}}
{{- printf "%s-node" (include "mtuvisor.fullname" .) -}}
{{- end -}}

{{/* What selects the agent's pods; never changes between upgrades. */}}
{{- define "mtuvisor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mtuvisor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node-agent
{{- end -}}

{{- define "mtuvisor.labels" -}}
{{ include "mtuvisor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "mtuvisor.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The scrape job's name, which the alerts select on. */}}
{{- define "mtuvisor.job" -}}
{{- include "mtuvisor.node" . -}}
{{- end -}}

{{/* Prometheus Operator relabelings shared by both monitors: the node a
series comes from, and one job name whichever monitor scrapes it. */}}
{{- define "mtuvisor.relabelings" -}}
- sourceLabels: [__meta_kubernetes_pod_node_name]
  targetLabel: node
- targetLabel: job
  replacement: {{ include "mtuvisor.job" . }}
{{- end -}}
