"""Create the tables, buckets and queue the service needs (idempotent).

Used by ``python -m ucs_lambda.admin create-resources``, the local stack and the tests, so all
three get the same schema (including the ``file_id-index`` GSI).
"""

from __future__ import annotations

import logging

from botocore.exceptions import ClientError

from ..config import Settings
from . import aws
from .dynamo import FileItem, UploadItem, _bind

log = logging.getLogger(__name__)


def create_tables(settings: Settings) -> list[str]:
    """Create both tables (on-demand billing) unless they exist; returns what was created."""
    _bind(settings)
    created = []
    for model in (FileItem, UploadItem):
        if not model.exists():
            model.create_table(billing_mode="PAY_PER_REQUEST", wait=True)
            created.append(model.Meta.table_name)
    return created


def create_buckets(settings: Settings, abort_incomplete_days: int = 14) -> list[str]:
    """Create inbox, permanent and outbox buckets unless they exist.

    The inbox also gets a lifecycle rule aborting incomplete multipart uploads after
    ``abort_incomplete_days`` days: a backstop for uploads whose abort call failed.
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
    try:
        s3.put_bucket_lifecycle_configuration(
            Bucket=settings.inbox_bucket,
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": "abort-incomplete-uploads",
                        "Status": "Enabled",
                        "Filter": {"Prefix": ""},
                        "AbortIncompleteMultipartUpload": {
                            "DaysAfterInitiation": abort_incomplete_days
                        },
                    }
                ]
            },
        )
    except ClientError as exc:  # some S3-compatible stores lack lifecycle support
        log.warning("could not set the inbox lifecycle rule: %s", exc)
    return created


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
    """Everything at once; safe to run repeatedly."""
    return {
        "tables": create_tables(settings),
        "buckets": create_buckets(settings),
        "queue": create_queue(settings),
    }
