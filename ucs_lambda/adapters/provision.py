"""Create the tables, buckets and queue the service needs (idempotent).

Used by ``python -m ucs_lambda.admin create-resources``, the local stack and the tests, so all
three get the same schema (including the ``file_id-index`` and ``upload_status-index`` GSIs).
With ``UCS_STATE_BACKEND=postgres`` the database's schema migrations take the place of the
tables and the queue (the jobs live in a table there).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from botocore.exceptions import ClientError

from ..config import Settings
from . import aws
from .dynamo import FileItem, Tables, UploadItem

log = logging.getLogger(__name__)


def create_tables(settings: Settings) -> list[str]:
    """Create both tables (on-demand billing) unless they exist; returns what was created.

    A table created by an older version gets the global secondary indexes it lacks (e.g.
    ``upload_status-index``, which the stale-upload sweep queries).
    """
    tables = Tables.bind(settings)
    created = []
    for model in (tables.files, tables.uploads):
        if not model.exists():
            model.create_table(billing_mode="PAY_PER_REQUEST", wait=True)
            created.append(model.Meta.table_name)
        else:
            added = add_missing_indexes(model, settings)
            created += [f"{model.Meta.table_name}/{index}" for index in added]
    return created


def add_missing_indexes(
    model: type[FileItem] | type[UploadItem], settings: Settings, timeout: float = 1800
) -> list[str]:
    """Create the model's GSIs the existing table lacks, one per ``UpdateTable`` call (as
    DynamoDB requires), each waited for until ``ACTIVE`` (queries fail while it backfills)."""
    client = aws.client("dynamodb", settings)
    table = model.Meta.table_name
    have = {
        i["IndexName"]
        for i in client.describe_table(TableName=table)["Table"].get("GlobalSecondaryIndexes", [])
    }
    added = []
    for index in model._indexes.values():  # pynamodb's declared indexes
        schema = index._get_schema()
        name = schema["index_name"]
        if name in have:
            continue
        client.update_table(
            TableName=table,
            AttributeDefinitions=schema["attribute_definitions"],
            GlobalSecondaryIndexUpdates=[
                {
                    "Create": {
                        "IndexName": name,
                        # HASH before RANGE, as DynamoDB wants (pynamodb sorts them likewise)
                        "KeySchema": sorted(schema["key_schema"], key=lambda k: k["KeyType"]),
                        "Projection": schema["projection"],
                    }
                }
            ],
        )
        deadline = time.monotonic() + timeout
        while not _index_active(client, table, name):
            if time.monotonic() > deadline:
                raise TimeoutError(f"index {name} of table {table} is not active yet")
            time.sleep(2)
        log.info("added index %s to table %s", name, table)
        added.append(name)
    return added


def _index_active(client: Any, table: str, name: str) -> bool:
    described = client.describe_table(TableName=table)["Table"]
    for index in described.get("GlobalSecondaryIndexes", []):
        if index["IndexName"] == name:
            return index.get("IndexStatus", "ACTIVE") == "ACTIVE"
    return False


#: Days after which S3 aborts an incomplete multipart upload in the permanent and outbox
#: buckets. Only the services' own copies run there (minutes to hours, resumed across job runs
#: from their saved upload id); a run that died between creating a copy's multipart upload and
#: saving its id leaves one nobody continues. The inbox keeps clients' uploads for
#: ``abort_incomplete_days`` (users resume for days). The same figures as the stages' templates.
COPY_ABORT_DAYS = 2


def create_buckets(settings: Settings, abort_incomplete_days: int = 14) -> list[str]:
    """Create inbox, permanent and outbox buckets unless they exist.

    Each gets a lifecycle rule aborting incomplete multipart uploads: a backstop for uploads
    and copies whose abort call never came. The inbox's rule is (re)set every time; the other
    buckets get theirs only when created here, so an operator's own lifecycle configuration of
    an archive bucket (transitions, say) is never replaced.
    """
    s3 = aws.client("s3", settings)
    created = []
    for bucket in (settings.inbox_bucket, settings.permanent_bucket, settings.outbox_bucket):
        kwargs = {}
        if settings.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.region}
        try:
            s3.head_bucket(Bucket=bucket)
            continue  # exists (us-east-1 would also answer 200 to a repeated create)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("404", "NoSuchBucket", "NotFound"):
                raise
        try:
            s3.create_bucket(Bucket=bucket, **kwargs)
            created.append(bucket)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise
    rules = {settings.inbox_bucket: abort_incomplete_days}
    rules.update({b: COPY_ABORT_DAYS for b in created if b != settings.inbox_bucket})
    for bucket, days in rules.items():
        _abort_incomplete_uploads(s3, bucket, days)
    return created


def _abort_incomplete_uploads(s3: Any, bucket: str, days: int) -> None:
    try:
        s3.put_bucket_lifecycle_configuration(
            Bucket=bucket,
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": "abort-incomplete-uploads",
                        "Status": "Enabled",
                        "Filter": {"Prefix": ""},
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days},
                    }
                ]
            },
        )
    except ClientError as exc:  # some S3-compatible stores lack lifecycle support
        log.warning("could not set the lifecycle rule of %s: %s", bucket, exc)


def create_queue(settings: Settings, visibility_timeout: int = 900) -> str:
    """Create the job queue (visibility timeout = the Lambda timeout); returns its URL."""
    sqs = aws.client("sqs", settings)
    try:
        resp = sqs.create_queue(
            QueueName=settings.job_queue,
            Attributes={"VisibilityTimeout": str(visibility_timeout)},
        )
    except ClientError as exc:  # exists with other attributes: keep it as it is
        if "QueueAlreadyExists" not in exc.response["Error"]["Code"]:
            raise
        resp = sqs.get_queue_url(QueueName=settings.job_queue)
    return str(resp["QueueUrl"])


def create_all(settings: Settings) -> dict[str, object]:
    """Everything at once; safe to run repeatedly (also from several hosts at once)."""
    if settings.state_backend == "postgres":
        from .postgres import migrate  # deferred: the Lambda package has no psycopg

        return {"migrations": migrate(settings), "buckets": create_buckets(settings)}
    return {
        "tables": create_tables(settings),
        "buckets": create_buckets(settings),
        "queue": create_queue(settings),
    }
