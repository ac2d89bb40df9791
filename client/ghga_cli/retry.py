"""Retry policy shared by the API client and the transfer engine.

Exponential backoff with full jitter (AWS architecture blog "Exponential Backoff And Jitter"):
the n-th retry waits a random time in ``[0, min(cap, base * 2**n)]``. A server's
``Retry-After`` raises the wait to at least what it asked for (capped, so a confused server
cannot park us for hours). Which errors are retryable is decided by the caller; this module only
answers "how long to wait" and "is there an attempt left".
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: HTTP statuses that are worth retrying (besides connection errors and timeouts).
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

#: libcurl error codes that are not worth retrying (bad URL, TLS verification, local disk, ...).
FATAL_CURL_ERRORS = frozenset(
    {
        1,  # CURLE_UNSUPPORTED_PROTOCOL
        3,  # CURLE_URL_MALFORMAT
        23,  # CURLE_WRITE_ERROR (local write failed or aborted by our header check)
        26,  # CURLE_READ_ERROR (local read failed)
        27,  # CURLE_OUT_OF_MEMORY
        42,  # CURLE_ABORTED_BY_CALLBACK
        43,  # CURLE_BAD_FUNCTION_ARGUMENT
        60,  # CURLE_PEER_FAILED_VERIFICATION
        77,  # CURLE_SSL_CACERT_BADFILE
        58,  # CURLE_SSL_CERTPROBLEM
        59,  # CURLE_SSL_CIPHER
    }
)


@dataclass
class RetryPolicy:
    """How many times to retry and how long to wait between attempts."""

    retries: int = 5
    base: float = 0.5
    cap: float = 30.0
    retry_after_cap: float = 300.0

    def can_retry(self, attempts_done: int) -> bool:
        """True if, after ``attempts_done`` failed attempts, one more is allowed."""
        return attempts_done <= self.retries

    def delay(self, attempts_done: int, retry_after: float | None = None) -> float:
        """Seconds to wait before the next attempt (``attempts_done`` >= 1)."""
        exp = min(self.cap, self.base * (2 ** max(0, attempts_done - 1)))
        wait = random.uniform(0, exp)
        if retry_after is not None and retry_after > 0:
            wait = max(wait, min(retry_after, self.retry_after_cap))
        return wait


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (integer seconds; HTTP dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if seconds != seconds or seconds < 0:  # NaN or negative
        return None
    return seconds
