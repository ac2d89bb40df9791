"""The transfer manager: one per run; one file or a manifest of thousands go through it alike.

Shaped like s3transfer's ``TransferManager``: :meth:`TransferManager.upload` and
:meth:`~TransferManager.download` take a file and return a ``Future`` of its
:class:`~ghga_cli.report.FileReport`; :meth:`~TransferManager.run` moves every file submitted
and returns their reports in order. Inside:

- one :class:`~ghga_cli.transfer.engine.Engine` in the calling thread moves the bytes of every
  file through ``--parallel`` connections in all. It never calls the API and never sleeps:
  URLs are fetched ahead of need on the *URL threads*, and a part whose URL must be renewed is
  parked until the new one has arrived;
- each file's conversation with the API is a state machine (``jobs/upload.py``,
  ``jobs/download.py``; vocabulary in ``jobs/steps.py``): its ``step`` runs on the *API
  threads* and returns the next action -- take a slot, move this transfer, sleep until, wait
  for staging, finished -- and never calls back into the manager;
- at most ``--parallel-files`` files are prepared or move bytes at once (slots); a file that
  waits for the server (its upload's validation, its object's staging) holds no slot and no
  thread: timers wake it, and the staging waits of many files are asked for in bulk;
- one :class:`~ghga_cli.transfer.engine.InterruptFlag`: Ctrl+C (or the first failure with
  ``--fail-fast``) stops the engine, ends every wait and API call, and each file keeps the
  state a rerun resumes from.

API clients are per thread (:class:`~ghga_cli.jobs.access.ApiAccess`).
"""

from __future__ import annotations

import collections
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable

from ghga_cli.errors import CliError, Interrupted, LocalIOError, internal_error
from ghga_cli.jobs.access import ApiAccess
from ghga_cli.jobs.api import DrsObject
from ghga_cli.jobs.download import DownloadJob, DownloadOptions
from ghga_cli.jobs.staging import StagingPoller
from ghga_cli.jobs.steps import (
    Action,
    AwaitStaging,
    Event,
    FileJob,
    Finished,
    Move,
    Moved,
    NeedSlot,
    Sleep,
    SlotGranted,
    Staged,
    Started,
    Woke,
)
from ghga_cli.jobs.tasks import Tasks
from ghga_cli.jobs.upload import UploadJob, UploadOptions, VerdictClock
from ghga_cli.progress import Progress
from ghga_cli.report import FileReport
from ghga_cli.retry import RetryPolicy
from ghga_cli.transfer.engine import Engine, InterruptFlag, TransferQueue, interrupt_guard

#: Threads that fetch URLs for the transfers (kept apart from the conversations' threads, so
#: that bytes never wait behind a slow confirmation or poll).
URL_THREADS = 2


@dataclass
class ManagerOptions:
    """What every file of a run shares, in both directions."""

    parallel: int = 8  # storage connections in all
    files_in_flight: int = 4  # files prepared or moving bytes at once
    retries: int = 5
    stall_timeout: float = 60.0
    fail_fast: bool = False  # stop the whole run at the first failed file


class TransferManager:
    """Moves files (see the module docstring). Use once: submit files, then :meth:`run`."""

    def __init__(
        self,
        options: ManagerOptions,
        api: ApiAccess,
        *,
        progress: Progress | None = None,
        log: Callable[[str], None] | None = None,
        interrupt: InterruptFlag | None = None,
        batch: bool = False,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.options = options
        self.api = api
        self.progress = progress
        self.batch = batch
        self._log = log or (lambda _msg: None)
        self.interrupt = interrupt or api.interrupt or InterruptFlag()
        self.queue = TransferQueue()
        self.engine = Engine(
            parallel=options.parallel,
            policy=policy or RetryPolicy(retries=options.retries),
            stall_timeout=options.stall_timeout,
            progress=progress,
            log=self._log,
            interrupt=self.interrupt,
        )
        self._tasks = Tasks(max(4, options.files_in_flight + 1), "ghga-api")
        self._url_tasks = Tasks(URL_THREADS, "ghga-urls")
        self._staging = StagingPoller(self._tasks, api.drs, self._staged)
        self._verdicts = VerdictClock()
        self._jobs: list[FileJob] = []
        self._futures: dict[int, Future[FileReport]] = {}
        self._ended: set[int] = set()
        self._holding: set[int] = set()  # jobs holding a slot
        self._slots = max(1, options.files_in_flight)
        self._queued: collections.deque[FileJob] = collections.deque()
        self._lock = threading.Lock()
        self.stop_reason: CliError | None = None  # the failure that stopped a --fail-fast run

    # -- submitting ----------------------------------------------------------------------------

    def upload(self, options: UploadOptions) -> Future[FileReport]:
        """Upload (or resume) one file, confirm it, and wait for the server's verdict."""
        job = UploadJob(
            options,
            self.api,
            urls=self._url_tasks,
            parallel=self.options.parallel,
            progress=self.progress,
            log=self._log_for(options.file_id),
            verdicts=self._verdicts if self.batch else None,
        )
        return self.submit(job)

    def download(self, options: DownloadOptions) -> Future[FileReport]:
        """Wait for staging, download (or resume), verify and rename one file."""
        job = DownloadJob(
            options,
            self.api,
            urls=self._url_tasks,
            parallel=self.options.parallel,
            progress=self.progress,
            log=self._log_for(options.file_id),
            batch=self.batch,
        )
        return self.submit(job)

    def _log_for(self, file_id: str) -> Callable[[str], None]:
        """Messages about one file: prefixed with its id when the run has many files."""
        if not self.batch:
            return self._log
        return lambda text: self._log(f"{file_id}: {text}")

    def submit(self, job: FileJob) -> Future[FileReport]:
        future: Future[FileReport] = Future()
        with self._lock:
            self._jobs.append(job)
            self._futures[id(job)] = future
        return future

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> list[FileReport]:
        """Move every submitted file; their reports in the order submitted."""
        jobs = list(self._jobs)
        if not jobs:
            self._close()
            return []
        interrupted: BaseException | None = None
        with interrupt_guard(self.interrupt):
            try:
                for job in jobs:
                    self._advance(job, Started())
                self.engine.run_queue(self.queue)
            except (Interrupted, KeyboardInterrupt) as exc:
                interrupted = exc
                self.interrupt.set()
            finally:
                self._close()
        for job in jobs:  # anything that never got as far as an end
            self._end(job, error=Interrupted())
        if isinstance(interrupted, KeyboardInterrupt):
            raise interrupted
        return [self._futures[id(job)].result() for job in jobs]

    def _close(self) -> None:
        self._url_tasks.close()
        self._tasks.close()

    # -- driving the jobs ----------------------------------------------------------------------

    def _advance(self, job: FileJob, event: Event) -> None:
        """Run the job's next step on an API thread."""
        if id(job) in self._ended:
            return
        future = self._tasks.submit(lambda: self._step(job, event))
        if future.cancelled():
            self._end(job, error=Interrupted())

    def _step(self, job: FileJob, event: Event) -> None:
        try:
            if self.interrupt.is_set:
                raise Interrupted()
            action = job.step(event)
        except CliError as exc:
            self._end(job, error=exc)
            return
        except OSError as exc:
            self._end(job, error=_chained(LocalIOError.from_os_error(exc), exc))
            return
        except Exception as exc:  # a bug: one line for this file, the others go on
            self._end(job, error=internal_error(exc))
            return
        self._dispatch(job, action)

    def _dispatch(self, job: FileJob, action: Action) -> None:
        if isinstance(action, NeedSlot):
            with self._lock:
                granted = len(self._holding) < self._slots
                if granted:
                    self._holding.add(id(job))
                else:
                    self._queued.append(job)
            if granted:
                self._advance(job, SlotGranted())
        elif isinstance(action, Move):
            transfer = action.transfer
            transfer.outcome.add_done_callback(lambda outcome: self._moved(job, outcome))
            try:
                self.queue.add(transfer)
            except RuntimeError:  # the run is over (interrupted)
                transfer.close()
                self._end(job, error=Interrupted())
        elif isinstance(action, Sleep):
            self._tasks.call_at(action.until, lambda: self._advance(job, Woke()))
        elif isinstance(action, AwaitStaging):
            self._staging.add(job, action.wait)
        elif isinstance(action, Finished):
            self._end(job, status=action.status)
        else:  # pragma: no cover - a job returned something that is not an action
            raise TypeError(f"not an action: {action!r}")

    def _moved(self, job: FileJob, outcome: Future[Any]) -> None:
        """The engine ended the job's transfer (runs on the engine's thread: no waiting)."""
        self._release(job)
        self._advance(job, Moved(outcome))

    def _staged(self, job: FileJob, obj: DrsObject | None, error: BaseException | None) -> None:
        if error is not None:
            self._end(job, error=error if isinstance(error, CliError) else internal_error(error))
        else:
            assert obj is not None
            self._advance(job, Staged(obj))

    def _release(self, job: FileJob) -> None:
        """Give the job's slot to the next file waiting for one."""
        with self._lock:
            if id(job) not in self._holding:
                return
            self._holding.discard(id(job))
            following = self._queued.popleft() if self._queued else None
            if following is not None:
                self._holding.add(id(following))
        if following is not None:
            self._advance(following, SlotGranted())

    def _end(
        self, job: FileJob, *, status: str | None = None, error: BaseException | None = None
    ) -> None:
        """Record how ``job`` ended (once); the run ends when every job has ended."""
        with self._lock:
            if id(job) in self._ended:
                return
            self._ended.add(id(job))
            if job in self._queued:
                self._queued.remove(job)
            complete = len(self._ended) == len(self._jobs)
        report = job.report
        if error is not None:
            failure = error if isinstance(error, CliError) else internal_error(error)
            try:
                job.abandon()
            except Exception as exc:  # the failure that ended it is what the user must see
                self._log(f"{job.file_id}: cleaning up failed: {type(exc).__name__}: {exc}")
            report.fail(failure)
            if (
                self.options.fail_fast
                and not isinstance(failure, Interrupted)
                and self.stop_reason is None
            ):
                self.stop_reason = failure
                self.interrupt.set()
        else:
            report.status = status
        self._release(job)
        self._futures[id(job)].set_result(report)
        if complete:
            self.queue.close()


def _chained(error: CliError, cause: BaseException) -> CliError:
    error.__cause__ = cause
    return error
