"""A bounded, ordered parallel map: many S3 calls in flight, results in order, memory fixed.

``ThreadPoolExecutor.map`` submits every item at once (10,000 copy parts, or 300,000 ranges
of a 5 TiB object, all queued, their results held until consumed). The accept copy and the
validation's ranged reads need a window instead: at most N calls in flight, results handed out
in order, and a way to stop starting new calls when a job's time is up.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any


def bounded_map(
    pool: ThreadPoolExecutor,
    func: Callable[[Any], Any],
    items: Iterable[Any],
    window: int,
    keep_going: Callable[[], bool] = lambda: True,
) -> Iterator[Any]:
    """``func`` over ``items`` on ``pool``, results in order, at most ``window`` in flight.

    Memory stays at ``window`` results in flight plus the one the caller holds, however many
    items there are (``items`` may be a generator). No item is started once ``keep_going()``
    is false; the ones in flight are still yielded. An exception of one item is raised after
    the others in flight have ended.
    """
    pending: deque[Future[Any]] = deque()
    source = iter(items)

    def fill() -> None:
        while len(pending) < window and keep_going():
            item = next(source, _END)
            if item is _END:
                return
            pending.append(pool.submit(func, item))

    fill()
    try:
        while pending:
            result = pending.popleft().result()
            fill()  # keep the window full while the caller works on this result
            yield result
    finally:
        for future in pending:
            future.cancel()
        wait(pending)  # running ones cannot be cancelled: let them end before returning


_END = object()
