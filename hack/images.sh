#!/usr/bin/env bash
# Container images without a registry, for the node of hack/cluster.sh (containerd under
# $CBO_NODE_DIR, namespace k8s.io).
#
#   hack/images.sh pause   the node's sandbox image $CBO_PAUSE_IMAGE (static C, one layer); built
#                          once, imported when the node's containerd runs. Cheap: cluster.sh calls it
#                          on every `up`.
#   hack/images.sh build   every image below: builds what changed, writes OCI archives under
#                          $CBO_CACHE/images/, imports them into the node's containerd.
#   hack/images.sh env     the export lines that make a shell (an operator started from it,
#                          `helm install`, the tests) use these images. Computed without building.
#   hack/images.sh test    smoke test of the built store and worker images in containerd (below).
#
# Images (every tag is a hash of that image's inputs, so `env` is right after any `build`):
#   debian-base        bookworm from Debian packages (mmdebstrap): libc, libgcc, CA certificates,
#                      user nonroot 65532. Only in buildah's store: the other images' first layer.
#   celery-backend-operator
#                      the project's Dockerfile, built by buildah with local bases (a builder with a
#                      C toolchain and the host's Rust toolchain mounted; debian-base as runtime) and
#                      the dev profile, sharing the test suite's cargo target directory.
#   celery-worker      Debian's Python 3.11, a venv with the pinned Celery and the Redis/PostgreSQL
#                      clients, images/worker/cbo_tasks.py and cbo_client.py; user celery 1000.
#   redis              Redis 7.0 from Debian, user redis 999, the official image's contract.
#   postgres           PostgreSQL 15 from Debian, user postgres 999, the official image's environment
#                      contract (images/postgresql/docker-entrypoint.sh), read-only root filesystem.
# buildah uses its own vfs storage under $CBO_BUILDAH_ROOT, never the system's. Python wheels are
# downloaded by the host's pip (which has the machine's certificate configuration) and installed
# offline inside the root filesystem.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
. "$HERE/versions.sh"
OUT=$CBO_CACHE/images
IMG=$ROOT/images
P=$CBO_IMAGE_PREFIX
SUITE=bookworm
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CBO_CACHE/target}
# The host's Rust toolchain, mounted into the operator's build at the same paths.
RUSTUP_DIR=${RUSTUP_HOME:-$HOME/.rustup}
CARGO_DIR=${CARGO_HOME:-$HOME/.cargo}
# dev: the profile `cargo test` builds, so the image carries the suite's binary and compiles nothing.
OPERATOR_PROFILE=${CBO_OPERATOR_PROFILE:-dev}

# Debian packages per image (the base's are in every image).
BASE_PKGS=ca-certificates,libgcc-s1
BUILDER_PKGS=gcc,libc6-dev,pkg-config,make,binutils
WORKER_PKGS=python3,python3-venv,tzdata
REDIS_PKGS="redis-server"
POSTGRES_PKGS=postgresql-15
PG_BIN=/usr/lib/postgresql/15/bin

log() { echo "images: $*" >&2; }
die() { echo "images: error: $*" >&2; exit 1; }
h() { sha256sum | cut -c1-12; }
files_hash() { (cd "$ROOT" && sha256sum "$@") | h; }

# ---------------------------------------------------------------------------------------------
# Root filesystems from Debian packages.

# Documentation, manuals and translations are not installed.
DPKG_OPTS=(
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*'
)
# Fixed users, added before the packages whose maintainer scripts would otherwise pick a uid.
# Runs in mmdebstrap's essential hook: "$1" is the new root.
users_hook() { # name:uid:home ...
  local s='set -e'
  for u in "$@"; do
    IFS=: read -r name uid home <<<"$u"
    s+="; echo '$name:x:$uid:$uid::$home:/bin/sh' >>\"\$1/etc/passwd\""
    s+="; echo '$name:x:$uid:' >>\"\$1/etc/group\""
    s+="; echo '$name:*:19000:0:99999:7:::' >>\"\$1/etc/shadow\""
    s+="; mkdir -p \"\$1$home\"; chown $uid:$uid \"\$1$home\""
  done
  printf '%s' "$s"
}
BASE_USERS=(nonroot:65532:/home/nonroot)

# rootfs FORMAT OUT PACKAGES [mmdebstrap args]: variant essential (no apt, no package manager in
# the image) plus PACKAGES. FORMAT is tar or directory. Kept once built.
rootfs() {
  local format=$1 out=$2 pkgs=$3; shift 3
  [ -e "$out" ] && return 0
  mkdir -p "$(dirname "$out")"
  rm -rf "$out.tmp"
  log "assembling $(basename "$out") from Debian packages (mmdebstrap $SUITE: $pkgs)"
  mmdebstrap --quiet --variant=essential --format="$format" --include="$pkgs" "${DPKG_OPTS[@]}" \
    --essential-hook="$(users_hook "${BASE_USERS[@]}")" "$@" "$SUITE" "$out.tmp" \
    || { rm -rf "$out.tmp"; die "mmdebstrap failed for $(basename "$out") (see above)"; }
  mv "$out.tmp" "$out"
}

# ---------------------------------------------------------------------------------------------
# buildah, with its own storage.

B() { TMPDIR=$CBO_BUILDAH_ROOT/tmp buildah --root "$CBO_BUILDAH_ROOT/root" --runroot "$CBO_BUILDAH_ROOT/run" --storage-driver vfs "$@"; }
exists() { B inspect --type image "$1" >/dev/null 2>&1; }

need_tools() { # command:debian-package ...
  local missing=() c
  for c in "$@"; do command -v "${c%%:*}" >/dev/null || missing+=("${c##*:}"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]} (Debian packages) and no apt-get to install them"
  log "installing ${missing[*]} (apt)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null \
    || die "cannot install ${missing[*]} with apt-get; the images need them"
  for c in "$@"; do command -v "${c%%:*}" >/dev/null || die "${c%%:*} (Debian package ${c##*:}) is still missing"; done
}

# image_from_rootfs ROOTFS_DIR: a container on debian-base whose files become ROOTFS_DIR's
# (rsync; buildah records only what differs from the base, deletions included). Prints its id.
image_from_rootfs() {
  local c m
  c=$(B from --pull=never --quiet "$(base_ref)")
  m=$(B mount "$c")
  rsync -aH --delete "$1/" "$m/" || { B rm "$c" >/dev/null; die "copying $1 into the image failed"; }
  B umount "$c" >/dev/null
  echo "$c"
}

# commit_archive CONTAINER REF ARCHIVE: commits, writes ARCHIVE (oci-archive), drops the image
# from buildah's store (the archive is what is kept and imported).
commit_archive() {
  local c=$1 ref=$2 tar=$3
  B commit --quiet --rm "$c" "$ref" >/dev/null
  push_archive "$ref" "$tar"
  B rmi "$ref" >/dev/null
}
push_archive() {
  rm -f "$2.tmp"
  B push --quiet -D "$1" "oci-archive:$2.tmp:$1" >/dev/null || die "buildah push of $1 failed"
  mv "$2.tmp" "$2"
}

# ---------------------------------------------------------------------------------------------
# The images. NAME_hash prints the tag part from the inputs; build_NAME builds $OUT/NAME-HASH.tar.

pause_hash() { { declare -f build_pause; cat "$IMG/pause/pause.c"; } | h; }
build_pause() {
  need_tools gcc:gcc
  local dir=$OUT/pause-build c
  rm -rf "$dir"; mkdir -p "$dir"
  gcc -static -O2 -s -o "$dir/pause" "$IMG/pause/pause.c" \
    || die "gcc -static failed for images/pause/pause.c (the static C library is in Debian's libc6-dev)"
  c=$(B from scratch)
  B copy --chmod 0755 "$c" "$dir/pause" /pause >/dev/null
  B config --entrypoint '["/pause"]' --user 65535:65535 "$c"
  commit_archive "$c" "$CBO_PAUSE_IMAGE" "$OUT/pause-$(pause_hash).tar"
  rm -rf "$dir"
}

base_hash() { { echo "$SUITE $BASE_PKGS"; declare -p DPKG_OPTS BASE_USERS; declare -f users_hook rootfs build_base; } | h; }
base_ref() { echo "$P/debian-base:$(base_hash)"; }
build_base() {
  exists "$(base_ref)" && return 0
  local tar c
  tar=$OUT/rootfs/debian-base-$(base_hash).tar
  rootfs tar "$tar" "$BASE_PKGS"
  c=$(B from scratch)
  B add "$c" "$tar" / >/dev/null
  B config --env PATH=/usr/local/bin:/usr/bin:/bin --env LANG=C.UTF-8 "$c"
  B commit --quiet --rm "$c" "$(base_ref)" >/dev/null
}

# The operator's build stage: the base, a C toolchain, and the host's Rust toolchain's locations.
builder_hash() { { base_hash; echo "$BUILDER_PKGS $RUSTUP_DIR $CARGO_DIR"; declare -f build_builder; } | h; }
builder_ref() { echo "$P/operator-builder:$(builder_hash)"; }
build_builder() {
  exists "$(builder_ref)" && return 0
  local dir c
  dir=$OUT/rootfs/operator-builder-$(builder_hash)
  rootfs directory "$dir" "$BASE_PKGS,$BUILDER_PKGS"
  c=$(image_from_rootfs "$dir")
  B config --env RUSTUP_HOME="$RUSTUP_DIR" --env CARGO_HOME="$CARGO_DIR" \
    --env PATH="$CARGO_DIR/bin:/usr/local/bin:/usr/bin:/bin" "$c"
  B commit --quiet --rm "$c" "$(builder_ref)" >/dev/null
}

operator_hash() {
  { base_hash; builder_hash; echo "$OPERATOR_PROFILE"; declare -f build_operator
    "$CARGO_DIR/bin/rustc" -V 2>/dev/null || rustc -V
    (cd "$ROOT" && { printf '%s\0' Dockerfile .dockerignore Cargo.toml Cargo.lock; find src -type f -print0 | LC_ALL=C sort -z; } \
      | xargs -0 sha256sum); } | h
}
build_operator() {
  local ref=$1 t0
  [ -d "$RUSTUP_DIR/toolchains" ] && [ -x "$CARGO_DIR/bin/cargo" ] \
    || die "the operator's build mounts the host's Rust toolchain (rustup) from $RUSTUP_DIR and $CARGO_DIR; install rustup there or set RUSTUP_HOME/CARGO_HOME"
  build_base
  build_builder
  mkdir -p "$CARGO_TARGET_DIR"
  log "building $ref from the Dockerfile (buildah; profile $OPERATOR_PROFILE, target dir $CARGO_TARGET_DIR)"
  t0=$(date +%s)
  B bud --quiet --isolation chroot --pull=never --layers=false \
    --build-arg BUILDER_IMAGE="$(builder_ref)" --build-arg RUNTIME_IMAGE="$(base_ref)" \
    --build-arg CARGO_PROFILE="$OPERATOR_PROFILE" --build-arg CARGO_TARGET_DIR="$CARGO_TARGET_DIR" \
    --build-arg SRC_DIR="$ROOT" --build-arg CARGO_NET_OFFLINE=true \
    -v "$CARGO_DIR:$CARGO_DIR" -v "$RUSTUP_DIR:$RUSTUP_DIR:ro" -v "$CARGO_TARGET_DIR:$CARGO_TARGET_DIR" \
    -t "$ref" -f "$ROOT/Dockerfile" "$ROOT" >/dev/null || die "buildah bud of the Dockerfile failed (see above)"
  log "Dockerfile built in $(( $(date +%s) - t0 ))s"
  push_archive "$ref" "$2"
  B rmi "$ref" >/dev/null
}

# The worker's Python packages: wheels for CPython 3.11 (Debian 12's), fetched by the host's pip.
worker_deps_hash() { { base_hash; echo "$WORKER_PKGS"; declare -f build_worker_deps; cat "$IMG/worker/requirements.txt"; } | h; }
build_worker_deps() {
  local dir wheels
  dir=$OUT/rootfs/celery-worker-deps-$(worker_deps_hash)
  wheels=$OUT/wheels-$(files_hash images/worker/requirements.txt)
  [ -e "$dir" ] && return 0
  need_tools python3:python3
  if [ ! -f "$wheels/.complete" ]; then
    log "downloading the worker's wheels (pip, CPython 3.11)"
    rm -rf "$wheels"; mkdir -p "$wheels"
    PIP_FIND_LINKS='' python3 -m pip download -q --disable-pip-version-check --only-binary=:all: \
      --python-version 3.11.2 --implementation cp \
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
      -d "$wheels" -r "$IMG/worker/requirements.txt" || die "pip download of images/worker/requirements.txt failed"
    touch "$wheels/.complete"
  fi
  rootfs directory "$dir" "$BASE_PKGS,$WORKER_PKGS" \
    --essential-hook="$(users_hook celery:1000:/home/celery)" \
    --customize-hook="mkdir -p \"\$1/tmp/wheels\" && cp '$wheels'/*.whl '$IMG/worker/requirements.txt' \"\$1/tmp/wheels/\"" \
    --customize-hook='chroot "$1" python3 -m venv /opt/celery' \
    --customize-hook='chroot "$1" env PIP_FIND_LINKS= /opt/celery/bin/pip install -q --no-index --find-links /tmp/wheels --disable-pip-version-check -r /tmp/wheels/requirements.txt' \
    --customize-hook='rm -rf "$1/tmp/wheels" && mkdir -p "$1/app"'
}
worker_hash() { { worker_deps_hash; declare -f build_worker; files_hash images/worker/cbo_tasks.py images/worker/cbo_client.py; } | h; }
build_worker() {
  local ref=$1 c
  build_base
  build_worker_deps
  c=$(image_from_rootfs "$OUT/rootfs/celery-worker-deps-$(worker_deps_hash)")
  B copy "$c" "$IMG/worker/cbo_tasks.py" "$IMG/worker/cbo_client.py" /app/ >/dev/null
  B config --user 1000:1000 --workingdir /app \
    --env PATH=/opt/celery/bin:/usr/local/bin:/usr/bin:/bin --env PYTHONPATH=/app --env PYTHONUNBUFFERED=1 \
    --env HOME=/home/celery --entrypoint '[]' \
    --cmd '["celery", "-A", "cbo_tasks", "worker", "--loglevel=INFO", "--concurrency=2"]' "$c"
  commit_archive "$c" "$ref" "$2"
}

redis_deps_hash() { { base_hash; echo "$REDIS_PKGS"; declare -f build_redis_deps; } | h; }
build_redis_deps() {
  rootfs directory "$OUT/rootfs/redis-deps-$(redis_deps_hash)" "$BASE_PKGS,$REDIS_PKGS" \
    --essential-hook="$(users_hook redis:999:/var/lib/redis)" \
    --customize-hook='mkdir -p "$1/data" && chown 999:999 "$1/data" && rm -rf "$1/var/log/redis"'
}
redis_hash() { { redis_deps_hash; declare -f build_redis; files_hash images/redis/redis-server; } | h; }
build_redis() {
  local ref=$1 c
  build_base
  build_redis_deps
  c=$(image_from_rootfs "$OUT/rootfs/redis-deps-$(redis_deps_hash)")
  B copy --chmod 0755 "$c" "$IMG/redis/redis-server" /usr/local/bin/redis-server >/dev/null
  B config --user 999:999 --workingdir /data --volume /data --port 6379 --entrypoint '[]' \
    --cmd '["redis-server"]' "$c"
  commit_archive "$c" "$ref" "$2"
}

postgres_deps_hash() { { base_hash; echo "$POSTGRES_PKGS"; declare -f build_postgres_deps; } | h; }
build_postgres_deps() {
  # No cluster at install time (postgresql-common would create one in /var/lib/postgresql/15):
  # the entrypoint runs initdb into PGDATA on the first start. listen_addresses='*' in the sample
  # configuration that initdb copies, as the official image does.
  rootfs directory "$OUT/rootfs/postgres-deps-$(postgres_deps_hash)" "$BASE_PKGS,$POSTGRES_PKGS" \
    --essential-hook="$(users_hook postgres:999:/var/lib/postgresql)" \
    --essential-hook='mkdir -p "$1/etc/postgresql-common/createcluster.d" && echo "create_main_cluster = false" >"$1/etc/postgresql-common/createcluster.d/00-no-main-cluster.conf"' \
    --customize-hook='install -d -o 999 -g 999 -m 1777 "$1/var/lib/postgresql/data" && install -d -o 999 -g 999 -m 3777 "$1/var/run/postgresql"' \
    --customize-hook="sed -ri \"s/^#?(listen_addresses)\\s*=\\s*\\S+.*/\\1 = '*'/\" \"\$1/usr/share/postgresql/15/postgresql.conf.sample\" && grep -qx \"listen_addresses = '\\*'\" \"\$1/usr/share/postgresql/15/postgresql.conf.sample\""
}
postgres_hash() { { postgres_deps_hash; declare -f build_postgres; files_hash images/postgresql/docker-entrypoint.sh; } | h; }
build_postgres() {
  local ref=$1 c
  build_base
  build_postgres_deps
  c=$(image_from_rootfs "$OUT/rootfs/postgres-deps-$(postgres_deps_hash)")
  B copy --chmod 0755 "$c" "$IMG/postgresql/docker-entrypoint.sh" /usr/local/bin/docker-entrypoint.sh >/dev/null
  B config --user 999:999 --env PATH="$PG_BIN:/usr/local/bin:/usr/bin:/bin" --env PGDATA=/var/lib/postgresql/data \
    --volume /var/lib/postgresql/data --port 5432 --stop-signal SIGINT \
    --entrypoint '["docker-entrypoint.sh"]' --cmd '["postgres"]' "$c"
  commit_archive "$c" "$ref" "$2"
}

# name|ref|archive|builder (called as builder REF ARCHIVE), in the order `build` follows.
images() {
  local w r p o
  w=$(worker_hash) r=$(redis_hash) p=$(postgres_hash) o=$(operator_hash)
  echo "celery-worker|$P/celery-worker:$w|$OUT/celery-worker-$w.tar|build_worker"
  echo "redis|$P/redis:7.0-$r|$OUT/redis-$r.tar|build_redis"
  echo "postgres|$P/postgres:15-$p|$OUT/postgres-$p.tar|build_postgres"
  echo "celery-backend-operator|$P/celery-backend-operator:$o|$OUT/celery-backend-operator-$o.tar|build_operator"
}

env_lines() {
  local name ref _
  while IFS='|' read -r name ref _ _; do
    case $name in
      celery-backend-operator) echo "export CBO_OPERATOR_IMAGE=$ref" ;;
      celery-worker) echo "export CBO_WORKER_IMAGE=$ref" ;;
      redis) echo "export CBO_STORE_IMAGE_REDIS=$ref" ;;
      postgres) echo "export CBO_STORE_IMAGE_POSTGRESQL=$ref" ;;
    esac
  done < <(images)
  echo "export CBO_IMAGE_PULL_POLICY=IfNotPresent"
}

# ---------------------------------------------------------------------------------------------
# The node's containerd.

ctr_() { ctr --address "$CBO_CONTAINERD_SOCK" -n k8s.io "$@"; }
node_up() { [ -S "$CBO_CONTAINERD_SOCK" ] && ctr_ version >/dev/null 2>&1; }
archive_digest() { tar -xOf "$1" index.json | grep -o '"digest":"sha256:[0-9a-f]*"' | head -1 | cut -d'"' -f4; }
node_digest() { ctr_ images ls "name==$1" 2>/dev/null | awk -v r="$1" '$1 == r {print $3}'; }
# import REF TAR: into the node unless it already has REF with the archive's manifest.
import() {
  local want
  want=$(archive_digest "$2")
  [ -n "$want" ] || die "$2 has no manifest; delete it and build again"
  [ "$(node_digest "$1")" = "$want" ] && return 0
  log "importing $1 into the node's containerd"
  ctr_ images import "$2" >/dev/null || die "ctr images import $2 failed"
  [ "$(node_digest "$1")" = "$want" ] || die "$1 is not listed in the node's containerd after importing $2"
}

# Cached files and directories unused for a day go (what this build uses is touched first, so
# that two checkouts at different commits sharing $CBO_CACHE do not delete each other's), and
# buildah images of ours whose root filesystem went with them.
prune() {
  local name ref refs
  for name in "$@"; do
    [ -e "$OUT/$name" ] && touch -c "$OUT/$name"
    [ -e "$OUT/rootfs/$name" ] && touch -c "$OUT/rootfs/$name"
  done
  find "$OUT" "$OUT/rootfs" -mindepth 1 -maxdepth 1 ! -name rootfs ! -name '.*' -mmin +1440 -exec rm -rf {} +
  refs=$(B images --format '{{.Name}}:{{.Tag}}') || die "buildah images failed"
  for ref in $refs; do
    case "$ref" in
      "$P"/debian-base:*) [ -e "$OUT/rootfs/debian-base-${ref##*:}.tar" ] && continue ;;
      "$P"/operator-builder:*) [ -e "$OUT/rootfs/operator-builder-${ref##*:}" ] && continue ;;
      "$P"/*) ;;
      *) continue ;;
    esac
    B rmi "$ref" >/dev/null || log "could not remove $ref from buildah's store"
  done
}

cmd_pause() {
  local tar
  mkdir -p "$OUT"
  exec 9>"$OUT/.pause.lock"
  flock 9
  tar=$OUT/pause-$(pause_hash).tar
  if [ ! -s "$tar" ]; then
    need_tools buildah:buildah
    mkdir -p "$OUT" "$CBO_BUILDAH_ROOT/tmp"
    log "building $CBO_PAUSE_IMAGE (static C)"
    build_pause
  fi
  if node_up; then
    import "$CBO_PAUSE_IMAGE" "$tar"
  else
    log "the node's containerd is not running ($CBO_CONTAINERD_SOCK): $tar is built, not imported"
  fi
}

cmd_build() {
  local t0 name ref fn tar list built=() failed=() keep=()
  t0=$(date +%s)
  need_tools buildah:buildah mmdebstrap:mmdebstrap rsync:rsync ctr:containerd flock:util-linux
  mkdir -p "$OUT" "$CBO_BUILDAH_ROOT/tmp"
  # One build at a time (test.sh and the quick start may overlap).
  exec 9>"$OUT/.build.lock"
  flock 9
  keep+=("pause-$(pause_hash).tar" "debian-base-$(base_hash).tar" "operator-builder-$(builder_hash)"
         "celery-worker-deps-$(worker_deps_hash)" "wheels-$(files_hash images/worker/requirements.txt)"
         "redis-deps-$(redis_deps_hash)" "postgres-deps-$(postgres_deps_hash)")
  list=$(images)
  # One image after the other (2 shared cores). Each builder runs as its own job, so that `set -e`
  # stops it at its first failure while the other images are still built and imported.
  # (The list comes on fd 3: the builders' commands may read standard input.)
  while IFS='|' read -r -u 3 name ref tar fn; do
    keep+=("$(basename "$tar")")
    [ -s "$tar" ] && continue
    "$fn" "$ref" "$tar" </dev/null &
    if wait $!; then built+=("$name"); else failed+=("$name"); fi
  done 3<<<"$list"
  prune "${keep[@]}"
  node_up || die "the node's containerd is not running ($CBO_CONTAINERD_SOCK); the archives are in $OUT: run hack/cluster.sh up, then hack/images.sh build again to import them"
  while IFS='|' read -r -u 3 name ref tar fn; do
    if [ -s "$tar" ]; then import "$ref" "$tar" </dev/null; fi
  done 3<<<"$list"
  [ ${#failed[@]} -eq 0 ] || die "failed to build: ${failed[*]} (see above); the others are imported"
  log "images ready in $(( $(date +%s) - t0 ))s (built: ${built[*]:-nothing, all inputs unchanged})"
}

# Smoke test of the built images in the node's containerd, in a namespace of its own (kubelet
# never sees it), under the operator's contracts: the stores as uid 999 with a read-only root
# filesystem and only their volumes and /tmp (and /var/run/postgresql) writable, started with the
# operator's own command and probed with its readiness commands; then the worker and the client
# with Redis as broker and PostgreSQL as result backend (all in the PostgreSQL container's network
# namespace), and PostgreSQL restarted on its volume keeps data and password.
TEST_NS=cbo-images-test
cmd_test() {
  local list name ref tar fn pg="" redis="" worker="" work pw='p@ss w:/#%?' enc='p%40ss%20w%3A%2F%23%25%3F' i
  node_up || die "the node's containerd is not running ($CBO_CONTAINERD_SOCK); run hack/cluster.sh up"
  list=$(images)
  while IFS='|' read -r -u 3 name ref tar fn; do
    [ -s "$tar" ] || die "$tar is missing; run hack/images.sh build first"
    case $name in postgres) pg=$ref ;; redis) redis=$ref ;; celery-worker) worker=$ref ;; *) continue ;; esac
    T images import "$tar" >/dev/null </dev/null || die "importing $tar into the $TEST_NS namespace failed"
  done 3<<<"$list"
  work=$(mktemp -d "$CBO_CACHE/images-test.XXXXXX")
  # shellcheck disable=SC2064 # expand now
  trap "test_cleanup '$work'" EXIT
  install -d -o 999 -g 999 -m 2770 "$work/pgdata" "$work/redis"
  local ro=(--read-only --mount "type=tmpfs,src=tmpfs,dst=/tmp,options=rw:nosuid:nodev:mode=1777")
  local pgenv=(--env POSTGRES_USER=celery --env "POSTGRES_PASSWORD=$pw" --env POSTGRES_DB=celery --env PGDATA=/var/lib/postgresql/data/pgdata)
  local pgmounts=(--mount "type=bind,src=$work/pgdata,dst=/var/lib/postgresql/data,options=rbind:rw"
    --mount "type=tmpfs,src=tmpfs,dst=/var/run/postgresql,options=rw:nosuid:nodev:mode=1777")
  log "test: PostgreSQL first start (initdb) as 999, read-only root"
  T run -d "${ro[@]}" "${pgenv[@]}" "${pgmounts[@]}" "$pg" t-pg >/dev/null
  wait_ready t-pg 'pg_isready -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB"' || test_fail t-pg
  T tasks exec --exec-id id t-pg sh -c '[ "$(id -u)" = 999 ] && ! touch /x 2>/dev/null' || die "test: PostgreSQL does not run as 999 on a read-only root"
  local net=(--with-ns "network:/proc/$(T tasks ls | awk '$1 == "t-pg" {print $2}')/ns/net")
  log "test: Redis with the operator's command as 999, read-only root"
  T run -d "${ro[@]}" "${net[@]}" --env "REDIS_PASSWORD=$pw" --mount "type=bind,src=$work/redis,dst=/data,options=rbind:rw" \
    "$redis" t-redis sh -c 'exec redis-server --dir /data --appendonly yes --requirepass "$REDIS_PASSWORD"' >/dev/null
  wait_ready t-redis 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli ping | grep -q PONG' || test_fail t-redis
  log "test: worker and client (broker Redis, results in PostgreSQL)"
  local cenv=(--env "CELERY_BROKER_URL=redis://:$enc@127.0.0.1:6379/0" --env "CELERY_RESULT_BACKEND=db+postgresql+psycopg2://celery:$enc@127.0.0.1:5432/celery")
  T run -d "${ro[@]}" "${net[@]}" "${cenv[@]}" "$worker" t-worker >/dev/null
  T run --rm "${ro[@]}" "${net[@]}" "${cenv[@]}" "$worker" t-client python -m cbo_client --count 3 --timeout 60 >"$work/client.json" \
    || { cat "$work/client.json" >&2; test_fail t-worker; }
  grep -q '"ok": true' "$work/client.json" || die "test: the client's results: $(cat "$work/client.json")"
  log "test: PostgreSQL restarted on its volume keeps the results and the password"
  T tasks kill -s SIGKILL t-worker >/dev/null 2>&1 || true
  T tasks kill -s SIGINT t-pg >/dev/null
  for i in $(seq 1 30); do grep -q '^t-pg .*RUNNING' <<<"$(T tasks ls)" || break; sleep 1; done
  T tasks delete t-pg >/dev/null 2>&1 || true
  T containers delete t-pg >/dev/null
  T run -d "${ro[@]}" "${pgenv[@]}" "${pgmounts[@]}" --env POSTGRES_PASSWORD=ignored-after-initdb "$pg" t-pg >/dev/null
  wait_ready t-pg 'pg_isready -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB"' || test_fail t-pg
  i=$(T tasks exec --exec-id q t-pg env "PGPASSWORD=$pw" psql -h 127.0.0.1 -U celery -d celery -Atc \
    "select count(*) from celery_taskmeta where status = 'SUCCESS'") || test_fail t-pg
  [ "$i" -ge 3 ] || die "test: PostgreSQL has $i results after its restart, expected 3"
  log "test: passed (PostgreSQL $pg, Redis $redis, worker $worker)"
}
T() { ctr --address "$CBO_CONTAINERD_SOCK" -n "$TEST_NS" "$@"; }
wait_ready() { # container probe-command
  local i
  for i in $(seq 1 60); do
    T tasks exec --exec-id "probe$i" "$1" sh -c "$2" >/dev/null 2>&1 && return 0
    grep -q "^$1 .*RUNNING" <<<"$(T tasks ls)" || return 1
    sleep 1
  done
  return 1
}
test_fail() { die "test: $1 is not ready (its task: $(T tasks ls | awk -v c="$1" '$1 == c'))"; }
test_cleanup() {
  local c
  for c in t-client t-worker t-redis t-pg; do
    T tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
  done
  sleep 1
  for c in t-client t-worker t-redis t-pg; do
    T tasks delete "$c" >/dev/null 2>&1 || true
    T containers delete "$c" >/dev/null 2>&1 || true
  done
  T images ls -q 2>/dev/null | xargs -r ctr --address "$CBO_CONTAINERD_SOCK" -n "$TEST_NS" images rm >/dev/null 2>&1 || true
  rm -rf "$1"
}

# (Sourcing the file defines the functions only.)
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-}" in
    pause) cmd_pause ;;
    build) cmd_build ;;
    env) env_lines ;;
    test) cmd_test ;;
    *) echo "usage: $0 pause|build|env|test" >&2; exit 2 ;;
  esac
fi
