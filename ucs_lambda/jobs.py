"""Background jobs: the dispatcher of queued jobs, and the entry points of the periodic sweeps.

``handle_message(body)`` is the one entry point for queued jobs; AWS Lambda calls it from
``@app.on_sqs_message`` and the worker (``python -m ucs_lambda.worker``, on SQS or the
PostgreSQL jobs table) from its polling loop. The use cases live in the
services (validation, staging, stale uploads, outbox clean-up); this module only routes to
them. Every job is safe to run twice (SQS delivers at least once): it re-reads the state and
does nothing when the work is already done, and its status changes are conditional writes.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from .bootstrap import services
from .config import Settings


class InvalidJobMessage(ValueError):
    """A message that no retry can fix (not a job we know); delete it instead of retrying."""


def handle_message(body: dict[str, Any]) -> None:
    """Run the job described by a queued job's body (already JSON-decoded).

    Raises :class:`InvalidJobMessage` for unknown jobs; any other exception means "retry
    later" (the message stays in the queue and is delivered again).
    """
    if not isinstance(body, dict):
        raise InvalidJobMessage("job message must be a JSON object")
    job = body.get("job")
    if job == "validate":
        upload_id = body.get("upload_id")
        if not isinstance(upload_id, str) or not upload_id:
            raise InvalidJobMessage("validate job needs an upload_id")
        services().validation.validate(upload_id)
    elif job == "stage":
        file_id = body.get("file_id")
        if not isinstance(file_id, str) or not file_id:
            raise InvalidJobMessage("stage job needs a file_id")
        services().downloads.stage(file_id)
    else:
        raise InvalidJobMessage(f"unknown job {job!r}")


def sweep_stale_uploads(
    settings: Settings | None = None, now: datetime | None = None
) -> dict[str, int]:
    """Cancel stale pending uploads; re-queue validation of uploads left ``uploaded``."""
    return services(settings).uploads.sweep_stale(now or datetime.now(timezone.utc))


def cleanup_outbox(settings: Settings | None = None, now: float | None = None) -> int:
    """Delete outbox copies older than ``UCS_OUTBOX_MAX_AGE_SECONDS``; returns how many."""
    return services(settings).downloads.cleanup_outbox(now or time.time())
