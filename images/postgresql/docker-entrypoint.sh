#!/bin/sh
# PostgreSQL 15 from Debian packages, with the environment contract of the official postgres image
# (the operator's production default), so the same StatefulSet runs either image:
#   POSTGRES_PASSWORD  superuser password; required on the first start unless
#                      POSTGRES_HOST_AUTH_METHOD=trust
#   POSTGRES_USER      superuser name (default postgres)
#   POSTGRES_DB        database created on the first start (default: POSTGRES_USER)
#   PGDATA             data directory (default /var/lib/postgresql/data)
#   POSTGRES_INITDB_ARGS, POSTGRES_INITDB_WALDIR, POSTGRES_HOST_AUTH_METHOD (default scram-sha-256)
#   POSTGRES_PASSWORD_FILE, POSTGRES_USER_FILE, POSTGRES_DB_FILE: read the value from a file
#   /docker-entrypoint-initdb.d/*.sh, *.sql, *.sql.gz: run once after the first initdb
# The first start runs initdb into an empty PGDATA (the password goes through a pipe, never argv
# or a file), then every start execs postgres. As a non-root user it writes only to PGDATA, /tmp
# and /var/run/postgresql, so the root filesystem can be read-only. Started as root (a plain
# `docker run`), it prepares those directories and re-executes itself as postgres, like the
# official image.
set -eu

# VAR or VAR_FILE, not both.
file_env() {
  eval "v=\${$1:-} f=\${$1_FILE:-}"
  if [ -n "$v" ] && [ -n "$f" ]; then
    echo "docker-entrypoint: both $1 and $1_FILE are set; set only one" >&2
    exit 1
  fi
  if [ -n "$f" ]; then
    v=$(cat "$f")
    export "$1=$v"
  fi
  unset "$1_FILE" 2>/dev/null || true
}

# initdb reads the password's first line from a pipe (printf is a shell builtin: no argv).
init_db() {
  set -- --username="$POSTGRES_USER" --auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD"
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then set -- "$@" --pwfile=/dev/stdin; fi
  if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then set -- "$@" --waldir="$POSTGRES_INITDB_WALDIR"; fi
  # shellcheck disable=SC2086 # a list of arguments, as in the official image
  printf '%s\n' "${POSTGRES_PASSWORD:-}" | initdb "$@" ${POSTGRES_INITDB_ARGS:-} >/dev/null
}

if [ "${1#-}" != "${1:-}" ]; then set -- postgres "$@"; fi
if [ "${1:-}" != postgres ]; then exec "$@"; fi

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_USER
  file_env POSTGRES_DB
  : "${POSTGRES_USER:=postgres}"
  : "${POSTGRES_DB:=$POSTGRES_USER}"
  : "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    echo "docker-entrypoint: the database is not initialised and POSTGRES_PASSWORD is not set;" \
      "set it (or POSTGRES_HOST_AUTH_METHOD=trust, which allows anyone to connect without a password)" >&2
    exit 1
  fi
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA" 2>/dev/null || true
  init_db
  # Every other host may connect with a password (initdb wrote the local and loopback lines).
  printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"

  # A server on the Unix socket only, for POSTGRES_DB and the init scripts.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start >/dev/null
  psql_() { psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --username "$POSTGRES_USER" -p 5432 "$@"; }
  if [ "$POSTGRES_DB" != postgres ]; then
    psql_ --dbname postgres -q -v db="$POSTGRES_DB" <<'SQL'
CREATE DATABASE :"db";
SQL
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    [ -e "$f" ] || continue
    # shellcheck disable=SC1090 # the init scripts a user mounts
    case "$f" in
      *.sh) if [ -x "$f" ]; then "$f"; else . "$f"; fi ;;
      *.sql) psql_ --dbname "$POSTGRES_DB" -f "$f" ;;
      *.sql.gz) gzip -dc "$f" | psql_ --dbname "$POSTGRES_DB" ;;
      *) echo "docker-entrypoint: ignoring $f" >&2 ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "docker-entrypoint: initialised $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB); starting"
fi
exec "$@"
