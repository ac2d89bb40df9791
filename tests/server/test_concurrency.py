"""bounded_map: results in order, never more than the window in flight, stops starting work
when told, and raises a failure only after the calls in flight have ended."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ucs_lambda.concurrency import bounded_map


def test_results_in_order_with_at_most_window_in_flight() -> None:
    lock, running, peak = threading.Lock(), [0], [0]

    def work(n: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.002 * (n % 3))  # finish out of order
        with lock:
            running[0] -= 1
        return n * n

    with ThreadPoolExecutor(8) as pool:
        assert list(bounded_map(pool, work, iter(range(50)), 3)) == [n * n for n in range(50)]
    assert peak[0] <= 3


def test_nothing_new_starts_once_told_to_stop() -> None:
    started: list[int] = []

    def work(n: int) -> int:
        started.append(n)
        return n

    with ThreadPoolExecutor(2) as pool:
        allowed = iter([True, True, True])  # three items, then stop
        got = list(bounded_map(pool, work, range(100), 2, lambda: next(allowed, False)))
    assert got == [0, 1, 2] and sorted(started) == [0, 1, 2]


def test_a_failure_is_raised_after_the_calls_in_flight_ended() -> None:
    ended: list[int] = []

    def work(n: int) -> int:
        if n == 1:
            raise ValueError("part 1 failed")
        time.sleep(0.01)
        ended.append(n)
        return n

    with ThreadPoolExecutor(4) as pool:
        results = bounded_map(pool, work, range(10), 4)
        assert next(results) == 0
        with pytest.raises(ValueError, match="part 1"):
            next(results)
        results.close()
        assert 2 in ended and 3 in ended  # running when 1 failed: waited for, not abandoned
