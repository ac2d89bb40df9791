"""What every job run shares: one budget of time and bytes, and a lease kept alive.

A job run (one SQS message on Lambda, one slot of the worker next to Ceph) may work for
``UCS_JOB_BUDGET_SECONDS`` and move ``UCS_JOB_BUDGET_BYTES`` (0: no limit; tests force many
continuations with it); then it saves its progress and queues its continuation. The same
budget bounds the validation's hashing, the assembly of segments and the staging copy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

_T = TypeVar("_T")


class Budget:
    """Time and bytes one job run may spend.

    The first piece of each kind of work (hashing, copying) is always allowed, so that every
    run makes progress however small the budget; after that, work of a kind stops when the
    time is up or ``max_bytes`` of that kind were taken (0: no byte limit). Thread-safe:
    hashing and copying draw from it on different threads.
    """

    def __init__(self, seconds: float, max_bytes: int = 0) -> None:
        self.deadline = time.monotonic() + seconds
        self.max_bytes = max_bytes
        self._spent: dict[str, int] = {}
        self._lock = threading.Lock()

    def allows_more(self, kind: str = "") -> bool:
        """Whether more work of ``kind`` may start (the first piece always may)."""
        with self._lock:
            return kind not in self._spent or time.monotonic() < self.deadline

    def take(self, nbytes: int, kind: str = "") -> bool:
        """Whether ``nbytes`` more of ``kind`` may be read or copied; counts them if so."""
        with self._lock:
            spent = self._spent.get(kind)
            if spent is not None:
                if time.monotonic() >= self.deadline:
                    return False
                if self.max_bytes and spent + nbytes > self.max_bytes:
                    return False
            self._spent[kind] = (spent or 0) + nbytes
            return True

    def bytes_left(self, kind: str = "") -> int | None:
        """Bytes of ``kind`` this run may still take (None: no byte limit)."""
        if not self.max_bytes:
            return None
        with self._lock:
            return max(0, self.max_bytes - self._spent.get(kind, 0))

    @property
    def time_left(self) -> bool:
        return time.monotonic() < self.deadline

    def limit(self, items: Iterable[_T], size: Callable[[_T], int], kind: str) -> Iterator[_T]:
        """``items`` for as long as the budget takes their sizes."""
        for item in items:
            if not self.take(size(item), kind):
                return
            yield item


class LeaseKeeper:
    """Keeps a job run's lease alive while it works on things that are not checkpoints.

    ``renew`` is the repository's conditional write (False: the lease was lost to another
    run, or the upload/file changed); it is called at most every ``interval`` seconds from
    whichever thread asks. Once lost, the run must stop without deciding anything.
    """

    def __init__(self, renew: Callable[[], bool], interval: float, budget: Budget) -> None:
        self._renew = renew
        self.interval = interval
        self.budget = budget
        self.lost = False
        self._renewed = time.monotonic()
        self._lock = threading.Lock()

    def touch(self) -> None:
        """A checkpoint just extended the lease: the next renewal can wait."""
        with self._lock:
            self._renewed = time.monotonic()

    def alive(self) -> bool:
        """Renew the lease when due; False once it is lost."""
        with self._lock:
            if self.lost:
                return False
            if time.monotonic() - self._renewed >= self.interval:
                if not self._renew():
                    self.lost = True
                    return False
                self._renewed = time.monotonic()
            return True

    def keep_going(self, kind: str = "") -> bool:
        """For work loops: the lease holds and the budget allows more of ``kind``."""
        return self.alive() and self.budget.allows_more(kind)

    def wait_for(self, thread: threading.Thread) -> None:
        """Join a worker thread, renewing the lease while it runs (a long copy part must
        not let the lease lapse)."""
        while thread.is_alive():
            thread.join(timeout=max(0.05, self.interval / 2))
            self.alive()
