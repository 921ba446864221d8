#!/usr/bin/env bash
# The node of the local cluster: containerd + runc + CNI bridge (Debian packages), kubelet,
# kube-proxy and kube-scheduler (built by build-node.sh), CoreDNS on the bridge address and
# rancher's local-path-provisioner for volume claims. Everything it writes lives under
# $CBO_NODE_DIR; all traffic stays on loopback, the bridge and the Pods' network namespaces.
#   hack/node.sh net     create the bridge (the API server binds its address; cluster.sh calls it)
#   hack/node.sh up      start the node against the running control plane
#   hack/node.sh down    stop exactly what `up` started: Pods, containers, processes, rules, bridge
# Called by hack/cluster.sh; not meant to be run on its own.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/versions.sh"
STATE=${CBO_CLUSTER_DIR:-$CBO_CACHE/cluster}
PKI=$STATE/pki
KCFG=$STATE/admin.kubeconfig
D=$CBO_NODE_DIR
LOGS=$D/logs
KUBECTL="$K8S_BIN/kubectl --kubeconfig=$KCFG"
SCHED_PORT=${CBO_SCHEDULER_PORT:-16259}
# Pods run on the node only in namespaces that tolerate this taint (the API server's
# PodTolerationRestriction plugin adds it from the namespace annotation below). The API-only tests'
# Pods therefore stay Pending, as on a cluster without nodes, and never pull images that do not exist.
TAINT_KEY=node.cbo.dev/local
NODE_COMPONENTS="containerd kubelet kube-proxy kube-scheduler coredns local-path-provisioner"

log() { echo "node: $*" >&2; }
alive() { [ -f "$D/$1.pid" ] && kill -0 "$(cat "$D/$1.pid")" 2>/dev/null; }
spawn() { # name command...
  local name=$1; shift
  nohup setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$D/$name.pid"
}
tails() {
  local c
  for c in $NODE_COMPONENTS; do
    [ -f "$LOGS/$c.log" ] && { echo "--- $c.log (tail)" >&2; tail -n 20 "$LOGS/$c.log" >&2; }
  done
}
wait_for() { # description seconds command...
  local what=$1 secs=$2 i; shift 2
  for ((i = 0; i < secs * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "timed out after ${secs}s waiting for $what; logs in $LOGS"
  tails
  return 1
}
need() { command -v "$1" >/dev/null || [ -x "$1" ] || { log "$1 is required: $2"; exit 1; }; }

# Debian packages the node runs on, installed when missing (as root, from the configured apt sources).
install_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} (apt)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null \
    || { log "cannot install ${missing[*]} from apt; the node needs them"; exit 1; }
}

preflight() {
  install_packages
  need containerd "apt-get install containerd"
  need ctr "apt-get install containerd"
  need runc "apt-get install runc"
  need /usr/lib/cni/bridge "apt-get install containernetworking-plugins"
  need iptables "apt-get install iptables"
  need conntrack "apt-get install conntrack"
  need ip "apt-get install iproute2"
  [ "$(id -u)" = 0 ] || { log "the node needs root (kubelet, containerd, the bridge)"; exit 1; }
}

# The bridge exists before anything binds its address; pods' default route points at it, and
# FORWARD only lets packets between the bridge's own ports through (no route out, no masquerade).
net() {
  command -v iptables >/dev/null || install_packages
  need iptables "apt-get install iptables"
  need ip "apt-get install iproute2"
  mkdir -p "$D"
  if ! ip link show "$CBO_BRIDGE" >/dev/null 2>&1; then
    ip link add "$CBO_BRIDGE" type bridge
  fi
  grep -q " $CBO_NODE_IP/" <<<"$(ip addr show dev "$CBO_BRIDGE")" || ip addr add "$CBO_NODE_IP/${CBO_POD_CIDR#*/}" dev "$CBO_BRIDGE"
  ip link set "$CBO_BRIDGE" up
  # Host-originated traffic to Service IPs leaves with the bridge's address as its source.
  ip route replace "$CBO_SERVICE_CIDR" dev "$CBO_BRIDGE" src "$CBO_NODE_IP"
  [ -f "$D/ip_forward.saved" ] || cat /proc/sys/net/ipv4/ip_forward >"$D/ip_forward.saved"
  echo 1 >/proc/sys/net/ipv4/ip_forward
  iptables -N CBO-NODE-FORWARD 2>/dev/null || iptables -F CBO-NODE-FORWARD
  iptables -A CBO-NODE-FORWARD -i "$CBO_BRIDGE" -o "$CBO_BRIDGE" -j ACCEPT
  iptables -A CBO-NODE-FORWARD -i "$CBO_BRIDGE" -j DROP
  iptables -A CBO-NODE-FORWARD -o "$CBO_BRIDGE" -j DROP
  iptables -C FORWARD -j CBO-NODE-FORWARD 2>/dev/null || iptables -I FORWARD 1 -j CBO-NODE-FORWARD
}

write_configs() {
  mkdir -p "$D/containerd" "$D/cni/conf" "$D/cni/data" "$D/kubelet" "$D/pod-logs" "$D/volumes" "$LOGS"
  cat >"$D/containerd/config.toml" <<EOF
version = 2
root = "$D/containerd/root"
state = "$D/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$CBO_CONTAINERD_SOCK"
[ttrpc]
  address = "$CBO_CONTAINERD_SOCK.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "$D/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$CBO_PAUSE_IMAGE"
  # Without this every sandbox fails here ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$D/cni/conf"
EOF
  cat >"$D/cni/conf/10-cbo.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "cbo", "plugins": [
  {"type": "bridge", "bridge": "$CBO_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$D/cni/data",
            "ranges": [[{"subnet": "$CBO_POD_CIDR", "gateway": "$CBO_NODE_IP"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
EOF
  # Pods resolve through CoreDNS on the bridge address only.
  echo "nameserver $CBO_NODE_IP" >"$D/resolv.conf"
  cat >"$D/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $CBO_NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$CBO_CONTAINERD_SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
enforceNodeAllocatable: []
evictionHard: {memory.available: 100Mi, nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
clusterDNS: [$CBO_NODE_IP]
clusterDomain: cluster.local
resolvConf: $D/resolv.conf
podLogsDir: $D/pod-logs
registerWithTaints:
- {key: $TAINT_KEY, value: "true", effect: NoSchedule}
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusReportFrequency: 10s
shutdownGracePeriod: 0s
EOF
  cat >"$D/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $KCFG}
mode: iptables
clusterCIDR: $CBO_POD_CIDR
hostnameOverride: $CBO_NODE_NAME
bindAddress: $CBO_NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$CBO_NODE_IP/32"]
iptables: {masqueradeAll: false, localhostNodePorts: false}
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  cat >"$D/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 {
    bind $CBO_NODE_IP
    errors
    kubernetes cluster.local in-addr.arpa {
        kubeconfig $KCFG
        pods insecure
    }
    cache 5
}
.:53 {
    bind $CBO_NODE_IP
    template ANY ANY {
        rcode NXDOMAIN
    }
}
EOF
}

BUSYBOX_IMAGE=$CBO_IMAGE_PREFIX/busybox:node

# The node's own images, imported when missing: the sandbox ("pause") image from images.sh, and a
# static busybox from Debian for the volume provisioner's helper Pods (mkdir/chmod/rm of claim
# directories), written as an OCI archive without an image builder.
node_images() {
  local ctr="ctr --address $CBO_CONTAINERD_SOCK -n k8s.io" have dir
  have=$($ctr images ls -q 2>/dev/null || true)
  # The sandbox image (images/pause, static C) is built and imported by images.sh.
  bash "$HERE/images.sh" pause
  if ! grep -qx "$BUSYBOX_IMAGE" <<<"$have"; then
    [ -x /bin/busybox ] && file_static /bin/busybox || {
      log "installing busybox-static (apt)"
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static; } >/dev/null \
        || { log "cannot install busybox-static from apt; the volume provisioner's helper Pods need it"; exit 1; }
    }
    dir=$(mktemp -d)
    mkdir -p "$dir/root/bin" "$dir/root/tmp"
    cp /bin/busybox "$dir/root/bin/busybox"
    for a in sh mkdir chmod rm ls cat sleep; do ln -s busybox "$dir/root/bin/$a"; done
    python3 "$HERE/oci_archive.py" "$dir/root" "$BUSYBOX_IMAGE" "$dir/busybox.tar" /bin/sh
    $ctr images import "$dir/busybox.tar" >/dev/null
    rm -rf "$dir"
  fi
}
# Debian's busybox-static installs a static /bin/busybox; the dynamic one (package busybox) does not
# run in an image without a libc.
file_static() { grep -q "not a dynamic executable" <<<"$(ldd "$1" 2>&1)"; }

cluster_objects() {
  # The volume provisioner: claims bind on this node in $D/volumes, made world-writable by a helper
  # Pod so a store running as its own non-root user can write (a host path has no fsGroup).
  local helper=$BUSYBOX_IMAGE
  cat >"$D/local-path.json" <<EOF
{"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["$D/volumes"]}]}
EOF
  cat >"$D/helper-pod.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata: {name: helper-pod}
spec:
  priorityClassName: system-node-critical
  containers:
  - name: helper-pod
    image: $helper
    imagePullPolicy: Never
EOF
  $KUBECTL apply --server-side --field-manager=cbo-cluster -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: local-path-storage
  annotations:
    scheduler.alpha.kubernetes.io/defaultTolerations: '[{"key": "$TAINT_KEY", "operator": "Exists"}]'
---
apiVersion: v1
kind: ConfigMap
metadata: {name: local-path-config, namespace: local-path-storage}
data:
  setup: |-
    #!/bin/sh
    set -eu
    mkdir -m 0777 -p "\$VOL_DIR"
    chmod 0777 "\$VOL_DIR"
  teardown: |-
    #!/bin/sh
    set -eu
    rm -rf "\$VOL_DIR"
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-path
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
EOF
}

node_ready() {
  [ "$($KUBECTL get node "$CBO_NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

running() {
  local c
  for c in $NODE_COMPONENTS; do alive "$c" || return 1; done
  node_ready
}

up() {
  preflight
  if running; then log "reusing the running node $CBO_NODE_NAME"; return 0; fi
  down_quiet
  net
  write_configs
  log "starting containerd $(containerd --version | awk '{print $3}'), kubelet, kube-proxy, kube-scheduler v$K8S_VERSION, CoreDNS $COREDNS_VERSION"
  spawn containerd containerd --config "$D/containerd/config.toml"
  wait_for containerd 30 ctr --address "$CBO_CONTAINERD_SOCK" version
  # The sandbox image must be in containerd before the first Pod.
  node_images
  spawn kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig="$KCFG" --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" \
    --authentication-kubeconfig="$KCFG" --authorization-kubeconfig="$KCFG" --v=1
  spawn kubelet "$K8S_BIN/kubelet" --config="$D/kubelet/config.yaml" --kubeconfig="$KCFG" \
    --root-dir="$D/kubelet/root" --cert-dir="$D/kubelet/pki" \
    --hostname-override="$CBO_NODE_NAME" --node-ip="$CBO_NODE_IP" --v=1
  spawn kube-proxy "$K8S_BIN/kube-proxy" --config="$D/kube-proxy.yaml" --v=1
  spawn coredns "$K8S_BIN/coredns" -conf "$D/Corefile"
  wait_for "node $CBO_NODE_NAME Ready" 120 node_ready
  cluster_objects
  spawn local-path-provisioner "$K8S_BIN/local-path-provisioner" start --kubeconfig="$KCFG" \
    --namespace=local-path-storage --config="$D/local-path.json" --helper-pod-file="$D/helper-pod.yaml" \
    --configmap-name=local-path-config --service-account-name=default \
    --helper-image="$BUSYBOX_IMAGE"
  wait_for "CoreDNS" 30 bash -c "exec 3<>/dev/tcp/$CBO_NODE_IP/53"
  sleep 1
  for c in $NODE_COMPONENTS; do alive "$c" || { log "$c exited at start"; tails; return 1; }; done
  log "node $CBO_NODE_NAME Ready at $CBO_NODE_IP (Pods run in namespaces annotated with the $TAINT_KEY toleration; see README)"
}

stop() { # name
  local c=$1
  if alive "$c"; then
    kill "$(cat "$D/$c.pid")" 2>/dev/null || true
    for _ in $(seq 1 50); do alive "$c" || break; sleep 0.1; done
    alive "$c" && kill -9 "$(cat "$D/$c.pid")" 2>/dev/null || true
  fi
  rm -f "$D/$c.pid"
}

down_quiet() {
  local id
  stop local-path-provisioner
  stop kube-scheduler
  # Let the kubelet tear the Pods down (CNI DEL, volume unmounts) while the API server is still up.
  if alive kubelet && $KUBECTL get --raw=/readyz >/dev/null 2>&1; then
    $KUBECTL delete pods --all-namespaces --field-selector "spec.nodeName=$CBO_NODE_NAME" \
      --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    for _ in $(seq 1 100); do
      [ -z "$(ctr --address "$CBO_CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null)" ] && break
      sleep 0.3
    done
  fi
  stop kubelet
  stop kube-proxy
  stop coredns
  if alive containerd; then
    for id in $(ctr --address "$CBO_CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$CBO_CONTAINERD_SOCK" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    sleep 0.5
    for id in $(ctr --address "$CBO_CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$CBO_CONTAINERD_SOCK" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true
    done
  fi
  stop containerd
  # Shims outlive containerd; they belong to this node when they name its socket.
  pkill -9 -f "containerd-shim.*-address $CBO_CONTAINERD_SOCK" 2>/dev/null || true
  # Mounts left under the node directory (Pod volumes, sandboxes' shm, snapshots).
  if [ -d "$D" ]; then
    awk -v d="$D/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
      umount -l "$m" 2>/dev/null || true
    done
  fi
  # Network namespaces of this node's sandboxes, if any survived.
  if [ -d "$D/cni/data" ]; then rm -rf "$D/cni/data"; fi
  if [ -x "$K8S_BIN/kube-proxy" ]; then "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
  # Every KUBE-* chain the kubelet and kube-proxy made, in both families (they manage IPv6 too):
  # the jumps into them from the built-in chains first, then the chains themselves.
  local ipt t rule chain
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for t in filter nat mangle; do
      $ipt -t "$t" -S 2>/dev/null | grep -E -- '^-A [A-Z]+ .*-j KUBE-' | grep -vE '^-A KUBE-' | sed 's/^-A/-D/' \
        | while read -r rule; do
            # shellcheck disable=SC2086
            eval "$ipt -t $t $rule" 2>/dev/null || true
          done || true
      for chain in $($ipt -t "$t" -S 2>/dev/null | sed -n 's/^-N \(KUBE-[^ ]*\)$/\1/p'); do
        $ipt -t "$t" -F "$chain" 2>/dev/null || true
      done
      for chain in $($ipt -t "$t" -S 2>/dev/null | sed -n 's/^-N \(KUBE-[^ ]*\)$/\1/p'); do
        $ipt -t "$t" -X "$chain" 2>/dev/null || true
      done
    done
  done
  if $KUBECTL get --raw=/readyz >/dev/null 2>&1; then
    $KUBECTL delete node "$CBO_NODE_NAME" --wait=false >/dev/null 2>&1 || true
  fi
}

net_down() {
  iptables -D FORWARD -j CBO-NODE-FORWARD 2>/dev/null || true
  iptables -F CBO-NODE-FORWARD 2>/dev/null || true
  iptables -X CBO-NODE-FORWARD 2>/dev/null || true
  ip link del "$CBO_BRIDGE" 2>/dev/null || true
  if [ -f "$D/ip_forward.saved" ]; then cat "$D/ip_forward.saved" >/proc/sys/net/ipv4/ip_forward; rm -f "$D/ip_forward.saved"; fi
}

case "${1:-}" in
  net) net ;;
  up) up ;;
  down) down_quiet ;;
  net-down) net_down ;;
  logs) tails ;;
  *) echo "usage: $0 net|up|down|net-down|logs" >&2; exit 2 ;;
esac
