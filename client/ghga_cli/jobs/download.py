"""Download of one file: the conversation with DRS around the engine's transfer.

The session's :class:`StagingWaiter` asks DRS for the object (many objects at once, with bulk
requests) until it is staged; :class:`DownloadJob` then takes the file's lock
(``<name>.part.lock``), chooses the checksum (the cheaper one offered, or the one a partial
download started with), resumes or starts the ``.part`` file and its state, hands a
:class:`~ghga_cli.download_transfer.DownloadTransfer` to the session's engine, and renames
``.part`` into place only after size and checksum match. A URL that expires mid-download is
renewed through the DRS access route (``GET /objects/{id}/access/{access_id}``) where the
object names one, else by asking for the object again.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ghga_cli.errors import CliError, ConflictError, IntegrityError, UsageError, WaitTimeout
from ghga_cli.files import ExclusiveLock, allocated_bytes, check_free_space, inside, sanitise_name
from ghga_cli.integrity import choose_checksum, file_digest
from ghga_cli.jobs.api import DrsObject, Staging
from ghga_cli.manager import ApiAccess, FileJob, TransferSession, WaitEntry, Waiter
from ghga_cli.transfer.download import (
    DEFAULT_RANGE_SIZE,
    DownloadState,
    DownloadTransfer,
    ObjectChanged,
    PrefixHasher,
    range_size_for,
)


@dataclass
class DownloadOptions:
    file_id: str
    output_dir: Path
    overwrite: bool = False
    range_size: int = DEFAULT_RANGE_SIZE
    wait_timeout: float = 3600.0
    keep_verified: bool = False  # a batch skips files already present with the right checksum


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


class DownloadJob(FileJob):
    """Resolve (wait for staging), download (or resume), verify and rename one file."""

    def __init__(
        self,
        options: DownloadOptions,
        session_api: ApiAccess,
        known: DrsObject | Staging | None = None,
        names: NameClaims | None = None,
    ) -> None:
        super().__init__(options.file_id)
        self.options = options
        self.api = session_api
        self.known = known  # the batch's first answer for this object, if any
        self.names = names
        self.summary.update(output=None)

    def begin(self, session: TransferSession) -> None:
        if isinstance(self.known, DrsObject):
            self.resolved(session, self.known)
            return
        delay = self.known.retry_after if isinstance(self.known, Staging) else 0.0
        session.waiter(StagingWaiter).add(self, self.options.wait_timeout, delay)

    def resolved(self, session: TransferSession, obj: DrsObject) -> None:
        """The staging waiter found the object staged: download it on a worker."""
        if session.progress is not None:
            session.progress.add_total(obj.size)
        session.run_step(self, lambda: self.fetch(session, obj))

    def fetch(self, session: TransferSession, obj: DrsObject) -> str:
        try:
            self._fetch(session, obj)
        except ObjectChanged as exc:
            session.log_for(self)(f"{exc.message}; starting over")
            fresh = self.api.drs().get_object(self.options.file_id, self.options.wait_timeout)
            self._fetch(session, fresh, start_over=True)
        return "downloaded"

    def _fetch(self, session: TransferSession, obj: DrsObject, start_over: bool = False) -> None:
        directory = self.options.output_dir
        name = sanitise_name(obj.name, self.options.file_id)
        if self.names is not None:
            self.names.claim(name, self.options.file_id)
        target = directory / name
        if not inside(directory, target):
            raise UsageError(f"refusing to write outside {directory}", "contact the helpdesk")
        with ExclusiveLock(directory / (name + ".part.lock"), f"downloading {target}") as lock:
            _Download(self, session, obj, target, lock).run(start_over)


class _Download:
    """One attempt at one file, under its lock: the named steps of a download."""

    def __init__(
        self,
        job: DownloadJob,
        session: TransferSession,
        obj: DrsObject,
        target: Path,
        lock: ExclusiveLock,
    ) -> None:
        self.job = job
        self.session = session
        self.obj = obj
        self.target = target
        self.lock = lock
        self.part_path = target.with_name(target.name + ".part")
        self.state_path = target.with_name(target.name + ".part.json")
        self.log = session.log_for(job)
        self.summary = job.summary

    def run(self, start_over: bool) -> None:
        self.summary.update(output=str(self.target), bytes=self.obj.size)
        drs_type, algorithm, expected = self._checksum()
        self.summary["checksum_type"] = drs_type
        if self._already_there(algorithm, expected, drs_type):
            return
        state = self._state(f"{drs_type}:{expected}", start_over)
        pieces = state.pieces()
        done_bytes = sum(pieces[i][1] for i in state.done)
        check_free_space(
            self.job.options.output_dir,
            self.obj.size - allocated_bytes(self.part_path, done_bytes),
        )
        if not self.part_path.exists():
            with self.part_path.open("wb") as handle:
                handle.truncate(self.obj.size)
        state.save(force=True)
        digest = self._transfer(state, pieces, algorithm, done_bytes)
        self._verify_and_rename(state, digest, drs_type, expected)

    def _checksum(self) -> tuple[str, str, str]:
        """The checksum to verify with: a saved state's type (resume), else the cheapest."""
        saved = DownloadState.peek_checksum(self.state_path) if self.part_path.is_file() else None
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
        if self.target.is_dir():
            raise UsageError(f"{self.target} is a directory", "choose another --output-dir")
        if not self.target.exists() or self.job.options.overwrite:
            return False
        if self.job.options.keep_verified and self.target.stat().st_size == self.obj.size:
            digest = file_digest(self.target, algorithm)
            if digest == expected:
                self.log(f"{self.target} is already there and verified ({drs_type})")
                self.summary.update(status_note="already present", bytes_transferred=0)
                self.summary[drs_type] = digest
                if self.session.progress is not None:
                    self.session.progress.add_skipped(self.obj.size)
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
        if not start_over and self.part_path.is_file():
            state = DownloadState.load(self.state_path, self.job.file_id, size, checksum_key)
            if state is not None and self.part_path.stat().st_size != size:
                state = None
        if state is None:
            state = DownloadState(
                self.state_path,
                object_id=self.job.file_id,
                size=size,
                checksum=checksum_key,
                range_size=range_size_for(size, max(1, self.job.options.range_size)),
                tail=self.session.options.parallel,
            )
            with contextlib.suppress(FileNotFoundError):
                self.part_path.unlink()
        elif state.done:
            self.log(f"resuming: {len(state.done)} ranges already downloaded")
        return state

    def _transfer(
        self, state: DownloadState, pieces: list[tuple[int, int]], algorithm: str, done: int
    ) -> str:
        """Move the missing ranges while the prefix hasher follows; the whole file's digest."""
        hasher = PrefixHasher(self.part_path, pieces, algorithm)
        for index in state.done:
            hasher.mark(index)
        transfer = DownloadTransfer(
            self.obj, self.part_path, state, pieces, hasher, refresh=self._refresher()
        )
        self.summary.update(parts=len(pieces), parts_skipped=len(state.done))
        self.job.stats = transfer.stats
        if self.session.progress is not None:
            self.session.progress.add_skipped(done)
        started = time.monotonic()
        hasher.start()
        try:
            self.session.transfer(transfer)
        except BaseException:
            hasher.stop()
            state.save(force=True)
            raise
        finally:
            elapsed = time.monotonic() - started
            moved = transfer.bytes_moved()
            self.summary.update(
                seconds=round(elapsed, 3),
                bytes_transferred=moved,
                mib_per_s=round(moved / (1024 * 1024) / elapsed, 2) if elapsed > 0 else None,
                retries=transfer.stats.retries,
            )
        state.save(force=True)
        digest = hasher.result()
        if transfer.last_byte_at is not None and hasher.finished_at is not None:
            self.summary["hash_tail_seconds"] = round(
                max(0.0, hasher.finished_at - transfer.last_byte_at), 3
            )
        return digest

    def _refresher(self) -> Callable[[], tuple[str, list[str]]]:
        """How the engine gets a fresh URL: the access route, else the whole object again."""
        api, obj, options = self.job.api, self.obj, self.job.options

        def refresh() -> tuple[str, list[str]]:
            if obj.access_id:
                return api.drs().get_access_url(
                    options.file_id, obj.access_id, options.wait_timeout
                )
            fresh = api.drs().get_object(options.file_id, options.wait_timeout)
            if fresh.size != obj.size or fresh.checksums != obj.checksums:
                raise ObjectChanged("the file changed in storage during the download")
            return fresh.url, fresh.headers

        return refresh

    def _verify_and_rename(
        self, state: DownloadState, digest: str, drs_type: str, expected: str
    ) -> None:
        actual_size = self.part_path.stat().st_size
        if actual_size != self.obj.size or digest != expected:
            state.delete()
            with contextlib.suppress(FileNotFoundError):
                self.part_path.unlink()
            what = (
                f"size {actual_size} instead of {self.obj.size}"
                if actual_size != self.obj.size
                else f"{drs_type} {digest} instead of {expected}"
            )
            raise IntegrityError(
                f"the downloaded file does not match: {what}; the partial file was removed",
                "rerun the command to download again",
            )
        # State first: a crash between the two steps then leaves a .part without state (a rerun
        # starts over) rather than the final file next to a stale .part.json.
        state.delete()
        self.lock.remove_file()
        os.replace(self.part_path, self.target)
        self.summary[drs_type] = digest


class StagingWaiter(Waiter):
    """Asks DRS for the objects of waiting downloads; hands staged ones to the workers.

    Each object is asked for again after the ``Retry-After`` its last answer named.
    """

    def add(self, job: DownloadJob, timeout: float, delay: float = 0.0) -> None:
        now = self._clock()
        entry = WaitEntry(
            job=job, due=now + delay, interval=0.0, deadline=now + timeout, last_progress=now
        )
        self._enter(entry)

    def poll(self) -> float:
        now = self._clock()
        due = self._due(now)
        if due:
            self._ask(due, now)
        return self._next_delay()

    def _ask(self, due: list[WaitEntry], now: float) -> None:
        """One request for all due objects (a bulk request for several, else a single GET)."""
        drs = due[0].job.api.drs()
        try:
            if len(due) > 1:
                answers = drs.lookup_objects([e.job.options.file_id for e in due])
            else:
                answers = {
                    due[0].job.options.file_id: drs.request_object(due[0].job.options.file_id)
                }
        except CliError as exc:  # the request itself failed (after its retries): all fail
            for entry in due:
                self._remove(entry)
                self.session.finish(entry.job, error=exc)
            return
        for entry in due:
            self._answered(entry, answers[entry.job.options.file_id], now)

    def _answered(self, entry: WaitEntry, answer: Any, now: float) -> None:
        job: DownloadJob = entry.job
        if isinstance(answer, Staging):
            remaining = (entry.deadline or now) - now
            if remaining > 0:
                wait = min(answer.retry_after, remaining)
                if not self.session.batch or not entry.extra.get("said"):
                    # One line per file in a batch (thousands may wait), every wait otherwise.
                    entry.extra["said"] = True
                    self.session.log_for(job)(answer.describe(wait))
                entry.due = now + wait
                return
            answer = WaitTimeout(
                f"file {job.file_id} is still being staged for download "
                f"after waiting {job.options.wait_timeout:.0f} s"
            )
        self._remove(entry)
        if isinstance(answer, CliError):
            self.session.finish(job, error=answer)
        else:
            job.resolved(self.session, answer)
