#!/usr/bin/env bash
# Images without a registry, imported into the node's containerd (hack/node.sh):
#   - the operator, built from the project's Dockerfile by buildah, on local bases;
#   - a Celery worker (Celery and the Redis/PostgreSQL clients, images/worker/cbo_tasks.py);
#   - Redis 7 and PostgreSQL 15 for managed stores, from Debian packages, honouring the official
#     images' contracts (images/postgresql/docker-entrypoint.sh).
# The Debian root filesystems come from mmdebstrap; Python wheels from the host's pip (Pods and
# chroots here cannot verify the registry's certificate chain, the host can).
#   hack/images.sh build   build what changed (content hashes in the tags) and import it
#   hack/images.sh env     print the export lines that make a shell (an operator, helm install,
#                          the tests) use these images
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
. "$HERE/versions.sh"
OUT=$CBO_CACHE/images
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CBO_CACHE/target}
P=$CBO_IMAGE_PREFIX
# Packages of the shared root filesystem: the worker's Python, the stores, and the builder's C
# toolchain (the Rust toolchain is the host's, mounted into the build).
FULL_PKGS=ca-certificates,python3,python3-venv,redis-server,postgresql-15,gcc,libc6-dev,pkg-config,make,binutils,procps
RUNTIME_PKGS=ca-certificates
PG_BIN=/usr/lib/postgresql/15/bin

log() { echo "images: $*" >&2; }
die() { log "$*"; exit 1; }
h() { sha256sum | cut -c1-12; }

# Tags from the inputs' content, computable without building (for `env`).
full_hash() { { echo "$FULL_PKGS"; cat "$ROOT/images/worker/requirements.txt"; declare -f rootfs; } | h; }
runtime_hash() { { echo "$RUNTIME_PKGS"; declare -f rootfs; } | h; }
operator_hash() {
  { full_hash; runtime_hash; cat "$ROOT/Dockerfile" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock"
    (cd "$ROOT" && find src -type f -print0 | sort -z | xargs -0 cat); } | h
}
worker_hash() { { full_hash; cat "$ROOT/images/worker/cbo_tasks.py"; } | h; }
postgresql_hash() { { full_hash; cat "$ROOT/images/postgresql/docker-entrypoint.sh"; } | h; }
redis_hash() { full_hash; }

env_lines() {
  echo "export CBO_OPERATOR_IMAGE=$P/celery-backend-operator:$(operator_hash)"
  echo "export CBO_WORKER_IMAGE=$P/celery-worker:$(worker_hash)"
  echo "export CBO_STORE_IMAGE_REDIS=$P/redis:7.0-$(redis_hash)"
  echo "export CBO_STORE_IMAGE_POSTGRESQL=$P/postgres:15-$(postgresql_hash)"
}

need_tools() {
  local missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  command -v ctr >/dev/null || missing+=(containerd)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} (apt)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null \
    || die "cannot install ${missing[*]} from apt; the images need them"
}

# rootfs NAME PACKAGES [extra mmdebstrap args]: a Debian bookworm tarball with fixed users:
# postgres 999 (the operator runs managed stores as 999; initdb needs a passwd entry),
# celery 1000 (the worker), nonroot 65532 (the operator, as on distroless).
rootfs() {
  local name=$1 pkgs=$2; shift 2
  local tar=$OUT/$name.tar
  [ -s "$tar" ] && return 0
  mkdir -p "$OUT"
  log "assembling the $name root filesystem from Debian packages (mmdebstrap)"
  mmdebstrap --quiet --variant=minbase --include="$pkgs" \
    --essential-hook='printf "postgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh\ncelery:x:1000:1000:Celery:/home/celery:/bin/sh\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n" >>"$1/etc/passwd"; printf "postgres:x:999:\ncelery:x:1000:\nnonroot:x:65532:\n" >>"$1/etc/group"; printf "postgres:*:19000:0:99999:7:::\ncelery:*:19000:0:99999:7:::\nnonroot:*:19000:0:99999:7:::\n" >>"$1/etc/shadow"; mkdir -p "$1/home/celery" "$1/home/nonroot"; chown 1000:1000 "$1/home/celery"; chown 65532:65532 "$1/home/nonroot"' \
    "$@" bookworm "$tar.tmp" || { rm -rf "$tar.tmp"; die "mmdebstrap failed for $name (see above)"; }
  mv "$tar.tmp" "$tar"
}

build_roots() {
  local wheels=$OUT/wheels-$(full_hash)
  if [ ! -f "$wheels/.complete" ]; then
    log "downloading the worker's wheels"
    rm -rf "$wheels"; mkdir -p "$wheels"
    PIP_FIND_LINKS= python3 -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version 3.11.2 \
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
      -d "$wheels" -r "$ROOT/images/worker/requirements.txt" || die "pip download failed"
    touch "$wheels/.complete"
  fi
  rootfs "full-$(full_hash)" "$FULL_PKGS" \
    --customize-hook="mkdir -p \"\$1/tmp/wheels\" && cp $wheels/*.whl $ROOT/images/worker/requirements.txt \"\$1/tmp/wheels/\"" \
    --customize-hook='chroot "$1" python3 -m venv /opt/celery' \
    --customize-hook='PIP_FIND_LINKS= chroot "$1" /opt/celery/bin/pip install -q --no-index --find-links /tmp/wheels --disable-pip-version-check -r /tmp/wheels/requirements.txt && rm -rf "$1/tmp/wheels"'
  rootfs "runtime-$(runtime_hash)" "$RUNTIME_PKGS"
}

B() { TMPDIR=$CBO_BUILDAH_ROOT/tmp buildah --root "$CBO_BUILDAH_ROOT/root" --runroot "$CBO_BUILDAH_ROOT/run" --storage-driver vfs "$@"; }

# A buildah image from a root filesystem tarball (the Dockerfile's FROM needs it in buildah's store).
buildah_base() { # ref tar [config args...]
  local ref=$1 tar=$2; shift 2
  B inspect --type image "$ref" >/dev/null 2>&1 && return 0
  local c
  c=$(B from scratch)
  B add "$c" "$tar" / >/dev/null
  B config "$@" "$c"
  B commit --quiet "$c" "$ref" >/dev/null
  B rm "$c" >/dev/null
}

ctr_() { ctr --address "$CBO_CONTAINERD_SOCK" -n k8s.io "$@"; }
have() { ctr_ images ls -q | grep -qx "$1"; }

build() {
  local t0 refs op worker pg redis full runtime
  t0=$(date +%s)
  [ -S "$CBO_CONTAINERD_SOCK" ] || die "the node's containerd is not running ($CBO_CONTAINERD_SOCK); run hack/cluster.sh up first"
  need_tools
  eval "$(env_lines)"
  op=$CBO_OPERATOR_IMAGE worker=$CBO_WORKER_IMAGE pg=$CBO_STORE_IMAGE_POSTGRESQL redis=$CBO_STORE_IMAGE_REDIS
  full=$OUT/full-$(full_hash).tar runtime=$OUT/runtime-$(runtime_hash).tar

  # Worker and stores: one archive, the shared root filesystem stored once, plus small layers.
  if ! have "$worker" || ! have "$pg" || ! have "$redis"; then
    build_roots
    local top=$OUT/layers; rm -rf "$top"; mkdir -p "$top/worker/app" "$top/pg/usr/local/bin"
    cp "$ROOT/images/worker/cbo_tasks.py" "$top/worker/app/"
    install -m 0755 "$ROOT/images/postgresql/docker-entrypoint.sh" "$top/pg/usr/local/bin/"
    cat >"$OUT/spec.json" <<EOF
{"images": [
 {"ref": "$worker", "layers": ["$full", "$top/worker"],
  "config": {"User": "1000:1000", "WorkingDir": "/app", "Env": ["PATH=/opt/celery/bin:/usr/local/bin:/usr/bin:/bin", "PYTHONPATH=/app", "PYTHONUNBUFFERED=1", "HOME=/home/celery"],
             "Cmd": ["celery", "-A", "cbo_tasks", "worker", "--loglevel=INFO", "--concurrency=2"]}},
 {"ref": "$redis", "layers": ["$full"],
  "config": {"User": "999:999", "WorkingDir": "/data", "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["redis-server"], "ExposedPorts": {"6379/tcp": {}}}},
 {"ref": "$pg", "layers": ["$full", "$top/pg"],
  "config": {"User": "999:999", "Env": ["PATH=$PG_BIN:/usr/local/bin:/usr/bin:/bin", "PGDATA=/var/lib/postgresql/data"],
             "Entrypoint": ["docker-entrypoint.sh"], "Cmd": ["postgres"], "ExposedPorts": {"5432/tcp": {}}, "StopSignal": "SIGINT"}}
]}
EOF
    log "importing $worker, $redis, $pg"
    python3 "$HERE/oci_archive.py" "$OUT/spec.json" "$OUT/shared.tar"
    ctr_ images import "$OUT/shared.tar" >/dev/null
    rm -f "$OUT/shared.tar"
  fi

  # The operator, from the project's Dockerfile. Its build stage reuses the host's Rust toolchain
  # and cargo caches (mounted), with the dev profile the test suite already built: the binary is
  # the suite's, and a warm build compiles nothing.
  if ! have "$op"; then
    build_roots
    buildah_base "$P/builder:$(full_hash)" "$full" \
      --env PATH=/root/.cargo/bin:/usr/local/bin:/usr/bin:/bin --env RUSTUP_HOME=/root/.rustup --env CARGO_HOME=/root/.cargo
    buildah_base "$P/runtime:$(runtime_hash)" "$runtime" --env PATH=/usr/local/bin:/usr/bin:/bin
    [ -d /root/.rustup ] && [ -d /root/.cargo ] || die "the build mounts the host's Rust toolchain from /root/.rustup and /root/.cargo (rustup)"
    mkdir -p "$CARGO_TARGET_DIR"
    log "building $op from the Dockerfile (buildah)"
    B bud --quiet --isolation chroot --layers=false \
      --build-arg BUILDER_IMAGE="$P/builder:$(full_hash)" --build-arg RUNTIME_IMAGE="$P/runtime:$(runtime_hash)" \
      --build-arg CARGO_PROFILE=dev --build-arg CARGO_TARGET_DIR="$CARGO_TARGET_DIR" --build-arg SRC_DIR="$ROOT" \
      --build-arg CARGO_NET_OFFLINE=true \
      -v /root/.cargo:/root/.cargo -v /root/.rustup:/root/.rustup:ro -v "$CARGO_TARGET_DIR:$CARGO_TARGET_DIR" \
      -t "$op" -f "$ROOT/Dockerfile" "$ROOT" >/dev/null || die "buildah bud of the Dockerfile failed"
    B push --quiet "$op" "oci-archive:$OUT/operator.tar:$op" >/dev/null
    ctr_ images import "$OUT/operator.tar" >/dev/null
    rm -f "$OUT/operator.tar"
    # Keep buildah's store small: only the bases stay.
    B rmi "$op" >/dev/null 2>&1 || true
  fi
  for r in "$op" "$worker" "$redis" "$pg"; do have "$r" || die "$r is not in the node's containerd after the import"; done
  log "ready in $(( $(date +%s) - t0 ))s: $op $worker $redis $pg"
}

# The node's sandbox image $CBO_PAUSE_IMAGE: images/pause/pause.c, gcc -static, one layer, built
# once (the archive's name carries the source's hash) and imported when the node's containerd runs.
pause_hash() { { declare -f build_pause; cat "$ROOT/images/pause/pause.c"; } | h; }
build_pause() {
  command -v gcc >/dev/null || die "gcc is required for the pause image (apt-get install gcc libc6-dev)"
  command -v buildah >/dev/null || die "buildah is required for the pause image (apt-get install buildah)"
  local dir=$OUT/pause-build c
  rm -rf "$dir"; mkdir -p "$dir" "$CBO_BUILDAH_ROOT/tmp"
  gcc -static -O2 -s -o "$dir/pause" "$ROOT/images/pause/pause.c" \
    || die "gcc -static failed for images/pause/pause.c (the static C library is in Debian's libc6-dev)"
  c=$(B from scratch)
  B copy --chmod 0755 "$c" "$dir/pause" /pause >/dev/null
  B config --entrypoint '["/pause"]' --user 65535:65535 "$c"
  B commit --quiet --rm "$c" "$CBO_PAUSE_IMAGE" >/dev/null
  rm -f "$1.tmp"
  B push --quiet -D "$CBO_PAUSE_IMAGE" "oci-archive:$1.tmp:$CBO_PAUSE_IMAGE" >/dev/null || die "buildah push of $CBO_PAUSE_IMAGE failed"
  mv "$1.tmp" "$1"
  B rmi "$CBO_PAUSE_IMAGE" >/dev/null
  rm -rf "$dir"
}
archive_digest() { tar -xOf "$1" index.json | grep -o '"digest":"sha256:[0-9a-f]*"' | head -1 | cut -d'"' -f4; }
node_digest() { ctr_ images ls "name==$1" 2>/dev/null | awk -v r="$1" '$1 == r {print $3}'; }
pause() {
  local tar want
  tar=$OUT/pause-$(pause_hash).tar
  if [ ! -s "$tar" ]; then
    mkdir -p "$OUT"
    log "building $CBO_PAUSE_IMAGE (static C)"
    build_pause "$tar"
  fi
  if ! { [ -S "$CBO_CONTAINERD_SOCK" ] && ctr_ version >/dev/null 2>&1; }; then
    log "the node's containerd is not running ($CBO_CONTAINERD_SOCK): $tar is built, not imported"
    return 0
  fi
  want=$(archive_digest "$tar")
  [ "$(node_digest "$CBO_PAUSE_IMAGE")" = "$want" ] && return 0
  log "importing $CBO_PAUSE_IMAGE into the node's containerd"
  ctr_ images import "$tar" >/dev/null || die "ctr images import $tar failed"
  [ "$(node_digest "$CBO_PAUSE_IMAGE")" = "$want" ] || die "$CBO_PAUSE_IMAGE is not listed in the node's containerd after the import"
}

case "${1:-}" in
  pause) pause ;;
  build) build ;;
  env) env_lines ;;
  *) echo "usage: $0 pause|build|env" >&2; exit 2 ;;
esac
