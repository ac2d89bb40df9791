"""The job queue on a PostgreSQL table (port JobQueue), for deployments without SQS.

Semantics follow SQS's standard queue as the worker uses it: at-least-once delivery, a
received job is invisible for ``UCS_JOB_VISIBILITY_SECONDS`` unless deleted or returned,
``receive_count`` counts deliveries (1 on the first), and a job delivered
``UCS_JOB_MAX_RECEIVES`` times without being deleted is dead-lettered when it would be
delivered once more (``state = 'dead'``: kept for the operator, never delivered again).

Receivers take jobs with ``FOR UPDATE SKIP LOCKED``, so any number of them never deliver one
job twice within its visibility, and never wait on each other. The database clock decides
visibility (``now()``), not the workers' clocks. When nothing is ready, :meth:`receive` polls
every :data:`POLL_SECONDS` until ``wait_seconds`` have passed (the worker calls it in a loop
with a short wait): simpler and more robust than LISTEN/NOTIFY on a connection of its own.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from psycopg_pool import ConnectionPool

from ...config import Settings
from ...ports.jobs import DeadJob, JobCounts, JobQueueError, QueuedJob
from .db import PostgresError, fetch_all, fetch_one, matched, pool_for

log = logging.getLogger(__name__)

#: Pause between two looks at an empty queue while :meth:`PostgresJobQueue.receive` waits.
POLL_SECONDS = 0.2

_SEND = """
INSERT INTO jobs (body) SELECT b FROM unnest(%s::text[]) WITH ORDINALITY AS t(b, i) ORDER BY i
"""

# A job at the delivery limit is marked dead instead of delivered (its receipt is kept, so a
# run that still finishes late can delete it).
_RECEIVE = """
WITH picked AS (
    SELECT job_id FROM jobs
    WHERE state = 'ready' AND available_at <= now()
    ORDER BY available_at, job_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs AS j SET
    state = CASE WHEN j.receive_count >= %(max_receives)s THEN 'dead' ELSE 'ready' END,
    receive_count = CASE WHEN j.receive_count >= %(max_receives)s THEN j.receive_count
                         ELSE j.receive_count + 1 END,
    receipt = CASE WHEN j.receive_count >= %(max_receives)s THEN j.receipt
                   ELSE gen_random_uuid() END,
    available_at = CASE WHEN j.receive_count >= %(max_receives)s THEN j.available_at
                        ELSE now() + make_interval(secs => %(visibility)s) END,
    last_error = CASE WHEN j.receive_count >= %(max_receives)s
                      THEN 'dead-lettered after ' || j.receive_count || ' deliveries'
                      ELSE j.last_error END
FROM picked
WHERE j.job_id = picked.job_id
RETURNING j.job_id, j.body, j.receipt, j.receive_count, j.state
"""


def _receipt(value: str) -> uuid.UUID | None:
    """A receipt as the UUID it must be; None for anything else (ignored, like a stale one)."""
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return None


class PostgresJobQueue:
    """The ``jobs`` table as the job queue."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def pool(self) -> ConnectionPool:
        return pool_for(self.settings)

    def send(self, body: dict[str, Any]) -> None:
        """Queue one job; :class:`JobQueueError` when it was not queued."""
        self.send_many([body])

    def send_many(self, bodies: list[dict[str, Any]]) -> None:
        """Queue many jobs in one statement: all are queued, or none (then the
        :class:`JobQueueError` names every body)."""
        if not bodies:
            return
        texts = [json.dumps(body) for body in bodies]
        try:
            matched(self.pool, _SEND, (texts,))
        except PostgresError as exc:
            raise JobQueueError(f"{len(bodies)} jobs not queued: {exc}", list(bodies)) from exc

    def receive(self, wait_seconds: int = 1, max_messages: int = 10) -> list[QueuedJob]:
        """Up to ``max_messages`` ready jobs, each hidden for the visibility timeout; waits up
        to ``wait_seconds`` for the first. Jobs found at the delivery limit are dead-lettered
        (a warning each) and the look is repeated at once."""
        deadline = time.monotonic() + max(0, wait_seconds)
        while True:
            rows = fetch_all(
                self.pool,
                _RECEIVE,
                {
                    "limit": max(1, max_messages),
                    "max_receives": self.settings.job_max_receives,
                    "visibility": self.settings.job_visibility_seconds,
                },
            )
            jobs = []
            for row in sorted(rows, key=lambda r: r["job_id"]):
                if row["state"] == "dead":
                    log.warning(
                        "job %s dead-lettered after %s deliveries: %s",
                        row["job_id"],
                        row["receive_count"],
                        row["body"][:200],
                    )
                    continue
                jobs.append(
                    QueuedJob(
                        job_id=str(row["job_id"]),
                        body=row["body"],
                        receipt=str(row["receipt"]),
                        receive_count=int(row["receive_count"]),
                    )
                )
            if jobs:
                return jobs
            if rows:
                continue  # only dead ones: look again, others may be ready
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(POLL_SECONDS, remaining))

    def delete(self, receipt: str) -> None:
        """The job is done: remove it (a stale or malformed receipt is ignored)."""
        key = _receipt(receipt)
        if key is not None:
            matched(self.pool, "DELETE FROM jobs WHERE receipt = %s", (key,))

    def retry_later(self, receipt: str, delay_seconds: int) -> None:
        """The job failed: deliver it again after ``delay_seconds`` (a stale receipt, or a
        dead job, is ignored)."""
        key = _receipt(receipt)
        if key is not None:
            matched(
                self.pool,
                "UPDATE jobs SET available_at = now() + make_interval(secs => %s)"
                " WHERE receipt = %s AND state = 'ready'",
                (max(0, delay_seconds), key),
            )

    # ---- operator and test helpers -------------------------------------------------------

    def counts(self) -> JobCounts:
        """Visible, in-flight (received, or waiting for a retry) and dead-lettered jobs."""
        row = fetch_one(
            self.pool,
            "SELECT count(*) FILTER (WHERE state = 'ready' AND available_at <= now()) AS visible,"
            " count(*) FILTER (WHERE state = 'ready' AND available_at > now()) AS in_flight,"
            " count(*) FILTER (WHERE state = 'dead') AS dead FROM jobs",
        )
        assert row is not None
        return JobCounts(int(row["visible"]), int(row["in_flight"]), int(row["dead"]))

    def dead_jobs(self, limit: int = 100) -> list[DeadJob]:
        """The dead-lettered jobs, oldest first."""
        rows = fetch_all(
            self.pool,
            "SELECT job_id, body, receive_count, created, last_error FROM jobs"
            " WHERE state = 'dead' ORDER BY job_id LIMIT %s",
            (limit,),
        )
        return [
            DeadJob(
                job_id=str(r["job_id"]),
                body=r["body"],
                receive_count=int(r["receive_count"]),
                created=r["created"],
                last_error=r["last_error"],
            )
            for r in rows
        ]

    def requeue_dead(self, job_ids: list[str] | None = None) -> int:
        """Dead jobs (all, or those named) become ready now, with a fresh delivery count."""
        ids = None if job_ids is None else [int(i) for i in job_ids]
        row = fetch_one(
            self.pool,
            "WITH moved AS (UPDATE jobs SET state = 'ready', receive_count = 0, receipt = NULL,"
            " available_at = now(), last_error = NULL"
            " WHERE state = 'dead' AND (%(ids)s::bigint[] IS NULL OR job_id = ANY(%(ids)s))"
            " RETURNING 1) SELECT count(*) AS n FROM moved",
            {"ids": ids},
        )
        return int(row["n"]) if row else 0
