"""The local worker runs jobs side by side (``--concurrency``) under the same rules.

The jobs are stand-ins for ``jobs.handle_message`` that block on events and barriers, so every
assertion is about order (started before finished), never about durations; the timeouts are
only there to fail instead of hanging.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.helpers import stored_state
from ucs_lambda import jobs, worker
from ucs_lambda.config import ConfigError
from ucs_lambda.worker import Worker

TIMEOUT = 30.0  # generous: only reached when something is wrong


def send(*bodies: Any) -> None:
    for body in bodies:
        stored_state.queue_raw(body if isinstance(body, str) else json.dumps(body))


def queue_counts() -> tuple[int, int]:
    """(visible, in flight) messages of the job queue."""
    return stored_state.job_counts()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Jobs:
    """A fake ``jobs.handle_message``: records starts and ends, runs ``behaviour`` between."""

    def __init__(self, behaviour: Callable[[dict[str, Any]], None]) -> None:
        self.behaviour = behaviour
        self.lock = threading.Lock()
        self.started: list[Any] = []
        self.finished: list[Any] = []
        self.running = 0
        self.most_running = 0

    def __call__(self, body: Any) -> None:
        if not isinstance(body, dict) or "n" not in body:
            raise jobs.InvalidJobMessage("not one of the test's jobs")
        with self.lock:
            self.started.append(body["n"])
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            self.behaviour(body)
        finally:
            with self.lock:
                self.running -= 1
                self.finished.append(body["n"])


@pytest.fixture
def start_worker(env: dict) -> Iterator[Callable[..., tuple[Worker, threading.Thread]]]:
    """Start ``Worker.run`` on a thread; stops (and joins) it at the end of the test."""
    started: list[tuple[Worker, threading.Thread]] = []

    def start(**kw: Any) -> tuple[Worker, threading.Thread]:
        w = Worker(sweep_seconds=0, wait_seconds=1, **kw)
        thread = threading.Thread(target=w.run, name="worker-under-test", daemon=True)
        thread.start()
        started.append((w, thread))
        return w, thread

    yield start
    for w, thread in started:
        w.stop()
        thread.join(timeout=TIMEOUT)
        assert not thread.is_alive(), "the worker did not stop"


def test_four_jobs_run_at_once_with_concurrency_4(
    start_worker: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """A barrier of 4 opens only when all four jobs are running: each one started before any
    of them finished."""
    barrier = threading.Barrier(4, timeout=TIMEOUT)
    fake = Jobs(lambda body: barrier.wait())
    monkeypatch.setattr(jobs, "handle_message", fake)
    caplog.set_level(logging.INFO, logger="ucs_lambda.worker")
    send(*({"job": "t", "n": n} for n in range(4)))
    start_worker(concurrency=4)
    wait_until(lambda: len(fake.finished) == 4, "four jobs")
    assert not barrier.broken
    assert sorted(fake.started) == [0, 1, 2, 3] and fake.most_running == 4
    wait_until(lambda: queue_counts() == (0, 0), "the four messages to be deleted")
    assert "worker started: 4 job slot(s)" in caplog.text
    done = [r.getMessage() for r in caplog.records if r.getMessage().startswith("job done: ")]
    assert sorted(done) == [f'job done: {{"job": "t", "n": {n}}}' for n in range(4)]


def test_concurrency_1_runs_one_job_at_a_time_and_holds_no_other_message(
    start_worker: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the one slot is busy the worker does not poll: the other messages stay visible
    in the queue (nobody holds them invisible), and the jobs run one after the other."""
    gates = {n: threading.Event() for n in range(3)}
    entered = {n: threading.Event() for n in range(3)}

    def behaviour(body: dict[str, Any]) -> None:
        entered[body["n"]].set()
        assert gates[body["n"]].wait(TIMEOUT)

    fake = Jobs(behaviour)
    monkeypatch.setattr(jobs, "handle_message", fake)
    send(*({"job": "t", "n": n} for n in range(3)))
    w, _ = start_worker(concurrency=1)
    for step in range(3):
        wait_until(lambda step=step: len(fake.started) == step + 1, f"job {step + 1} to start")
        current = fake.started[-1]
        assert entered[current].wait(TIMEOUT)
        # one message in flight (the running job's), the others still visible to anybody
        assert queue_counts() == (2 - step, 1)
        assert w.running == 1 and fake.running == 1
        gates[current].set()
    wait_until(lambda: len(fake.finished) == 3, "three jobs")
    assert fake.most_running == 1
    assert fake.finished == fake.started  # each ended before the next one started
    wait_until(lambda: queue_counts() == (0, 0), "the messages to be deleted")


def test_a_failed_job_is_redelivered_and_invalid_messages_are_dropped(
    start_worker: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Side by side: the failed job's message is not deleted but made visible again (the
    queue's own visibility timeout is 900 s, so only the shortened one brings it back within
    the test), and succeeds on redelivery; messages no retry can fix are deleted."""
    attempts: dict[int, int] = {}
    lock = threading.Lock()

    def behaviour(body: dict[str, Any]) -> None:
        with lock:
            attempts[body["n"]] = attempts.get(body["n"], 0) + 1
            first = attempts[body["n"]] == 1
        if body.get("flaky") and first:
            raise RuntimeError("transient")

    fake = Jobs(behaviour)
    monkeypatch.setattr(jobs, "handle_message", fake)
    send({"job": "t", "n": 1, "flaky": True}, {"job": "t", "n": 2}, {"job": "nope"}, "not json")
    start_worker(concurrency=4, retry_delay=0)
    wait_until(lambda: queue_counts() == (0, 0), "every message to be deleted")
    assert attempts == {1: 2, 2: 1}  # the flaky one ran again, the good one once
    assert sorted(fake.finished) == [1, 1, 2]


def test_a_failed_job_keeps_its_message(
    start_worker: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = threading.Event()

    def behaviour(body: dict[str, Any]) -> None:
        failed.set()
        raise RuntimeError("transient")

    monkeypatch.setattr(jobs, "handle_message", Jobs(behaviour))
    send({"job": "t", "n": 1})
    w, thread = start_worker(concurrency=4, retry_delay=600)
    assert failed.wait(TIMEOUT)
    wait_until(lambda: w.running == 0, "the failed job to end")
    w.stop()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert queue_counts() == (0, 1)  # not deleted: invisible until its (shortened) timeout


def test_stop_waits_for_the_running_jobs_and_takes_no_new_ones(
    start_worker: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    release = threading.Event()
    entered = threading.Barrier(3, timeout=TIMEOUT)  # two jobs and the test

    def behaviour(body: dict[str, Any]) -> None:
        entered.wait()
        assert release.wait(TIMEOUT)

    fake = Jobs(behaviour)
    monkeypatch.setattr(jobs, "handle_message", fake)
    caplog.set_level(logging.INFO, logger="ucs_lambda.worker")
    send({"job": "t", "n": 1}, {"job": "t", "n": 2})
    w, thread = start_worker(concurrency=2)
    entered.wait()  # both jobs are running
    w.stop()
    send({"job": "t", "n": 3})  # arrives after the stop: must stay in the queue
    thread.join(timeout=1.0)
    assert thread.is_alive()  # the jobs cannot end before `release`, so run() cannot either
    assert fake.finished == []
    release.set()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert sorted(fake.finished) == [1, 2] and 3 not in fake.started
    assert queue_counts() == (1, 0)  # the two finished jobs' messages deleted, the third kept
    assert "waiting for 2 running job(s)" in caplog.text and "worker stopped" in caplog.text


def test_sweeps_run_while_every_slot_is_busy(
    start_worker: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The polling thread runs the due sweeps also when it cannot take messages, one at a
    time (a sweep that overlapped another one would see ``active`` > 1)."""
    release = threading.Event()
    sweeps: list[int] = []
    state = {"active": 0, "most": 0}

    def sweep() -> dict[str, int]:
        state["active"] += 1
        state["most"] = max(state["most"], state["active"])
        state["active"] -= 1
        sweeps.append(fake.running)
        return {"cancelled": 0, "requeued": 0}

    fake = Jobs(lambda body: release.wait(TIMEOUT))
    monkeypatch.setattr(jobs, "handle_message", fake)
    monkeypatch.setattr(jobs, "sweep_stale_uploads", sweep)
    monkeypatch.setattr(jobs, "cleanup_outbox", lambda: 0)
    send({"job": "t", "n": 1})
    w = Worker(sweep_seconds=0.05, wait_seconds=1, concurrency=1)
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: fake.running == 1, "the job to start")
        before = len(sweeps)
        wait_until(lambda: len(sweeps) >= before + 2, "two sweeps while the only slot is busy")
        assert fake.running == 1 and sweeps[-1] == 1 and state["most"] == 1
    finally:
        release.set()
        w.stop()
        thread.join(TIMEOUT)
    assert not thread.is_alive()


def test_run_once_runs_its_messages_side_by_side(
    env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    barrier = threading.Barrier(3, timeout=TIMEOUT)
    fake = Jobs(lambda body: barrier.wait())
    monkeypatch.setattr(jobs, "handle_message", fake)
    send(*({"job": "t", "n": n} for n in range(3)))
    w = Worker(sweep_seconds=0, wait_seconds=0, concurrency=3)
    assert w.run_once() == 3  # moto answers with every visible message up to the maximum
    assert not barrier.broken and sorted(fake.finished) == [0, 1, 2]
    assert queue_counts() == (0, 0)


# ---- configuration ----------------------------------------------------------------------


def test_default_concurrency_follows_the_cores() -> None:
    assert worker.default_concurrency(1) == 2
    assert worker.default_concurrency(2) == 4
    assert worker.default_concurrency(64) == 4
    assert worker.default_concurrency(0) == 2  # os.cpu_count() may be None


def test_concurrency_from_flag_environment_or_default() -> None:
    assert worker.concurrency_setting(3, {"UCS_WORKER_CONCURRENCY": "7"}) == 3
    assert worker.concurrency_setting(None, {"UCS_WORKER_CONCURRENCY": " 7 "}) == 7
    assert worker.concurrency_setting(None, {}) == worker.default_concurrency()
    assert worker.concurrency_setting(None, {"UCS_WORKER_CONCURRENCY": ""}) == (
        worker.default_concurrency()
    )
    for bad in ("0", "-1", "65", "four"):
        with pytest.raises(ConfigError, match="UCS_WORKER_CONCURRENCY"):
            worker.concurrency_setting(None, {"UCS_WORKER_CONCURRENCY": bad})
    with pytest.raises(ConfigError, match="--concurrency"):
        worker.concurrency_setting(0, {})


def test_main_refuses_a_bad_concurrency(
    env: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("UCS_WORKER_CONCURRENCY", "many")
    assert worker.main([]) == 3
    assert "UCS_WORKER_CONCURRENCY must be an integer" in capsys.readouterr().err
    assert worker.main(["--concurrency", "0"]) == 3
    assert "--concurrency must be between 1 and 64" in capsys.readouterr().err
