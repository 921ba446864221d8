{{- define "cbo.name" -}}celery-backend-operator{{- end -}}
{{- define "cbo.labels" -}}
app.kubernetes.io/name: {{ include "cbo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
{{- define "cbo.selector" -}}
app.kubernetes.io/name: {{ include "cbo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- /* This installation's identity: a label value, "<release namespace>.<release name>". */ -}}
{{- define "cbo.installation" -}}
{{- printf "%s.%s" .Release.Namespace .Release.Name | trunc 63 | trimSuffix "-" | trimSuffix "." -}}
{{- end -}}
{{- /* Cluster-scoped names are per release, so releases can live side by side; the
ClusterRole also owns the operator's record, Lease and certificate Secret (uninstall removes
them). */ -}}
{{- define "cbo.clusterName" -}}
{{- printf "%s-%s-%s" (include "cbo.name" .) .Release.Namespace .Release.Name -}}
{{- end -}}
{{- /* The MutatingWebhookConfiguration that records this installation: one name for every
cluster-wide installation (so there is at most one), one per namespace otherwise. */ -}}
{{- define "cbo.webhookConfigName" -}}
{{- if .Values.watchNamespace -}}
{{- printf "%s.%s" (include "cbo.name" .) .Values.watchNamespace -}}
{{- else -}}
{{- include "cbo.name" . -}}
{{- end -}}
{{- end -}}
