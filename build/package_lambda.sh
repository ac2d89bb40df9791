#!/usr/bin/env bash
# Package the Chalice app (UCS + DRS3) for AWS Lambda with `chalice package`, together with
# everything it needs (tables, buckets, queues, IAM policy): see build/cfn/merge.py.
#
# Usage: build/package_lambda.sh [OUT_DIR]   (default: build/out/lambda)
# Environment: STAGE (dev|prod, default dev), PKG_FORMAT (cloudformation|terraform, default
# cloudformation), AWS_DEFAULT_REGION (default us-east-1; no credentials are needed), PYTHON
# (default: the project venv's python).
#
# Output: OUT_DIR/deployment.zip plus OUT_DIR/sam.json (CloudFormation/SAM) or
# OUT_DIR/chalice.tf.json (Terraform).
#
# Why the steps: build/check_stage.py refuses a stage without the settings a deployment has no
# default for (UCS_DRS_HOSTNAME, the host of the drs:// URIs). `chalice package` zips only app.py, chalicelib/, vendor/ and the packages of
# requirements.txt, so ucs_lambda/ is copied into vendor/ first; stale zips in
# .chalice/deployments were reused by chalice, so that directory is removed. The SQS handler's
# queue name is fixed at packaging time (Chalice writes it into the template), so it is taken
# from the stage's environment_variables in .chalice/config.json. build/cfn/merge.py adds the
# resources and the gateway responses of .chalice/gateway-responses.json (API Gateway's own
# errors in the API's JSON error shape): with --merge-template for CloudFormation, by merging
# into chalice.tf.json for Terraform.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/build/out/lambda}"
STAGE="${STAGE:-dev}"
PKG_FORMAT="${PKG_FORMAT:-cloudformation}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"

case "$PKG_FORMAT" in
  cloudformation | terraform) ;;
  *) echo "PKG_FORMAT must be cloudformation or terraform, not $PKG_FORMAT" >&2; exit 2 ;;
esac

cd "$ROOT"
# A stage that a deployment could not run with (no UCS_DRS_HOSTNAME) is refused up front.
"$PYTHON" build/check_stage.py --stage "$STAGE"
rm -rf .chalice/deployments vendor/ucs_lambda "$OUT"
mkdir -p vendor "$(dirname "$OUT")"
cp -r ucs_lambda vendor/ucs_lambda
find vendor/ucs_lambda -name '__pycache__' -type d -prune -exec rm -rf {} +
trap 'rm -rf "$ROOT/vendor/ucs_lambda"' EXIT

UCS_JOB_QUEUE="$("$PYTHON" -c '
import json, sys
cfg = json.load(open(".chalice/config.json"))
print(cfg["stages"][sys.argv[1]]["environment_variables"]["UCS_JOB_QUEUE"])
' "$STAGE")"
export UCS_JOB_QUEUE

CHALICE="$(dirname "$PYTHON")/chalice"
if [ "$PKG_FORMAT" = cloudformation ]; then
  MERGE="$(mktemp --suffix=.json)"
  "$PYTHON" build/cfn/merge.py cloudformation --stage "$STAGE" --out "$MERGE"
  "$CHALICE" package --stage "$STAGE" --merge-template "$MERGE" "$OUT"
  rm -f "$MERGE"
else
  "$CHALICE" package --stage "$STAGE" --pkg-format terraform "$OUT"
  "$PYTHON" build/cfn/merge.py terraform --stage "$STAGE" --template "$OUT/chalice.tf.json"
fi
echo "packaged stage $STAGE ($PKG_FORMAT) into $OUT"
