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
