"""The job queue (SQS): send jobs, and receive/delete them for the local worker.

SQS's error answers are raised as :class:`QueueError`, so botocore's types stay in here.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from ..config import Settings
from . import aws


class QueueError(Exception):
    """SQS answered a call with an error (``"<code>: <message>"``)."""


@contextlib.contextmanager
def _sqs_errors() -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code, message = err.get("Code") or "error", err.get("Message")
        raise QueueError(f"{code}: {message}" if message else code) from exc


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
            with _sqs_errors():
                url = str(self.client.get_queue_url(QueueName=self.settings.job_queue)["QueueUrl"])
            with _lock:
                _urls[key] = url
        return url

    def send(self, body: dict[str, Any]) -> None:
        url = self.url
        with _sqs_errors():
            self.client.send_message(QueueUrl=url, MessageBody=json.dumps(body))

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
