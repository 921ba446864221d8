{{- /* Rules on namespaced objects in the namespaces the operator watches. */ -}}
{{- define "cbo.watchedRules" -}}
- apiGroups: ["celery.dev"]
  resources: ["celeryresultbackends"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["celery.dev"]
  resources: ["celeryresultbackends/status"]
  verbs: ["get", "patch"]
# The release-workloads finalizer (held only while workloads carry an injection).
- apiGroups: ["celery.dev"]
  resources: ["celeryresultbackends/finalizers"]
  verbs: ["update"]
# URI Secrets and generated credentials are written; referenced credentials are read (their
# watch is metadata-only).
- apiGroups: [""]
  resources: ["secrets", "services"]
  verbs: ["get", "list", "watch", "create", "patch"]
# CA bundles referenced by tls.caConfigMapRef: read only (their watch is metadata-only).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apps"]
  resources: ["statefulsets", "deployments", "daemonsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["batch"]
  resources: ["cronjobs"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
{{- /* Rules in the operator's own namespace: its Lease and the webhook certificate Secret. */ -}}
{{- define "cbo.ownRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
{{- end -}}
{{- /* Cluster-scoped objects. */ -}}
{{- define "cbo.clusterRules" -}}
- apiGroups: ["celery.dev"]
  resources: ["celeryresultcleanuppolicies"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["celery.dev"]
  resources: ["celeryresultcleanuppolicies/status"]
  verbs: ["get", "patch"]
# Namespaces: the injection opt-out label (celery.dev/injection), watched for changes.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["admissionregistration.k8s.io"]
  resources: ["mutatingwebhookconfigurations"]
  verbs: ["get", "list", "watch", "create", "patch"]
{{- end -}}
