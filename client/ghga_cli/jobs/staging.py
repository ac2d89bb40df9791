"""Waiting for the DRS to stage objects: the one implementation, for first answers and refreshes.

A DRS answers 202 (with ``Retry-After``) while it copies an object to where it can be
downloaded. :class:`StagingWait` holds what one file's wait needs (when to ask next, until
when, what to tell the user) and judges each answer; :class:`StagingPoller` asks for every
waiting file that is due in one bulk request and is driven by timers, so no thread sleeps and
a file that waits holds nothing the others need.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Generic, TypeVar

from ghga_cli.errors import CliError, ProtocolError, WaitTimeout
from ghga_cli.jobs.api import DrsObject, Staging
from ghga_cli.jobs.tasks import Tasks

T = TypeVar("T")


class StagingWait(Generic[T]):
    """One file waiting to be staged: ask again after each ``Retry-After``, give up at a time.

    :meth:`judge` takes an answer: the result (``T``) when it is not :class:`Staging`;
    ``None`` while the file is still being staged (``due`` is then when to ask again);
    :class:`~ghga_cli.errors.WaitTimeout` once the wait is over.
    """

    def __init__(
        self,
        object_id: str,
        timeout: float,
        log: Callable[[str], None],
        *,
        first_delay: float = 0.0,
        say_once: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        now = clock()
        self.object_id = object_id
        self.timeout = timeout
        self.deadline = now + max(0.0, timeout)
        self.due = now + max(0.0, first_delay)
        self._log = log
        self._say_once = say_once  # a batch tells each file's wait once (thousands may wait)
        self._said = False
        self._clock = clock

    def judge(self, answer: T | Staging) -> T | None:
        if not isinstance(answer, Staging):
            return answer
        now = self._clock()
        remaining = self.deadline - now
        if remaining <= 0:
            raise WaitTimeout(
                f"file {self.object_id} is still being staged for download "
                f"after waiting {self.timeout:.0f} s"
            )
        wait = min(answer.retry_after, remaining)
        if not (self._say_once and self._said):
            self._said = True
            self._log(answer.describe(wait))
        self.due = now + wait
        return None

    def ask_until_staged(
        self,
        tasks: Tasks,
        ask: Callable[[], T | Staging],
        done: Callable[[T | None, BaseException | None], None],
    ) -> None:
        """Ask (on ``tasks``) until the answer is not :class:`Staging`; then call ``done``
        with the result or the error. Between asks, a timer waits: no thread is held."""

        def attempt() -> None:
            try:
                result = self.judge(ask())
            except BaseException as exc:
                done(None, exc)
                return
            if result is None:
                tasks.call_at(self.due, attempt)
            else:
                done(result, None)

        tasks.call_at(self.due, attempt)


Deliver = Callable[[Any, "DrsObject | None", "BaseException | None"], None]


class StagingPoller:
    """The downloads waiting for their object, asked for together (a bulk request per round).

    ``deliver(key, obj, error)`` hears how each wait ended. A malformed answer about one file
    ends that file's wait with the error (exit 8), never the poller.
    """

    GATHER = 1.0  # seconds: how early a wait may be asked for with the others

    def __init__(self, tasks: Tasks, drs: Callable[[], Any], deliver: Deliver) -> None:
        self._tasks = tasks
        self._drs = drs  # the DrsClient of the calling thread
        self._deliver = deliver
        self._waiting: dict[Any, StagingWait[DrsObject]] = {}
        self._lock = threading.Lock()
        self._scheduled: float | None = None

    def add(self, key: Any, wait: StagingWait[DrsObject]) -> None:
        with self._lock:
            self._waiting[key] = wait
        self._schedule()

    def _schedule(self) -> None:
        with self._lock:
            if not self._waiting:
                return
            due = min(w.due for w in self._waiting.values())
            if self._scheduled is not None and self._scheduled <= due:
                return
            self._scheduled = due
        self._tasks.call_at(due, self._round)

    def _round(self) -> None:
        # Files that are due within a moment are asked for now too: waits that began together
        # (a batch's files, each started by its own step) go in one bulk request.
        now = time.monotonic() + self.GATHER
        with self._lock:
            self._scheduled = None
            due = [(k, w) for k, w in self._waiting.items() if w.due <= now]
        if due:
            self._ask(due)
        self._schedule()

    def _ask(self, due: list[tuple[Any, StagingWait[DrsObject]]]) -> None:
        drs = self._drs()
        ids = [w.object_id for _k, w in due]
        try:
            if len(due) > 1:
                answers = drs.lookup_objects(ids)
            else:
                answers = {ids[0]: drs.request_object(ids[0])}
        except Exception as exc:  # the request failed (after its retries), or its answer is
            error = exc if isinstance(exc, CliError) else malformed(exc)  # unreadable: all fail
            for key, _wait in due:
                self._end(key, None, error)
            return
        for key, wait in due:
            try:
                answer = answers[wait.object_id]
                if isinstance(answer, CliError):
                    raise answer
                obj = wait.judge(answer)
            except Exception as exc:
                self._end(key, None, exc if isinstance(exc, CliError) else malformed(exc))
                continue
            if obj is not None:
                self._end(key, obj, None)

    def _end(self, key: Any, obj: DrsObject | None, error: BaseException | None) -> None:
        with self._lock:
            self._waiting.pop(key, None)
        self._deliver(key, obj, error)


def malformed(exc: BaseException) -> ProtocolError:
    """An answer this client cannot read: a protocol error of that file (exit 8)."""
    error = ProtocolError(
        f"the DRS answer could not be read ({type(exc).__name__})",
        "the server does not follow GA4GH DRS; contact the helpdesk",
    )
    error.__cause__ = exc
    return error
