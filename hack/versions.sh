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
