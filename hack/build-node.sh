#!/usr/bin/env bash
# Builds the node's Go binaries from the Go module proxy beside the control plane's, in the same
# cache: kube-scheduler, kubelet and kube-proxy (same wrapper module as build-k8s.sh), CoreDNS and
# rancher's local-path-provisioner. A no-op when they are all there.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/versions.sh"
OUT=$K8S_BIN
WORK=$CBO_CACHE/build
need=(kube-scheduler kubelet kube-proxy coredns local-path-provisioner)
missing=()
for b in "${need[@]}"; do [ -x "$OUT/$b" ] || missing+=("$b"); done
[ ${#missing[@]} -eq 0 ] && exit 0
command -v go >/dev/null || { echo "build-node: Go is required" >&2; exit 1; }
# The wrapper module (go.mod with the staging replaces) is written by build-k8s.sh.
bash "$HERE/build-k8s.sh"
[ -f "$WORK/k8s/go.mod" ] || { echo "build-node: $WORK/k8s/go.mod is missing; remove $OUT/kube-apiserver and re-run build-k8s.sh" >&2; exit 1; }
start=$(date +%s)
echo "build-node: building ${missing[*]} into $OUT" >&2
export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
cmds=""
for c in kube-scheduler kubelet kube-proxy; do [ -x "$OUT/$c" ] || cmds="$cmds $c"; done
# shellcheck disable=SC2086
[ -z "$cmds" ] || (cd "$WORK/k8s" && k8s_go_build $cmds)
if [ ! -x "$OUT/coredns" ]; then
  GOBIN="$OUT" go install -ldflags="-s -w" "github.com/coredns/coredns@v$COREDNS_VERSION"
fi
if [ ! -x "$OUT/local-path-provisioner" ]; then
  GOBIN="$OUT" go install -ldflags="-s -w" "github.com/rancher/local-path-provisioner@v$LOCAL_PATH_VERSION"
fi
echo "build-node: built in $(( $(date +%s) - start ))s" >&2
