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
# queue name and maximum concurrency are fixed at packaging time (Chalice writes them into the
# template), so they are taken from the stage in .chalice/config.json: the queue name from its
# environment_variables, the event source's maximum concurrency (UCS_JOB_MAX_CONCURRENCY, read
# by ucs_lambda/app.py) equal to the job function's reserved_concurrency, so that Lambda never
# starts more job invocations than are reserved for them. build/cfn/merge.py adds the
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

STAGE_VALUES="$("$PYTHON" -c '
import sys
sys.path.insert(0, "build/cfn")
from merge import load_stage
stage = load_stage(sys.argv[1])
print(stage["env"]["UCS_JOB_QUEUE"], stage["job_concurrency"])
' "$STAGE")"
read -r UCS_JOB_QUEUE UCS_JOB_MAX_CONCURRENCY <<<"$STAGE_VALUES"
export UCS_JOB_QUEUE UCS_JOB_MAX_CONCURRENCY

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
