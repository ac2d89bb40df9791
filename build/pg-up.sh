#!/usr/bin/env bash
# Start a local PostgreSQL (Debian's postgresql-15 packages) on 127.0.0.1 for the local stack
# (make stack DB=postgres), the tests and the benchmarks. No systemd, no system cluster: the
# server runs from a project-local data directory and is stopped by build/pg-down.sh.
#
# usage: build/pg-up.sh
#
# Environment (all optional):
#   PG_DIR          data and socket directory      default <repo>/.pg (gitignored)
#   PG_PORT         TCP port on 127.0.0.1           default 55432
#   PG_BIN          PostgreSQL's bin directory      default the newest /usr/lib/postgresql/*/bin
#   PG_FRESH=1      stop a running server and start a new, empty one
#
# Packages: when no /usr/lib/postgresql/*/bin/initdb exists (and PG_BIN is unset), root (CI)
# installs Debian's postgresql-15 (else the distribution's `postgresql`) with apt-get, keeping
# the packages from starting a system cluster; anyone else gets the apt-get command to run.
#
# Role and database: "ghga" owns database "ghga"; connections from 127.0.0.1 and the socket
# are trusted (a local, single-user setup: nothing listens beyond 127.0.0.1). Production
# settings (passwords, TLS, pool sizes) are in README "Deploy next to Ceph".
# As root (CI), the server runs as the "postgres" system user, which owns PG_DIR; PostgreSQL
# refuses to run as root. When PG_DIR is not reachable for that user (a checkout under a
# private home), the data go to /tmp/ghga-pg-<hash of PG_DIR> and PG_DIR/data links there.
#
# Idempotent: a server already running from PG_DIR is left alone. Output: PG_DIR/pg.env with
# UCS_DATABASE_URL=postgresql://ghga@127.0.0.1:<port>/ghga; log in PG_DIR/log/postgres.log.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
log() { printf '[pg-up] %s\n' "$*" >&2; }
die() { printf '[pg-up] ERROR: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- packages
have_server() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }
if [ -z "${PG_BIN:-}" ] && ! have_server; then
  if [ "$(id -u)" != 0 ]; then
    die "PostgreSQL's server is not installed. Installing it needs root: run this script as root, or
       sudo apt-get install -y --no-install-recommends postgresql-15   (or: postgresql)
       or set PG_BIN to the bin directory of a PostgreSQL installation (initdb, pg_ctl, psql)"
  fi
  command -v apt-get >/dev/null ||
    die "PostgreSQL's server is not installed and there is no apt-get (Debian/Ubuntu only); set PG_BIN"
  export DEBIAN_FRONTEND=noninteractive
  # Keep the packages' maintainer scripts from starting the system cluster (postgresql@15-main)
  # on machines that run an init system: a temporary policy-rc.d, removed again afterwards.
  POLICY=/usr/sbin/policy-rc.d
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# temporary, from pg-up.sh\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    trap 'grep -q "from pg-up.sh" "$POLICY" 2>/dev/null && rm -f "$POLICY"' EXIT
  fi
  apt_install() {
    apt-get install -y -q --no-install-recommends postgresql-15 ||
      apt-get install -y -q --no-install-recommends postgresql
  }
  log "installing postgresql-15 with apt-get ..."
  t0=$(now)
  if ! apt_install; then
    log "apt-get install failed; running apt-get update and retrying"
    { apt-get update -q && apt_install; } || die "apt-get install postgresql-15 (or postgresql) failed"
  fi
  log "packages installed in $(since "$t0") s"
  if grep -q "from pg-up.sh" "$POLICY" 2>/dev/null; then rm -f "$POLICY"; fi
  trap - EXIT
  have_server || die "no /usr/lib/postgresql/*/bin/initdb after installing the packages"
fi

D=${PG_DIR:-$REPO/.pg}
case "$D" in /*) ;; *) D=$PWD/$D ;; esac
D=${D%/}
PORT=${PG_PORT:-55432}
if [ -z "${PG_BIN:-}" ]; then
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
fi
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] ||
  die "PostgreSQL server binaries not found (install Debian's postgresql package, or set PG_BIN)"

RUN=()
OWNER=$(id -un)
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' system user (Debian's postgresql package creates it)"
  RUN=(runuser -u postgres --)
  OWNER=postgres
fi
as_owner() { "${RUN[@]}" "$@"; }

mkdir -p "$D/log"
URL="postgresql://ghga@127.0.0.1:$PORT/ghga"
DATA=$D/data

running() { as_owner "$PG_BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

if [ "${PG_FRESH:-}" = 1 ] && [ -e "$DATA" ]; then
  log "PG_FRESH=1: stopping and removing the server in $DATA"
  bash "$HERE/pg-down.sh" || true
fi
if [ -e "$DATA/PG_VERSION" ] && running; then
  log "already running: $URL"
  printf 'UCS_DATABASE_URL=%s\n' "$URL" >"$D/pg.env"
  exit 0
fi

if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" >/dev/null 2>&1; then
  die "127.0.0.1:$PORT is taken by another PostgreSQL (another checkout's build/pg-up.sh?): stop it (its build/pg-down.sh), or choose a port with PG_PORT=..."
fi

# A stopped or half-made cluster is recreated: nothing is kept across restarts.
if [ -L "$DATA" ]; then rm -rf "$(readlink "$DATA")"; fi
rm -rf "$DATA"
if [ "$OWNER" != "$(id -un)" ] && ! runuser -u postgres -- test -x "$D"; then
  TARGET=/tmp/ghga-pg-$(printf '%s' "$D" | md5sum | cut -c1-12)
  log "$D is not reachable for user postgres; data in $TARGET"
  rm -rf "$TARGET"
  mkdir -p "$TARGET"
  ln -s "$TARGET" "$DATA"
  chown postgres "$TARGET"
  chmod 700 "$TARGET"
else
  mkdir -p "$DATA"
  chmod 700 "$DATA"
  [ "$OWNER" = "$(id -un)" ] || chown "$OWNER" "$DATA"
fi
[ "$OWNER" = "$(id -un)" ] || chown "$OWNER" "$D/log"

log "initdb in $DATA"
as_owner "$PG_BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
  >"$D/log/initdb.log" 2>&1 || die "initdb failed, see $D/log/initdb.log"
cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$(readlink -f "$DATA")'
max_connections = 200
shared_buffers = 128MB
fsync = on
log_min_messages = warning
CONF
cat >"$DATA/pg_hba.conf" <<HBA
local all all trust
host  all all 127.0.0.1/32 trust
HBA

log "starting on 127.0.0.1:$PORT"
as_owner "$PG_BIN/pg_ctl" -D "$DATA" -l "$D/log/postgres.log" -w -t 60 start >/dev/null ||
  die "postgres did not start, see $D/log/postgres.log"
SOCK=$(readlink -f "$DATA")
as_owner "$PG_BIN/psql" -h "$SOCK" -p "$PORT" -U postgres -q -v ON_ERROR_STOP=1 \
  -c "CREATE ROLE ghga LOGIN CREATEDB" -c "CREATE DATABASE ghga OWNER ghga" >/dev/null
printf 'UCS_DATABASE_URL=%s\n' "$URL" >"$D/pg.env"
log "ready: $URL"
