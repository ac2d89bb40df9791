"""The transfer engine shared by uploads and downloads, for one file or many at once.

One ``pycurl.CurlMulti`` drives up to N easy handles from a single loop in the calling thread;
each handle moves one part (upload) or one byte range (download) at a time and is reused for
the next one, so connections stay pooled in the multi handle. N is the whole budget of storage
connections, however many files are in flight: the engine takes its work from a
:class:`TransferQueue` that the transfer manager (``manager.py``) adds :class:`Transfer` objects
to while it runs. What is moved, and how an answer is checked, is the business of each transfer
(``transfer/upload.py``, ``transfer/download.py``); the engine owns scheduling, retries, stall
detection, progress sampling and interruption. It moves bytes only: it never calls the API and
never waits for it (a transfer that needs the API, e.g. for a fresh URL, starts the request on
another thread and answers :meth:`Transfer.ready` with False meanwhile):

- Parts are taken from the oldest transfer that has one ready, so files finish in the order they
  started (the server can validate or the client verify the first one while the next moves).
- A part that fails with a connection error, a timeout, 5xx, 408, 429 (``Retry-After`` honoured)
  or 403 (an expired presigned URL) is retried after an exponential backoff with jitter, at most
  ``retries`` times; then its *transfer* fails (its other parts are dropped, its outcome carries
  the error) and the other transfers go on. A part whose transfer is not ready for it (its fresh
  URL is on its way) is *parked*: it holds no handle and does not count against the window, so
  the other files' parts go on; it starts once its transfer says it is ready.
- Stalls: libcurl aborts a transfer that moved less than 1 KiB/s for ``stall_timeout`` seconds
  (``LOW_SPEED_LIMIT``/``LOW_SPEED_TIME``); that is a retryable timeout.
- Ctrl+C sets a flag (SIGINT works on Windows too); the loop stops at its next turn, every
  unfinished transfer's outcome becomes :class:`Interrupted` and the engine raises it (exit 130).

Each transfer's :attr:`Transfer.outcome` (a ``Future``) is resolved by the engine: with the
transfer's :class:`EngineStats` once every part is done, or with the error that ended it; the
file's job then confirms (upload) or verifies (download) the file on an API thread.

Progress is sampled with ``getinfo(SIZE_UPLOAD_T / SIZE_DOWNLOAD_T)`` on the running handles,
so no per-chunk Python callback exists on the data path.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Generic, TypeVar

from ghga_cli.curl import HeaderCollector, apply_common_options, pycurl_module
from ghga_cli.errors import (
    EXIT_AUTH,
    EXIT_NETWORK,
    EXIT_USAGE,
    CliError,
    Interrupted,
    LocalIOError,
    internal_error,
)
from ghga_cli.progress import Progress
from ghga_cli.retry import FATAL_CURL_ERRORS, RETRYABLE_STATUSES, RetryPolicy, parse_retry_after

#: S3 allows at most this many parts in a multipart upload.
MAX_PARTS = 10_000


def part_count(total_size: int, part_size: int) -> int:
    """Number of ``part_size`` pieces of ``total_size`` bytes (0 for an empty file).

    Arithmetic only: callers check the count against their limit *before* planning, so an
    absurd size or part size from a server can never make the client build a huge list.
    """
    if part_size <= 0:
        raise ValueError("part size must be positive")
    if total_size < 0:
        raise ValueError("size must not be negative")
    return -(-total_size // part_size)


def plan_parts(total_size: int, part_size: int) -> list[tuple[int, int]]:
    """Split ``total_size`` bytes into ``(offset, size)`` pieces of ``part_size`` (last shorter).

    An empty file has no pieces; callers that need one (an S3 multipart upload needs one part,
    which may be empty) add it themselves.
    """
    part_count(total_size, part_size)  # validates the arguments
    return [(off, min(part_size, total_size - off)) for off in range(0, total_size, part_size)]


@dataclass
class Part:
    """One unit of work: a part of an upload or a byte range of a download.

    The direction-specific state lives in subclasses (``uploads.UploadPart``,
    ``downloads.RangePart``); the engine only uses these fields.
    """

    transfer: Transfer[Any] = field(repr=False)
    index: int  # 0-based position in the plan
    offset: int
    size: int
    attempts: int = 0  # failed attempts so far
    refresh_url: bool = False  # the last attempt got 403: ask for a fresh URL

    @property
    def number(self) -> int:
        """1-based part number (S3's ``partNumber``)."""
        return self.index + 1


PartT = TypeVar("PartT", bound=Part)


class PartError(Exception):
    """A failed attempt. ``retryable`` decides between retry and giving up."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        exit_code: int = EXIT_NETWORK,
        hint: str | None = None,
        retry_after: float | None = None,
        refresh_url: bool = False,
    ):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.exit_code = exit_code
        self.hint = hint
        self.retry_after = retry_after
        self.refresh_url = refresh_url

    def to_cli_error(self, part: Part, attempts: int) -> CliError:
        tries = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts > 1 else ""
        return CliError(
            f"part {part.number} (bytes {part.offset}-{part.offset + part.size - 1}) failed"
            f"{tries}: {self.message}",
            self.hint
            if self.hint is not None
            else "check the network, or raise --retries/--stall-timeout, then rerun to resume",
            exit_code=self.exit_code,
        )


class Slot:
    """An easy handle and what belongs to it while it moves one part."""

    def __init__(self, curl: Any, index: int):
        self.curl = curl
        self.index = index
        self.headers = HeaderCollector()
        self.part: Part | None = None
        self.started = 0.0


@dataclass
class EngineStats:
    """What the engine did for one transfer (or for the whole run)."""

    requests: int = 0
    retries: int = 0
    parts_done: int = 0
    url_refreshes: int = 0
    retry_reasons: list[str] = field(default_factory=list)
    started_at: float | None = None  # clock of the first part's start: the transfer phase
    ended_at: float | None = None  # clock when the transfer ended

    @property
    def seconds(self) -> float:
        """The transfer phase: from the first part's start to the transfer's end."""
        if self.started_at is None or self.ended_at is None:
            return 0.0
        return max(0.0, self.ended_at - self.started_at)

    def note_retry(self, reason: str) -> None:
        self.retries += 1
        self.retry_reasons = [*self.retry_reasons[-19:], reason]


class Transfer(Generic[PartT]):
    """What the engine needs from the upload or the download of one file.

    Subclasses implement the abstract methods; the engine calls all of them from its own
    thread. ``outcome`` is resolved by the engine (see the module docstring).
    """

    direction: ClassVar[str] = "upload"  # or "download": which byte counter to sample

    def __init__(self, label: str) -> None:
        self.label = label  # the file id, for messages
        self.outcome: Future[EngineStats] = Future()
        self.stats = EngineStats()

    def next_part(self) -> PartT | None:
        """A part ready to start now, or None (none ready yet, or none left)."""
        raise NotImplementedError

    def exhausted(self) -> bool:
        """True when ``next_part`` will never return another part."""
        raise NotImplementedError

    def ready(self, part: PartT) -> bool:
        """Whether ``part`` can start now; False parks it (e.g. its fresh URL is on its way).

        Must not wait: start what is needed (an API request on another thread) and answer.
        Raising ends the transfer with that error.
        """
        return True

    def configure(self, slot: Slot, part: PartT) -> None:
        """Set URL, method, headers and data source/sink of ``slot.curl`` for ``part``.

        Runs on the engine's thread: never calls the API, never waits.
        """
        raise NotImplementedError

    def check(self, slot: Slot, part: PartT) -> None:
        """Verify a 2xx answer (raise PartError if it is wrong)."""
        raise NotImplementedError

    def part_done(self, slot: Slot, part: PartT) -> None:
        """Record a verified part."""
        raise NotImplementedError

    def bytes_moved(self) -> int:
        """Bytes of the parts this run finished (not those done by an earlier run)."""
        raise NotImplementedError

    def describe_http_error(self, slot: Slot, part: PartT, status: int) -> PartError:
        """A non-retryable HTTP status; transfers may add detail (e.g. S3's error code)."""
        return PartError(f"the storage answered HTTP {status}", retryable=False)

    def close(self) -> None:
        """Release what the transfer holds (files, buffers); called once when it ends."""


class TransferQueue:
    """The transfers the engine serves, oldest first; thread-safe.

    File jobs :meth:`add` transfers while the engine runs; :meth:`close` says no more will
    come, and the engine returns once every transfer has ended.
    """

    def __init__(self, transfers: list[Transfer[Any]] | None = None) -> None:
        self._transfers: list[Transfer[Any]] = list(transfers or [])
        self._closed = False
        self._cond = threading.Condition()

    def add(self, transfer: Transfer[Any]) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the transfer queue is closed")
            self._transfers.append(transfer)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def live(self) -> list[Transfer[Any]]:
        with self._cond:
            return list(self._transfers)

    def remove(self, transfer: Transfer[Any]) -> None:
        with self._cond:
            if transfer in self._transfers:
                self._transfers.remove(transfer)

    def drained(self) -> bool:
        with self._cond:
            return self._closed and not self._transfers

    def next_part(self) -> Part | None:
        """The next part of the oldest transfer that has one ready now (never waits)."""
        with self._cond:
            for transfer in self._transfers:
                part = transfer.next_part()
                if part is not None:
                    return part
            return None

    def wait_for_work(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for a transfer to be added or the queue to be closed.

        Transfers that make parts ready from other threads (an upload's hashing of stored
        parts, its URLs arriving) do not notify; the engine's idle wait is short.
        """
        with self._cond:
            self._cond.wait(max(0.0, timeout))


class InterruptFlag:
    """Set by Ctrl+C while a session runs; a second Ctrl+C raises KeyboardInterrupt.

    Threads that wait (for validation, staging, a retry) wait on it, so an interrupt ends
    their waits at once.
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if interrupted meanwhile."""
        return self._event.wait(max(0.0, seconds))

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, raising :class:`Interrupted` if interrupted meanwhile."""
        if self.wait(seconds):
            raise Interrupted()


@contextlib.contextmanager
def interrupt_guard(flag: InterruptFlag) -> Iterator[None]:
    """Turn the first SIGINT into ``flag.set()`` for the duration (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.is_set:
            raise KeyboardInterrupt
        flag.set()

    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class _Loop:
    """The state of one :meth:`Engine.run_queue`: handles and the parts they serve."""

    multi: Any
    slots: list[Slot]
    free: list[Slot] = field(default_factory=list)
    active: dict[int, Slot] = field(default_factory=dict)  # id(curl) -> slot
    delayed: list[tuple[float, int, Part]] = field(default_factory=list)  # (due, seq, part)
    parked: list[Part] = field(default_factory=list)  # waiting for their transfer (a URL)

    def __post_init__(self) -> None:
        self.free = list(reversed(self.slots))

    def close(self) -> None:
        for slot in self.active.values():
            with contextlib.suppress(Exception):
                self.multi.remove_handle(slot.curl)
        for slot in self.slots:
            slot.curl.close()
        self.multi.close()


class Engine:
    """Runs transfers to completion with ``parallel`` handles in all."""

    SELECT_TIMEOUT = 0.05
    PARK_CHECK = 0.01  # how often parked parts are looked at while nothing else moves

    def __init__(
        self,
        *,
        parallel: int = 8,
        policy: RetryPolicy | None = None,
        stall_timeout: float = 60.0,
        progress: Progress | None = None,
        log: Callable[[str], None] | None = None,
        interrupt: InterruptFlag | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.parallel = max(1, int(parallel))
        self.policy = policy or RetryPolicy()
        self.stall_timeout = stall_timeout
        self.progress = progress
        self._log = log or (lambda _msg: None)
        self.interrupt = interrupt or InterruptFlag()
        self._clock = clock
        self.stats = EngineStats()
        self._seq = itertools.count()
        self._next_tick = 0.0
        self._finished_bytes = 0  # bytes moved by transfers that have ended
        # Per running transfer: parts in flight or waiting for a retry.
        self._outstanding: dict[Transfer[Any], int] = {}

    def run(self, transfer: Transfer[Any]) -> EngineStats:
        """Move every part of one ``transfer``; raise its failure (CliError, Interrupted)."""
        queue = TransferQueue([transfer])
        queue.close()
        self.run_queue(queue)
        return transfer.outcome.result()

    def run_queue(self, queue: TransferQueue) -> None:
        """Serve ``queue`` until it is closed and every transfer in it has ended.

        Failures of single transfers go to their outcomes; only an interruption (and a bug in
        the engine itself) is raised from here, after every unfinished outcome was resolved.
        """
        pycurl = pycurl_module()
        loop = _Loop(pycurl.CurlMulti(), [Slot(pycurl.Curl(), i) for i in range(self.parallel)])
        try:
            while True:
                if self.interrupt.is_set:
                    raise Interrupted()
                self._start_parts(loop, queue)
                self._finish_idle_transfers(queue)
                if not loop.active:
                    if not loop.delayed and not loop.parked and queue.drained():
                        break
                    # Nothing on the wire: wait for new work, a due retry or a parked part.
                    queue.wait_for_work(self._idle_wait(loop))
                    self._tick(queue, loop.active)
                    continue
                self._perform(loop, queue)
                self._tick(queue, loop.active)
                if loop.active and loop.multi.select(self.SELECT_TIMEOUT) < 0:
                    queue.wait_for_work(0.005)
        except BaseException as exc:
            failure = exc if isinstance(exc, CliError) else Interrupted()
            for transfer in queue.live():
                self._end(transfer, queue, error=failure)
            raise
        finally:
            loop.close()
        self._tick(queue, {}, force=True)

    def _idle_wait(self, loop: _Loop) -> float:
        if loop.parked:
            return self.PARK_CHECK
        if loop.delayed:
            return max(0.0, min(self.SELECT_TIMEOUT, loop.delayed[0][0] - self._clock()))
        return self.SELECT_TIMEOUT

    def _start_parts(self, loop: _Loop, queue: TransferQueue) -> None:
        """Start work on free handles: parked parts whose URL arrived, due retries, new parts.

        A part whose transfer is not ready for it (its URL is being fetched) is parked: it
        holds no handle and does not count against the window, so other files go on.
        """
        now = self._clock()
        for part in list(loop.parked):
            if not loop.free:
                return
            if part.transfer.outcome.done():
                loop.parked.remove(part)
                continue
            try:
                ready = part.transfer.ready(part)
            except Exception as exc:  # the fresh URL could not be had: the transfer fails
                self._fail_transfer(part.transfer, _as_cli_error(exc), loop, queue)
                continue
            if ready:
                loop.parked.remove(part)
                self._launch(loop, part, queue)
        while loop.free:
            if loop.delayed and loop.delayed[0][0] <= now:
                part = heapq.heappop(loop.delayed)[2]
                if part.transfer.outcome.done():
                    continue  # its transfer failed meanwhile
            elif len(loop.active) + len(loop.delayed) >= self.parallel:
                return  # parts waiting to be retried count against the window
            else:
                part = queue.next_part()
                if part is None:
                    return
                self._outstanding[part.transfer] = self._outstanding.get(part.transfer, 0) + 1
            try:
                ready = part.transfer.ready(part)
            except Exception as exc:
                self._fail_transfer(part.transfer, _as_cli_error(exc), loop, queue)
                continue
            if not ready:
                loop.parked.append(part)
                continue
            self._launch(loop, part, queue)

    def _launch(self, loop: _Loop, part: Part, queue: TransferQueue) -> None:
        slot = loop.free.pop()
        try:
            self._start(loop.multi, slot, part)
        except Exception as exc:  # the transfer's failure (e.g. its file), not the engine's
            slot.part = None
            loop.free.append(slot)
            self._fail_transfer(part.transfer, _as_cli_error(exc), loop, queue)
            return
        loop.active[id(slot.curl)] = slot

    def _perform(self, loop: _Loop, queue: TransferQueue) -> None:
        """Let libcurl work, then account for every finished handle."""
        pycurl = pycurl_module()
        while True:
            ret, _running = loop.multi.perform()
            if ret != pycurl.E_CALL_MULTI_PERFORM:
                break
        while True:
            queued, ok_list, err_list = loop.multi.info_read()
            finished = [(c, None) for c in ok_list] + [
                (c, (errno, msg)) for c, errno, msg in err_list
            ]
            for curl, error in finished:
                slot = loop.active.pop(id(curl), None)
                if slot is None:
                    continue  # removed with its failed transfer
                loop.multi.remove_handle(curl)
                part = slot.part
                slot.part = None
                assert part is not None
                loop.free.append(slot)
                failure = self._finish(slot, part, error, loop.delayed)
                if failure is not None:
                    self._fail_transfer(part.transfer, failure, loop, queue)
            if not queued:
                break

    # -- internals -------------------------------------------------------------------------

    def _start(self, multi: Any, slot: Slot, part: Part) -> None:
        """Configure the handle for ``part`` and add it (``configure`` never calls the API)."""
        pycurl = pycurl_module()
        curl = slot.curl
        curl.reset()
        apply_common_options(curl, stall_timeout=self.stall_timeout)
        # One TCP connection per transfer: HTTP/2 would multiplex the parts onto one.
        curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        slot.headers.reset()
        slot.headers.on_complete = None
        curl.setopt(pycurl.HEADERFUNCTION, slot.headers)
        slot.part = part
        part.transfer.configure(slot, part)
        part.refresh_url = False
        slot.started = self._clock()
        self.stats.requests += 1
        stats = part.transfer.stats
        stats.requests += 1
        if stats.started_at is None:
            stats.started_at = slot.started
        multi.add_handle(curl)

    def _finish(
        self,
        slot: Slot,
        part: Part,
        error: tuple[int, str] | None,
        delayed: list[tuple[float, int, Part]],
    ) -> CliError | None:
        """Account for one finished attempt; the error that ends its transfer, if any."""
        transfer = part.transfer
        try:
            self._classify(slot, part, error)
        except PartError as failure:
            part.attempts += 1
            if not failure.retryable or not self.policy.can_retry(part.attempts):
                return failure.to_cli_error(part, part.attempts)
            if failure.refresh_url:
                part.refresh_url = True
                self.stats.url_refreshes += 1
                transfer.stats.url_refreshes += 1
            wait = self.policy.delay(part.attempts, failure.retry_after)
            self.stats.note_retry(failure.message)
            transfer.stats.note_retry(failure.message)
            self._log(
                f"{transfer.label}: part {part.number}: {failure.message}; retrying in {wait:.1f} s"
            )
            heapq.heappush(delayed, (self._clock() + wait, next(self._seq), part))
            return None
        except CliError as exc:  # a transfer-level verdict (e.g. the object changed)
            return exc
        self.stats.parts_done += 1
        transfer.stats.parts_done += 1
        self._outstanding[transfer] -= 1
        try:
            transfer.part_done(slot, part)
        except Exception as exc:
            return _as_cli_error(exc)
        return None

    def _classify(self, slot: Slot, part: Part, error: tuple[int, str] | None) -> None:
        """Raise PartError unless the attempt succeeded and the transfer's check accepts it."""
        headers = slot.headers
        status = headers.status if headers.complete else None
        if error is not None and (status is None or (_ok(status) and not headers.abort_reason)):
            errno, message = error
            if errno == 28:  # CURLE_OPERATION_TIMEDOUT (also raised by LOW_SPEED_*)
                message = f"stalled or timed out ({message})"
            if errno == 23:  # CURLE_WRITE_ERROR, and our header check did not ask for it
                raise PartError(
                    f"writing the received data to the local file failed ({message})",
                    retryable=False,
                    exit_code=EXIT_USAGE,
                    hint="check free space and permissions where the file is written, "
                    "then rerun the same command: it resumes where it stopped",
                )
            raise PartError(
                message or f"libcurl error {errno}", retryable=errno not in FATAL_CURL_ERRORS
            )
        if status is None:
            raise PartError("no HTTP answer", retryable=True)
        if _ok(status):
            part.transfer.check(slot, part)
            return
        retry_after = parse_retry_after(headers.get("retry-after"))
        if status == 403:
            raise PartError(
                "the storage answered HTTP 403 (presigned URL expired or access denied)",
                retryable=True,
                refresh_url=True,
                exit_code=EXIT_AUTH,
                hint="the storage keeps refusing fresh URLs; check the clock of this "
                "computer and your access, then rerun to resume",
            )
        if status in RETRYABLE_STATUSES:
            raise PartError(
                f"the storage answered HTTP {status}", retryable=True, retry_after=retry_after
            )
        raise part.transfer.describe_http_error(slot, part, status)

    def _fail_transfer(
        self, transfer: Transfer[Any], error: CliError, loop: _Loop, queue: TransferQueue
    ) -> None:
        """End ``transfer`` with ``error``: abort its parts, keep the others going."""
        for key, slot in list(loop.active.items()):
            if slot.part is not None and slot.part.transfer is transfer:
                with contextlib.suppress(Exception):
                    loop.multi.remove_handle(slot.curl)
                slot.part = None
                del loop.active[key]
                loop.free.append(slot)
        loop.delayed[:] = [entry for entry in loop.delayed if entry[2].transfer is not transfer]
        heapq.heapify(loop.delayed)
        loop.parked[:] = [part for part in loop.parked if part.transfer is not transfer]
        self._end(transfer, queue, error=error)

    def _finish_idle_transfers(self, queue: TransferQueue) -> None:
        """Resolve the outcome of every transfer whose parts are all done."""
        for transfer in queue.live():
            if self._outstanding.get(transfer, 0) == 0 and transfer.exhausted():
                self._end(transfer, queue)

    def _end(
        self, transfer: Transfer[Any], queue: TransferQueue, error: BaseException | None = None
    ) -> None:
        queue.remove(transfer)
        self._outstanding.pop(transfer, None)
        if transfer.outcome.done():
            return
        transfer.stats.ended_at = self._clock()
        with contextlib.suppress(Exception):
            self._finished_bytes += transfer.bytes_moved()
        try:
            transfer.close()
        except Exception as exc:
            error = error or _as_cli_error(exc)
        if error is None:
            transfer.outcome.set_result(transfer.stats)
        else:
            transfer.outcome.set_exception(error)

    def _tick(self, queue: TransferQueue, active: dict[int, Slot], force: bool = False) -> None:
        if self.progress is None:
            return
        now = self._clock()
        if not force and now < self._next_tick:
            return  # the loop turns on every socket event; sample progress 5 times a second
        self._next_tick = now + 0.2
        pycurl = pycurl_module()
        moving = 0
        for slot in active.values():
            if slot.part is None:
                continue
            name = "SIZE_UPLOAD" if slot.part.transfer.direction == "upload" else "SIZE_DOWNLOAD"
            info = getattr(pycurl, name + "_T", None) or getattr(pycurl, name)
            with contextlib.suppress(Exception):
                moving += int(slot.curl.getinfo(info))
        moved = self._finished_bytes + moving
        for transfer in queue.live():
            with contextlib.suppress(Exception):
                moved += transfer.bytes_moved()
        self.progress.update_moved(moved, force=force)


def _ok(status: int) -> bool:
    return 200 <= status < 300


def _as_cli_error(exc: BaseException) -> CliError:
    """The error a failed transfer reports: CliErrors as they are, local I/O errors mapped."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, OSError):
        return LocalIOError.from_os_error(exc)
    return internal_error(exc)
