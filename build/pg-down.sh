#!/usr/bin/env bash
# Stop the PostgreSQL started by build/pg-up.sh (same PG_DIR) and remove its data.
# Environment: PG_DIR (default <repo>/.pg), PG_BIN (default the newest /usr/lib/postgresql/*/bin).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
D=${PG_DIR:-$REPO/.pg}
case "$D" in /*) ;; *) D=$PWD/$D ;; esac
D=${D%/}
DATA=$D/data
if [ -z "${PG_BIN:-}" ]; then
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
fi
RUN=()
[ "$(id -u)" = 0 ] && RUN=(runuser -u postgres --)
if [ -e "$DATA/PG_VERSION" ] && [ -n "$PG_BIN" ]; then
  "${RUN[@]}" "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
fi
if [ -L "$DATA" ]; then rm -rf "$(readlink "$DATA")"; fi
rm -rf "$DATA" "$D/pg.env"
printf '[pg-down] stopped\n' >&2
