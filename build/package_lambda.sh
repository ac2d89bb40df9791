#!/usr/bin/env bash
# Package the Chalice app (UCS + DRS3) for AWS Lambda with `chalice package`.
#
# Usage: build/package_lambda.sh [OUT_DIR]   (default: build/out/lambda)
# Environment: STAGE (default dev), AWS_DEFAULT_REGION (default us-east-1), PYTHON (default:
# the project venv's python).
#
# Why the steps: `chalice package` zips only app.py, chalicelib/, vendor/ and the packages of
# requirements.txt, so ucs_lambda/ is copied into vendor/ first; stale zips in
# .chalice/deployments were reused by chalice, so that directory is removed. The SQS handler's
# queue name is fixed at packaging time (Chalice writes it into the template), so it is taken
# from the stage's environment_variables in .chalice/config.json. The gateway responses in
# .chalice/gateway-responses.json make API Gateway's own errors (unknown route, body too large,
# timeouts) JSON bodies in the API's error shape.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/build/out/lambda}"
STAGE="${STAGE:-dev}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"

cd "$ROOT"
rm -rf .chalice/deployments vendor/ucs_lambda "$OUT"
mkdir -p vendor
cp -r ucs_lambda vendor/ucs_lambda
find vendor/ucs_lambda -name '__pycache__' -type d -prune -exec rm -rf {} +

UCS_JOB_QUEUE="$("$PYTHON" -c '
import json, sys
cfg = json.load(open(".chalice/config.json"))
print(cfg["stages"][sys.argv[1]]["environment_variables"]["UCS_JOB_QUEUE"])
' "$STAGE")"
export UCS_JOB_QUEUE

CHALICE="$(dirname "$PYTHON")/chalice"
"$CHALICE" package --stage "$STAGE" \
  --merge-template .chalice/gateway-responses.json \
  "$OUT"
rm -rf vendor/ucs_lambda
echo "packaged stage $STAGE into $OUT"
