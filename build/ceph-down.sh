#!/usr/bin/env bash
# Stop the single-node Ceph cluster started by build/ceph-up.sh and delete its directory.
#
# usage: build/ceph-down.sh [--keep-data]
#
# Stops exactly the processes ceph-up.sh started, by the PIDs it recorded in
# <CEPH_DIR>/pids/*.pid (rgw, osd, mgr, then mon): SIGTERM, wait up to CEPH_STOP_TIMEOUT
# seconds (default 20), then SIGKILL. A PID is only signalled if /proc/<pid>/cmdline still
# names this cluster's ceph.conf (guards against PID reuse). Then removes CEPH_DIR (default
# <repo>/.ceph) -- only if ceph-up.sh made it -- unless --keep-data is given (e.g. to read
# the logs). Safe to run when nothing is running or the directory does not exist.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
log() { printf '[ceph-down] %s\n' "$*" >&2; }

KEEP=0
case "${1:-}" in
  --keep-data) KEEP=1 ;;
  "") ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) log "unknown argument '$1'"; exit 2 ;;
esac

D=${CEPH_DIR:-$REPO/.ceph}
case "$D" in /*) ;; *) D=$PWD/$D ;; esac
D=${D%/}
STOP_TIMEOUT=${CEPH_STOP_TIMEOUT:-20}
MARKER=.ceph-launcher

if [ ! -d "$D" ]; then
  log "nothing to do: $D does not exist"
  exit 0
fi

ours() { # pid -> true if alive and started with this cluster's ceph.conf
  [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$D/ceph.conf"
}

stopped=0
for name in rgw.a osd.0 mgr.x mon.a; do
  f=$D/pids/$name.pid
  [ -s "$f" ] || continue
  pid=$(cat "$f")
  if ! [[ "$pid" =~ ^[0-9]+$ ]] || ! ours "$pid"; then
    log "$name (pid $pid) is not running"
    rm -f "$f"
    continue
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
    ours "$pid" || break
    sleep 0.1
  done
  if ours "$pid"; then
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do ours "$pid" || break; sleep 0.1; done
    log "stopped $name (pid $pid) with SIGKILL after ${STOP_TIMEOUT} s"
  else
    log "stopped $name (pid $pid)"
  fi
  rm -f "$f"
  stopped=$((stopped + 1))
done
((stopped)) || log "no daemons were running"

# Anything still running with our ceph.conf was not started by (or recorded from) ceph-up.sh:
# report it, never kill it blindly.
left=()
for p in /proc/[0-9]*; do
  p=${p#/proc/}
  [ "$p" = $$ ] && continue
  if ours "$p" 2>/dev/null; then left+=("$p"); fi
done
if ((${#left[@]})); then
  log "WARNING: processes still use $D/ceph.conf but have no pid file: ${left[*]} (not killed)"
fi

if ((KEEP)); then
  log "kept $D (--keep-data)"
elif [ -e "$D/$MARKER" ]; then
  rm -rf -- "$D"
  log "removed $D"
elif [ -z "$(ls -A "$D")" ]; then
  rmdir -- "$D"
else
  log "not removing $D: it was not created by ceph-up.sh (no $MARKER file)"
  exit 1
fi
