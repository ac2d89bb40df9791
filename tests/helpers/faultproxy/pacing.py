"""Bandwidth limits: one request's (the ``throttle`` fault) or a link shared by all traffic."""

from __future__ import annotations

import threading
import time

from .wire import BLOCK, Abort


class RateLimiter:
    """Paces a byte stream to ``bps``; thread-safe so one instance can be shared as a link."""

    def __init__(self, bps: int) -> None:
        self.bps = bps
        self._lock = threading.Lock()
        self._next = 0.0

    def block_size(self) -> int:
        # ~20 sleeps per second keeps the pacing smooth without many tiny sends.
        return max(1024, min(BLOCK, self.bps // 20))

    def consume(self, n: int, stop: threading.Event) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now)  # no credit for idle time: no bursts after pauses
            self._next = start + n / self.bps
            delay = self._next - now
        if delay > 0 and stop.wait(delay):
            raise Abort("proxy stopping")


def block_size(limiters: list[RateLimiter]) -> int:
    """The streaming block for a body paced by ``limiters`` (all of them, none: full blocks)."""
    return min([BLOCK] + [lim.block_size() for lim in limiters])
