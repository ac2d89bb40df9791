"""The job queue port: jobs are queued by the API and run by the worker (or Lambda).

Delivery is at least once on every adapter (SQS, the PostgreSQL jobs table): a job whose run
fails, or whose runner dies, is delivered again, so every job must be safe to run twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


class JobQueueError(Exception):
    """Jobs could not be queued; ``unsent`` holds their bodies (the others were queued)."""

    def __init__(self, message: str, unsent: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.unsent = unsent


@dataclass(frozen=True)
class QueuedJob:
    """One received job: its raw body (JSON text, maybe malformed), the receipt that deletes
    or returns it, and how often it has been delivered (1 on the first delivery)."""

    job_id: str
    body: str
    receipt: str
    receive_count: int = 1


@dataclass(frozen=True)
class DeadJob:
    """A job that was delivered too often without succeeding, kept for the operator."""

    job_id: str
    body: str
    receive_count: int
    created: datetime
    last_error: str | None


@dataclass(frozen=True)
class JobCounts:
    """Jobs waiting (visible), running or waiting for a retry (in flight), dead-lettered."""

    visible: int
    in_flight: int
    dead: int


class DeadLetters(Protocol):
    """What an operator does with the queue: look at it, send dead jobs again (the PostgreSQL
    queue; SQS's dead-letter queue is handled with AWS's own tools)."""

    def counts(self) -> JobCounts: ...

    def dead_jobs(self, limit: int = 100) -> list[DeadJob]: ...

    def requeue_dead(self, job_ids: list[str] | None = None) -> int:
        """Make dead jobs (all, or those named) ready again with a fresh delivery count;
        returns how many."""


class JobQueue(Protocol):
    """Send jobs; receive, delete and return them (the worker)."""

    def send(self, body: dict[str, Any]) -> None:
        """Queue one job; raises :class:`JobQueueError` when it was not queued."""

    def send_many(self, bodies: list[dict[str, Any]]) -> None:
        """Queue many jobs; raises :class:`JobQueueError` naming the bodies not queued."""

    def receive(self, wait_seconds: int = 1, max_messages: int = 10) -> list[QueuedJob]:
        """Up to ``max_messages`` visible jobs, each hidden from other receivers until it is
        deleted or its visibility timeout ends; waits up to ``wait_seconds`` for the first."""

    def delete(self, receipt: str) -> None:
        """The job is done: remove it (a stale receipt is ignored)."""

    def retry_later(self, receipt: str, delay_seconds: int) -> None:
        """The job failed: deliver it again after ``delay_seconds``."""
