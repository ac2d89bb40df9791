"""The packaged templates hold everything the service needs and pass cfn-lint / terraform."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import buildscripts

from .conftest import ROOT, load

merge = buildscripts.load("cfn/merge")

CFN_LINT = Path(sys.executable).parent / "cfn-lint"
STAGES = ("dev", "prod")


def stage_env(stage: str) -> dict[str, str]:
    return merge.load_stage(stage)["env"]


def stage_throttling(stage: str) -> dict[str, int]:
    """What .chalice/config.json says for the stage (checked to be set, not defaulted)."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    return config["stages"][stage]["api_throttling"]


def job_concurrency(stage: str) -> int:
    """The job function's reserved concurrency the stage sets in .chalice/config.json."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    return config["stages"][stage]["lambda_functions"]["on_job_message"]["reserved_concurrency"]


def model_indexes() -> set[tuple[str, tuple[tuple[str, str], ...], str]]:
    """The uploads table's GSIs as the service declares them (pynamodb models)."""
    from ucs_lambda.adapters.dynamo import Tables
    from ucs_lambda.config import get_settings

    found = set()
    for index in Tables.bind(get_settings()).uploads._get_schema()["global_secondary_indexes"]:
        key_schema = sorted(index["key_schema"], key=lambda k: k["KeyType"])  # HASH, RANGE
        keys = tuple((k["AttributeName"], k["KeyType"]) for k in key_schema)
        found.add((index["index_name"], keys, index["projection"]["ProjectionType"]))
    return found


def cfn_indexes(props: dict[str, Any]) -> set[tuple[str, tuple[tuple[str, str], ...], str]]:
    defined = {a["AttributeName"] for a in props["AttributeDefinitions"]}
    found = set()
    for index in props["GlobalSecondaryIndexes"]:
        keys = tuple((k["AttributeName"], k["KeyType"]) for k in index["KeySchema"])
        assert {name for name, _ in keys} <= defined
        found.add((index["IndexName"], keys, index["Projection"]["ProjectionType"]))
    return found


def of_type(template: dict[str, Any], typ: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == typ}


def test_cfn_lint_accepts_both_stages(packaged: dict[str, Any]) -> None:
    templates = [str(packaged["cfn"][s] / "sam.json") for s in STAGES]
    proc = subprocess.run(
        [str(CFN_LINT), "--", *templates], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr  # 0: no errors and no warnings


@pytest.mark.parametrize("stage", STAGES)
def test_cfn_template_has_the_service_resources(packaged: dict[str, Any], stage: str) -> None:
    t = load(packaged["cfn"][stage] / "sam.json")
    env = stage_env(stage)
    res = t["Resources"]

    tables = of_type(t, "AWS::DynamoDB::Table")
    assert set(tables) == {"FilesTable", "UploadsTable"}
    files, uploads = tables["FilesTable"]["Properties"], tables["UploadsTable"]["Properties"]
    assert files["TableName"] == env["UCS_FILES_TABLE"]
    assert uploads["TableName"] == env["UCS_UPLOADS_TABLE"]
    assert files["KeySchema"] == [{"AttributeName": "file_id", "KeyType": "HASH"}]
    assert uploads["KeySchema"] == [{"AttributeName": "upload_id", "KeyType": "HASH"}]
    assert cfn_indexes(uploads) == model_indexes()
    assert "GlobalSecondaryIndexes" not in files
    for table in tables.values():
        p = table["Properties"]
        assert p["BillingMode"] == "PAY_PER_REQUEST"
        assert p["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert table["DeletionPolicy"] == "Retain"

    buckets = of_type(t, "AWS::S3::Bucket")
    assert set(buckets) == {"InboxBucket", "PermanentBucket", "OutboxBucket"}
    for logical, bucket in buckets.items():
        p = bucket["Properties"]
        var = merge.RESOURCES[logical][0]
        assert p["BucketName"]["Fn::Sub"].startswith(env[var] + "-${AWS::AccountId}")
        assert all(p["PublicAccessBlockConfiguration"].values())
        assert len(p["PublicAccessBlockConfiguration"]) == 4
        (sse,) = p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        assert f"{logical}Policy" in res  # TLS only
    rules = {
        logical: {r["Id"]: r for r in b["Properties"]["LifecycleConfiguration"]["Rules"]}
        for logical, b in buckets.items()
    }
    assert rules["InboxBucket"]["abort-incomplete-multipart-uploads"][
        "AbortIncompleteMultipartUpload"
    ] == {"DaysAfterInitiation": 14}
    max_age_days = int(env["UCS_OUTBOX_MAX_AGE_SECONDS"]) / 86400
    expire = rules["OutboxBucket"]["expire-staged-copies"]["ExpirationInDays"]
    assert max_age_days < expire <= max_age_days + 2

    queues = of_type(t, "AWS::SQS::Queue")
    assert set(queues) == {"JobQueue", "JobDeadLetterQueue"}
    job = queues["JobQueue"]["Properties"]
    assert job["QueueName"] == env["UCS_JOB_QUEUE"]
    assert job["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["JobDeadLetterQueue", "Arn"]
    }
    assert job["VisibilityTimeout"] >= res["OnJobMessage"]["Properties"]["Timeout"]
    assert "JobDeadLetterAlarm" in res

    # Chalice's own: the SQS event source on the job queue and the two schedules.
    events = res["OnJobMessage"]["Properties"]["Events"]
    (sqs,) = events.values()
    assert sqs["Type"] == "SQS" and env["UCS_JOB_QUEUE"] in json.dumps(sqs)
    schedules = {
        name: ev["Properties"]["Schedule"]
        for fn in ("SweepStaleUploads", "CleanupOutbox")
        for name, ev in res[fn]["Properties"]["Events"].items()
    }
    assert sorted(schedules.values()) == ["rate(1 hour)", "rate(6 hours)"]

    functions = of_type(t, "AWS::Serverless::Function")
    assert set(functions) == set(merge.FUNCTIONS.values())
    for fn in functions.values():
        variables = fn["Properties"]["Environment"]["Variables"]
        for logical, (var, _) in merge.RESOURCES.items():
            assert logical in json.dumps(variables[var]), (var, variables[var])
        assert "UCS_TOKEN_KEYS" not in variables  # the keys live in SSM
        assert variables["UCS_TOKEN_KEYS_PARAMETER"] == env["UCS_TOKEN_KEYS_PARAMETER"]

    roles = of_type(t, "AWS::IAM::Role")
    assert len(roles) == len(merge.FUNCTIONS)
    for role in roles.values():
        (policy,) = role["Properties"]["Policies"]
        text = json.dumps(policy)
        assert "arn:aws:s3:::" not in text and "table/" not in text  # references, not names
        for logical in merge.RESOURCES:
            assert logical in text, logical

    # the gateway responses (API Gateway's own errors as JSON) are still merged in
    body = res["RestAPI"]["Properties"]["DefinitionBody"]
    responses = body["x-amazon-apigateway-gateway-responses"]
    assert "MISSING_AUTHENTICATION_TOKEN" in responses
    assert responses["THROTTLED"]["statusCode"] == "429"
    assert "tooManyRequests" in json.dumps(responses["THROTTLED"])

    # stage throttling from the stage's api_throttling in .chalice/config.json
    throttling = stage_throttling(stage)
    assert res["RestAPI"]["Properties"]["MethodSettings"] == [
        {
            "ResourcePath": "/*",
            "HttpMethod": "*",
            "ThrottlingRateLimit": throttling["rate_limit"],
            "ThrottlingBurstLimit": throttling["burst_limit"],
        }
    ]


def test_the_job_function_runs_one_message_per_invocation_within_its_reservation(
    packaged: dict[str, Any],
) -> None:
    """Batch size 1 (each job run has an invocation's whole 900 s to itself) and the stage's
    reserved concurrency for the job function, which is also the SQS event source's maximum
    concurrency (no invocation above the reservation, so no throttled message waits out the
    visibility timeout): in both stages, in CloudFormation and in Terraform. No other function
    reserves concurrency (the API scales within the account's unreserved pool)."""
    assert (job_concurrency("dev"), job_concurrency("prod")) == (10, 50)
    for stage in STAGES:
        expected = job_concurrency(stage)
        assert merge.load_stage(stage)["job_concurrency"] == expected

        res = load(packaged["cfn"][stage] / "sam.json")["Resources"]
        job = res["OnJobMessage"]["Properties"]
        assert job["ReservedConcurrentExecutions"] == expected, stage
        (event,) = job["Events"].values()
        assert event["Type"] == "SQS"
        assert event["Properties"]["BatchSize"] == 1
        assert event["Properties"]["ScalingConfig"] == {"MaximumConcurrency": expected}
        for logical in set(merge.FUNCTIONS.values()) - {"OnJobMessage"}:
            assert "ReservedConcurrentExecutions" not in res[logical]["Properties"], logical

        r = load(packaged["tf_stages"][stage] / "chalice.tf.json")["resource"]
        functions = r["aws_lambda_function"]
        assert functions["on_job_message"]["reserved_concurrent_executions"] == expected, stage
        for handler in set(merge.FUNCTIONS) - {"on_job_message"}:
            assert "reserved_concurrent_executions" not in functions[handler], handler
        (mapping,) = r["aws_lambda_event_source_mapping"].values()
        assert mapping["function_name"] == "${aws_lambda_function.on_job_message.arn}"
        assert mapping["batch_size"] == 1
        assert mapping["scaling_config"] == {"maximum_concurrency": expected}


def test_a_stage_must_bound_the_job_function(tmp_path: Path) -> None:
    chalice = tmp_path / ".chalice"
    shutil.copytree(ROOT / ".chalice", chalice, ignore=shutil.ignore_patterns("deployments"))
    config = json.loads((chalice / "config.json").read_text())
    job = config["stages"]["dev"]["lambda_functions"]["on_job_message"]
    for bad in (None, 0, 1, 1001, "10", True):
        if bad is None:
            job.pop("reserved_concurrency", None)
        else:
            job["reserved_concurrency"] = bad
        (chalice / "config.json").write_text(json.dumps(config))
        with pytest.raises(SystemExit, match=r"on_job_message\.reserved_concurrency"):
            merge.load_stage("dev", tmp_path)


def test_templates_hold_no_secret(packaged: dict[str, Any]) -> None:
    keys = os.environ.get("UCS_TOKEN_KEYS", "")
    for path in [packaged["cfn"][s] / "sam.json" for s in STAGES] + [
        packaged["tf"] / "chalice.tf.json"
    ]:
        text = path.read_text()
        assert '"UCS_TOKEN_KEYS"' not in text
        for key in filter(None, keys.split(",")):
            assert key not in text


def test_terraform_names_the_same_resources(packaged: dict[str, Any]) -> None:
    tf = load(packaged["tf"] / "chalice.tf.json")
    cfn = load(packaged["cfn"]["dev"] / "sam.json")
    env = stage_env("dev")
    r = tf["resource"]
    assert {t["name"] for t in r["aws_dynamodb_table"].values()} == {
        p["Properties"]["TableName"] for p in of_type(cfn, "AWS::DynamoDB::Table").values()
    }
    uploads = r["aws_dynamodb_table"]["uploads"]
    defined = {a["name"] for a in uploads["attribute"]}
    tf_indexes = set()
    for index in uploads["global_secondary_index"]:
        keys = ((index["hash_key"], "HASH"),)
        if "range_key" in index:
            keys += ((index["range_key"], "RANGE"),)
        assert {name for name, _ in keys} <= defined
        tf_indexes.add((index["name"], keys, index["projection_type"]))
    assert tf_indexes == model_indexes()
    (settings,) = r["aws_api_gateway_method_settings"].values()
    assert settings["method_path"] == "*/*"
    assert settings["stage_name"] == "${aws_api_gateway_deployment.rest_api.stage_name}"
    throttling = stage_throttling("dev")
    assert settings["settings"] == [
        {
            "throttling_rate_limit": throttling["rate_limit"],
            "throttling_burst_limit": throttling["burst_limit"],
        }
    ]
    assert all(
        t["billing_mode"] == "PAY_PER_REQUEST"
        and t["point_in_time_recovery"] == [{"enabled": True}]
        for t in r["aws_dynamodb_table"].values()
    )
    assert {q["name"] for q in r["aws_sqs_queue"].values()} == {
        q["Properties"]["QueueName"] for q in of_type(cfn, "AWS::SQS::Queue").values()
    }
    assert "${aws_sqs_queue.jobs_dlq.arn}" in r["aws_sqs_queue"]["jobs"]["redrive_policy"]
    assert {b["bucket"].split("-${")[0] for b in r["aws_s3_bucket"].values()} == {
        env[v] for v, kind in merge.RESOURCES.values() if kind == "bucket"
    }
    for kind in (
        "aws_s3_bucket_public_access_block",
        "aws_s3_bucket_server_side_encryption_configuration",
        "aws_s3_bucket_lifecycle_configuration",
        "aws_s3_bucket_policy",
    ):
        assert set(r[kind]) == {"inbox", "permanent", "outbox"}, kind
    outbox_rules = {x["id"] for x in r["aws_s3_bucket_lifecycle_configuration"]["outbox"]["rule"]}
    assert "expire-staged-copies" in outbox_rules
    assert set(r["aws_lambda_function"]) == set(merge.FUNCTIONS)
    assert set(r["aws_cloudwatch_event_rule"]) == {
        "sweep_stale_uploads-event",
        "cleanup_outbox-event",
    }
    (mapping,) = r["aws_lambda_event_source_mapping"].values()
    assert mapping["event_source_arn"] == "${aws_sqs_queue.jobs.arn}"
    for fn in r["aws_lambda_function"].values():
        variables = fn["environment"]["variables"]
        assert variables["UCS_INBOX_BUCKET"] == "${aws_s3_bucket.inbox.bucket}"
        assert variables["UCS_FILES_TABLE"] == "${aws_dynamodb_table.files.name}"
        assert "UCS_TOKEN_KEYS" not in variables
    for policy in r["aws_iam_role_policy"].values():
        doc = json.loads(policy["policy"])
        assert "${aws_s3_bucket.inbox.arn}/*" in json.dumps(doc)
    swagger = json.loads(tf["locals"]["chalice_api_swagger"])
    assert "x-amazon-apigateway-gateway-responses" in swagger


TF_PLUGINS = Path(os.environ.get("TF_PLUGIN_DIR", "/opt/tf-plugins"))


@pytest.mark.skipif(
    not (
        shutil.which("terraform") and (TF_PLUGINS / "registry.terraform.io/hashicorp/aws").is_dir()
    ),
    reason="terraform or a local AWS provider mirror ($TF_PLUGIN_DIR) is missing",
)
def test_terraform_validate(packaged: dict[str, Any], tmp_path: Path) -> None:
    work = tmp_path / "tf"
    shutil.copytree(packaged["tf"], work)
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    for args in (
        ["init", "-backend=false", "-input=false", f"-plugin-dir={TF_PLUGINS}"],
        ["validate"],
    ):
        proc = subprocess.run(
            ["terraform", *args, "-no-color"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success" in proc.stdout
