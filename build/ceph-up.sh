#!/usr/bin/env bash
# Start a single-node Ceph cluster (mon + mgr + 1 OSD + radosgw) on 127.0.0.1 for S3
# integration tests and benchmarks. No systemd: the daemons run from a project-local
# directory and are stopped by build/ceph-down.sh using the PIDs recorded here.
#
# usage: build/ceph-up.sh [bluestore|memstore]      (default bluestore, or $CEPH_STORE)
#
#   bluestore  production-like object store on a sparse file (CEPH_BLOCK_SIZE, default 20G)
#   memstore   objects held in the OSD's RAM (CEPH_MEMSTORE_SIZE cap, default 12G); faster
#              setup, data lost on stop, memory grows with what you store
#
# Environment (all optional):
#   CEPH_DIR            cluster directory                 default <repo>/.ceph (gitignored)
#   CEPH_RGW_PORT       S3 endpoint port on 127.0.0.1      default 7480
#   CEPH_MON_PORT       mon msgr1 port                     default 6789
#   CEPH_MON_V2_PORT    mon msgr2 port                     default 3300
#   CEPH_MS_PORT_MIN/MAX  port range for OSD/MGR/RGW messengers  default 6800/7300
#   CEPH_ACCESS_KEY / CEPH_SECRET_KEY   S3 user keys      default TESTACCESSKEY/TESTSECRETKEY
#   CEPH_REGION         region written to ceph.json        default us-east-1
#   CEPH_BLOCK_SIZE     bluestore block file size (sparse) default 20G
#   CEPH_MEMSTORE_SIZE  memstore capacity                  default 12G
#   CEPH_OSD_MEMORY_TARGET  bluestore cache/memory target  default 1G (Ceph's minimum is 896M)
#   CEPH_RGW_MIN_PART_SIZE  multipart minimum part size    default Ceph's (5 MiB, like S3)
#   CEPH_START_TIMEOUT  seconds to wait for each daemon    default 120
#   CEPH_FRESH=1        tear down a running cluster and start a new one
#   CEPH_KEEP_ON_FAILURE=1  leave daemons running when setup fails (default: stop them,
#                       keep $CEPH_DIR/log for reading; the next run wipes it)
#
# Idempotency: if the cluster in CEPH_DIR is already up (all recorded PIDs alive and RGW
# answers) this prints its endpoint and exits 0 without touching it -- unless CEPH_FRESH=1 or
# a different store type was asked for explicitly, then it restarts cleanly. A half-dead or
# stopped cluster is always wiped and recreated: data is never kept across restarts.
#
# Output: <CEPH_DIR>/ceph.json = {"endpoint_url", "access_key", "secret_key", "region",
# "pids", "daemons", "store", "ceph_dir", "ceph_conf"}; logs in <CEPH_DIR>/log/.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

log() { printf '[ceph-up] %s\n' "$*" >&2; }
die() { printf '[ceph-up] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

case "${1:-}" in
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac
STORE_ARG=${1:-}
STORE=${STORE_ARG:-${CEPH_STORE:-bluestore}}
case "$STORE" in
  bluestore | memstore) ;;
  *) die "unknown store '$STORE' (use bluestore or memstore)" ;;
esac

D=${CEPH_DIR:-$REPO/.ceph}
case "$D" in /*) ;; *) D=$PWD/$D ;; esac
D=${D%/}
RGW_PORT=${CEPH_RGW_PORT:-7480}
MON_PORT=${CEPH_MON_PORT:-6789}
MON_V2_PORT=${CEPH_MON_V2_PORT:-3300}
MS_PORT_MIN=${CEPH_MS_PORT_MIN:-6800}
MS_PORT_MAX=${CEPH_MS_PORT_MAX:-7300}
ACCESS_KEY=${CEPH_ACCESS_KEY:-TESTACCESSKEY}
SECRET_KEY=${CEPH_SECRET_KEY:-TESTSECRETKEY}
REGION=${CEPH_REGION:-us-east-1}
TIMEOUT=${CEPH_START_TIMEOUT:-120}
ENDPOINT=http://127.0.0.1:$RGW_PORT
MARKER=.ceph-launcher # only directories holding this file are ever wiped

to_bytes() { # 20G, 20GiB, 512M, 1073741824 -> bytes (IEC units)
  local v=${1%iB}
  v=${v%B}
  numfmt --from=iec "$v" 2>/dev/null || die "bad size '$1'"
}
BLOCK_BYTES=$(to_bytes "${CEPH_BLOCK_SIZE:-20G}")
MEMSTORE_BYTES=$(to_bytes "${CEPH_MEMSTORE_SIZE:-12G}")
OSD_MEM_BYTES=$(to_bytes "${CEPH_OSD_MEMORY_TARGET:-1G}")

# ---------------------------------------------------------------- packages
PACKAGES=(ceph-mon ceph-osd ceph-mgr radosgw ceph-common uuid-runtime curl)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    die "missing Debian packages: ${missing[*]}. Installing them needs root: run this script as root, or
       sudo apt-get install -y --no-install-recommends ${missing[*]}"
  fi
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get (Debian/Ubuntu only)"
  log "installing ${missing[*]} with apt-get ..."
  t0=$(now)
  export DEBIAN_FRONTEND=noninteractive
  # Keep the packages' maintainer scripts from starting services (ceph targets, smartd, ...)
  # on machines that run an init system: a temporary policy-rc.d, removed again afterwards.
  POLICY=/usr/sbin/policy-rc.d
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# temporary, from ceph-up.sh\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    trap 'grep -q "from ceph-up.sh" "$POLICY" 2>/dev/null && rm -f "$POLICY"' EXIT
  fi
  apt_install() { apt-get install -y -q --no-install-recommends "${missing[@]}"; }
  if ! apt_install; then
    log "apt-get install failed; running apt-get update and retrying"
    { apt-get update -q && apt_install; } || die "apt-get install ${missing[*]} failed"
  fi
  log "packages installed in $(since "$t0") s"
  if grep -q "from ceph-up.sh" "$POLICY" 2>/dev/null; then rm -f "$POLICY"; fi
  trap - EXIT
fi
for b in ceph ceph-mon ceph-osd ceph-mgr radosgw radosgw-admin ceph-authtool monmaptool curl python3; do
  command -v "$b" >/dev/null || die "'$b' not found after installing packages"
done

# ---------------------------------------------------------------- existing cluster?
DAEMONS=(mon.a mgr.x osd.0 rgw.a)
pid_alive() { # pid file -> true if its process is alive and is ours (cmdline has our ceph.conf)
  local f=$1 pid
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$D/ceph.conf"
}
rgw_answers() { curl -s -o /dev/null -m 3 "$1/"; }

if [ -d "$D" ] && [ -n "$(ls -A "$D" 2>/dev/null)" ]; then
  [ -e "$D/$MARKER" ] ||
    die "$D exists, is not empty and was not made by this script; refusing to touch it (set CEPH_DIR)"
  alive=0
  for n in "${DAEMONS[@]}"; do pid_alive "$D/pids/$n.pid" && alive=$((alive + 1)); done
  if [ "$alive" = "${#DAEMONS[@]}" ] && [ -s "$D/ceph.json" ] && [ "${CEPH_FRESH:-0}" != 1 ]; then
    running_store=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("store",""))' "$D/ceph.json")
    running_ep=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["endpoint_url"])' "$D/ceph.json")
    if [ -n "$STORE_ARG" ] && [ "$STORE_ARG" != "$running_store" ]; then
      log "a $running_store cluster is running in $D but $STORE_ARG was asked for: restarting"
    elif rgw_answers "$running_ep"; then
      log "already running ($running_store) in $D -- nothing to do (CEPH_FRESH=1 to restart)"
      python3 - "$D/ceph.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
print(f"endpoint_url={c['endpoint_url']}\naccess_key={c['access_key']}\nsecret_key={c['secret_key']}\nregion={c['region']}")
EOF
      exit 0
    else
      log "daemons alive in $D but RGW at $running_ep does not answer: restarting"
    fi
  elif [ "${CEPH_FRESH:-0}" = 1 ]; then
    log "CEPH_FRESH=1: stopping the cluster in $D ($alive of ${#DAEMONS[@]} daemons alive) and starting afresh"
  elif [ "$alive" = "${#DAEMONS[@]}" ]; then
    log "daemons alive in $D but no ceph.json (an earlier setup did not finish): restarting cleanly"
  elif ((alive)); then
    log "only $alive of ${#DAEMONS[@]} daemons alive in $D: restarting cleanly"
  else
    log "stale $D from an earlier run (nothing running): starting afresh"
  fi
  CEPH_DIR=$D "$HERE/ceph-down.sh"
fi

# ---------------------------------------------------------------- ports free?
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$RGW_PORT" "$MON_PORT" "$MON_V2_PORT"; do
  port_busy "$p" && die "port 127.0.0.1:$p is already in use (set CEPH_RGW_PORT / CEPH_MON_PORT / CEPH_MON_V2_PORT)"
done

T_SETUP=$(now)
mkdir -p "$D"/{run,pids,log,mon/ceph-a,osd/ceph-0,mgr/ceph-x,rgw}
touch "$D/$MARKER"
# On any failure from here on, stop what was started (keeping the logs) so no half-built
# cluster is left running; CEPH_KEEP_ON_FAILURE=1 leaves it up for debugging.
on_exit() {
  local rc=$?
  ((rc)) || return 0
  if [ "${CEPH_KEEP_ON_FAILURE:-0}" = 1 ]; then
    log "setup failed; daemons left running (CEPH_KEEP_ON_FAILURE=1); stop with build/ceph-down.sh"
  else
    log "setup failed; stopping the daemons started so far (logs kept in $D/log)"
    CEPH_DIR=$D "$HERE/ceph-down.sh" --keep-data || true
  fi
  exit "$rc"
}
trap on_exit EXIT
FSID=$(cat /proc/sys/kernel/random/uuid)
MON_ADDR="[v2:127.0.0.1:$MON_V2_PORT,v1:127.0.0.1:$MON_PORT]"
CONF=$D/ceph.conf

cat >"$CONF" <<EOF
# generated by build/ceph-up.sh ($STORE) -- single node, loopback only, test use
[global]
fsid = $FSID
mon initial members = a
mon host = $MON_ADDR
public network = 127.0.0.0/8
ms bind ipv6 = false
ms bind port min = $MS_PORT_MIN
ms bind port max = $MS_PORT_MAX
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $D/\$name.keyring
run dir = $D/run
pid file = $D/run/\$name.pid
admin socket = $D/run/\$name.asok
log file = $D/log/\$name.log
log to stderr = false
err to stderr = true
mon cluster log file = $D/log/\$cluster.log
mon data = $D/mon/\$cluster-\$id
osd data = $D/osd/\$cluster-\$id
mgr data = $D/mgr/\$cluster-\$id
crash dir = $D/crash
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
osd crush chooseleaf type = 0
mon data avail warn = 2
mon data avail crit = 1
# fewer messenger threads: 2 cores shared with the client under test
ms async op threads = 2
[mon]
# commit map changes after 0.1 s instead of 1 s: RGW's pool setup at first start drops from
# ~8.5 s to ~1 s (each pool create / application enable waits for one commit)
paxos propose interval = 0.1
[mgr]
mgr initial modules =
[osd]
osd objectstore = $STORE
memstore device bytes = $MEMSTORE_BYTES
bluestore block path = $D/osd/ceph-0/block.file
bluestore block size = $BLOCK_BYTES
bluestore block create = true
osd memory target = $OSD_MEM_BYTES
osd max object size = 134217728
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $D/rgw
rgw gc obj min wait = 60
rgw gc processor period = 60
EOF
if [ -n "${CEPH_RGW_MIN_PART_SIZE:-}" ]; then
  echo "rgw multipart min part size = $(to_bytes "$CEPH_RGW_MIN_PART_SIZE")" >>"$CONF"
fi

C=(-c "$CONF")
ceph_() { timeout 30 ceph "${C[@]}" "$@"; }

# Start a daemon: it daemonizes itself and writes $D/run/<name>.pid; we copy the PID to
# $D/pids/ (kept even if the daemon dies, so ceph-down.sh can still check it).
start_daemon() { # name ceph-name cmd...   (ceph-name is $name in ceph.conf, e.g. client.rgw.a)
  local name=$1 cname=$2
  shift 2
  local t0 pid
  t0=$(now)
  rm -f "$D/run/$cname.pid"
  "$@" "${C[@]}" >>"$D/log/$name.out" 2>&1 || {
    tail -n 30 "$D/log/$name.out" "$D/log/$cname.log" >&2 2>/dev/null || true
    die "$name failed to start (log above)"
  }
  for _ in $(seq 100); do [ -s "$D/run/$cname.pid" ] && break; sleep 0.1; done
  [ -s "$D/run/$cname.pid" ] || die "$name started but wrote no pid file $D/run/$cname.pid"
  pid=$(cat "$D/run/$cname.pid")
  echo "$pid" >"$D/pids/$name.pid"
  log "started $name pid $pid ($(since "$t0") s)"
}
wait_for() { # description seconds logfile cmd...
  local what=$1 secs=$2 logf=$3
  shift 3
  local end=$((SECONDS + secs))
  while :; do
    "$@" >/dev/null 2>&1 && return 0
    ((SECONDS < end)) || break
    sleep 0.5
  done
  log "timed out after ${secs} s waiting for $what; last lines of $logf:"
  tail -n 40 "$logf" >&2 2>/dev/null || true
  die "$what did not come up (logs in $D/log)"
}

# ---------------------------------------------------------------- keys + mon
t0=$(now)
ceph-authtool --create-keyring "$D/mon.a.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$D/client.admin.keyring" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
ceph-authtool "$D/mon.a.keyring" --import-keyring "$D/client.admin.keyring" >/dev/null
monmaptool --create --addv a "$MON_ADDR" --fsid "$FSID" "$D/monmap" >/dev/null
ceph-mon "${C[@]}" --mkfs -i a --monmap "$D/monmap" --keyring "$D/mon.a.keyring" >>"$D/log/mon.a.out" 2>&1
cp "$D/mon.a.keyring" "$D/mon/ceph-a/keyring"
start_daemon mon.a mon.a ceph-mon -i a
wait_for "ceph-mon" "$TIMEOUT" "$D/log/mon.a.log" ceph_ mon stat
log "mon up ($(since "$t0") s)"

# ---------------------------------------------------------------- mgr
ceph_ auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
  -o "$D/mgr.x.keyring" >/dev/null
start_daemon mgr.x mgr.x ceph-mgr -i x

# ---------------------------------------------------------------- osd
t0=$(now)
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
OSD_ID=$(ceph_ osd new "$OSD_UUID")
[ "$OSD_ID" = 0 ] || die "expected osd id 0, got '$OSD_ID'"
ceph-osd "${C[@]}" -i 0 --no-mon-config --mkfs --mkkey --osd-uuid "$OSD_UUID" \
  --keyring "$D/osd/ceph-0/keyring" >>"$D/log/osd.0.out" 2>&1 ||
  { tail -n 30 "$D/log/osd.0.out" "$D/log/osd.0.log" >&2; die "ceph-osd --mkfs failed"; }
ceph_ auth add osd.0 osd 'allow *' mon 'allow profile osd' mgr 'allow profile osd' \
  -i "$D/osd/ceph-0/keyring" >/dev/null 2>&1
cp "$D/osd/ceph-0/keyring" "$D/osd.0.keyring"
start_daemon osd.0 osd.0 ceph-osd -i 0
osd_up() { ceph_ osd stat -f json | grep -q '"num_up_osds":1'; }
wait_for "ceph-osd" "$TIMEOUT" "$D/log/osd.0.log" osd_up
log "osd up ($(since "$t0") s)"

# ---------------------------------------------------------------- rgw
t0=$(now)
ceph_ auth get-or-create client.rgw.a mon 'allow rw' osd 'allow rwx' mgr 'allow rw' \
  -o "$D/client.rgw.a.keyring" >/dev/null
start_daemon rgw.a client.rgw.a radosgw -n client.rgw.a
wait_for "radosgw on $ENDPOINT" "$TIMEOUT" "$D/log/client.rgw.a.log" rgw_answers "$ENDPOINT"
log "rgw answers on $ENDPOINT ($(since "$t0") s)"

# ---------------------------------------------------------------- S3 user
timeout 60 radosgw-admin "${C[@]}" user create --uid=test --display-name="S3 test user" \
  --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >"$D/user.json" 2>>"$D/log/radosgw-admin.out" ||
  { tail -n 20 "$D/log/radosgw-admin.out" >&2; die "radosgw-admin user create failed"; }
# a SigV4-signed ListBuckets must answer 200 with the new keys (curl 7.88 does not send
# x-amz-content-sha256 itself and RGW requires it: pass the hash of the empty body)
EMPTY_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
s3_ok() {
  [ "$(curl -s -o /dev/null -w '%{http_code}' -m 5 --aws-sigv4 "aws:amz:$REGION:s3" \
    --user "$ACCESS_KEY:$SECRET_KEY" -H "x-amz-content-sha256: $EMPTY_SHA256" \
    "$ENDPOINT/")" = 200 ]
}
wait_for "signed S3 request with the new user's keys" 30 "$D/log/client.rgw.a.log" s3_ok

# ---------------------------------------------------------------- ceph.json
python3 - "$D" "$ENDPOINT" "$ACCESS_KEY" "$SECRET_KEY" "$REGION" "$STORE" "${DAEMONS[@]}" <<'EOF'
import json, os, sys
d, endpoint, ak, sk, region, store, *names = sys.argv[1:]
daemons = {n: int(open(os.path.join(d, "pids", n + ".pid")).read()) for n in names}
cfg = {
    "endpoint_url": endpoint, "access_key": ak, "secret_key": sk, "region": region,
    "pids": list(daemons.values()), "daemons": daemons, "store": store,
    "ceph_dir": d, "ceph_conf": os.path.join(d, "ceph.conf"),
}
tmp = os.path.join(d, "ceph.json.tmp")
with open(tmp, "w") as f:
    json.dump(cfg, f, indent=2)
    f.write("\n")
os.replace(tmp, os.path.join(d, "ceph.json"))
EOF

log "cluster ($STORE) ready in $(since "$T_SETUP") s; config in $D/ceph.json"
cat <<EOF
endpoint_url=$ENDPOINT
access_key=$ACCESS_KEY
secret_key=$SECRET_KEY
region=$REGION
# ceph CLI: ceph -c $CONF -s        stop: build/ceph-down.sh
EOF
