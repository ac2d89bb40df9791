"""The job queue (SQS): send jobs, and receive/delete them for the local worker.

Jobs that cannot be queued raise :class:`JobQueueError`, so botocore's types stay in here.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from botocore.exceptions import ClientError

from ..config import Settings
from ..ports.jobs import JobQueueError, QueuedJob
from . import aws

#: SQS's limit of messages per ``SendMessageBatch`` call.
SEND_BATCH_LIMIT = 10

_urls: dict[tuple[str, str, Any], str] = {}
_lock = threading.Lock()


class SqsJobQueue:
    """One SQS queue addressed by name (``UCS_JOB_QUEUE``); its URL is looked up once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = aws.client("sqs", settings)

    @property
    def url(self) -> str:
        key = (self.settings.job_queue, self.settings.region, self.settings.sqs_endpoint)
        url = _urls.get(key)
        if url is None:
            url = str(self.client.get_queue_url(QueueName=self.settings.job_queue)["QueueUrl"])
            with _lock:
                _urls[key] = url
        return url

    def send(self, body: dict[str, Any]) -> None:
        try:
            self.client.send_message(QueueUrl=self.url, MessageBody=json.dumps(body))
        except ClientError as exc:
            raise JobQueueError(f"job not queued: {exc}", [body]) from exc

    def send_many(self, bodies: list[dict[str, Any]]) -> None:
        """Queue many jobs with ``SendMessageBatch`` (10 per call instead of one call each).

        Raises :class:`JobQueueError` naming the bodies that were *not* queued when SQS refused
        some entries or a call failed; every other body was queued.
        """
        unsent: list[dict[str, Any]] = []
        error: str | None = None
        for start in range(0, len(bodies), SEND_BATCH_LIMIT):
            chunk = bodies[start : start + SEND_BATCH_LIMIT]
            entries = [
                {"Id": str(i), "MessageBody": json.dumps(body)} for i, body in enumerate(chunk)
            ]
            try:
                resp = self.client.send_message_batch(QueueUrl=self.url, Entries=entries)
            except ClientError as exc:
                unsent.extend(chunk)
                error = str(exc)
                continue
            for failed in resp.get("Failed", []):
                unsent.append(chunk[int(failed["Id"])])
                error = str(failed.get("Message") or failed.get("Code"))
        if unsent:
            raise JobQueueError(f"{len(unsent)} of {len(bodies)} jobs not queued: {error}", unsent)

    def receive(self, wait_seconds: int = 1, max_messages: int = 10) -> list[QueuedJob]:
        resp = self.client.receive_message(
            QueueUrl=self.url,
            WaitTimeSeconds=wait_seconds,
            MaxNumberOfMessages=max_messages,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [
            QueuedJob(
                job_id=str(m.get("MessageId") or ""),
                body=str(m.get("Body") or ""),
                receipt=str(m["ReceiptHandle"]),
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount") or 1),
            )
            for m in resp.get("Messages", [])
        ]

    def delete(self, receipt_handle: str) -> None:
        self.client.delete_message(QueueUrl=self.url, ReceiptHandle=receipt_handle)

    def retry_later(self, receipt_handle: str, delay_seconds: int) -> None:
        """Make a failed message visible again after ``delay_seconds`` (redelivery)."""
        self.client.change_message_visibility(
            QueueUrl=self.url, ReceiptHandle=receipt_handle, VisibilityTimeout=delay_seconds
        )


def reset() -> None:
    with _lock:
        _urls.clear()
