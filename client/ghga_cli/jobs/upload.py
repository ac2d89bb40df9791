"""Upload of one file: the conversation with the UCS around the engine's transfer.

:class:`UploadJob` is a state machine (``jobs/steps.py``): it checks the local file against
the registration, finds the file's pending upload (``GET /files/{id}``'s ``current_upload_id``)
or creates one, lists what S3 already holds (``GET /uploads/{id}/parts``) for a resume, fetches
the first part URLs, hands an :class:`~ghga_cli.transfer.upload.UploadTransfer` to the engine,
then confirms the upload with whatever checksums it computed and polls for the server's verdict
(sleeping between polls holds no thread). The whole-file MD5 is computed only when the UCS does not
read the object back itself (it says so with ``server_verifies``) or with ``--local-md5``. The
file must not change under the upload: its size and modification time are recorded before
anything is sent and checked again before the upload is confirmed.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ghga_cli.errors import (
    ApiError,
    CliError,
    ConflictError,
    IntegrityError,
    NotFoundError,
    ProtocolError,
    RejectedError,
    UsageError,
    WaitTimeout,
)
from ghga_cli.files import LocalFile
from ghga_cli.jobs.access import ApiAccess
from ghga_cli.jobs.api import FileLookup, FileMetadata, UcsClient, UploadDetails
from ghga_cli.jobs.steps import Action, Event, FileJob, Finished, Move, Moved, NeedSlot, Sleep
from ghga_cli.jobs.tasks import Tasks
from ghga_cli.progress import Progress, format_bytes
from ghga_cli.report import FileReport
from ghga_cli.transfer.engine import MAX_PARTS, EngineStats, part_count, plan_parts
from ghga_cli.transfer.upload import UploadTransfer, UrlSupply, WholeFileHasher

#: Without --wait-timeout, an upload waits for its validation until the server has shown no
#: progress (no bytes verified, no verdict) for this long.
IDLE_WAIT = 3600.0
#: First interval between polls for a verdict, and the interval after the server showed progress.
FIRST_POLL = 0.25
PROGRESS_POLL = 0.5
#: Longest wait for the last segment reports before the upload is confirmed (the confirmation
#: completes any segment whose report did not get through).
REPORTS_WAIT = 30.0
#: Threads reporting segments (a report is a few S3 calls on the server).
REPORT_THREADS = 4


class SegmentReporter:
    """Tells the server about each stored segment, off the engine's thread.

    A server that stores uploads as segments verifies and stores each one as soon as it is
    complete, while the next ones are sent, so that little is left to do after the last
    byte. A few threads send ``POST /uploads/{id}/segments/{n}/complete`` for the segments
    the transfer reports (the transfer never waits for the API); each answer carries the
    bytes the server has verified so far. Completing a segment costs the server a few S3
    calls (over a second on a loaded RGW), so one thread could fall behind the bytes and
    hold up the confirmation with a queue of reports; several keep up. A failure is logged
    once and ends the reports: the confirmation completes every segment left, so it costs
    the head start, never the upload.
    """

    def __init__(
        self,
        api: ApiAccess,
        upload_id: str,
        on_verified: Callable[[int], None],
        log: Callable[[str], None],
        threads: int = REPORT_THREADS,
    ) -> None:
        self.api = api
        self.upload_id = upload_id
        self._on_verified = on_verified
        self._log = log
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self.reported = 0
        self._threads = [
            threading.Thread(target=self._run, name=f"ghga-segments-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def report(self, segment_no: int) -> None:
        self._queue.put(segment_no)

    def close(self, wait: bool = True) -> None:
        """Send what is queued (at most :data:`REPORTS_WAIT` s) and end; or drop it."""
        if not wait:
            self._stopped.set()
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + (REPORTS_WAIT if wait else 1.0)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._stopped.set()

    def _run(self) -> None:
        while True:
            segment_no = self._queue.get()
            if segment_no is None or self._stopped.is_set():
                return
            try:
                verified = self.api.ucs().complete_segment(self.upload_id, segment_no)
            except CliError as exc:
                if not self._stopped.is_set():
                    self._stopped.set()
                    self._log(
                        f"segment {segment_no} was not reported ({exc.message}); the server "
                        "verifies it after the confirmation instead"
                    )
                return
            if verified is None:  # the server has no segment route
                self._stopped.set()
                return
            with self._lock:
                self.reported += 1
            self._on_verified(verified)


@dataclass
class UploadOptions:
    """What to upload and how to check it (the manager's options are shared by all files)."""

    file_id: str
    path: Path
    # Each part's MD5 against its ETag: True (--part-md5), False (--no-part-md5), or None: only
    # when the server does not read the file back itself (it would find a damaged part too).
    check_parts: bool | None = None
    local_md5: bool = False  # the whole-file MD5 even when the server verifies (--local-md5)
    wait_timeout: float | None = None  # None: wait while the server makes progress
    skip_accepted: bool = False  # a batch skips files accepted earlier; one file says so (exit 4)
    line: int | None = None  # its line in the manifest
    lookup: FileLookup | None = None  # what a batch's pre-check found out about the file
    local: LocalFile | None = None


class VerdictClock:
    """When the server last gave any upload of this run its verdict: in a batch, a verdict on
    any file counts as progress for the idle limit (the server validates in order)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def note(self) -> None:
        self.last = time.monotonic()


class UploadJob(FileJob):
    """Upload (or resume) one file, confirm it, and wait for the server's verdict.

    States: ``start`` -> (slot) ``prepare`` -> ``moving`` -> ``validating`` -> finished.
    """

    def __init__(
        self,
        options: UploadOptions,
        api: ApiAccess,
        *,
        urls: Tasks,
        parallel: int = 8,
        progress: Progress | None = None,
        log: Callable[[str], None] | None = None,
        verdicts: VerdictClock | None = None,
    ) -> None:
        self.file_id = options.file_id
        self.options = options
        self.api = api
        self.report = FileReport(options.file_id, "upload", line=options.line)
        self._url_tasks = urls
        self._parallel = parallel
        self._progress = progress
        self._log = log or (lambda _msg: None)
        self._verdicts = verdicts or VerdictClock()
        self._state = "start"
        self._created_upload_id: str | None = None
        self._sending: _Sending | None = None
        self._wait: _ValidationWait | None = None

    def step(self, event: Event) -> Action:
        handler = {
            "start": self._start,
            "prepare": self._prepare,
            "moving": self._moved,
            "validating": self._poll,
        }[self._state]
        return handler(event)

    def abandon(self) -> None:
        if self._sending is not None:
            self._sending.stop()
            self._sending = None

    # -- states --------------------------------------------------------------------------------

    def _start(self, event: Event) -> Action:
        if self._progress is not None and self.options.local is not None:
            self._progress.add_total(self.options.local.size)
        self._state = "prepare"
        return NeedSlot()

    def _prepare(self, event: Event) -> Action:
        """Up to the hand-over of the bytes (or straight to the verdict)."""
        options = self.options
        ucs = self.api.ucs()
        local = LocalFile.inspect(options.path)
        if options.local is None and self._progress is not None:
            self._progress.add_total(local.size)
        self.report.bytes = local.size
        meta = options.lookup.metadata if options.lookup and options.lookup.metadata else None
        if meta is None:
            meta = ucs.get_file(options.file_id)
        if meta.size != local.size:
            raise UsageError(
                f"the size of {options.path} ({local.size} bytes) differs from the registered "
                f"size of file {meta.file_id} ({meta.size} bytes)",
                "check that --file-path and --file-id belong together",
            )
        upload = self._find_or_create(ucs, meta)
        if upload is None:  # accepted before, and this is a batch: nothing to do
            if self._progress is not None:
                self._progress.add_skipped(local.size)
            self.report.status_note = "already accepted"
            self.report.bytes_transferred = 0
            return Finished("accepted")
        self.report.upload_id = upload.upload_id
        self.report.server_verifies = upload.server_verifies or meta.server_verifies
        if upload.upload_status == "uploaded":
            self._log("the file was already uploaded; waiting for its validation")
            return self._await_verdict(upload.upload_id, local.size)
        self._sending = _Sending.prepare(self, ucs, upload, meta, local)
        self._state = "moving"
        return Move(self._sending.transfer)

    def _moved(self, event: Event) -> Action:
        assert isinstance(event, Moved) and self._sending is not None
        sending, self._sending = self._sending, None
        try:
            stats = event.outcome.result()
        except BaseException:
            self._sending = sending  # abandon() stops its helpers
            raise
        finally:
            transfer = sending.transfer
            moved = transfer.bytes_moved()
            self.report.record_transfer(moved, transfer.stats)
            self.report.parts_skipped = transfer.skipped
        sending.confirm(self, stats)
        return self._await_verdict(sending.upload_id, sending.local.size)

    def _await_verdict(self, upload_id: str, size: int) -> Action:
        timeout = self.options.wait_timeout
        if timeout is not None and timeout <= 0:
            upload = self.api.ucs().get_upload(upload_id)
            if upload.upload_status == "uploaded":
                return Finished("uploaded")
            return Finished(self.conclude(upload))
        self._wait = _ValidationWait(upload_id, size, timeout, self._verdicts)
        self._state = "validating"
        return Sleep(time.monotonic())

    def _poll(self, event: Event) -> Action:
        wait = self._wait
        assert wait is not None
        upload = self.api.ucs().get_upload(wait.upload_id)
        if upload.upload_status != "uploaded":
            self._verdicts.note()
            return Finished(self.conclude(upload))
        wait.note_progress(upload.verified_bytes, self._log, verbose=self._verdicts_are_own())
        wait.check_deadline()
        if not wait.said:
            self._log("waiting for validation…")
            wait.said = True
        return Sleep(wait.next_poll())

    def _verdicts_are_own(self) -> bool:
        return self.report.line is None  # one file (not a batch) tells the server's progress

    # -- the rules -----------------------------------------------------------------------------

    def conclude(self, upload: UploadDetails) -> str:
        """The final status of a validated upload (raise for rejected, failed, cancelled)."""
        status = upload.upload_status
        reason = f": {upload.status_reason}" if upload.status_reason else ""
        upload_id = upload.upload_id
        if upload.verified_bytes is not None:
            self.report.verified_bytes = upload.verified_bytes
        if status == "accepted":
            return status
        if status == "rejected":
            raise RejectedError(
                f"upload {upload_id} was rejected by validation{reason}",
                "check the file; contact the helpdesk if it is right",
            )
        if status == "failed":
            raise RejectedError(
                f"upload {upload_id} failed{reason}", "rerun the command to start a new upload"
            )
        if status == "cancelled":
            raise ConflictError(
                f"upload {upload_id} was cancelled", "rerun the command to start a new upload"
            )
        raise ProtocolError(f"upload {upload_id} has the unexpected status {status}")

    def _find_or_create(self, ucs: UcsClient, meta: FileMetadata) -> UploadDetails | None:
        """The upload to continue or a new one; None for a batch's already accepted file."""
        lookup = self.options.lookup
        current = lookup.current_upload if lookup else None
        if current is None and meta.current_upload_id:
            current = ucs.get_upload(meta.current_upload_id)
        if current is not None:
            if current.upload_status in ("pending", "uploaded"):
                if current.upload_status == "pending":
                    self._log(f"resuming upload {current.upload_id}")
                return current
            if current.upload_status == "accepted":
                return self._already_accepted()
        try:
            created = ucs.create_upload(self.options.file_id)
        except ApiError as exc:
            if exc.exception_id != "existingActiveUpload":
                raise
            active = exc.data.get("active_upload") or {}
            status = active.get("upload_status")
            if status == "accepted":
                return self._already_accepted()
            if active.get("upload_id") and status in ("pending", "uploaded"):
                return ucs.get_upload(str(active["upload_id"]))
            raise
        self._created_upload_id = created.upload_id
        return created

    def _already_accepted(self) -> None:
        if self.options.skip_accepted:
            return None
        raise ConflictError(
            f"file {self.options.file_id} was already uploaded and accepted",
            "nothing to do; a new upload of an accepted file is not possible",
        )


def cancel_upload(api: ApiAccess, file_id: str, report: FileReport) -> str:
    """Cancel the file's pending (or uploaded, not yet validated) upload."""
    ucs = api.ucs()
    meta = ucs.get_file(file_id)
    if not meta.current_upload_id:
        raise NotFoundError(f"file {meta.file_id} has no upload to cancel", "nothing to do")
    upload = ucs.get_upload(meta.current_upload_id)
    report.upload_id = upload.upload_id
    if upload.upload_status not in ("pending", "uploaded"):
        raise ConflictError(
            f"the latest upload of file {meta.file_id} is {upload.upload_status}; "
            "only pending or uploaded uploads can be cancelled",
            "nothing to cancel",
        )
    ucs.cancel(upload.upload_id)
    return "cancelled"


@dataclass
class _Sending:
    """One upload's bytes on their way: the transfer and the helpers beside it."""

    upload_id: str
    local: LocalFile
    meta: FileMetadata
    transfer: UploadTransfer
    whole: WholeFileHasher | None
    reporter: SegmentReporter | None

    @classmethod
    def prepare(
        cls,
        job: UploadJob,
        ucs: UcsClient,
        upload: UploadDetails,
        meta: FileMetadata,
        local: LocalFile,
    ) -> _Sending:
        """Plan the parts, find what S3 holds, fetch the first URLs, start the hashers."""
        options = job.options
        pieces = _plan(upload, local.size)
        # An upload created by this run has no parts yet: no need to ask.
        fresh = upload.upload_id == job._created_upload_id
        listed = [] if fresh else ucs.list_parts(upload.upload_id) or []
        existing = {p.part_no: p for p in listed if 1 <= p.part_no <= len(pieces)}
        if existing:
            job._log(
                f"{len(existing)} of {len(pieces)} parts are already in storage; checking them"
            )
        verifies = upload.server_verifies or meta.server_verifies
        check_parts = options.check_parts if options.check_parts is not None else not verifies
        whole = (
            WholeFileHasher(local.path, local.size) if options.local_md5 or not verifies else None
        )
        api, upload_id = job.api, upload.upload_id
        urls = UrlSupply(
            lambda numbers: api.ucs().presign_parts(upload_id, numbers),
            job._url_tasks.submit,
            parallel=job._parallel,
        )
        progress = job._progress
        reporter = None
        if upload.segment_parts and upload.segment_parts < len(pieces):
            reporter = SegmentReporter(
                api,
                upload_id,
                lambda n: progress.set_verified(options.file_id, n) if progress else None,
                job._log,
            )
        transfer = UploadTransfer(
            options.file_id,
            local.path,
            pieces,
            urls,
            existing=existing,
            check_parts=check_parts,
            on_skipped=progress.add_skipped if progress is not None else None,
            segment_parts=upload.segment_parts if reporter is not None else None,
            on_segment=reporter.report if reporter is not None else None,
        )
        try:
            # URLs for the first parts now, so the bytes start without a round trip.
            urls.prime([n for n in range(1, len(pieces) + 1) if n not in existing])
        except BaseException:
            transfer.close()
            if reporter is not None:
                reporter.close(wait=False)
            raise
        job.report.parts = len(pieces)
        job.report.parallel = job._parallel
        job.report.part_md5_check = check_parts
        job.report.whole_file_md5 = whole is not None
        if whole is not None:
            whole.start()
        return cls(upload_id, local, meta, transfer, whole, reporter)

    def stop(self) -> None:
        """The upload ended early: stop the hashers and reports (the engine closed the rest)."""
        if self.whole is not None:
            self.whole.stop()
        if self.reporter is not None:
            self.reporter.close(wait=False)

    def confirm(self, job: UploadJob, stats: EngineStats) -> None:
        """After the last byte: the last reports, the checks, then the confirmation."""
        if self.reporter is not None:
            self.reporter.close()
            job.report.segments_reported = self.reporter.reported
        local = self.local
        local.check_unchanged()
        md5 = self.whole.result() if self.whole is not None else None
        if md5 is not None:
            job.report.md5 = md5
            local.check_unchanged()
        if md5 is not None and self.meta.md5_checksum and md5 != self.meta.md5_checksum:
            raise IntegrityError(
                f"the MD5 of {local.path} ({md5}) differs from the registered checksum "
                f"({self.meta.md5_checksum}); the upload was not confirmed",
                "check you chose the right file; rerun with the right one to resume, or use "
                "--cancel",
            )
        part_md5s = self.transfer.part_md5s
        complete = [d for d in part_md5s if d] if all(part_md5s) else None
        _confirm(job.api.ucs(), self.upload_id, md5, complete)
        job._log(f"upload {self.upload_id} confirmed")


def _plan(upload: UploadDetails, size: int) -> list[tuple[int, int]]:
    """The parts of ``size`` bytes in the UCS's part size (counted before listed)."""
    count = part_count(size, upload.part_size)
    if count > MAX_PARTS:
        raise ProtocolError(
            f"the part size {upload.part_size} of upload {upload.upload_id} gives {count} "
            f"parts, more than S3 allows ({MAX_PARTS})",
        )
    return plan_parts(size, upload.part_size) or [(0, 0)]


def _confirm(ucs: UcsClient, upload_id: str, md5: str | None, part_md5s: list[str] | None) -> None:
    try:
        ucs.confirm_uploaded(upload_id, md5, part_md5s)
    except ApiError as exc:
        if exc.exception_id not in ("uploadNotPending", "uploadStatusChange"):
            raise
        # A retried PATCH whose first attempt went through, or a multipart completion the
        # storage refused (status "failed"): the status and its reason tell what happened.
        current = ucs.get_upload(upload_id)
        if current.upload_status not in ("uploaded", "accepted", "rejected", "failed"):
            raise


class _ValidationWait:
    """Polls for one upload's verdict.

    Intervals grow from 0.25 s by 1.5x up to 15 s, and start again at 0.5 s whenever the
    server has verified more (the server verifies while the client sends, so the verdict
    usually comes within a second or two of the confirmation, and a poll late by a grown
    interval would be most of the wait). Without ``--wait-timeout`` an upload waits until the
    server has shown no progress for :data:`IDLE_WAIT` (in a batch, a verdict on any file
    counts as progress: validation runs in order); with it, at most that long.
    """

    def __init__(
        self, upload_id: str, size: int, timeout: float | None, verdicts: VerdictClock
    ) -> None:
        now = time.monotonic()
        self.upload_id = upload_id
        self.size = size
        self.timeout = timeout
        self.deadline = now + timeout if timeout is not None else None
        self.interval = FIRST_POLL
        self.verified = -1
        self.last_progress = now
        self.shown = -1e9
        self.said = False
        self._verdicts = verdicts

    def note_progress(
        self, verified: int | None, log: Callable[[str], None], verbose: bool
    ) -> None:
        if verified is None or verified <= self.verified:
            return
        now = time.monotonic()
        self.verified = verified
        self.last_progress = now
        self.interval = min(self.interval, PROGRESS_POLL)
        if self.size > 0 and verbose and now - self.shown >= 5.0:
            self.shown = now
            log(
                f"verifying on the server: {100.0 * verified / self.size:.0f}% "
                f"({format_bytes(verified)} of {format_bytes(self.size)})"
            )

    def check_deadline(self) -> None:
        now = time.monotonic()
        if self.deadline is not None:
            if now >= self.deadline:
                raise WaitTimeout(
                    f"upload {self.upload_id} was not validated within "
                    f"{self.timeout:.0f} s (status: uploaded)"
                )
            return
        if now - max(self.last_progress, self._verdicts.last) >= IDLE_WAIT:
            raise WaitTimeout(
                f"upload {self.upload_id} was not validated: the server showed no progress "
                f"for {IDLE_WAIT:.0f} s (status: uploaded)"
            )

    def next_poll(self) -> float:
        due = time.monotonic() + self.interval
        self.interval = min(self.interval * 1.5, 15.0)
        return due
