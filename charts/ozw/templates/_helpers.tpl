{{/* Names and labels: the Go chart's scheme, so a release keeps its objects' names. */}}
{{- define "ozw.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ozw.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "ozw.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "ozw.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ozw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ozw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ozw.labels" -}}
{{ include "ozw.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "ozw.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ozw.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ozw.apiKeySecretName" -}}
{{- if .Values.warp.apiKeySecret.create -}}
{{- default (printf "%s-api-key" (include "ozw.fullname" .)) .Values.warp.apiKeySecret.name -}}
{{- else -}}
{{- required "warp.apiKeySecret.name is required when warp.apiKeySecret.create=false" .Values.warp.apiKeySecret.name -}}
{{- end -}}
{{- end -}}

{{/* Where ozw serves /healthz and /metrics: metrics.port for Prometheus, else ozw.health.port; 0 = nowhere. */}}
{{- define "ozw.endpointPort" -}}
{{- if and .Values.metrics.enabled (eq .Values.metrics.exporter "prometheus") -}}
{{- .Values.metrics.port -}}
{{- else if .Values.ozw.health.enabled -}}
{{- .Values.ozw.health.port -}}
{{- else -}}
0
{{- end -}}
{{- end -}}

{{/*
The worker's config file: the Go worker's YAML (ozw reads it as it is), built as data.
kubernetesBackend.<value> becomes backend.kubernetes.<key> when set; the rest always.
*/}}
{{- define "ozw.configYaml" -}}
{{- $values := .Values.kubernetesBackend -}}
{{- $kube := dict
  "namespace" (default .Release.Namespace $values.namespace)
  "image_pull_policy" $values.imagePullPolicy
  "use_image_volumes" $values.useImageVolumes
  "unschedulable_timeout" (toString $values.unschedulableTimeout) -}}
{{- $whenSet := dict
  "defaultImage" "default_image" "preflightImage" "preflight_image"
  "sidecarImage" "sidecar_image" "setupCommand" "setup_command"
  "teardownCommand" "teardown_command" "extraLabels" "extra_labels"
  "extraAnnotations" "extra_annotations" "activeDeadlineSeconds" "active_deadline_seconds"
  "workspaceSizeLimit" "workspace_size_limit" "podTemplate" "pod_template"
  "preflightResources" "preflight_resources" -}}
{{- range $value, $key := $whenSet -}}
{{- with index $values $value -}}
{{- $_ := set $kube $key . -}}
{{- end -}}
{{- end -}}
{{- if and .Values.worker.cleanup $values.ttlSecondsAfterFinished -}}
{{- $_ := set $kube "ttl_seconds_after_finished" $values.ttlSecondsAfterFinished -}}
{{- end -}}
{{- $config := dict
  "worker_id" (required "worker.workerId is required" .Values.worker.workerId)
  "cleanup" .Values.worker.cleanup
  "max_concurrent_tasks" .Values.worker.maxConcurrentTasks
  "backend" (dict "kubernetes" $kube) -}}
{{- with .Values.worker.idleOnComplete -}}
{{- $_ := set $config "idle_on_complete" . -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
