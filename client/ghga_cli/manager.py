"""One run of ghga-cli: the files it moves and everything they share.

Uploads and downloads, of one file or of a manifest of thousands, run the same way:

- one :class:`~ghga_cli.engine.Engine` in the main thread moves the bytes of every file through
  ``--parallel`` connections in all (its :class:`~ghga_cli.engine.TransferQueue` takes each
  file's transfer when the file is ready);
- a pool of ``--parallel-files`` worker threads runs the files' *active* steps, the API
  conversation around a transfer (create/resume an upload, confirm it; prepare a download,
  verify and rename it). A step that hands its bytes to the engine waits for the transfer's
  outcome, so at most ``--parallel-files`` files are in flight;
- one waiter thread serves the files that wait on the server (an upload's validation, a
  download's staging) through :class:`Waiter` objects that poll for many files at once, so a
  file that waits holds no worker: while one file is validated or staged, others transfer;
- one :class:`~ghga_cli.engine.InterruptFlag`: Ctrl+C (or the first failure with
  ``--fail-fast``) stops the engine, ends every wait and every API call, and each file keeps
  the state a rerun resumes from.

A :class:`FileJob` is one file's conversation (``uploads.UploadJob``, ``downloads.DownloadJob``);
the session records one :class:`FileResult` per job, and the command line renders them (one
line per file, a summary, ``--json``). API clients are per thread (:class:`ApiAccess`) over one
:class:`~ghga_cli.http.TokenSource`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from ghga_cli.errors import CliError, Interrupted
from ghga_cli.jobs.api import DrsClient, UcsClient
from ghga_cli.jobs.http import HttpClient, TokenSource
from ghga_cli.progress import Progress
from ghga_cli.retry import RetryPolicy
from ghga_cli.transfer.engine import (
    Engine,
    EngineStats,
    InterruptFlag,
    Transfer,
    TransferQueue,
    interrupt_guard,
)


@dataclass
class SessionOptions:
    """What every file of a run shares, in both directions."""

    parallel: int = 8  # storage connections in all
    files_in_flight: int = 4  # files whose bytes move (or are being prepared) at once
    retries: int = 5
    stall_timeout: float = 60.0
    fail_fast: bool = False  # stop the whole run at the first failed file


class ApiAccess:
    """The run's API clients, one per thread (a pycurl handle serves one thread)."""

    def __init__(
        self,
        api_url: str,
        tokens: TokenSource,
        policy: RetryPolicy,
        *,
        stall_timeout: float = 60.0,
        log: Callable[[str], None] | None = None,
        interrupt: InterruptFlag | None = None,
    ) -> None:
        self.api_url = api_url
        self.tokens = tokens
        self.policy = policy
        self.stall_timeout = stall_timeout
        self._log = log
        self.interrupt = interrupt
        self._local = threading.local()
        self._clients: list[HttpClient] = []
        self._lock = threading.Lock()

    def http(self) -> HttpClient:
        client = getattr(self._local, "http", None)
        if client is None:
            client = HttpClient(
                self.tokens,
                self.policy,
                stall_timeout=self.stall_timeout,
                log=self._log,
                interrupt=self.interrupt,
            )
            self._local.http = client
            with self._lock:
                self._clients.append(client)
        return client

    def ucs(self) -> UcsClient:
        client = getattr(self._local, "ucs", None)
        if client is None:
            client = self._local.ucs = UcsClient(self.http(), self.api_url)
        return client

    def drs(self) -> DrsClient:
        client = getattr(self._local, "drs", None)
        if client is None:
            sleep = self.interrupt.sleep if self.interrupt is not None else time.sleep
            client = self._local.drs = DrsClient(
                self.http(), self.api_url, log=self._log, sleep=sleep
            )
        return client

    @property
    def retries(self) -> int:
        with self._lock:
            return sum(c.retries for c in self._clients)

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients = []


@dataclass
class FileResult:
    """How one file ended: a status (``accepted``, ``downloaded``, ...) or an error."""

    job: FileJob
    status: str | None = None
    error: CliError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class FileJob:
    """One file of a session. Subclasses schedule their first step in :meth:`begin`."""

    def __init__(self, file_id: str) -> None:
        self.file_id = file_id
        self.summary: dict[str, Any] = {"file_id": file_id}
        self.stats: EngineStats | None = None  # of its transfer, once it ran

    def begin(self, session: TransferSession) -> None:
        """Schedule the first step (``session.run_step`` or a waiter's ``add``)."""
        raise NotImplementedError


class Waiter:
    """Files waiting on the server, polled together from the session's waiter thread.

    Subclasses add entries (:meth:`_enter`) and implement :meth:`poll`; the bookkeeping of
    the entries (which are due, when the next one is) is shared here.
    """

    def __init__(self, session: TransferSession, clock: Callable[[], float] = time.monotonic):
        self.session = session
        self._clock = clock
        self._entries: list[WaitEntry] = []
        self._lock = threading.Lock()

    def poll(self) -> float:
        """Do what is due; seconds until something is due again (``inf`` when idle)."""
        raise NotImplementedError

    def _enter(self, entry: WaitEntry) -> None:
        with self._lock:
            self._entries.append(entry)
        self.session.wake_waiters()

    def _due(self, now: float) -> list[WaitEntry]:
        """The entries due at ``now``, the longest due first."""
        with self._lock:
            return sorted((e for e in self._entries if e.due <= now), key=lambda e: e.due)

    def _next_delay(self) -> float:
        with self._lock:
            if not self._entries:
                return float("inf")
            return max(0.0, min(e.due for e in self._entries) - self._clock())

    def _remove(self, entry: WaitEntry) -> None:
        with self._lock:
            if entry in self._entries:
                self._entries.remove(entry)


W = TypeVar("W", bound=Waiter)


class TransferSession:
    """Runs :class:`FileJob` objects on one engine (see the module docstring)."""

    def __init__(
        self,
        options: SessionOptions,
        api: ApiAccess,
        *,
        progress: Progress | None = None,
        log: Callable[[str], None] | None = None,
        on_result: Callable[[FileResult], None] | None = None,
        interrupt: InterruptFlag | None = None,
        batch: bool = False,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.options = options
        self.api = api
        self.progress = progress
        self.batch = batch
        self._log = log or (lambda _msg: None)
        self._on_result = on_result or (lambda _r: None)
        self.interrupt = interrupt or getattr(api, "interrupt", None) or InterruptFlag()
        self.queue = TransferQueue()
        self.engine = Engine(
            parallel=options.parallel,
            policy=policy or RetryPolicy(retries=options.retries),
            stall_timeout=options.stall_timeout,
            progress=progress,
            log=self._log,
            interrupt=self.interrupt,
        )
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, options.files_in_flight), thread_name_prefix="ghga-file"
        )
        self._waiters: list[Waiter] = []
        self._results: dict[int, FileResult] = {}
        self._jobs: list[FileJob] = []
        self._lock = threading.Lock()
        self._waiter_wake = threading.Event()
        self.stop_reason: CliError | None = None  # the failure that stopped a --fail-fast run

    # -- for jobs --------------------------------------------------------------------------

    def log_for(self, job: FileJob) -> Callable[[str], None]:
        """Messages about ``job``: prefixed with its file id when the run has many files."""
        if not self.batch:
            return self._log
        return lambda text: self._log(f"{job.file_id}: {text}")

    def run_step(self, job: FileJob, step: Callable[[], str | None]) -> None:
        """Run ``step`` on a worker; its return value (if not None) is the job's final status."""
        future: Future[str | None] = self._pool.submit(self._guarded, job, step)
        del future

    def waiter(self, kind: Callable[[TransferSession], W]) -> W:
        """The session's one waiter of ``kind`` (made on first use, served by the waiter
        thread): all uploads waiting for validation share one, all downloads waiting for
        staging another, so each polls for many files at once."""
        with self._lock:
            for waiter in self._waiters:
                if type(waiter) is kind:
                    return waiter  # type: ignore[return-value]
            made = kind(self)
            self._waiters.append(made)
        self._waiter_wake.set()
        return made

    def wake_waiters(self) -> None:
        self._waiter_wake.set()

    def transfer(self, transfer: Transfer[Any]) -> EngineStats:
        """Hand ``transfer`` to the engine and wait for its outcome (raises its failure)."""
        if self.interrupt.is_set:
            raise Interrupted()
        self.queue.add(transfer)
        while True:
            try:
                return transfer.outcome.result(timeout=0.1)
            except TimeoutError:
                if self.interrupt.is_set and not transfer.outcome.done():
                    # The engine stopped; it resolves outcomes of the transfers it knew.
                    with contextlib.suppress(TimeoutError):
                        return transfer.outcome.result(timeout=1.0)
                    raise Interrupted() from None

    def finish(
        self, job: FileJob, status: str | None = None, error: CliError | None = None
    ) -> None:
        """Record how ``job`` ended (once); the run ends when every job has ended."""
        with self._lock:
            if id(job) in self._results:
                return
            result = FileResult(job, status, error)
            self._results[id(job)] = result
            complete = len(self._results) == len(self._jobs)
        fatal = error is not None and not isinstance(error, Interrupted)
        if fatal and self.options.fail_fast and self.stop_reason is None:
            self.stop_reason = error
            self.interrupt.set()
        self._on_result(result)
        if complete:
            self.queue.close()
            self._waiter_wake.set()

    # -- the run ---------------------------------------------------------------------------

    def run(self, jobs: list[FileJob]) -> list[FileResult]:
        """Move every job's file; one result per job, in the order given."""
        self._jobs = list(jobs)
        if not jobs:
            return []
        waiter_thread = threading.Thread(target=self._serve_waiters, name="ghga-waiter")
        interrupted: BaseException | None = None
        with interrupt_guard(self.interrupt):
            waiter_thread.start()
            try:
                for job in jobs:
                    try:
                        job.begin(self)
                    except CliError as exc:
                        self.finish(job, error=exc)
                self.engine.run_queue(self.queue)
            except (Interrupted, KeyboardInterrupt) as exc:
                interrupted = exc
                self.interrupt.set()
            finally:
                self._waiter_wake.set()
                self._pool.shutdown(wait=True)
                waiter_thread.join()
        for job in jobs:  # anything that never got as far as a result
            self.finish(job, error=Interrupted())
        if isinstance(interrupted, KeyboardInterrupt):
            raise interrupted
        return [self._results[id(job)] for job in jobs]

    def _guarded(self, job: FileJob, step: Callable[[], str | None]) -> None:
        try:
            if self.interrupt.is_set:
                raise Interrupted()
            status = step()
        except CliError as exc:
            self.finish(job, error=exc)
        except OSError as exc:
            from ghga_cli.errors import LocalIOError

            self.finish(job, error=_chained(LocalIOError.from_os_error(exc), exc))
        except Exception as exc:
            self.finish(job, error=_chained(_internal(exc), exc))
        else:
            if status is not None:
                self.finish(job, status=status)

    def _serve_waiters(self) -> None:
        while True:
            with self._lock:
                done = len(self._results) == len(self._jobs)
                waiters = list(self._waiters)
            if done or self.interrupt.is_set:
                return
            delay = 0.5
            for waiter in waiters:
                try:
                    delay = min(delay, waiter.poll())
                except Exception as exc:  # a waiter must never die silently
                    self._log(f"internal error while waiting: {type(exc).__name__}: {exc}")
                    delay = min(delay, 1.0)
            self._waiter_wake.wait(max(0.01, delay))
            self._waiter_wake.clear()


def _internal(exc: BaseException) -> CliError:
    return CliError(
        f"unexpected internal error: {type(exc).__name__}: {exc}",
        "rerun with GHGA_CLI_DEBUG=1 for details and report it",
    )


def _chained(error: CliError, cause: BaseException) -> CliError:
    error.__cause__ = cause
    return error


@dataclass
class WaitEntry:
    """A file in a :class:`Waiter`: when to ask next, and how long it may still wait."""

    job: Any
    due: float
    interval: float
    deadline: float | None  # monotonic time to give up (None: only the idle limit)
    last_progress: float
    extra: dict[str, Any] = field(default_factory=dict)
