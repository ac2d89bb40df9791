"""The transfer engine shared by uploads and downloads.

One ``pycurl.CurlMulti`` drives up to N easy handles from a single loop in the calling thread;
each handle moves one part (upload) or one byte range (download) at a time and is reused for
the next one, so connections stay pooled in the multi handle. What is moved, and how an answer
is checked, is the business of a :class:`Transfer` (``uploads.py``, ``downloads.py``); the engine
owns scheduling, retries, stall detection, progress and interruption:

- A part that fails with a connection error, a timeout, 5xx, 408, 429 (``Retry-After`` honoured)
  or 403 (an expired presigned URL: the transfer is asked for a fresh URL) is retried after an
  exponential backoff with jitter, at most ``retries`` times; then the run fails.
- Stalls: libcurl aborts a transfer that moved less than 1 KiB/s for ``stall_timeout`` seconds
  (``LOW_SPEED_LIMIT``/``LOW_SPEED_TIME``); that is a retryable timeout.
- Ctrl+C sets a flag (SIGINT works on Windows too); the loop stops at the next turn, the caller
  saves resume state, and :class:`Interrupted` (exit 130) is raised.

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
from dataclasses import dataclass, field
from typing import Any, Callable

from ghga_cli.curl import HeaderCollector, apply_common_options, pycurl_module
from ghga_cli.errors import (
    EXIT_AUTH,
    EXIT_NETWORK,
    EXIT_USAGE,
    CliError,
    Interrupted,
)
from ghga_cli.progress import Progress
from ghga_cli.retry import FATAL_CURL_ERRORS, RETRYABLE_STATUSES, RetryPolicy, parse_retry_after

#: S3 allows at most this many parts in a multipart upload.
MAX_PARTS = 10_000


def plan_parts(total_size: int, part_size: int) -> list[tuple[int, int]]:
    """Split ``total_size`` bytes into ``(offset, size)`` pieces of ``part_size`` (last shorter).

    An empty file has no pieces; callers that need one (an S3 multipart upload needs one part,
    which may be empty) add it themselves.
    """
    if part_size <= 0:
        raise ValueError("part size must be positive")
    if total_size < 0:
        raise ValueError("size must not be negative")
    return [(off, min(part_size, total_size - off)) for off in range(0, total_size, part_size)]


@dataclass
class Part:
    """One unit of work: a part of an upload or a byte range of a download."""

    index: int  # 0-based position in the plan
    offset: int
    size: int
    attempts: int = 0  # failed attempts so far
    payload: Any = None  # upload: the part's bytes (read once, reused by retries)
    digest: Any = None  # upload: the part's MD5 (hex str or a Future of it)
    refresh_url: bool = False  # the last attempt got 403: ask for a fresh URL
    url_generation: int = 0  # which URL the attempt used (download: avoid duplicate refreshes)

    @property
    def number(self) -> int:
        """1-based part number (S3's ``partNumber``)."""
        return self.index + 1


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
    """An easy handle and what belongs to it between parts."""

    def __init__(self, curl: Any, index: int):
        self.curl = curl
        self.index = index
        self.headers = HeaderCollector()
        self.part: Part | None = None
        self.resource: Any = None  # upload: response body buffer; download: output file
        self.upload_body: Any = None  # upload: the part's bytes as the handle reads them
        self.started = 0.0


class Transfer:
    """What the engine needs from an upload or a download (override all methods)."""

    direction = "upload"  # or "download": which byte counter to sample for progress

    def next_part(self, timeout: float) -> Part | None:
        """A part ready to start, waiting at most ``timeout`` s; None if none is ready."""
        raise NotImplementedError

    def exhausted(self) -> bool:
        """True when ``next_part`` will never return another part."""
        raise NotImplementedError

    def configure(self, slot: Slot, part: Part) -> None:
        """Set URL, method, headers and data source/sink of ``slot.curl`` for ``part``."""
        raise NotImplementedError

    def check(self, slot: Slot, part: Part) -> None:
        """Verify a 2xx answer (raise PartError if it is wrong)."""
        raise NotImplementedError

    def part_done(self, slot: Slot, part: Part) -> None:
        """Record a verified part."""
        raise NotImplementedError

    def bytes_done(self) -> int:
        """Bytes of parts that are finished (including ones done before this run)."""
        raise NotImplementedError

    def describe_http_error(self, slot: Slot, part: Part, status: int) -> PartError:
        """A non-retryable HTTP status; transfers may add detail (e.g. S3's error code)."""
        return PartError(f"the storage answered HTTP {status}", retryable=False)


@dataclass
class EngineStats:
    requests: int = 0
    retries: int = 0
    parts_done: int = 0
    url_refreshes: int = 0
    retry_reasons: list[str] = field(default_factory=list)


class InterruptFlag:
    """Set by Ctrl+C while the engine runs; a second Ctrl+C raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.is_set = False

    def set(self) -> None:
        self.is_set = True


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


class Engine:
    """Runs one :class:`Transfer` to completion with ``parallel`` handles."""

    SELECT_TIMEOUT = 0.05

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

    def run(self, transfer: Transfer) -> EngineStats:
        """Move every part of ``transfer``; raise CliError/Interrupted on failure."""
        pycurl = pycurl_module()
        multi = pycurl.CurlMulti()
        slots = [Slot(pycurl.Curl(), i) for i in range(self.parallel)]
        free = list(reversed(slots))
        active: dict[int, Slot] = {}  # id(curl) -> slot
        delayed: list[tuple[float, int, Part]] = []  # (due, seq, part)
        try:
            while True:
                if self.interrupt.is_set:
                    raise Interrupted()
                now = self._clock()
                # 1. Start work on free handles: due retries first, then new parts.
                while free:
                    if delayed and delayed[0][0] <= now:
                        part = heapq.heappop(delayed)[2]
                    elif len(active) + len(delayed) >= self.parallel:
                        break  # parts waiting to be retried count against the window (memory)
                    else:
                        wait = 0.0 if active or delayed else self.SELECT_TIMEOUT
                        part = transfer.next_part(wait)
                        if part is None:
                            break
                    slot = free.pop()
                    self._start(multi, slot, part, transfer)
                    active[id(slot.curl)] = slot
                if not active:
                    if not delayed and transfer.exhausted():
                        break
                    if delayed:
                        time.sleep(max(0.0, min(self.SELECT_TIMEOUT, delayed[0][0] - now)))
                    self._tick(transfer, active)
                    continue
                # 2. Let libcurl work, then collect finished handles.
                while True:
                    ret, _running = multi.perform()
                    if ret != pycurl.E_CALL_MULTI_PERFORM:
                        break
                while True:
                    queued, ok_list, err_list = multi.info_read()
                    finished = [(c, None) for c in ok_list] + [
                        (c, (errno, msg)) for c, errno, msg in err_list
                    ]
                    for curl, error in finished:
                        slot = active.pop(id(curl))
                        multi.remove_handle(curl)
                        part = slot.part
                        slot.part = None
                        assert part is not None
                        free.append(slot)
                        self._finish(slot, part, error, transfer, delayed)
                    if not queued:
                        break
                self._tick(transfer, active)
                if active and multi.select(self.SELECT_TIMEOUT) < 0:
                    time.sleep(0.005)
        finally:
            for slot in active.values():
                with contextlib.suppress(Exception):
                    multi.remove_handle(slot.curl)
            for slot in slots:
                slot.curl.close()
            multi.close()
        self._tick(transfer, {}, force=True)
        return self.stats

    # -- internals -------------------------------------------------------------------------

    def _start(self, multi: Any, slot: Slot, part: Part, transfer: Transfer) -> None:
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
        transfer.configure(slot, part)  # may call the API for a fresh URL
        part.refresh_url = False
        slot.started = self._clock()
        self.stats.requests += 1
        multi.add_handle(curl)

    def _finish(
        self,
        slot: Slot,
        part: Part,
        error: tuple[int, str] | None,
        transfer: Transfer,
        delayed: list[tuple[float, int, Part]],
    ) -> None:
        try:
            self._classify(slot, part, error, transfer)
        except PartError as failure:
            part.attempts += 1
            if not failure.retryable or not self.policy.can_retry(part.attempts):
                raise failure.to_cli_error(part, part.attempts) from None
            if failure.refresh_url:
                part.refresh_url = True
                self.stats.url_refreshes += 1
            wait = self.policy.delay(part.attempts, failure.retry_after)
            self.stats.retries += 1
            self.stats.retry_reasons = [*self.stats.retry_reasons[-19:], failure.message]
            self._log(f"part {part.number}: {failure.message}; retrying in {wait:.1f} s")
            heapq.heappush(delayed, (self._clock() + wait, next(self._seq), part))
            return
        self.stats.parts_done += 1
        transfer.part_done(slot, part)

    def _classify(
        self, slot: Slot, part: Part, error: tuple[int, str] | None, transfer: Transfer
    ) -> None:
        """Raise PartError unless the attempt succeeded and ``transfer.check`` accepts it."""
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
            transfer.check(slot, part)
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
        raise transfer.describe_http_error(slot, part, status)

    def _tick(self, transfer: Transfer, active: dict[int, Slot], force: bool = False) -> None:
        if self.progress is None:
            return
        now = self._clock()
        if not force and now < self._next_tick:
            return  # the loop turns on every socket event; sample progress 5 times a second
        self._next_tick = now + 0.2
        pycurl = pycurl_module()
        name = "SIZE_UPLOAD" if transfer.direction == "upload" else "SIZE_DOWNLOAD"
        info = getattr(pycurl, name + "_T", None) or getattr(pycurl, name)
        moving = 0
        for slot in active.values():
            with contextlib.suppress(Exception):
                moving += int(slot.curl.getinfo(info))
        self.progress.update(transfer.bytes_done() + moving, force=force)


def _ok(status: int) -> bool:
    return 200 <= status < 300
