#!/usr/bin/env bash
# A real local Kubernetes cluster built from the Go module proxy and Debian packages, kept in a cache
# outside the repository: etcd + kube-apiserver + kube-controller-manager, and a node (hack/node.sh:
# containerd, kubelet, kube-proxy, kube-scheduler, CoreDNS, a volume provisioner). The API server
# listens on the node's bridge address, which Pods reach; etcd and the rest stay on 127.0.0.1.
#   hack/cluster.sh up     build (once) and start, or reuse the running cluster
#                          (CBO_NODE=0: control plane only, for the API-only tests)
#   hack/cluster.sh env    print KUBECONFIG and PATH exports (eval "$(hack/cluster.sh env)")
#   hack/cluster.sh down   stop exactly the processes `up` started
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/versions.sh"
STATE=${CBO_CLUSTER_DIR:-$CBO_CACHE/cluster}
PKI=$STATE/pki
LOGS=$STATE/logs
KCFG=$STATE/admin.kubeconfig
ETCD_PORT=${CBO_ETCD_PORT:-23790}
ETCD_PEER_PORT=${CBO_ETCD_PEER_PORT:-23800}
API_PORT=${CBO_API_PORT:-16443}
KCM_PORT=${CBO_KCM_PORT:-16257}
COMPONENTS="etcd kube-apiserver kube-controller-manager"
NODE=${CBO_NODE:-1}

log() { echo "cluster: $*" >&2; }

alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

api_ready() {
  curl -fsS --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://$CBO_NODE_IP:$API_PORT/readyz" >/dev/null 2>&1
}

wait_for() { # description seconds command...
  local what=$1 secs=$2 i; shift 2
  for ((i = 0; i < secs * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "timed out after ${secs}s waiting for $what; logs in $LOGS"
  for c in $COMPONENTS; do [ -f "$LOGS/$c.log" ] && { echo "--- $c.log (tail)" >&2; tail -n 15 "$LOGS/$c.log" >&2; }; done
  return 1
}

gen_certs() {
  command -v openssl >/dev/null || { log "openssl is required (apt-get install openssl)"; exit 1; }
  mkdir -p "$PKI"
  local tmp; tmp=$(mktemp -d)
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout "$tmp/ca.key" -out "$tmp/ca.crt" \
    -subj "/CN=celery-backend-operator-test-ca" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  sign() { # name subject extensions
    openssl req -newkey rsa:2048 -nodes -keyout "$tmp/$1.key" -out "$tmp/$1.csr" -subj "$2" 2>/dev/null
    openssl x509 -req -in "$tmp/$1.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" -CAcreateserial -sha256 \
      -days 3650 -out "$tmp/$1.crt" -extfile <(printf '%b' "$3") 2>/dev/null
    rm -f "$tmp/$1.csr"
  }
  sign apiserver "/CN=kube-apiserver" "subjectAltName=IP:127.0.0.1,IP:$CBO_NODE_IP,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment"
  sign admin "/O=system:masters/CN=admin" "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment"
  openssl genrsa -out "$tmp/sa.key" 2048 2>/dev/null
  openssl rsa -in "$tmp/sa.key" -pubout -out "$tmp/sa.pub" 2>/dev/null
  chmod 600 "$tmp"/*.key
  mv "$tmp"/* "$PKI"/ && rmdir "$tmp"
}

write_kubeconfig() {
  # Written to a temporary file and renamed: test processes that share this cluster read it while
  # another one runs `up` (a truncated file sends kubectl to localhost:8080).
  local tmp="$KCFG.tmp.$$"
  cat >"$tmp" <<KC
apiVersion: v1
kind: Config
clusters:
- name: cbo-local
  cluster:
    server: https://${CBO_NODE_IP}:${API_PORT}
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 "$PKI/admin.crt")
    client-key-data: $(base64 -w0 "$PKI/admin.key")
contexts:
- name: cbo-local
  context: {cluster: cbo-local, user: admin, namespace: default}
current-context: cbo-local
KC
  if cmp -s "$tmp" "$KCFG"; then rm -f "$tmp"; else mv -f "$tmp" "$KCFG"; fi
}

spawn() { # name command...
  local name=$1; shift
  nohup setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/$name.pid"
}

up() {
  local t0 t1 t2
  t0=$(date +%s)
  bash "$HERE/build-k8s.sh"
  [ "$NODE" = 0 ] || bash "$HERE/build-node.sh"
  t1=$(date +%s)
  mkdir -p "$STATE" "$LOGS"
  # Certificates from before the API server moved to the bridge address are re-issued.
  if [ ! -f "$PKI/ca.crt" ] || [ ! -f "$PKI/sa.key" ] || ! grep -q "IP Address:$CBO_NODE_IP" <<<"$(openssl x509 -in "$PKI/apiserver.crt" -noout -text 2>/dev/null)"; then
    down_quiet
    rm -rf "$PKI"
    gen_certs
  fi
  write_kubeconfig
  if alive etcd && alive kube-apiserver && alive kube-controller-manager && api_ready; then
    log "reusing the running control plane"
    [ "$NODE" = 0 ] || bash "$HERE/node.sh" up
    log "ready: export KUBECONFIG=$KCFG (build check $((t1 - t0))s, start $(( $(date +%s) - t1 ))s)"
    return 0
  fi
  down_quiet
  bash "$HERE/node.sh" net
  log "starting etcd v$ETCD_VERSION, kube-apiserver and kube-controller-manager v$K8S_VERSION on 127.0.0.1"
  # Test data only: a fresh etcd each start, no fsync. What the node ran and provisioned for the
  # old etcd's objects goes with it.
  bash "$HERE/node.sh" down
  rm -rf "$STATE/etcd" "$CBO_NODE_DIR/volumes"
  spawn etcd "$K8S_BIN/etcd" --name=cbo --data-dir="$STATE/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="cbo=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls="" \
    --unsafe-no-fsync=true --logger=zap --log-level=warn
  wait_for etcd 30 curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" -o /dev/null
  spawn kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address="$CBO_NODE_IP" --advertise-address="$CBO_NODE_IP" --secure-port="$API_PORT" \
    --cert-dir="$STATE/apiserver" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --authorization-mode=RBAC --allow-privileged=true \
    --enable-admission-plugins=PodTolerationRestriction \
    --kubelet-preferred-address-types=InternalIP \
    --kubelet-client-certificate="$PKI/admin.crt" --kubelet-client-key="$PKI/admin.key" \
    --audit-log-path="$LOGS/audit.log" --audit-policy-file="$HERE/audit-policy.yaml" \
    --audit-log-maxsize=200 --audit-log-maxbackup=1 \
    --v=1
  wait_for kube-apiserver 120 api_ready
  spawn kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$KCFG" --bind-address=127.0.0.1 --secure-port="$KCM_PORT" \
    --leader-elect=false --controllers='*' \
    --authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --v=1
  wait_for kube-controller-manager 60 curl -fsSk --max-time 2 "https://127.0.0.1:$KCM_PORT/healthz" -o /dev/null
  wait_for "the default namespace" 60 "$K8S_BIN/kubectl" --kubeconfig="$KCFG" get namespace default -o name
  [ "$NODE" = 0 ] || bash "$HERE/node.sh" up
  t2=$(date +%s)
  log "build check $((t1 - t0))s, start $((t2 - t1))s"
  log "ready: export KUBECONFIG=$KCFG"
}

down_quiet() {
  local c
  for c in kube-controller-manager kube-apiserver etcd; do
    if alive "$c"; then
      kill "$(cat "$STATE/$c.pid")" 2>/dev/null || true
      for _ in $(seq 1 50); do alive "$c" || break; sleep 0.1; done
      alive "$c" && kill -9 "$(cat "$STATE/$c.pid")" 2>/dev/null || true
    fi
    rm -f "$STATE/$c.pid"
  done
}

case "${1:-}" in
  up) up ;;
  down)
    bash "$HERE/node.sh" down
    down_quiet
    bash "$HERE/node.sh" net-down
    log "stopped"
    ;;
  env)
    echo "export KUBECONFIG=$KCFG"
    echo "export PATH=$K8S_BIN:\$PATH"
    echo "export CBO_CONTAINERD_SOCK=$CBO_CONTAINERD_SOCK"
    ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
