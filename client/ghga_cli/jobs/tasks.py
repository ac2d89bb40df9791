"""Work off the byte loop: API requests on a few threads, and waits that hold no thread."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


class Tasks:
    """A thread pool for API requests plus a timer: a task due later (``call_at``) holds no
    pool thread while it waits.

    Used by the transfer manager (steps of the files' conversations, polls) and by transfers
    (URL fetches, refreshes that wait for re-staging), so that neither the engine's thread nor
    a pool thread ever sleeps for the server.
    """

    def __init__(
        self, workers: int, name: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=name)
        self._clock = clock
        self._timers: list[tuple[float, int, Callable[[], Any]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run_timers, name=f"{name}-timer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` on the pool (a closed pool runs nothing and returns a cancelled future)."""
        try:
            return self._pool.submit(fn)
        except RuntimeError:  # shut down: the run is ending
            future: Future[Any] = Future()
            future.cancel()
            return future

    def call_at(self, when: float, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the pool at ``when`` (this clock); no thread waits meanwhile."""
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._timers, (when, next(self._seq), fn))
            self._cond.notify()

    def close(self) -> None:
        """Drop pending timers and wait for the running tasks."""
        with self._cond:
            self._closed = True
            self._timers = []
            self._cond.notify()
        self._thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run_timers(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._timers or self._timers[0][0] > self._clock()):
                    delay = self._timers[0][0] - self._clock() if self._timers else None
                    self._cond.wait(delay)
                if self._closed:
                    return
                fn = heapq.heappop(self._timers)[2]
            self.submit(fn)
