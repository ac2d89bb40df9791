#!/usr/bin/env bash
# Build the "before" ghga-cli for bench/suite.py --baseline-cli: the client package of one
# commit (default e572fae, the client before the week's changes) in its own venv, so that the
# suite can run it beside the current client against the same server in the same run.
#
#   bash bench/build_baseline.sh [REV] [VENV]      (make bench-baseline)
#   -> VENV/bin/ghga-cli, and VENV/BASELINE_REV naming the commit it was built from
#
# The client is a normal package (pyproject.toml at the top of the tree), so `git archive`
# of the commit and a plain (non-editable) `pip install` give exactly that commit's code.
set -euo pipefail
REV="${1:-e572fae}"
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${2:-$HERE/.baseline-venv}"
PYTHON="${PYTHON:-python3}"
REPO="$(git -C "$HERE" rev-parse --show-toplevel)"
FULL_REV="$(git -C "$REPO" rev-parse --verify "$REV^{commit}")"

SRC="$(mktemp -d "${TMPDIR:-/tmp}/ghga-baseline-src.XXXXXX")"
trap 'rm -rf "$SRC"' EXIT
git -C "$REPO" archive "$FULL_REV" | tar -x -C "$SRC"

rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check pycurl
"$VENV/bin/pip" install --quiet --disable-pip-version-check "$SRC"
echo "$FULL_REV" > "$VENV/BASELINE_REV"
echo "built $VENV/bin/ghga-cli ($("$VENV/bin/ghga-cli" --version), commit ${FULL_REV:0:7})"
