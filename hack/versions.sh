#!/usr/bin/env bash
# Pinned versions and cache locations shared by every hack/ script (sourced, not executed).
K8S_VERSION=${K8S_VERSION:-1.34.10}   # k8s-openapi feature v1_34 in Cargo.toml must match the minor
ETCD_VERSION=${ETCD_VERSION:-3.6.4}   # what k8s.io/apiserver v0.34.x pins
HELM_VERSION=${HELM_VERSION:-3.19.5}  # built against k8s.io/* v0.34
CELERY_VERSION=${CELERY_VERSION:-5.7.0}
CBO_CACHE=${CBO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/celery-backend-operator}
K8S_BIN=$CBO_CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION/bin
export GOPROXY=${GOPROXY:-https://proxy.golang.org}
case "$GOPROXY" in *,direct) GOPROXY=${GOPROXY%,direct} ;; esac
export GOTOOLCHAIN=local
# The node (kubelet + containerd) and the images built here without a registry.
COREDNS_VERSION=${COREDNS_VERSION:-1.12.4}
LOCAL_PATH_VERSION=${LOCAL_PATH_VERSION:-0.0.30}
CBO_NODE_DIR=${CBO_NODE_DIR:-$CBO_CACHE/node}
CBO_NODE_NAME=${CBO_NODE_NAME:-cbo-node}
CBO_BRIDGE=${CBO_BRIDGE:-cbo0}
CBO_NODE_IP=${CBO_NODE_IP:-10.244.0.1}        # the bridge's own address: the node's INTERNAL-IP, API server, DNS
CBO_POD_CIDR=${CBO_POD_CIDR:-10.244.0.0/24}
CBO_SERVICE_CIDR=${CBO_SERVICE_CIDR:-10.0.0.0/24}
CBO_CONTAINERD_SOCK=$CBO_NODE_DIR/containerd/state/containerd.sock
CBO_IMAGE_PREFIX=${CBO_IMAGE_PREFIX:-cbo.local}
CBO_PAUSE_IMAGE=$CBO_IMAGE_PREFIX/pause:3.10
CBO_BUILDAH_ROOT=$CBO_CACHE/buildah

# k8s_go_build CMD...: run in the wrapper module of build-k8s.sh; adds k8s.io/kubernetes/cmd/CMD as
# tools and builds them into $K8S_BIN, version-stamped like upstream's release builds.
k8s_go_build() {
  local pkgs="" args="" ldf="-s -w" commit p minor
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  for p in "$@"; do pkgs="$pkgs k8s.io/kubernetes/cmd/$p"; args="$args k8s.io/kubernetes/cmd/$p@v$K8S_VERSION"; done
  # shellcheck disable=SC2086
  go get -tool $args
  commit=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^[[:space:]]*"Hash": "\(.*\)",\{0,1\}$/\1/p' | head -n1 || true)
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    [ -n "$commit" ] && ldf="$ldf -X $p.gitCommit=$commit"
  done
  # shellcheck disable=SC2086
  CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false" go build -tags=selinux,notest,grpcnotrace -ldflags="$ldf" -o "$K8S_BIN/" $pkgs
}
