"""The job queue (SQS): send jobs, and receive/delete them for the local worker."""

from __future__ import annotations

import json
import threading
from typing import Any

from ..config import Settings
from . import aws

_urls: dict[tuple[str, str, Any], str] = {}
_lock = threading.Lock()


class JobQueue:
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
        self.client.send_message(QueueUrl=self.url, MessageBody=json.dumps(body))

    def receive(self, wait_seconds: int = 1, max_messages: int = 10) -> list[dict[str, Any]]:
        resp = self.client.receive_message(
            QueueUrl=self.url, WaitTimeSeconds=wait_seconds, MaxNumberOfMessages=max_messages
        )
        return list(resp.get("Messages", []))

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
