"""Upload churn: how many new uploads one file may get per time window.

Every new upload costs an S3 multipart upload (created, later aborted) and leaves an upload item
for good, so a client looping create-and-cancel on one file is bounded: at most
``UCS_UPLOAD_ATTEMPTS_PER_WINDOW`` uploads are created per file within a fixed window of
``UCS_UPLOAD_ATTEMPT_WINDOW_SECONDS`` that opens with the first of them. The file item keeps the
window's start and count, changed in the same transaction that creates the upload (so the count is
exactly the uploads created in the window); this module holds the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AttemptBudget:
    """The configured limit at the moment ``now`` (epoch seconds) of one request."""

    limit: int
    window_seconds: int
    now: int

    @property
    def current_after(self) -> int:
        """A window that opened after this instant is still running."""
        return self.now - self.window_seconds

    def is_current(self, window_start: int | None) -> bool:
        return window_start is not None and window_start > self.current_after

    def spent(self, window_start: int | None, count: int) -> bool:
        """No room left in the running window."""
        return self.is_current(window_start) and count >= self.limit

    def retry_after(self, window_start: int | None) -> int:
        """Whole seconds until the window ends (``Retry-After``; at least 1)."""
        start = self.now if window_start is None else window_start
        return max(1, start + self.window_seconds - self.now)
