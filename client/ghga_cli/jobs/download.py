"""Download of one file: the conversation with DRS around the engine's transfer.

:class:`DownloadJob` is a state machine (``jobs/steps.py``). It waits (with the others that
wait, in bulk requests) until DRS has staged the object; then takes the file's lock, chooses the
checksum (the cheaper one offered, or the one a partial download started with), resumes or
starts the partial file and its state, hands a
:class:`~ghga_cli.transfer.download.DownloadTransfer` to the engine, and renames the partial
file into place only after size and checksum match. A URL that expires mid-download is renewed
through the DRS access route (``GET /objects/{id}/access/{access_id}``) where the object names
one, else by asking for the object again -- on the API threads, while the engine moves the
other files' bytes; if the object must be staged again, only this file waits.

Working files live in a hidden directory of the output directory, ``.ghga-cli/``
(:class:`~ghga_cli.files.WorkingFiles`): ``<name>.part``, ``<name>.part.json`` (resume state)
and ``<name>.lock``. No downloaded name can be that directory (it is reserved), so a file of the
batch can never collide with another's working files, and no file of the user's next to the
downloads is ever touched.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ghga_cli.errors import ConflictError, IntegrityError, UsageError
from ghga_cli.files import (
    ExclusiveLock,
    WorkingFiles,
    allocated_bytes,
    check_free_space,
    inside,
    sanitise_name,
)
from ghga_cli.integrity import choose_checksum, file_digest
from ghga_cli.jobs.access import ApiAccess
from ghga_cli.jobs.api import DrsObject, Staging
from ghga_cli.jobs.staging import StagingWait
from ghga_cli.jobs.steps import (
    Action,
    AwaitStaging,
    Event,
    FileJob,
    Finished,
    Move,
    Moved,
    NeedSlot,
    Staged,
)
from ghga_cli.jobs.tasks import Tasks
from ghga_cli.progress import Progress
from ghga_cli.report import FileReport
from ghga_cli.transfer.download import (
    DEFAULT_RANGE_SIZE,
    DownloadState,
    DownloadTransfer,
    ObjectChanged,
    PrefixHasher,
    RangeSource,
    range_size_for,
)


class NameClaims:
    """Output names taken by the files of a batch (case-insensitively: macOS and Windows)."""

    def __init__(self) -> None:
        self._taken: dict[str, str] = {}
        self._lock = threading.Lock()

    def claim(self, name: str, file_id: str) -> None:
        """ConflictError if another file of the batch has this name."""
        with self._lock:
            holder = self._taken.setdefault(name.lower(), file_id)
        if holder != file_id:
            raise ConflictError(
                f"file {file_id} has the same name ({name}) as file {holder} of this run; "
                "it was not written",
                "download one of them into another --output-dir",
            )


@dataclass
class DownloadOptions:
    file_id: str
    output_dir: Path
    overwrite: bool = False
    range_size: int = DEFAULT_RANGE_SIZE
    wait_timeout: float = 3600.0
    keep_verified: bool = False  # a batch skips files already present with the right checksum
    line: int | None = None  # its line in the manifest
    known: DrsObject | Staging | None = None  # a batch's first answer for this object
    names: NameClaims | None = None  # the batch's output names


class DownloadJob(FileJob):
    """Resolve (wait for staging), download (or resume), verify and rename one file.

    States: ``start`` -> ``staging`` -> (slot) ``prepare`` -> ``moving`` -> finished.
    """

    def __init__(
        self,
        options: DownloadOptions,
        api: ApiAccess,
        *,
        urls: Tasks,
        parallel: int = 8,
        progress: Progress | None = None,
        log: Callable[[str], None] | None = None,
        batch: bool = False,
    ) -> None:
        self.file_id = options.file_id
        self.options = options
        self.api = api
        self.report = FileReport(options.file_id, "download", line=options.line)
        self._url_tasks = urls
        self._parallel = parallel
        self._progress = progress
        self._log = log or (lambda _msg: None)
        self._batch = batch
        self._state = "start"
        self._obj: DrsObject | None = None
        self._started_over = False
        self._fetch: _Fetch | None = None

    def step(self, event: Event) -> Action:
        handler = {
            "start": self._start,
            "staging": self._staged,
            "prepare": self._prepare,
            "moving": self._moved,
        }[self._state]
        return handler(event)

    def abandon(self) -> None:
        if self._fetch is not None:
            self._fetch.abandon()
            self._fetch = None

    # -- states --------------------------------------------------------------------------------

    def _start(self, event: Event) -> Action:
        known = self.options.known
        if isinstance(known, DrsObject):
            return self._resolved(known)
        delay = known.retry_after if isinstance(known, Staging) else 0.0
        return self._await_staging(delay)

    def _await_staging(self, delay: float = 0.0) -> Action:
        self._state = "staging"
        wait = StagingWait(
            self.options.file_id,
            self.options.wait_timeout,
            self._log,
            first_delay=delay,
            say_once=self._batch,
        )
        return AwaitStaging(wait)

    def _staged(self, event: Event) -> Action:
        assert isinstance(event, Staged)
        if self._started_over and self._obj is not None:  # counted in the progress already
            self._obj = event.obj
            self._state = "prepare"
            return NeedSlot()
        return self._resolved(event.obj)

    def _resolved(self, obj: DrsObject) -> Action:
        self._obj = obj
        if self._progress is not None:
            self._progress.add_total(obj.size)
        self._state = "prepare"
        return NeedSlot()

    def _prepare(self, event: Event) -> Action:
        assert self._obj is not None
        options = self.options
        directory = options.output_dir
        name = sanitise_name(self._obj.name, options.file_id)
        if options.names is not None:
            options.names.claim(name, options.file_id)
        target = directory / name
        if not inside(directory, target):
            raise UsageError(f"refusing to write outside {directory}", "contact the helpdesk")
        fetch = _Fetch(self, self._obj, target)
        self._fetch = fetch
        transfer = fetch.start(start_over=self._started_over)
        if transfer is None:  # already there and verified
            self._fetch = None
            fetch.release()
            return Finished("downloaded")
        self._state = "moving"
        return Move(transfer)

    def _moved(self, event: Event) -> Action:
        assert isinstance(event, Moved) and self._fetch is not None
        fetch = self._fetch
        try:
            event.outcome.result()
        except ObjectChanged as exc:
            if self._started_over:
                raise
            self._log(f"{exc.message}; starting over")
            self._fetch = None
            fetch.abandon()
            self._started_over = True
            return self._await_staging()
        finally:
            fetch.record()
        fetch.finish()
        self._fetch = None
        return Finished("downloaded")


class _Fetch:
    """One attempt at one file, under its lock: the named steps of a download."""

    def __init__(self, job: DownloadJob, obj: DrsObject, target: Path) -> None:
        self.job = job
        self.obj = obj
        self.target = target
        self.work = WorkingFiles(target)
        self.log = job._log
        self.report = job.report
        self.lock: ExclusiveLock | None = None
        self.state: DownloadState | None = None
        self.transfer: DownloadTransfer | None = None
        self.hasher: PrefixHasher | None = None
        self.expected: tuple[str, str, str] | None = None  # (drs type, algorithm, hex)

    def start(self, start_over: bool) -> DownloadTransfer | None:
        """Lock, check, prepare the partial file; the transfer (None: nothing to do)."""
        self.lock = self.work.lock()
        try:
            return self._start(start_over)
        except BaseException:
            self.release()
            raise

    def _start(self, start_over: bool) -> DownloadTransfer | None:
        self.report.output = str(self.target)
        self.report.bytes = self.obj.size
        drs_type, algorithm, expected = self._checksum()
        self.expected = (drs_type, algorithm, expected)
        self.report.checksum_type = drs_type
        if self._already_there(algorithm, expected, drs_type):
            return None
        state = self._state(f"{drs_type}:{expected}", start_over)
        pieces = state.pieces()
        done_bytes = sum(pieces[i][1] for i in state.done)
        check_free_space(
            self.job.options.output_dir,
            self.obj.size - allocated_bytes(self.work.part, done_bytes),
        )
        if not self.work.part.exists():
            with self.work.part.open("xb") as handle:
                handle.truncate(self.obj.size)
        state.save(force=True)
        self.state = state
        hasher = PrefixHasher(self.work.part, pieces, algorithm)
        for index in state.done:
            hasher.mark(index)
        self.transfer = DownloadTransfer(
            RangeSource(self.obj.url, list(self.obj.headers)),
            self.work.part,
            state,
            pieces,
            hasher,
            refresh=self._refresher(),
        )
        self.report.parts = len(pieces)
        self.report.parts_skipped = len(state.done)
        self.report.parallel = self.job._parallel
        if self.job._progress is not None:
            self.job._progress.add_skipped(done_bytes)
        self.hasher = hasher
        hasher.start()
        return self.transfer

    def record(self) -> None:
        """The transfer's numbers into the report (also when it failed)."""
        transfer = self.transfer
        if transfer is None:
            return
        self.report.record_transfer(transfer.bytes_moved(), transfer.stats)

    def finish(self) -> None:
        """After the last byte: the whole file's digest, the checks, the rename."""
        assert self.state is not None and self.hasher is not None and self.transfer
        assert self.expected is not None
        try:
            self.state.save(force=True)
            digest = self.hasher.result()
            if self.transfer.last_byte_at is not None and self.hasher.finished_at is not None:
                self.report.hash_tail_seconds = round(
                    max(0.0, self.hasher.finished_at - self.transfer.last_byte_at), 3
                )
            drs_type, _algorithm, expected = self.expected
            self._verify_and_rename(self.state, digest, drs_type, expected)
        finally:
            self.release()

    def abandon(self) -> None:
        """Ended early: stop hashing, keep the state a rerun resumes from, unlock."""
        if self.hasher is not None:
            self.hasher.stop()
        if self.state is not None:
            with contextlib.suppress(OSError):
                self.state.save(force=True)
        self.release()

    def release(self) -> None:
        if self.lock is not None:
            lock, self.lock = self.lock, None
            self.work.unlock(lock)

    def _checksum(self) -> tuple[str, str, str]:
        """The checksum to verify with: a saved state's type (resume), else the cheapest."""
        saved = DownloadState.peek_checksum(self.work.state) if self.work.part.is_file() else None
        keep = saved.partition(":")[0] if saved else None
        chosen = choose_checksum(self.obj.checksums, keep=keep)
        if chosen is None:
            raise IntegrityError(
                f"file {self.job.file_id} has no checksum this client can verify "
                f"(got: {', '.join(self.obj.checksums) or 'none'})",
                "contact the helpdesk",
            )
        return chosen

    def _already_there(self, algorithm: str, expected: str, drs_type: str) -> bool:
        """Whether the target exists: an error, unless --overwrite or a batch finds it verified."""
        options = self.job.options
        if self.target.is_dir():
            raise UsageError(f"{self.target} is a directory", "choose another --output-dir")
        if not self.target.exists() or options.overwrite:
            return False
        if options.keep_verified and self.target.stat().st_size == self.obj.size:
            digest = file_digest(self.target, algorithm)
            if digest == expected:
                self.log(f"{self.target} is already there and verified ({drs_type})")
                self.report.status_note = "already present"
                self.report.bytes_transferred = 0
                self._record_digest(drs_type, digest)
                if self.job._progress is not None:
                    self.job._progress.add_skipped(self.obj.size)
                return True
            raise ConflictError(
                f"{self.target} exists and differs from file {self.job.file_id}",
                "use --overwrite or choose another --output-dir",
            )
        raise ConflictError(
            f"{self.target} already exists", "use --overwrite or choose another --output-dir"
        )

    def _state(self, checksum_key: str, start_over: bool) -> DownloadState:
        state = None
        size = self.obj.size
        part = self.work.part
        if not start_over and part.is_file():
            state = DownloadState.load(self.work.state, self.job.file_id, size, checksum_key)
            if state is not None and part.stat().st_size != size:
                state = None
        if state is None:
            state = DownloadState(
                self.work.state,
                object_id=self.job.file_id,
                size=size,
                checksum=checksum_key,
                range_size=range_size_for(size, max(1, self.job.options.range_size)),
                tail=self.job._parallel,
            )
            self.work.discard_part()  # ours (in the working directory), from an older attempt
        elif state.done:
            self.log(f"resuming: {len(state.done)} ranges already downloaded")
        return state

    def _refresher(self) -> Callable[[], Future[tuple[str, list[str]]]]:
        """How the transfer gets a fresh URL without waiting: the access route (else the whole
        object again) asked on the API threads, again after each ``Retry-After`` while the
        object is re-staged, until ``--wait-timeout``."""
        job, obj = self.job, self.obj
        file_id = job.options.file_id

        def ask() -> tuple[str, list[str]] | Staging:
            drs = job.api.drs()
            if obj.access_id:
                return drs.request_access_url(file_id, obj.access_id)
            fresh = drs.request_object(file_id)
            if isinstance(fresh, Staging):
                return fresh
            if fresh.size != obj.size or fresh.checksums != obj.checksums:
                raise ObjectChanged("the file changed in storage during the download")
            return fresh.url, fresh.headers

        def refresh() -> Future[tuple[str, list[str]]]:
            future: Future[tuple[str, list[str]]] = Future()

            def done(result: tuple[str, list[str]] | None, error: BaseException | None) -> None:
                if error is not None:
                    future.set_exception(error)
                else:
                    assert result is not None
                    future.set_result(result)

            wait: StagingWait[tuple[str, list[str]]] = StagingWait(
                file_id, job.options.wait_timeout, self.log, say_once=job._batch
            )
            wait.ask_until_staged(job._url_tasks, ask, done)
            return future

        return refresh

    def _verify_and_rename(
        self, state: DownloadState, digest: str, drs_type: str, expected: str
    ) -> None:
        part = self.work.part
        actual_size = part.stat().st_size
        if actual_size != self.obj.size or digest != expected:
            state.delete()
            self.work.discard_part()
            what = (
                f"size {actual_size} instead of {self.obj.size}"
                if actual_size != self.obj.size
                else f"{drs_type} {digest} instead of {expected}"
            )
            raise IntegrityError(
                f"the downloaded file does not match: {what}; the partial file was removed",
                "rerun the command to download again",
            )
        # State first: a crash between the two steps then leaves a partial file without state
        # (a rerun starts over) rather than the final file next to a stale state.
        state.delete()
        assert self.lock is not None
        self.lock.remove_file()
        os.replace(part, self.target)
        self._record_digest(drs_type, digest)

    def _record_digest(self, drs_type: str, digest: str) -> None:
        if drs_type == "sha-256" or drs_type == "sha256":
            self.report.sha256 = digest
        elif drs_type == "md5":
            self.report.md5 = digest
