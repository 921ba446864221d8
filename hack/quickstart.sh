#!/usr/bin/env bash
# Quick start on a fresh machine: builds what it needs, starts the local cluster (control plane and
# a real node), builds the images (the operator from the Dockerfile, a Celery worker, Redis), installs
# the operator with its Helm chart, applies examples/managed-redis.yaml unchanged, and ends with a
# Celery worker Pod storing a task's result in the Redis the operator provisioned. The operator
# serves namespace celery-demo only (installation cbo-system.cbo), so the tests run beside it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. hack/versions.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CBO_CACHE/target}
t0=$(date +%s)
say() { printf '\n\033[1m== %s (%ss)\033[0m\n' "$*" "$(( $(date +%s) - t0 ))"; }
NS=celery-demo
SYS=cbo-system
# Pods run on the local node only in namespaces that tolerate its taint (see README).
TOLERATE='[{"key": "node.cbo.dev/local", "operator": "Exists"}]'

say "1/6 local cluster: etcd, kube-apiserver, kube-controller-manager and a node (containerd, kubelet, kube-proxy, CoreDNS)"
bash hack/cluster.sh up
eval "$(bash hack/cluster.sh env)"

say "2/6 build celery-backend-operator, then the images (operator from the Dockerfile, Celery worker, Redis)"
cargo build --quiet --locked
bash hack/images.sh build
eval "$(bash hack/images.sh env)"

say "3/6 install the operator with Helm (image $CBO_OPERATOR_IMAGE), serving namespace $NS only"
for ns in $SYS $NS; do
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl annotate namespace "$ns" --overwrite "scheduler.alpha.kubernetes.io/defaultTolerations=$TOLERATE" >/dev/null
done
helm upgrade --install cbo charts/celery-backend-operator -n $SYS \
  --set image.repository="${CBO_OPERATOR_IMAGE%:*}" --set image.tag="${CBO_OPERATOR_IMAGE##*:}" \
  --set image.pullPolicy=Never \
  --set storeImages.redis="$CBO_STORE_IMAGE_REDIS" --set storeImages.postgresql="$CBO_STORE_IMAGE_POSTGRESQL" \
  --set watchNamespace=$NS \
  --wait --timeout 300s >/dev/null
kubectl get pods -n $SYS -o wide

say "4/6 apply examples/managed-redis.yaml: the operator provisions Redis"
kubectl apply -n $NS -f examples/managed-redis.yaml
# `kubectl wait` fails at once on an object whose status has no conditions yet: retry it.
wait_cond() {
  local end=$((SECONDS + 300))
  while [ $SECONDS -lt $end ]; do kubectl wait --timeout=10s "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  kubectl wait --timeout=10s "$@"
}
wait_cond -n $NS --for=condition=Ready crb/managed-redis
wait_cond -n $NS --for=condition=Healthy crb/managed-redis
SECRET=$(kubectl get crb -n $NS managed-redis -o jsonpath='{.status.uriSecretRef.name}')
URI=$(kubectl get secret -n $NS "$SECRET" -o jsonpath='{.data.CELERY_RESULT_BACKEND}' | base64 -d)
echo "URI Secret $SECRET, key CELERY_RESULT_BACKEND (password masked):"
echo "  $(echo "$URI" | sed -E 's#(://[^:/@]*:)[^@]*@#\1****@#')"

say "5/6 a broker and a Celery worker Deployment opted in to the backend"
kubectl apply -n $NS -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: broker}
spec:
  selector: {matchLabels: {app: broker}}
  template:
    metadata: {labels: {app: broker}}
    spec:
      containers:
      - name: redis
        image: $CBO_STORE_IMAGE_REDIS
        imagePullPolicy: Never
        command: [redis-server, --port, "6379", --protected-mode, "no", --save, "", --appendonly, "no"]
---
apiVersion: v1
kind: Service
metadata: {name: broker}
spec:
  selector: {app: broker}
  ports: [{port: 6379}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: celery-worker
  labels: {celery.dev/result-backend: managed-redis}
spec:
  selector: {matchLabels: {app: celery-worker}}
  template:
    metadata: {labels: {app: celery-worker}}
    spec:
      containers:
      - name: worker
        image: $CBO_WORKER_IMAGE
        imagePullPolicy: Never
        env: [{name: CELERY_BROKER_URL, value: "redis://broker:6379/0"}]
EOF
kubectl rollout status -n $NS deployment/broker --timeout=180s
for _ in $(seq 1 60); do
  # The operator marks the pod template (checksum.celery.dev/<backend>); the webhook injects the Pods.
  grep -q checksum.celery.dev/ <<<"$(kubectl get deployment -n $NS celery-worker -o jsonpath='{.spec.template.metadata.annotations}')" && break
  sleep 1
done
kubectl rollout status -n $NS deployment/celery-worker --timeout=180s
# The worker Pod from before the injection may still be shutting down, and a task it takes never
# reaches the result backend: wait until every worker Pod reads the injected URI.
for _ in $(seq 1 90); do
  kubectl get pods -n $NS -l app=celery-worker -o json | python3 -c '
import json, sys
pods = json.load(sys.stdin)["items"]
ok = pods and all(any(e["name"] == "CELERY_RESULT_BACKEND" for e in p["spec"]["containers"][0].get("env", [])) for p in pods)
sys.exit(0 if ok else 1)' && break
  sleep 1
done
# The Pod of the injected template (the first one, from before the injection, may still be going).
POD=$(kubectl get pods -n $NS -l app=celery-worker -o json | python3 -c '
import json, sys
for p in json.load(sys.stdin)["items"]:
    env = p["spec"]["containers"][0].get("env", [])
    if not p["metadata"].get("deletionTimestamp") and any(e["name"] == "CELERY_RESULT_BACKEND" for e in env):
        print(p["metadata"]["name"]); break')
echo "worker Pod $POD reads the URI from the Secret by reference:"
kubectl get pod -n $NS "$POD" -o jsonpath='{range .spec.containers[0].env[?(@.valueFrom)]}  {.name} <- secret {.valueFrom.secretKeyRef.name}, key {.valueFrom.secretKeyRef.key}{"\n"}{end}'

say "6/6 a client Job sends a task; the worker stores its result in the managed Redis"
kubectl delete job -n $NS quickstart-client --ignore-not-found >/dev/null
kubectl apply -n $NS -f - <<EOF
apiVersion: batch/v1
kind: Job
metadata: {name: quickstart-client}
spec:
  backoffLimit: 0
  template:
    metadata: {labels: {celery.dev/result-backend: managed-redis}}
    spec:
      restartPolicy: Never
      containers:
      - name: client
        image: $CBO_WORKER_IMAGE
        imagePullPolicy: Never
        env: [{name: CELERY_BROKER_URL, value: "redis://broker:6379/0"}]
        command:
        - python3
        - -c
        - |
          import os
          from celery import Celery
          app = Celery("quickstart", broker=os.environ["CELERY_BROKER_URL"], backend=os.environ["CELERY_RESULT_BACKEND"])
          r = app.send_task("cbo_tasks.add", args=[20, 22])
          value = r.get(timeout=120)
          print(f"task {r.id}: state={r.state} result={value} (stored by the worker in the managed Redis)")
EOF
kubectl wait -n $NS --for=condition=Complete job/quickstart-client --timeout=180s >/dev/null || {
  kubectl logs -n $NS job/quickstart-client; exit 1; }
echo
kubectl get crb,pods -n $NS
echo
kubectl logs -n $NS job/quickstart-client
echo
echo "Done in $(( $(date +%s) - t0 ))s."
echo "The operator keeps running as installation $SYS.cbo, serving namespace $NS only: the tests"
echo "(bash .ci/run) and a local 'celery-backend-operator run --dev --namespace <ns>' run beside it."
echo "Remove it: helm uninstall cbo -n $SYS; kubectl delete namespace $NS; bash hack/cluster.sh down"
