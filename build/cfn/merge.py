"""The infrastructure the service needs, merged into what ``chalice package`` generates.

Chalice generates the functions, the API, the SQS event source and the schedules; this adds the
DynamoDB tables (with their indexes), the three buckets, the job queue with its dead-letter queue,
log groups, a DLQ alarm and the API stage's throttling (``api_throttling`` of the stage in
``.chalice/config.json``: ``rate_limit`` requests per second, ``burst_limit``), and points the
functions' environment and IAM policy at those resources.

Two outputs from one description (standard library only, no AWS access):

* ``cloudformation`` — a template for ``chalice package --merge-template FILE`` (Chalice deep-merges
  it into ``sam.json``);
* ``terraform`` — the same resources merged into ``chalice.tf.json`` in place (Chalice has no merge
  option for Terraform, so this script does the equivalent deep merge itself).

Names: tables and queue are named as in the stage's ``environment_variables`` of
``.chalice/config.json``; bucket names get ``-<account id>-<region>`` appended because S3 names are
global. The functions' ``UCS_*`` variables reference the created resources, so they always agree.

The IAM policy is ``.chalice/policy-<stage>.json`` (actions reviewed against the code by
``tests/deploy/test_iam_policy.py``) with each resource ARN replaced by a reference to the created
resource in this account and region. The token keys stay in the SSM SecureString parameter named by
``UCS_TOKEN_KEYS_PARAMETER`` (created by the operator, never in a template).

Usage::

    python build/cfn/merge.py cloudformation --stage dev --out build/out/merge-dev.json
    python build/cfn/merge.py terraform --stage dev --template build/out/lambda-tf/chalice.tf.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

#: Chalice handler name -> CloudFormation logical id of the function (``APIHandler`` is the REST
#: API's). ``tests/deploy`` checks that every function in the generated template is listed here.
FUNCTIONS = {
    "api_handler": "APIHandler",
    "on_job_message": "OnJobMessage",
    "sweep_stale_uploads": "SweepStaleUploads",
    "cleanup_outbox": "CleanupOutbox",
}
SQS_FUNCTION = "on_job_message"
LOG_RETENTION_DAYS = 90
#: Inbox: abort multipart uploads nobody finished (the stale sweep cancels them after 7 days).
ABORT_INCOMPLETE_DAYS = 14
DLQ_MAX_RECEIVES = 5
#: SQS visibility timeout: AWS advises six times the consuming function's timeout.
VISIBILITY_FACTOR = 6
#: What the job function's ``reserved_concurrency`` may be: it is also the SQS event source's
#: ``MaximumConcurrency`` (build/package_lambda.sh), which Lambda accepts from 2 to 1000.
JOB_CONCURRENCY_RANGE = (2, 1000)

# logical name -> (environment variable, kind)
RESOURCES = {
    "FilesTable": ("UCS_FILES_TABLE", "table"),
    "UploadsTable": ("UCS_UPLOADS_TABLE", "table"),
    "InboxBucket": ("UCS_INBOX_BUCKET", "bucket"),
    "PermanentBucket": ("UCS_PERMANENT_BUCKET", "bucket"),
    "OutboxBucket": ("UCS_OUTBOX_BUCKET", "bucket"),
    "JobQueue": ("UCS_JOB_QUEUE", "queue"),
}
TF_NAMES = {
    "FilesTable": "files",
    "UploadsTable": "uploads",
    "InboxBucket": "inbox",
    "PermanentBucket": "permanent",
    "OutboxBucket": "outbox",
    "JobQueue": "jobs",
}
TABLE_KEYS = {"FilesTable": "file_id", "UploadsTable": "upload_id"}
#: Global secondary indexes per table: (name, [(attribute, HASH|RANGE)], projection). The same
#: as the pynamodb models of ucs_lambda/adapters/dynamo.py (tests/deploy compares them). All key
#: attributes are strings (``updated`` is pynamodb's UTC timestamp text, sortable).
INDEXES: dict[str, list[tuple[str, list[tuple[str, str]], str]]] = {
    "UploadsTable": [
        ("file_id-index", [("file_id", "HASH")], "ALL"),
        # the stale-upload sweep: uploads by status, oldest change first (keys only)
        ("upload_status-index", [("upload_status", "HASH"), ("updated", "RANGE")], "KEYS_ONLY"),
    ]
}
#: API Gateway stage throttling (requests per second, burst) when a stage sets no
#: ``api_throttling`` in .chalice/config.json.
DEFAULT_THROTTLING = {"rate_limit": 50, "burst_limit": 100}


def _index_attributes(logical: str) -> list[str]:
    """Key attributes of the table's indexes (each once, in order of appearance)."""
    names: list[str] = []
    for _, keys, _ in INDEXES.get(logical, []):
        names += [a for a, _ in keys if a not in names]
    return names


def load_stage(stage: str, root: Path = ROOT) -> dict[str, Any]:
    """The stage's settings from ``.chalice/config.json`` plus its policy document."""
    config = json.loads((root / ".chalice" / "config.json").read_text())
    if stage not in config["stages"]:
        raise SystemExit(f"unknown stage {stage!r}; have {sorted(config['stages'])}")
    st = config["stages"][stage]
    env = {**config.get("environment_variables", {}), **st.get("environment_variables", {})}
    for var, _ in RESOURCES.values():
        if not env.get(var):
            raise SystemExit(f"stage {stage}: environment_variables lacks {var}")
    if not env.get("UCS_TOKEN_KEYS_PARAMETER"):
        raise SystemExit(f"stage {stage}: set UCS_TOKEN_KEYS_PARAMETER (SSM SecureString name)")
    policy_file = st.get("iam_policy_file") or config.get("iam_policy_file")
    policy = json.loads((root / ".chalice" / policy_file).read_text())
    throttling = {**DEFAULT_THROTTLING, **config.get("api_throttling", {})}
    throttling.update(st.get("api_throttling", {}))
    for name in ("rate_limit", "burst_limit"):
        value = throttling[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SystemExit(f"stage {stage}: api_throttling.{name} must be a positive integer")
    # The job function's reserved concurrency is required, not defaulted: without it, a burst of
    # jobs could take the account's whole Lambda concurrency from the API.
    job_concurrency = (
        st.get("lambda_functions", {}).get(SQS_FUNCTION, {}).get("reserved_concurrency")
    )
    low, high = JOB_CONCURRENCY_RANGE
    if (
        isinstance(job_concurrency, bool)
        or not isinstance(job_concurrency, int)
        or not low <= job_concurrency <= high
    ):
        raise SystemExit(
            f"stage {stage}: lambda_functions.{SQS_FUNCTION}.reserved_concurrency must be an "
            f"integer from {low} to {high}, not {job_concurrency!r}"
        )
    timeouts = {
        name: st.get("lambda_functions", {}).get(name, {}).get("lambda_timeout")
        or st.get("lambda_timeout")
        or config.get("lambda_timeout", 60)
        for name in FUNCTIONS
    }
    return {
        "stage": stage,
        "app_name": config["app_name"],
        "env": env,
        "policy": policy,
        "timeouts": timeouts,
        "throttling": throttling,
        "job_concurrency": job_concurrency,
    }


def _outbox_expiry_days(env: dict[str, str]) -> int:
    """Outbox copies expire a day after the cleanup job would have deleted them."""
    seconds = int(env.get("UCS_OUTBOX_MAX_AGE_SECONDS") or 7 * 24 * 3600)
    return max(1, math.ceil(seconds / 86400)) + 1


def _visibility_timeout(stage: dict[str, Any]) -> int:
    return min(43200, VISIBILITY_FACTOR * int(stage["timeouts"][SQS_FUNCTION]))


def _lifecycle_rules(logical: str, env: dict[str, str]) -> list[dict[str, Any]]:
    """(id, abort days, expiration days or None) per bucket."""
    rules = [
        (
            "abort-incomplete-multipart-uploads",
            ABORT_INCOMPLETE_DAYS if logical == "InboxBucket" else 2,
            None,
        )
    ]
    if logical == "OutboxBucket":
        rules.append(("expire-staged-copies", None, _outbox_expiry_days(env)))
    return [{"id": i, "abort": a, "expire": e} for i, a, e in rules]


# ---- policy resource rewriting --------------------------------------------------------


def _classify_arn(arn: str, stage: dict[str, Any]) -> tuple[str, str | None, str]:
    """``arn`` of the policy file -> (kind, logical resource or None, suffix)."""
    env = stage["env"]
    names = {env[var]: logical for logical, (var, _) in RESOURCES.items()}
    m = re.fullmatch(r"arn:aws:dynamodb:\*:\*:table/([^/]+)(/.*)?", arn)
    if m and m[1] in names:
        return "table", names[m[1]], m[2] or ""
    m = re.fullmatch(r"arn:aws:s3:::([^/]+)(/.*)?", arn)
    if m and m[1] in names:
        return "bucket", names[m[1]], m[2] or ""
    m = re.fullmatch(r"arn:aws:sqs:\*:\*:(.+)", arn)
    if m and m[1] in names:
        return "queue", names[m[1]], ""
    m = re.fullmatch(r"arn:aws:ssm:\*:\*:parameter(/.+)", arn)
    if m and m[1].lstrip("/") == env["UCS_TOKEN_KEYS_PARAMETER"].lstrip("/"):
        return "parameter", None, m[1]
    prefix = f"arn:aws:logs:*:*:log-group:/aws/lambda/{stage['app_name']}-{stage['stage']}*"
    if arn == prefix:
        return "logs", None, ""
    if arn == "*":
        return "any", None, ""
    raise SystemExit(f"policy resource {arn!r} names nothing this template creates")


def _cfn_arn(arn: str, stage: dict[str, Any]) -> Any:
    kind, logical, suffix = _classify_arn(arn, stage)
    if kind in ("table", "bucket", "queue"):
        if not suffix:
            return {"Fn::GetAtt": [logical, "Arn"]}
        return {"Fn::Sub": f"${{{logical}.Arn}}{suffix}"}
    if kind == "parameter":
        return {
            "Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:"
            f"parameter{suffix}"
        }
    if kind == "logs":
        # SAM names functions <stack>-<LogicalId>-<random>
        return {
            "Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:"
            "log-group:/aws/lambda/${AWS::StackName}-*"
        }
    return arn


def _tf_arn(arn: str, stage: dict[str, Any]) -> str:
    kind, logical, suffix = _classify_arn(arn, stage)
    ctx = (
        "${data.aws_partition.chalice.partition}",
        "${data.aws_region.chalice.name}",
        "${data.aws_caller_identity.chalice.account_id}",
    )
    if kind in ("table", "bucket", "queue"):
        tf_type = {
            "table": "aws_dynamodb_table",
            "bucket": "aws_s3_bucket",
            "queue": "aws_sqs_queue",
        }
        return f"${{{tf_type[kind]}.{TF_NAMES[logical]}.arn}}{suffix}"
    if kind == "parameter":
        return f"arn:{ctx[0]}:ssm:{ctx[1]}:{ctx[2]}:parameter{suffix}"
    if kind == "logs":
        group = f"/aws/lambda/{stage['app_name']}-{stage['stage']}*"
        return f"arn:{ctx[0]}:logs:{ctx[1]}:{ctx[2]}:log-group:{group}"
    return arn


def _rewrite_policy(policy: dict[str, Any], fn: Any) -> dict[str, Any]:
    doc = copy.deepcopy(policy)
    for st in doc["Statement"]:
        res = st["Resource"]
        st["Resource"] = [fn(r) for r in res] if isinstance(res, list) else fn(res)
    return doc


# ---- CloudFormation ------------------------------------------------------------------


def cloudformation(stage: dict[str, Any]) -> dict[str, Any]:
    """The merge template for ``chalice package --merge-template``."""
    env = stage["env"]
    res: dict[str, Any] = {}
    retain = {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}
    for logical, (var, kind) in RESOURCES.items():
        name = env[var]
        if kind == "table":
            key = TABLE_KEYS[logical]
            attrs = [{"AttributeName": key, "AttributeType": "S"}]
            props: dict[str, Any] = {
                "TableName": name,
                "BillingMode": "PAY_PER_REQUEST",
                "KeySchema": [{"AttributeName": key, "KeyType": "HASH"}],
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                "SSESpecification": {"SSEEnabled": True},
            }
            attrs += [
                {"AttributeName": a, "AttributeType": "S"} for a in _index_attributes(logical)
            ]
            if logical in INDEXES:
                props["GlobalSecondaryIndexes"] = [
                    {
                        "IndexName": index,
                        "KeySchema": [{"AttributeName": a, "KeyType": t} for a, t in keys],
                        "Projection": {"ProjectionType": projection},
                    }
                    for index, keys, projection in INDEXES[logical]
                ]
            props["AttributeDefinitions"] = attrs
            res[logical] = {"Type": "AWS::DynamoDB::Table", **retain, "Properties": props}
        elif kind == "bucket":
            rules = []
            for r in _lifecycle_rules(logical, env):
                rule: dict[str, Any] = {"Id": r["id"], "Status": "Enabled"}
                if r["abort"]:
                    rule["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": r["abort"]}
                if r["expire"]:
                    rule["ExpirationInDays"] = r["expire"]
                rules.append(rule)
            res[logical] = {
                "Type": "AWS::S3::Bucket",
                **retain,
                "Properties": {
                    "BucketName": {"Fn::Sub": f"{name}-${{AWS::AccountId}}-${{AWS::Region}}"},
                    "PublicAccessBlockConfiguration": {
                        "BlockPublicAcls": True,
                        "BlockPublicPolicy": True,
                        "IgnorePublicAcls": True,
                        "RestrictPublicBuckets": True,
                    },
                    "BucketEncryption": {
                        "ServerSideEncryptionConfiguration": [
                            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                        ]
                    },
                    "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                    "LifecycleConfiguration": {"Rules": rules},
                },
            }
            res[f"{logical}Policy"] = {
                "Type": "AWS::S3::BucketPolicy",
                "Properties": {
                    "Bucket": {"Ref": logical},
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "TlsOnly",
                                "Effect": "Deny",
                                "Principal": "*",
                                "Action": "s3:*",
                                "Resource": [
                                    {"Fn::GetAtt": [logical, "Arn"]},
                                    {"Fn::Sub": f"${{{logical}.Arn}}/*"},
                                ],
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        ],
                    },
                },
            }
        else:
            res["JobDeadLetterQueue"] = {
                "Type": "AWS::SQS::Queue",
                "Properties": {
                    "QueueName": f"{name}-dlq",
                    "MessageRetentionPeriod": 1209600,
                    "SqsManagedSseEnabled": True,
                },
            }
            res[logical] = {
                "Type": "AWS::SQS::Queue",
                "Properties": {
                    "QueueName": name,
                    "VisibilityTimeout": _visibility_timeout(stage),
                    "MessageRetentionPeriod": 1209600,
                    "SqsManagedSseEnabled": True,
                    "RedrivePolicy": {
                        "deadLetterTargetArn": {"Fn::GetAtt": ["JobDeadLetterQueue", "Arn"]},
                        "maxReceiveCount": DLQ_MAX_RECEIVES,
                    },
                },
            }
    res["JobDeadLetterAlarm"] = {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmDescription": "Job messages failed repeatedly and wait in the dead-letter queue",
            "Namespace": "AWS/SQS",
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Dimensions": [
                {"Name": "QueueName", "Value": {"Fn::GetAtt": ["JobDeadLetterQueue", "QueueName"]}}
            ],
            "Statistic": "Maximum",
            "Period": 300,
            "EvaluationPeriods": 1,
            "Threshold": 0,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
        },
    }
    env_refs = {var: {"Ref": logical} for logical, (var, kind) in RESOURCES.items()}
    env_refs["UCS_JOB_QUEUE"] = {"Fn::GetAtt": ["JobQueue", "QueueName"]}
    policy = _rewrite_policy(stage["policy"], lambda a: _cfn_arn(a, stage))
    for handler, logical in FUNCTIONS.items():
        res[logical] = {"Properties": {"Environment": {"Variables": env_refs}}}
        role = "".join(p.capitalize() for p in handler.split("_")) + "Role"
        res[role] = {
            "Properties": {
                "Policies": [{"PolicyName": f"{logical}Policy", "PolicyDocument": policy}]
            }
        }
        res[f"{logical}LogGroup"] = {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {
                "LogGroupName": {"Fn::Sub": f"/aws/lambda/${{{logical}}}"},
                "RetentionInDays": LOG_RETENTION_DAYS,
            },
        }
    # Chalice's SQS event names the queue by an ARN built from UCS_JOB_QUEUE, the name JobQueue
    # gets; the function's UCS_JOB_QUEUE reference makes it (and so its event source mapping)
    # wait for the queue.
    outputs = {
        "FilesTableName": {"Value": {"Ref": "FilesTable"}},
        "UploadsTableName": {"Value": {"Ref": "UploadsTable"}},
        "InboxBucketName": {"Value": {"Ref": "InboxBucket"}},
        "PermanentBucketName": {"Value": {"Ref": "PermanentBucket"}},
        "OutboxBucketName": {"Value": {"Ref": "OutboxBucket"}},
        "JobQueueUrl": {"Value": {"Ref": "JobQueue"}},
        "JobDeadLetterQueueUrl": {"Value": {"Ref": "JobDeadLetterQueue"}},
        "TokenKeysParameter": {"Value": env["UCS_TOKEN_KEYS_PARAMETER"]},
    }
    gateway = json.loads((ROOT / ".chalice" / "gateway-responses.json").read_text())
    res["RestAPI"] = gateway["Resources"]["RestAPI"]  # chalice takes one merge template
    res["RestAPI"]["Properties"]["MethodSettings"] = [_cfn_throttling(stage["throttling"])]
    return {"Resources": res, "Outputs": outputs}


def _cfn_throttling(throttling: dict[str, int]) -> dict[str, Any]:
    """Stage-wide throttling of every method (SAM ``AWS::Serverless::Api`` MethodSettings)."""
    return {
        "ResourcePath": "/*",
        "HttpMethod": "*",
        "ThrottlingRateLimit": throttling["rate_limit"],
        "ThrottlingBurstLimit": throttling["burst_limit"],
    }


# ---- Terraform -----------------------------------------------------------------------


def terraform_resources(stage: dict[str, Any]) -> dict[str, Any]:
    """The same resources as Terraform JSON (AWS provider 4/5 resource types)."""
    env = stage["env"]
    r: dict[str, dict[str, Any]] = {}

    def add(tf_type: str, name: str, body: dict[str, Any]) -> None:
        r.setdefault(tf_type, {})[name] = body

    account_region = (
        "${data.aws_caller_identity.chalice.account_id}-${data.aws_region.chalice.name}"
    )
    for logical, (var, kind) in RESOURCES.items():
        name, tf = env[var], TF_NAMES[logical]
        if kind == "table":
            key = TABLE_KEYS[logical]
            body: dict[str, Any] = {
                "name": name,
                "billing_mode": "PAY_PER_REQUEST",
                "hash_key": key,
                "attribute": [{"name": key, "type": "S"}],
                "point_in_time_recovery": [{"enabled": True}],
                "server_side_encryption": [{"enabled": True}],
                "lifecycle": [{"prevent_destroy": True}],
            }
            body["attribute"] += [{"name": a, "type": "S"} for a in _index_attributes(logical)]
            if logical in INDEXES:
                body["global_secondary_index"] = [
                    {
                        "name": index,
                        "projection_type": projection,
                        **{("hash_key" if t == "HASH" else "range_key"): a for a, t in keys},
                    }
                    for index, keys, projection in INDEXES[logical]
                ]
            add("aws_dynamodb_table", tf, body)
        elif kind == "bucket":
            ref = f"${{aws_s3_bucket.{tf}.id}}"
            add(
                "aws_s3_bucket",
                tf,
                {"bucket": f"{name}-{account_region}", "lifecycle": [{"prevent_destroy": True}]},
            )
            add(
                "aws_s3_bucket_public_access_block",
                tf,
                {
                    "bucket": ref,
                    "block_public_acls": True,
                    "block_public_policy": True,
                    "ignore_public_acls": True,
                    "restrict_public_buckets": True,
                },
            )
            add(
                "aws_s3_bucket_server_side_encryption_configuration",
                tf,
                {
                    "bucket": ref,
                    "rule": [
                        {"apply_server_side_encryption_by_default": [{"sse_algorithm": "AES256"}]}
                    ],
                },
            )
            add(
                "aws_s3_bucket_ownership_controls",
                tf,
                {"bucket": ref, "rule": [{"object_ownership": "BucketOwnerEnforced"}]},
            )
            rules = []
            for lr in _lifecycle_rules(logical, env):
                rule: dict[str, Any] = {"id": lr["id"], "status": "Enabled", "filter": [{}]}
                if lr["abort"]:
                    rule["abort_incomplete_multipart_upload"] = [
                        {"days_after_initiation": lr["abort"]}
                    ]
                if lr["expire"]:
                    rule["expiration"] = [{"days": lr["expire"]}]
                rules.append(rule)
            add("aws_s3_bucket_lifecycle_configuration", tf, {"bucket": ref, "rule": rules})
            tls_only = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "TlsOnly",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": [
                            f"${{aws_s3_bucket.{tf}.arn}}",
                            f"${{aws_s3_bucket.{tf}.arn}}/*",
                        ],
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    }
                ],
            }
            add(
                "aws_s3_bucket_policy",
                tf,
                {
                    "bucket": ref,
                    "policy": json.dumps(tls_only),
                    "depends_on": [f"aws_s3_bucket_public_access_block.{tf}"],
                },
            )
        else:
            add(
                "aws_sqs_queue",
                "jobs_dlq",
                {
                    "name": f"{name}-dlq",
                    "message_retention_seconds": 1209600,
                    "sqs_managed_sse_enabled": True,
                },
            )
            redrive = json.dumps(
                {
                    "deadLetterTargetArn": "${aws_sqs_queue.jobs_dlq.arn}",
                    "maxReceiveCount": DLQ_MAX_RECEIVES,
                }
            )
            add(
                "aws_sqs_queue",
                tf,
                {
                    "name": name,
                    "visibility_timeout_seconds": _visibility_timeout(stage),
                    "message_retention_seconds": 1209600,
                    "sqs_managed_sse_enabled": True,
                    "redrive_policy": redrive,
                },
            )
    add(
        "aws_cloudwatch_metric_alarm",
        "jobs_dlq",
        {
            "alarm_name": f"{stage['app_name']}-{stage['stage']}-jobs-dlq",
            "alarm_description": "Job messages failed repeatedly and wait in the dead-letter queue",
            "namespace": "AWS/SQS",
            "metric_name": "ApproximateNumberOfMessagesVisible",
            "dimensions": {"QueueName": "${aws_sqs_queue.jobs_dlq.name}"},
            "statistic": "Maximum",
            "period": 300,
            "evaluation_periods": 1,
            "threshold": 0,
            "comparison_operator": "GreaterThanThreshold",
            "treat_missing_data": "notBreaching",
        },
    )
    for handler in FUNCTIONS:
        add(
            "aws_cloudwatch_log_group",
            handler,
            {
                "name": f"/aws/lambda/${{aws_lambda_function.{handler}.function_name}}",
                "retention_in_days": LOG_RETENTION_DAYS,
            },
        )
    return r


def merge_terraform(template: dict[str, Any], stage: dict[str, Any]) -> dict[str, Any]:
    """``chalice.tf.json`` with the resources added and functions/policies pointed at them."""
    out = copy.deepcopy(template)
    resources = out.setdefault("resource", {})
    for tf_type, items in terraform_resources(stage).items():
        resources.setdefault(tf_type, {}).update(items)
    env_refs = {
        "UCS_FILES_TABLE": "${aws_dynamodb_table.files.name}",
        "UCS_UPLOADS_TABLE": "${aws_dynamodb_table.uploads.name}",
        "UCS_INBOX_BUCKET": "${aws_s3_bucket.inbox.bucket}",
        "UCS_PERMANENT_BUCKET": "${aws_s3_bucket.permanent.bucket}",
        "UCS_OUTBOX_BUCKET": "${aws_s3_bucket.outbox.bucket}",
        "UCS_JOB_QUEUE": "${aws_sqs_queue.jobs.name}",
    }
    policy = json.dumps(_rewrite_policy(stage["policy"], lambda a: _tf_arn(a, stage)))
    for handler in FUNCTIONS:
        fn = resources["aws_lambda_function"][handler]
        fn["environment"]["variables"].update(env_refs)
        resources["aws_iam_role_policy"][f"{handler}_role"]["policy"] = policy
    for mapping in resources.get("aws_lambda_event_source_mapping", {}).values():
        mapping["event_source_arn"] = "${aws_sqs_queue.jobs.arn}"
    # Stage-wide throttling of every method, as the CloudFormation template's MethodSettings.
    resources.setdefault("aws_api_gateway_method_settings", {})["rest_api"] = {
        "rest_api_id": "${aws_api_gateway_rest_api.rest_api.id}",
        "stage_name": "${aws_api_gateway_deployment.rest_api.stage_name}",
        "method_path": "*/*",
        "settings": [
            {
                "throttling_rate_limit": stage["throttling"]["rate_limit"],
                "throttling_burst_limit": stage["throttling"]["burst_limit"],
            }
        ],
    }
    # API Gateway's own errors in the API's error shape (what --merge-template does for CFN).
    gateway = json.loads((ROOT / ".chalice" / "gateway-responses.json").read_text())
    body = gateway["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    swagger = json.loads(out["locals"]["chalice_api_swagger"])
    swagger.update(body)
    out["locals"]["chalice_api_swagger"] = json.dumps(swagger)
    # Chalice pins Terraform < 1.4 and the AWS provider < 5; the generated resources are valid
    # for the AWS provider 5 too (checked by `terraform validate` in tests/deploy). Its
    # null_data_source is unused and would need the deprecated null provider. 4.51 is the
    # first provider with the event source mapping's scaling_config (maximum concurrency).
    out["data"].pop("null_data_source", None)
    out["terraform"] = {
        "required_version": ">= 1.0",
        "required_providers": {"aws": {"source": "hashicorp/aws", "version": ">= 4.51, < 6"}},
    }
    outputs = out.setdefault("output", {})
    outputs.update(
        {
            "FilesTableName": {"value": "${aws_dynamodb_table.files.name}"},
            "UploadsTableName": {"value": "${aws_dynamodb_table.uploads.name}"},
            "InboxBucketName": {"value": "${aws_s3_bucket.inbox.bucket}"},
            "PermanentBucketName": {"value": "${aws_s3_bucket.permanent.bucket}"},
            "OutboxBucketName": {"value": "${aws_s3_bucket.outbox.bucket}"},
            "JobQueueUrl": {"value": "${aws_sqs_queue.jobs.url}"},
            "JobDeadLetterQueueUrl": {"value": "${aws_sqs_queue.jobs_dlq.url}"},
            "TokenKeysParameter": {"value": stage["env"]["UCS_TOKEN_KEYS_PARAMETER"]},
        }
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("format", choices=("cloudformation", "terraform"))
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--out", type=Path, help="cloudformation: where to write the template")
    parser.add_argument("--template", type=Path, help="terraform: chalice.tf.json, merged in place")
    args = parser.parse_args(argv)
    stage = load_stage(args.stage)
    if args.format == "cloudformation":
        if not args.out:
            parser.error("--out is required")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(cloudformation(stage), indent=2) + "\n")
    else:
        if not args.template:
            parser.error("--template is required")
        merged = merge_terraform(json.loads(args.template.read_text()), stage)
        args.template.write_text(json.dumps(merged, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
