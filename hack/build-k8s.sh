#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kubectl and helm from the Go module proxy
# into a versioned cache outside the repository; a no-op when the cache already has them.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/versions.sh"
OUT=$K8S_BIN
WORK=$CBO_CACHE/build
need=(etcd kube-apiserver kube-controller-manager kubectl helm)
missing=()
for b in "${need[@]}"; do [ -x "$OUT/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
command -v go >/dev/null || { echo "build-k8s: Go is required (apt-get install golang or a Go toolchain)" >&2; exit 1; }
start=$(date +%s)
echo "build-k8s: building ${missing[*]} (k8s v$K8S_VERSION, etcd v$ETCD_VERSION, helm v$HELM_VERSION) into $OUT" >&2
export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
mkdir -p "$OUT" "$WORK"
field() { sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}\$/\1/p" | head -n1; }
dl() { (cd "$(mktemp -d)" && go mod download -json "$1"); }
MINOR=$(echo "$K8S_VERSION" | cut -d. -f2)

if [ ! -x "$OUT/kube-apiserver" ] || [ ! -x "$OUT/kube-controller-manager" ] || [ ! -x "$OUT/kubectl" ]; then
  mkdir -p "$WORK/k8s"; cd "$WORK/k8s"
  json=$(dl "k8s.io/kubernetes@v$K8S_VERSION") || { echo "build-k8s: cannot download k8s.io/kubernetes@v$K8S_VERSION: $json" >&2; exit 1; }
  upmod=$(printf '%s\n' "$json" | field GoMod)
  [ -s "$upmod" ] || { echo "build-k8s: no go.mod for k8s.io/kubernetes@v$K8S_VERSION" >&2; exit 1; }
  staging="v0.${K8S_VERSION#1.}"
  {
    echo "module local/k8s-bins"; echo
    grep -m1 '^go ' "$upmod"; echo
    grep -m1 '^godebug ' "$upmod" || true; echo
    # upstream maps its staging modules to ./staging; use their published tags instead
    awk -v v="$staging" '$2 == "=>" && $3 ~ /^\.\/staging\// {print "replace " $1 " => " $1 " " v}' "$upmod"
  } > go.mod
  k8s_go_build kube-apiserver kube-controller-manager kubectl
fi

if [ ! -x "$OUT/etcd" ]; then
  mkdir -p "$WORK/etcd"; cd "$WORK/etcd"
  printf 'module local/etcd-bin\n\ngo 1.24.0\n' > go.mod
  go get -tool "go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
  go build -ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=v$ETCD_VERSION" -o "$OUT/etcd" go.etcd.io/etcd/server/v3
fi

if [ ! -x "$OUT/helm" ]; then
  H=helm.sh/helm/v3
  GOBIN="$OUT" go install -ldflags="-s -w -X $H/internal/version.version=v$HELM_VERSION -X $H/internal/version.gitTreeState=clean \
    -X $H/pkg/chartutil.k8sVersionMajor=1 -X $H/pkg/chartutil.k8sVersionMinor=$MINOR \
    -X $H/pkg/lint/rules.k8sVersionMajor=1 -X $H/pkg/lint/rules.k8sVersionMinor=$MINOR" \
    "$H/cmd/helm@v$HELM_VERSION"
fi
echo "build-k8s: built in $(( $(date +%s) - start ))s" >&2
