"""Upload churn: how many new uploads one file may get per time window.

Every new upload costs an S3 multipart upload (created, later aborted) and leaves an upload
item for good, so a client looping create-and-cancel on one file is bounded: at most
``UCS_UPLOAD_ATTEMPTS_PER_WINDOW`` new uploads per file within a fixed window of
``UCS_UPLOAD_ATTEMPT_WINDOW_SECONDS`` that opens with the first attempt. The count itself is
kept by conditional writes on the file item (``Repository.charge_upload_attempt``); this
module holds the arithmetic the answer needs.
"""

from __future__ import annotations


def retry_after(window_start: int, window_seconds: int, now: int) -> int:
    """Whole seconds until the spent window ends (``Retry-After``; at least 1)."""
    return max(1, window_start + window_seconds - now)
