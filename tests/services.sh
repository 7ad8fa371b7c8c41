#!/usr/bin/env bash
# Installs (when missing) and starts the real services the tests use, each on a free loopback port
# in a fresh data directory: PostgreSQL (password auth) with a streaming hot standby, MariaDB and
# moto's AWS emulator (SQS, SNS, Secrets Manager, DynamoDB). Source it: it exports OPSRELAY_TEST_* and stops everything when the shell exits.
#   . tests/services.sh && cargo test
set -euo pipefail

_svc_log() { printf 'services: %s\n' "$*" >&2; }
_svc_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
_svc_fail() { # what, log file: says which service failed and shows its log before the exit trap removes it
  _svc_log "$1 failed; its log ($2) follows"
  cat "$2" >&2 2>/dev/null || true
  df -h "${TMPDIR:-/tmp}" >&2 || true
  exit 1
}
_svc_wait() { # what, seconds, command...
  local what=$1 secs=$2 tries=$(( $2 * 10 )); shift 2
  until "$@" >/dev/null 2>&1; do
    tries=$((tries - 1))
    if [ "$tries" -le 0 ]; then _svc_log "$what did not answer within $secs s"; return 1; fi
    sleep 0.1
  done
}

if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
  _svc_log "installing MariaDB"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mariadb-server mariadb-client >/dev/null
fi
if ! command -v openssl >/dev/null 2>&1; then
  _svc_log "installing openssl"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl >/dev/null
fi
if ! command -v moto_server >/dev/null 2>&1; then
  _svc_log "installing moto"
  python3 -m pip install -q 'moto[server]>=5.1'
fi
if ! command -v initdb >/dev/null 2>&1; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$pg_bin" ]; then
    _svc_log "installing PostgreSQL"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  export PATH="$pg_bin:$PATH"
fi

OPSRELAY_SERVICES_DIR=$(mktemp -d /tmp/opsrelay-services.XXXXXX)
chmod 755 "$OPSRELAY_SERVICES_DIR"
export OPSRELAY_SERVICES_DIR
_svc_pids=()
_svc_stop() {
  [ -n "${OPSRELAY_SERVICES_DIR:-}" ] || return 0
  for dir in pg-standby pg; do
    su postgres -s /bin/sh -c "pg_ctl -D '$OPSRELAY_SERVICES_DIR/$dir' -m immediate stop" >/dev/null 2>&1 || true
  done
  for pid in "${_svc_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$OPSRELAY_SERVICES_DIR"
}
trap _svc_stop EXIT

# Passwords are random per run: the tests check that they never reach a log.
pg_pass="pg-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
my_pass="my-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# TLS: a test CA, a server certificate for db.opsrelay.test (a name, no IP: as RDS's certificates),
# and another CA that did not sign it.
certs="$OPSRELAY_SERVICES_DIR/certs"
mkdir -p "$certs"
(
  cd "$certs"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3 -subj "/CN=opsrelay test CA" 2>/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.pem -days 3 -subj "/CN=another CA" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=db.opsrelay.test" 2>/dev/null
  printf 'subjectAltName=DNS:db.opsrelay.test\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 3 -extfile server.ext 2>/dev/null
)
chmod 755 "$certs"
chmod 644 "$certs"/*.pem
export OPSRELAY_TEST_CA_FILE="$certs/ca.pem" OPSRELAY_TEST_OTHER_CA_FILE="$certs/other-ca.pem" OPSRELAY_TEST_DB_NAME=db.opsrelay.test

# PostgreSQL: initdb refuses root, so it runs as the postgres user.
pg_port=$(_svc_port)
mkdir -p "$OPSRELAY_SERVICES_DIR/pg" "$OPSRELAY_SERVICES_DIR/pglog"
chown postgres "$OPSRELAY_SERVICES_DIR/pg" "$OPSRELAY_SERVICES_DIR/pglog"
printf '%s\n' "$pg_pass" > "$OPSRELAY_SERVICES_DIR/pgpass"
chown postgres "$OPSRELAY_SERVICES_DIR/pgpass"
su postgres -s /bin/sh -c "initdb -D '$OPSRELAY_SERVICES_DIR/pg' -U postgres --auth-local=trust --auth-host=scram-sha-256 --pwfile='$OPSRELAY_SERVICES_DIR/pgpass' --no-sync" >"$OPSRELAY_SERVICES_DIR/pg-init.log" 2>&1 \
  || _svc_fail "PostgreSQL initdb" "$OPSRELAY_SERVICES_DIR/pg-init.log"
install -o postgres -m 600 "$certs/server.key" "$OPSRELAY_SERVICES_DIR/pg/server.key"
install -o postgres -m 644 "$certs/server.pem" "$OPSRELAY_SERVICES_DIR/pg/server.pem"
su postgres -s /bin/sh -c "pg_ctl -D '$OPSRELAY_SERVICES_DIR/pg' -w -l '$OPSRELAY_SERVICES_DIR/pglog/pg.log' -o \"-p $pg_port -k '$OPSRELAY_SERVICES_DIR/pg' -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 -c ssl=on -c ssl_cert_file=server.pem -c ssl_key_file=server.key\" start" >/dev/null \
  || _svc_fail "PostgreSQL start" "$OPSRELAY_SERVICES_DIR/pglog/pg.log"
export OPSRELAY_TEST_POSTGRES_URL="postgres://postgres:${pg_pass}@127.0.0.1:${pg_port}/postgres"
export OPSRELAY_TEST_POSTGRES_PASSWORD="$pg_pass"
_svc_log "PostgreSQL on 127.0.0.1:$pg_port"

# A streaming hot standby of it, as a read replica is (FIELD-NOTES: the base backup writes the
# replication settings; initdb's pg_hba.conf already lets 127.0.0.1 replicate with the password).
pg_standby_port=$(_svc_port)
install -d -o postgres -m 700 "$OPSRELAY_SERVICES_DIR/pg-standby"
su postgres -s /bin/sh -c "PGPASSWORD='$pg_pass' pg_basebackup -h 127.0.0.1 -p $pg_port -U postgres -D '$OPSRELAY_SERVICES_DIR/pg-standby' -R -X stream" >"$OPSRELAY_SERVICES_DIR/pg-standby-init.log" 2>&1 \
  || _svc_fail "PostgreSQL base backup" "$OPSRELAY_SERVICES_DIR/pg-standby-init.log"
su postgres -s /bin/sh -c "pg_ctl -D '$OPSRELAY_SERVICES_DIR/pg-standby' -w -l '$OPSRELAY_SERVICES_DIR/pglog/pg-standby.log' -o \"-p $pg_standby_port -k '$OPSRELAY_SERVICES_DIR/pg-standby' -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 -c ssl=on -c ssl_cert_file=server.pem -c ssl_key_file=server.key -c hot_standby_feedback=on\" start" >/dev/null \
  || _svc_fail "PostgreSQL standby start" "$OPSRELAY_SERVICES_DIR/pglog/pg-standby.log"
export OPSRELAY_TEST_POSTGRES_STANDBY_URL="postgres://postgres:${pg_pass}@127.0.0.1:${pg_standby_port}/postgres"
_svc_log "PostgreSQL standby on 127.0.0.1:$pg_standby_port"

# MariaDB.
my_port=$(_svc_port)
mkdir -p "$OPSRELAY_SERVICES_DIR/my"
mariadb-install-db --no-defaults --datadir="$OPSRELAY_SERVICES_DIR/my" --user=root --auth-root-authentication-method=normal >"$OPSRELAY_SERVICES_DIR/my-init.log" 2>&1 \
  || _svc_fail "mariadb-install-db" "$OPSRELAY_SERVICES_DIR/my-init.log"
mariadbd --no-defaults --datadir="$OPSRELAY_SERVICES_DIR/my" --socket="$OPSRELAY_SERVICES_DIR/my/s.sock" \
  --port="$my_port" --bind-address=127.0.0.1 --user=root --skip-log-bin --max-connections=300 \
  --innodb-flush-log-at-trx-commit=0 \
  --ssl-cert="$certs/server.pem" --ssl-key="$certs/server.key" --ssl-ca="$certs/ca.pem" >"$OPSRELAY_SERVICES_DIR/my.log" 2>&1 &
_svc_pids+=($!)
_svc_wait MariaDB 60 mariadb --no-defaults -uroot --socket="$OPSRELAY_SERVICES_DIR/my/s.sock" -e 'SELECT 1' || _svc_fail MariaDB "$OPSRELAY_SERVICES_DIR/my.log"
mariadb --no-defaults -uroot --socket="$OPSRELAY_SERVICES_DIR/my/s.sock" -e "
  CREATE USER 'opsrelay'@'127.0.0.1' IDENTIFIED BY '${my_pass}';
  GRANT ALL PRIVILEGES ON *.* TO 'opsrelay'@'127.0.0.1';"
export OPSRELAY_TEST_MYSQL_URL="mysql://opsrelay:${my_pass}@127.0.0.1:${my_port}/mysql"
export OPSRELAY_TEST_MYSQL_PASSWORD="$my_pass"
_svc_log "MariaDB on 127.0.0.1:$my_port"

# moto: SQS, SNS and Secrets Manager.
moto_port=$(_svc_port)
python3 tests/fixtures/dlq_moto_server.py -H 127.0.0.1 -p "$moto_port" >"$OPSRELAY_SERVICES_DIR/moto.log" 2>&1 &
_svc_pids+=($!)
_svc_wait moto 60 curl -sf "http://127.0.0.1:$moto_port/moto-api/" || _svc_fail moto "$OPSRELAY_SERVICES_DIR/moto.log"
export OPSRELAY_TEST_AWS_ENDPOINT="http://127.0.0.1:$moto_port"
_svc_log "moto on 127.0.0.1:$moto_port"
set +e
