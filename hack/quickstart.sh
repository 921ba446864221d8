#!/usr/bin/env bash
# Quick start on a fresh machine: builds what it needs, starts the local control plane and a Redis,
# installs the CRD, runs the operator, applies the Redis example, shows it going Ready with the URI
# Secret (password masked), and proves that URI with a real Celery round trip against that Redis.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. hack/versions.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CBO_CACHE/target}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "1/7 local control plane (etcd + kube-apiserver + kube-controller-manager)"
bash hack/cluster.sh up
eval "$(bash hack/cluster.sh env)"

say "2/7 build celery-backend-operator"
cargo build --quiet --locked
BIN=$CARGO_TARGET_DIR/debug/celery-backend-operator

say "3/7 a Redis on 127.0.0.1:6379 with the example's password"
if ! command -v redis-server >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi
PW=$(sed -n "s/^  password: '\(.*\)'$/\1/p" examples/redis-secret.yaml)
RDIR=$CBO_CACHE/quickstart-redis; mkdir -p "$RDIR"
if ! redis-cli -h 127.0.0.1 -p 6379 --no-auth-warning -a "$PW" ping 2>/dev/null | grep -q PONG; then
  redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes \
    --pidfile "$RDIR/redis.pid" --logfile "$RDIR/redis.log" --requirepass "$PW"
  for _ in $(seq 1 50); do redis-cli -p 6379 --no-auth-warning -a "$PW" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
fi
echo "redis: $(redis-cli -p 6379 --no-auth-warning -a "$PW" ping)"

say "4/7 install the CRD and run the operator (log: $CBO_CACHE/quickstart-operator.log)"
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
# `kubectl wait` fails at once on an object whose status has no conditions yet: retry it.
wait_cond() {
  local end=$((SECONDS + 60))
  while [ $SECONDS -lt $end ]; do kubectl wait --timeout=10s "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  kubectl wait --timeout=10s "$@"
}
wait_cond --for=condition=Established -f crds/
OPPID=$CBO_CACHE/quickstart-operator.pid
if [ -f "$OPPID" ] && kill -0 "$(cat "$OPPID")" 2>/dev/null; then kill "$(cat "$OPPID")"; sleep 0.5; fi
nohup "$BIN" run --metrics-addr 127.0.0.1:18080 \
  --webhook-addr 127.0.0.1:19443 --webhook-url https://127.0.0.1:19443 --lease-namespace default >"$CBO_CACHE/quickstart-operator.log" 2>&1 &
echo $! >"$OPPID"
echo "operator pid $(cat "$OPPID")"

say "5/7 apply examples/redis.yaml and wait for Ready"
kubectl create namespace celery-demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -n celery-demo -f examples/redis-secret.yaml -f examples/redis.yaml
wait_cond -n celery-demo --for=condition=Ready crb/orders-redis && echo "celeryresultbackend.celery.dev/orders-redis condition met"
kubectl get crb -n celery-demo
SECRET=$(kubectl get crb -n celery-demo orders-redis -o jsonpath='{.status.uriSecretRef.name}')
URI=$(kubectl get secret -n celery-demo "$SECRET" -o jsonpath='{.data.CELERY_RESULT_BACKEND}' | base64 -d)
echo "Secret $SECRET, key CELERY_RESULT_BACKEND (password masked):"
echo "  $(echo "$URI" | sed -E 's#(://[^:/@]*:)[^@]*@#\1****@#')"

say "6/7 a real Celery $CELERY_VERSION stores and reads a result through that URI"
PY=$(bash hack/python-env.sh)
CELERY_RESULT_BACKEND="$URI" "$PY" - <<'PY'
import os, uuid
from celery import Celery
app = Celery("quickstart", result_backend=os.environ["CELERY_RESULT_BACKEND"], set_as_current=False)
tid = str(uuid.uuid4())
app.backend.store_result(tid, {"hello": "celery"}, "SUCCESS")
meta = app.backend.get_task_meta(tid)
print(f"stored and read back task {tid}: status={meta['status']} result={meta['result']}")
assert meta["result"] == {"hello": "celery"}
PY

say "7/7 a worker Deployment gets the URI injected by reference"
kubectl apply -n celery-demo -f examples/celery-worker-deployment.yaml
for _ in $(seq 1 60); do
  POD=$(kubectl get pods -n celery-demo -l app=orders-worker -o json | python3 -c '
import json, sys
for p in json.load(sys.stdin)["items"]:
    env = p["spec"]["containers"][0].get("env", [])
    if any(e["name"] == "CELERY_RESULT_BACKEND" for e in env):
        print(p["metadata"]["name"]); break')
  [ -n "$POD" ] && break
  sleep 1
done
[ -n "$POD" ] || { echo "no injected worker Pod after 60 s" >&2; exit 1; }
echo "Pod $POD (created by the ReplicaSet controller; no kubelet here, so it stays Pending):"
kubectl get pod -n celery-demo "$POD" -o jsonpath='{range .spec.containers[0].env[*]}  {.name} <- secret {.valueFrom.secretKeyRef.name}, key {.valueFrom.secretKeyRef.key}{"\n"}{end}'
kubectl get pod -n celery-demo "$POD" -o jsonpath='  annotation celery.dev/result-backend-checksum={.metadata.annotations.celery\.dev/result-backend-checksum}{"\n"}'
kubectl get crb -n celery-demo orders-redis -o jsonpath='  backend status: Injected={.status.conditions[?(@.type=="Injected")].status} ({.status.conditions[?(@.type=="Injected")].message}){"\n"}'

echo
echo "The operator keeps running (pid $(cat "$OPPID")); stop it with: kill $(cat "$OPPID")"
