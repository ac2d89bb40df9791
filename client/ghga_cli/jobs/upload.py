"""Upload of one file: the conversation with the UCS around the engine's transfer.

:class:`UploadJob` checks the local file against the registration, finds the file's pending
upload (``GET /files/{id}``'s ``current_upload_id``) or creates one, lists what S3 already
holds (``GET /uploads/{id}/parts``) for a resume, hands an
:class:`~ghga_cli.upload_transfer.UploadTransfer` to the session's engine, then confirms the
upload with whatever checksums it computed, and leaves the wait for the server's verdict to the
session's :class:`ValidationWaiter`. The whole-file MD5 is computed only when the UCS does not
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
from ghga_cli.jobs.api import FileLookup, FileMetadata, UcsClient, UploadDetails
from ghga_cli.manager import ApiAccess, FileJob, TransferSession, WaitEntry, Waiter
from ghga_cli.progress import format_bytes
from ghga_cli.transfer.engine import MAX_PARTS, part_count, plan_parts
from ghga_cli.transfer.upload import UploadTransfer, UrlProvider, WholeFileHasher

#: Without --wait-timeout, an upload waits for its validation until the server has shown no
#: progress (no bytes verified, no verdict) for this long.
IDLE_WAIT = 3600.0
#: Most uploads asked for their status per round of the validation waiter (a batch of 1,000
#: files must not poll 1,000 uploads every few seconds; validation runs in order anyway).
POLLS_PER_ROUND = 16
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
    """What to upload and how to check it (the session's options are shared by all files)."""

    file_id: str
    path: Path
    # Each part's MD5 against its ETag: True (--part-md5), False (--no-part-md5), or None: only
    # when the server does not read the file back itself (it would find a damaged part too).
    check_parts: bool | None = None
    local_md5: bool = False  # the whole-file MD5 even when the server verifies (--local-md5)
    wait_timeout: float | None = None  # None: wait while the server makes progress
    skip_accepted: bool = False  # a batch skips files accepted earlier; one file says so (exit 4)


class UploadJob(FileJob):
    """Upload (or resume) one file, confirm it, and wait for the server's verdict."""

    def __init__(
        self,
        options: UploadOptions,
        session_api: ApiAccess,
        *,
        lookup: FileLookup | None = None,
        local: LocalFile | None = None,
    ) -> None:
        super().__init__(options.file_id)
        self.options = options
        self.api = session_api
        self.lookup = lookup
        self.local = local
        self.summary.update(upload_id=None)
        self._created_upload_id: str | None = None

    # -- steps run by the session ----------------------------------------------------------

    def begin(self, session: TransferSession) -> None:
        if session.progress is not None and self.local is not None:
            session.progress.add_total(self.local.size)
        session.run_step(self, lambda: self.send(session))

    def send(self, session: TransferSession) -> str | None:
        """Up to the confirmation; then the validation waiter takes over (returns None)."""
        log = session.log_for(self)
        options = self.options
        ucs = self.api.ucs()
        local = LocalFile.inspect(options.path)
        if self.local is None and session.progress is not None:
            session.progress.add_total(local.size)
        self.local = local
        self.summary["bytes"] = local.size
        meta = self.lookup.metadata if self.lookup and self.lookup.metadata else None
        if meta is None:
            meta = ucs.get_file(options.file_id)
        if meta.size != local.size:
            raise UsageError(
                f"the size of {options.path} ({local.size} bytes) differs from the registered "
                f"size of file {meta.file_id} ({meta.size} bytes)",
                "check that --file-path and --file-id belong together",
            )
        upload = self._find_or_create(ucs, meta, log)
        if upload is None:  # accepted before, and this is a batch: nothing to do
            if session.progress is not None:
                session.progress.add_skipped(local.size)
            self.summary.update(status_note="already accepted", bytes_transferred=0)
            return "accepted"
        self.summary["upload_id"] = upload.upload_id
        self.summary["server_verifies"] = upload.server_verifies or meta.server_verifies
        if upload.upload_status == "pending":
            self._send(session, ucs, upload, meta, local, log)
        elif upload.upload_status == "uploaded":
            log("the file was already uploaded; waiting for its validation")
        return self._await_validation(session, upload.upload_id, local.size)

    def _await_validation(self, session: TransferSession, upload_id: str, size: int) -> str | None:
        if self.options.wait_timeout is not None and self.options.wait_timeout <= 0:
            status = self.api.ucs().get_upload(upload_id).upload_status
            if status == "uploaded":
                return status
            return self.conclude(self.api.ucs().get_upload(upload_id))
        session.waiter(ValidationWaiter).add(self, upload_id, size, self.options.wait_timeout)
        return None

    def conclude(self, upload: UploadDetails) -> str:
        """The final status of a validated upload (raise for rejected, failed, cancelled)."""
        status = upload.upload_status
        reason = f": {upload.status_reason}" if upload.status_reason else ""
        upload_id = upload.upload_id
        if upload.verified_bytes is not None:
            self.summary["verified_bytes"] = upload.verified_bytes
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
        raise CliError(f"upload {upload_id} has the unexpected status {status}")

    def cancel(self) -> str:
        """Cancel the file's pending (or uploaded, not yet validated) upload."""
        ucs = self.api.ucs()
        meta = ucs.get_file(self.options.file_id)
        if not meta.current_upload_id:
            raise NotFoundError(f"file {meta.file_id} has no upload to cancel", "nothing to do")
        upload = ucs.get_upload(meta.current_upload_id)
        self.summary["upload_id"] = upload.upload_id
        if upload.upload_status not in ("pending", "uploaded"):
            raise ConflictError(
                f"the latest upload of file {meta.file_id} is {upload.upload_status}; "
                "only pending or uploaded uploads can be cancelled",
                "nothing to cancel",
            )
        ucs.cancel(upload.upload_id)
        return "cancelled"

    # -- parts of the send step ------------------------------------------------------------

    def _find_or_create(
        self, ucs: UcsClient, meta: FileMetadata, log: Callable[[str], None]
    ) -> UploadDetails | None:
        """The upload to continue or a new one; None for a batch's already accepted file."""
        current = self.lookup.current_upload if self.lookup else None
        if current is None and meta.current_upload_id:
            current = ucs.get_upload(meta.current_upload_id)
        if current is not None:
            if current.upload_status in ("pending", "uploaded"):
                if current.upload_status == "pending":
                    log(f"resuming upload {current.upload_id}")
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

    def _send(
        self,
        session: TransferSession,
        ucs: UcsClient,
        upload: UploadDetails,
        meta: FileMetadata,
        local: LocalFile,
        log: Callable[[str], None],
    ) -> None:
        """Move the parts S3 lacks, then confirm the upload."""
        options = self.options
        pieces = self._plan(upload, local.size)
        # An upload created by this run has no parts yet: no need to ask.
        fresh = upload.upload_id == self._created_upload_id
        listed = [] if fresh else ucs.list_parts(upload.upload_id) or []
        existing = {p.part_no: p for p in listed if 1 <= p.part_no <= len(pieces)}
        if existing:
            log(f"{len(existing)} of {len(pieces)} parts are already in storage; checking them")
        verifies = upload.server_verifies or meta.server_verifies
        check_parts = options.check_parts if options.check_parts is not None else not verifies
        whole = (
            WholeFileHasher(local.path, local.size) if options.local_md5 or not verifies else None
        )
        api = self.api
        urls = UrlProvider(
            lambda upload_id, numbers: api.ucs().presign_parts(upload_id, numbers),
            upload.upload_id,
            len(pieces),
            set(existing),
            min_batch=max(4, 2 * session.options.parallel),
        )
        progress = session.progress
        reporter = None
        if upload.segment_parts and upload.segment_parts < len(pieces):
            reporter = SegmentReporter(
                api,
                upload.upload_id,
                lambda n: progress.set_verified(options.file_id, n) if progress else None,
                log,
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
        self.summary.update(
            parts=len(pieces),
            parallel=session.options.parallel,
            part_md5_check=check_parts,
            whole_file_md5=whole is not None,
        )
        self.stats = transfer.stats
        started = time.monotonic()
        if whole is not None:
            whole.start()
        try:
            stats = session.transfer(transfer)
        except BaseException:
            if whole is not None:
                whole.stop()
            if reporter is not None:
                reporter.close(wait=False)
            raise
        finally:
            self._record_transfer(transfer, time.monotonic() - started)
        if reporter is not None:
            reporter.close()
            self.summary["segments_reported"] = reporter.reported
        self.summary["retries"] = stats.retries
        local.check_unchanged()
        md5 = whole.result() if whole is not None else None
        if md5 is not None:
            self.summary["md5"] = md5
            local.check_unchanged()
        if md5 is not None and meta.md5_checksum and md5 != meta.md5_checksum:
            raise IntegrityError(
                f"the MD5 of {local.path} ({md5}) differs from the registered checksum "
                f"({meta.md5_checksum}); the upload was not confirmed",
                "check you chose the right file; rerun with the right one to resume, or use "
                "--cancel",
            )
        part_md5s = transfer.part_md5s
        complete = [d for d in part_md5s if d] if all(part_md5s) else None
        self._confirm(ucs, upload.upload_id, md5, complete)
        log(f"upload {upload.upload_id} confirmed")

    @staticmethod
    def _plan(upload: UploadDetails, size: int) -> list[tuple[int, int]]:
        """The parts of ``size`` bytes in the UCS's part size (counted before listed)."""
        count = part_count(size, upload.part_size)
        if count > MAX_PARTS:
            raise ProtocolError(
                f"the part size {upload.part_size} of upload {upload.upload_id} gives {count} "
                f"parts, more than S3 allows ({MAX_PARTS})",
            )
        return plan_parts(size, upload.part_size) or [(0, 0)]

    def _record_transfer(self, transfer: UploadTransfer, elapsed: float) -> None:
        sent = transfer.bytes_moved()
        self.summary.update(
            seconds=round(elapsed, 3),
            bytes_transferred=sent,
            mib_per_s=round(sent / (1024 * 1024) / elapsed, 2) if elapsed > 0 else None,
            parts_skipped=transfer.skipped,
            retries=transfer.stats.retries,
        )

    def _confirm(
        self, ucs: UcsClient, upload_id: str, md5: str | None, part_md5s: list[str] | None
    ) -> None:
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


class ValidationWaiter(Waiter):
    """Polls the uploads waiting for their verdict: the oldest due first, a few per round.

    Intervals grow from 0.25 s by 1.5x up to 15 s per upload, and start again at 0.5 s
    whenever the server has verified more (the server verifies while the client sends, so the
    verdict usually comes within a second or two of the confirmation, and a poll late by a
    grown interval would be most of the wait). Without ``--wait-timeout`` an upload
    waits until the server has shown no progress for :data:`IDLE_WAIT` (in a batch, a verdict
    on any file counts as progress: validation runs in order); with it, at most that long.
    """

    def __init__(self, session: TransferSession, clock: Callable[[], float] = time.monotonic):
        super().__init__(session, clock)
        self._last_verdict = clock()

    def add(self, job: UploadJob, upload_id: str, size: int, timeout: float | None) -> None:
        now = self._clock()
        entry = WaitEntry(
            job=job,
            due=now,
            interval=FIRST_POLL,
            deadline=now + timeout if timeout is not None else None,
            last_progress=now,
            extra={
                "upload_id": upload_id,
                "size": size,
                "verified": -1,
                "said": 0.0,
                "timeout": timeout,
            },
        )
        self._enter(entry)

    def poll(self) -> float:
        now = self._clock()
        for entry in self._due(now)[:POLLS_PER_ROUND]:
            self._poll_one(entry, now)
        return self._next_delay()

    def _poll_one(self, entry: WaitEntry, now: float) -> None:
        job: UploadJob = entry.job
        log = self.session.log_for(job)
        upload_id = entry.extra["upload_id"]
        try:
            upload = job.api.ucs().get_upload(upload_id)
            if upload.upload_status != "uploaded":
                self._last_verdict = self._clock()
                self._remove(entry)
                self.session.finish(job, status=job.conclude(upload))
                return
            self._note_progress(entry, upload, log, now)
            self._check_deadline(entry, upload_id, now)
        except CliError as exc:
            self._remove(entry)
            self.session.finish(job, error=exc)
            return
        if entry.extra["said"] == 0.0:
            log("waiting for validation…")
            entry.extra["said"] = now
        entry.due = now + entry.interval
        entry.interval = min(entry.interval * 1.5, 15.0)

    def _note_progress(
        self, entry: WaitEntry, upload: UploadDetails, log: Callable[[str], None], now: float
    ) -> None:
        verified = upload.verified_bytes
        if verified is None or verified <= entry.extra["verified"]:
            return
        entry.extra["verified"] = verified
        entry.last_progress = now
        entry.interval = min(entry.interval, PROGRESS_POLL)
        size = entry.extra["size"]
        if size > 0 and not self.session.batch and now - entry.extra.get("shown", -1e9) >= 5.0:
            entry.extra["shown"] = now
            log(
                f"verifying on the server: {100.0 * verified / size:.0f}% "
                f"({format_bytes(verified)} of {format_bytes(size)})"
            )

    def _check_deadline(self, entry: WaitEntry, upload_id: str, now: float) -> None:
        if entry.deadline is not None:
            if now >= entry.deadline:
                raise WaitTimeout(
                    f"upload {upload_id} was not validated within "
                    f"{entry.extra['timeout']:.0f} s (status: uploaded)"
                )
            return
        idle_since = max(entry.last_progress, self._last_verdict)
        if now - idle_since >= IDLE_WAIT:
            raise WaitTimeout(
                f"upload {upload_id} was not validated: the server showed no progress for "
                f"{IDLE_WAIT:.0f} s (status: uploaded)"
            )
