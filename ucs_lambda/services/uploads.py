"""Upload use cases: what each UCS operation does, independent of HTTP.

Every method takes the authenticated user id, authorises against the file (for upload
operations: the upload's file), and raises domain errors. Status changes go through the
state ports' conditional writes; after a lost condition the current state is read only to
explain the refusal.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..config import Settings
from ..domain import access
from ..domain.attempts import AttemptBudget
from ..domain.errors import (
    BulkRequestTooLarge,
    DomainError,
    ExistingActiveUpload,
    FileNotRegistered,
    InvalidRequest,
    NoSuchUpload,
    SegmentIncomplete,
    TooManyUploadAttempts,
    UploadNotPending,
    UploadStatusChange,
    parts_problem,
)
from ..domain.integrity import is_md5_hex
from ..domain.models import (
    ACTIVE_STATUSES,
    FileRecord,
    StoredSegment,
    UploadRecord,
    UploadStatus,
    utcnow,
)
from ..domain.parts import MAX_PARTS, FileTooLarge, PartBeyondFile, part_size_for
from ..domain.segments import SegmentBeyondUpload, SegmentLayout
from ..domain.status import check_client_change
from ..ports import (
    AttemptsSpent,
    ConditionLost,
    JobQueue,
    JobQueueError,
    ObjectMissing,
    ObjectStorage,
    Part,
    State,
    StorageError,
)
from .inbox import UploadObjects

log = logging.getLogger(__name__)

#: Parallel S3 calls of one request that opens or completes many segments.
_SEGMENT_WORKERS = 8


@dataclass(frozen=True)
class Checksums:
    """Optional checksums a client sends with ``upload_status: uploaded`` (extension)."""

    md5: str | None = None
    part_md5s: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: Any) -> Checksums:
        """Validate the ``checksums`` object of a PATCH body (None/absent = no checksums)."""
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise InvalidRequest("'checksums' must be an object.", {"field": "checksums"})
        unknown = set(value) - {"md5", "part_md5s"}
        if unknown:
            raise InvalidRequest(
                f"Unknown checksum fields: {sorted(unknown)}", {"field": "checksums"}
            )
        md5 = value.get("md5")
        if md5 is not None and not is_md5_hex(md5):
            raise InvalidRequest(
                "'checksums.md5' must be 32 hex digits.", {"field": "checksums.md5"}
            )
        parts = value.get("part_md5s")
        if parts is None:
            parts = []
        if (
            not isinstance(parts, list)
            or len(parts) > MAX_PARTS
            or not all(is_md5_hex(p) for p in parts)
        ):
            raise InvalidRequest(
                "'checksums.part_md5s' must be a list of at most 10000 MD5 hex strings.",
                {"field": "checksums.part_md5s"},
            )
        return cls(md5=md5.lower() if md5 else None, part_md5s=tuple(p.lower() for p in parts))


@dataclass(frozen=True)
class PartUrl:
    """A presigned PUT URL for one part (global part number)."""

    part_no: int
    url: str


@dataclass(frozen=True)
class SegmentDone:
    """A completed segment: its first and last global part, and what is verified so far."""

    segment_no: int
    first_part: int
    last_part: int
    verified_bytes: int


@dataclass(frozen=True)
class FileLookup:
    """One file of a batch lookup: the file and its current upload, or why not."""

    file_id: str
    file: FileRecord | None = None
    current_upload: UploadRecord | None = None
    error: DomainError | None = None


class UploadService:
    """The UCS operations (ucs.yaml plus the documented extensions)."""

    def __init__(
        self, settings: Settings, state: State, storage: ObjectStorage, queue: JobQueue
    ) -> None:
        self.settings = settings
        self.files = state.files
        self.uploads = state.uploads
        self.storage = storage
        self.queue = queue
        self.objects = UploadObjects(settings, storage)

    # ---- lookups with authorisation ----------------------------------------------------

    def _file_for_submitter(self, user_id: str, file_id: str) -> FileRecord:
        file = self.files.get_file(file_id)
        if file is None:
            raise FileNotRegistered(file_id)
        access.require_submitter(file, user_id)
        return file

    def _upload_and_file(self, user_id: str, upload_id: str) -> tuple[UploadRecord, FileRecord]:
        upload = self.uploads.get_upload(upload_id)
        if upload is None:
            raise NoSuchUpload(upload_id)
        file = self.files.get_file(upload.file_id)
        if file is None:  # uploads outlive no file; treat a dangling one as unknown
            raise NoSuchUpload(upload_id)
        access.require_submitter(file, user_id, upload_id=upload_id)
        return upload, file

    def _upload_for_submitter(self, user_id: str, upload_id: str) -> UploadRecord:
        return self._upload_and_file(user_id, upload_id)[0]

    def _pending_upload_and_file(
        self, user_id: str, upload_id: str
    ) -> tuple[UploadRecord, FileRecord]:
        upload, file = self._upload_and_file(user_id, upload_id)
        if upload.upload_status is not UploadStatus.PENDING:
            raise UploadNotPending(upload_id, upload.upload_status.value)
        return upload, file

    # ---- operations --------------------------------------------------------------------

    def lookup_files(self, user_id: str, file_ids: list[str]) -> list[FileLookup]:
        """Batch ``GET /files/{id}`` plus each file's current upload (extension, one call).

        A client uploading a study checks every file before any byte moves; per file the
        answer is what the single routes would say: the file and its current upload, or the
        error (``fileNotRegistered``, ``noFileAccess``). Two bulk reads, not two calls per file.
        """
        limit = self.settings.max_batch_files
        if len(file_ids) > limit:
            raise BulkRequestTooLarge(len(file_ids), limit)
        ids = list(dict.fromkeys(file_ids))
        files = self.files.get_files(ids)
        allowed: dict[str, FileRecord] = {}
        results: dict[str, FileLookup] = {}
        for file_id in ids:
            file = files.get(file_id)
            try:
                if file is None:
                    raise FileNotRegistered(file_id)
                access.require_submitter(file, user_id)
            except DomainError as exc:
                results[file_id] = FileLookup(file_id, error=exc)
                continue
            allowed[file_id] = file
        current = [f.current_upload_id for f in allowed.values() if f.current_upload_id]
        uploads = self.uploads.get_uploads(current) if current else {}
        for file_id, file in allowed.items():
            upload = uploads.get(file.current_upload_id or "")
            results[file_id] = FileLookup(file_id, file=file, current_upload=upload)
        return [results[file_id] for file_id in ids]

    def get_file_metadata(self, user_id: str, file_id: str) -> FileRecord:
        return self._file_for_submitter(user_id, file_id)

    def get_upload(self, user_id: str, upload_id: str) -> UploadRecord:
        return self._upload_for_submitter(user_id, upload_id)

    def _existing_active(self, file_id: str) -> ExistingActiveUpload:
        """The error for a file whose lock is taken (reads state after the failed write)."""
        file = self.files.get_file(file_id)
        active_id = file.active_upload_id if file else None
        active = self.uploads.get_upload(active_id) if active_id else None
        return ExistingActiveUpload(file_id, active, active_id)

    def create_upload(self, user_id: str, file_id: str) -> UploadRecord:
        """Start a multipart upload; the transaction, not the pre-check, enforces one per file."""
        file = self._file_for_submitter(user_id, file_id)
        if file.active_upload_id:  # fast path: no S3 work for an obvious conflict
            raise self._existing_active(file_id)
        s = self.settings
        try:
            part_size = part_size_for(file.size, default=s.part_size, minimum=s.min_part_size)
        except FileTooLarge as exc:  # admin refuses such files; defend anyway
            raise InvalidRequest(str(exc), {"file_id": file_id}) from None
        layout = SegmentLayout.plan(file.size, part_size, s.segment_size, s.copy_part_size)
        budget = AttemptBudget(
            s.upload_attempts_per_window, s.upload_attempt_window_seconds, int(time.time())
        )
        if budget.spent(file.attempt_window_start, file.attempt_count):
            # fast path: no S3 work; the transaction below is what enforces the limit
            raise self._too_many(file_id, budget, file.attempt_window_start)
        upload_id = str(uuid.uuid4())
        key = f"{file_id}/{upload_id}"
        s3_upload_id = self.storage.create_multipart_upload(s.inbox_bucket, key)
        now = utcnow()
        upload = UploadRecord(
            upload_id=upload_id,
            file_id=file_id,
            s3_upload_id=s3_upload_id,
            object_key=key,
            upload_status=UploadStatus.PENDING,
            part_size=part_size,
            created=now,
            updated=now,
            segment_parts=layout.segment_parts,
            copy_group=layout.copy_group,
            segment_uploads={1: s3_upload_id},
        )
        try:
            self.uploads.create_upload(upload, budget)
        except AttemptsSpent as exc:
            self._quietly(self.storage.abort_multipart_upload, s.inbox_bucket, key, s3_upload_id)
            raise self._too_many(file_id, budget, exc.window_start) from None
        except ConditionLost:
            self._quietly(self.storage.abort_multipart_upload, s.inbox_bucket, key, s3_upload_id)
            if self.files.get_file(file_id) is None:
                raise FileNotRegistered(file_id) from None
            raise self._existing_active(file_id) from None
        except Exception:
            self._quietly(self.storage.abort_multipart_upload, s.inbox_bucket, key, s3_upload_id)
            raise
        return upload

    def _layout(self, upload: UploadRecord, file: FileRecord) -> SegmentLayout:
        return upload.layout(file.size, self.settings.copy_part_size)

    def _part_urls(
        self, upload: UploadRecord, file: FileRecord, part_numbers: list[int], field: str
    ) -> list[PartUrl]:
        """Presigned PUT URLs, each signed for its part's exact ``Content-Length``.

        Part ``n`` goes to its segment's multipart upload as local part number (opened here
        when it is the segment's first URL). With only ``host`` signed, a URL took a body of
        any size, and part numbers the file does not have could be filled; now S3 refuses
        another length (``SignatureDoesNotMatch``) and part numbers past the registered
        size are refused here. ``Content-MD5`` is not signed (docs/CONTRACTS.md says why).
        """
        layout = self._layout(upload, file)
        for n in part_numbers:
            if n > layout.part_count:
                count = PartBeyondFile(n, layout.part_count).count
                parts = "1 part" if count == 1 else f"{count} parts"
                raise InvalidRequest(
                    f"Part {n} does not exist: the file's {file.size} bytes make {parts} "
                    f"of at most {upload.part_size} bytes.",
                    {"field": field, "part_no": n, "part_count": count},
                )
            segment_no = layout.segment_of(n)[0]
            if segment_no in upload.segments_done:
                raise InvalidRequest(
                    f"Part {n} belongs to segment {segment_no}, which is already complete: "
                    "its parts are stored and can no longer change.",
                    {"field": field, "part_no": n, "segment_no": segment_no},
                )
        segments = self._open_segments(upload, {layout.segment_of(n)[0] for n in part_numbers})
        bucket = self.settings.inbox_bucket
        urls = []
        for n in part_numbers:
            segment_no, local_no = layout.segment_of(n)
            url = self.storage.presign_upload_part(
                bucket,
                upload.segment_key(segment_no),
                segments[segment_no],
                local_no,
                layout.part_length(n),
            )
            urls.append(PartUrl(n, url))
        return urls

    def _open_segments(self, upload: UploadRecord, numbers: set[int]) -> dict[int, str]:
        """The multipart upload of each segment, creating those not opened yet.

        Two requests may open a segment at once: the conditional write keeps one multipart
        upload, the other is aborted and the kept one used.
        """
        found = {n: upload.segment_upload(n) for n in numbers}
        missing = sorted(n for n, s3_id in found.items() if s3_id is None)
        if missing:
            with ThreadPoolExecutor(min(_SEGMENT_WORKERS, len(missing))) as pool:
                opened = dict(zip(missing, pool.map(lambda n: self._open(upload, n), missing)))
            if None in opened.values():
                current = self.uploads.get_upload(upload.upload_id)
                if current is None or current.upload_status is not UploadStatus.PENDING:
                    raise self._not_changed(upload.upload_id, UploadStatus.UPLOADED)
                opened = {n: s3_id or current.segment_upload(n) for n, s3_id in opened.items()}
            found.update(opened)
        return {n: str(s3_id) for n, s3_id in found.items()}

    def _open(self, upload: UploadRecord, segment_no: int) -> str | None:
        bucket, key = self.settings.inbox_bucket, upload.segment_key(segment_no)
        s3_id = self.storage.create_multipart_upload(bucket, key)
        if self.uploads.open_segment(upload.upload_id, segment_no, s3_id):
            return s3_id
        self._quietly(self.storage.abort_multipart_upload, bucket, key, s3_id)
        return None

    @staticmethod
    def _too_many(
        file_id: str, budget: AttemptBudget, window_start: int | None
    ) -> TooManyUploadAttempts:
        return TooManyUploadAttempts(
            file_id, budget.limit, budget.window_seconds, budget.retry_after(window_start)
        )

    def presign_part(self, user_id: str, upload_id: str, part_no: int) -> PartUrl:
        upload, file = self._pending_upload_and_file(user_id, upload_id)
        return self._part_urls(upload, file, [part_no], "part_no")[0]

    def presign_parts(self, user_id: str, upload_id: str, part_numbers: list[int]) -> list[PartUrl]:
        """Batch presign (extension): one request for up to ``UCS_MAX_BATCH_URLS`` parts."""
        upload, file = self._pending_upload_and_file(user_id, upload_id)
        return self._part_urls(upload, file, part_numbers, "part_numbers")

    def list_parts(self, user_id: str, upload_id: str) -> list[Part]:
        """The parts S3 holds, by global part number (extension, for resuming); only while
        pending. Parts of completed segments come from the upload's record (S3 no longer
        lists them), those of open segments from S3."""
        upload, file = self._pending_upload_and_file(user_id, upload_id)
        layout = self._layout(upload, file)
        parts: list[Part] = []
        for segment_no in range(1, layout.segment_count + 1):
            numbers = layout.parts_of(segment_no)
            done = upload.segments_done.get(segment_no)
            if done is not None:
                for n, etag in zip(numbers, done.part_etags):
                    parts.append(Part(n, layout.part_length(n), etag))
                continue
            s3_id = upload.segment_upload(segment_no)
            if s3_id is None:
                continue
            for p in self._segment_parts(upload, segment_no, s3_id):
                if p.part_no <= len(numbers):
                    n = numbers[p.part_no - 1]
                    parts.append(Part(n, p.size, p.etag))
        return parts

    def _segment_parts(self, upload: UploadRecord, segment_no: int, s3_id: str) -> list[Part]:
        return self.storage.list_parts(
            self.settings.inbox_bucket, upload.segment_key(segment_no), s3_id
        )

    def complete_segment(self, user_id: str, upload_id: str, segment_no: int) -> SegmentDone:
        """Extension: the client has stored every part of a segment; complete it so that the
        server verifies and stores it while the client sends the next ones. Idempotent."""
        upload, file = self._pending_upload_and_file(user_id, upload_id)
        layout = self._layout(upload, file)
        try:
            layout.check_segment(segment_no)
        except SegmentBeyondUpload as exc:
            raise InvalidRequest(
                f"Segment {segment_no} does not exist: upload {upload_id!r} has "
                f"{exc.count} segment{'s' if exc.count != 1 else ''} of {layout.segment_parts} "
                "parts.",
                {"field": "segment_no", "segment_no": segment_no, "segment_count": exc.count},
            ) from None
        done = upload.segments_done.get(segment_no)
        if done is None or not done.etag:
            self._complete_segment(upload, layout, segment_no)
            self.enqueue_validation(upload.upload_id)
        parts = layout.parts_of(segment_no)
        return SegmentDone(segment_no, parts[0], parts[-1], upload.verified_bytes)

    def _complete_segment(
        self, upload: UploadRecord, layout: SegmentLayout, segment_no: int
    ) -> StoredSegment:
        """Complete a segment's multipart upload and record it (crash-safe, idempotent).

        The part checksums are recorded first (with an empty ETag: "completing"), because
        S3 stops listing them once the segment is completed; then S3 completes the segment
        and its object's ETag is recorded. A run interrupted in between, or racing another,
        finds the parts recorded and the object present, and records the ETag.
        """
        bucket, key = self.settings.inbox_bucket, upload.segment_key(segment_no)
        numbers = layout.parts_of(segment_no)
        s3_id = upload.segment_upload(segment_no)
        recorded = upload.segments_done.get(segment_no)
        if s3_id is None:
            raise SegmentIncomplete(upload.upload_id, segment_no, list(numbers))
        gone: ObjectMissing | None = None
        try:
            listed = self.storage.list_parts(bucket, key, s3_id)
        except ObjectMissing as exc:
            listed, gone = None, exc  # completed (by a run interrupted or racing this one)
        if listed is not None:
            sizes = {p.part_no: p.size for p in listed}
            missing = [n for local, n in enumerate(numbers, 1) if local not in sizes]
            wrong = [
                n
                for local, n in enumerate(numbers, 1)
                if local in sizes and sizes[local] != layout.part_length(n)
            ]
            if missing or wrong:
                raise SegmentIncomplete(upload.upload_id, segment_no, missing, wrong)
            parts = [p for p in listed if p.part_no <= len(numbers)]
            recorded = StoredSegment("", tuple(p.etag for p in parts))
            self._record(upload, segment_no, recorded)
            # A racing request may have completed it: the object is checked below.
            with contextlib.suppress(ObjectMissing):
                self.storage.complete_multipart_upload(bucket, key, s3_id, parts)
        else:
            # Completed by a request racing this one (a client retrying its confirmation), or
            # one interrupted after S3 completed it: its parts were recorded before that.
            current = self.uploads.get_upload(upload.upload_id)
            recorded = current.segments_done.get(segment_no) if current is not None else None
        info = self.storage.head(bucket, key)
        if recorded is None or info is None:
            # Aborted behind the service's back (lifecycle rule, operator): S3's own code.
            code = gone.code if gone is not None else "NoSuchUpload"
            raise ObjectMissing(code, f"segment {segment_no} is neither open nor stored")
        stored = StoredSegment(info.etag, recorded.part_etags)
        self._record(upload, segment_no, stored)
        return stored

    def _record(self, upload: UploadRecord, segment_no: int, segment: StoredSegment) -> None:
        if self.uploads.record_segment(upload.upload_id, segment_no, segment):
            return
        error = self._not_changed(upload.upload_id, UploadStatus.UPLOADED)
        current = self.uploads.get_upload(upload.upload_id)
        if current is None or current.upload_status not in ACTIVE_STATUSES:
            # Cancelled (or failed) meanwhile: its clean-up may have run before this segment
            # became an object, which must not linger. (Confirmed meanwhile by a racing
            # request instead: the segment is that request's, and stays.)
            self._quietly(
                self.storage.delete, self.settings.inbox_bucket, upload.segment_key(segment_no)
            )
        raise error

    def update_status(
        self,
        user_id: str,
        upload_id: str,
        target: UploadStatus,
        checksums: Checksums | None = None,
    ) -> None:
        """``PATCH /uploads/{id}``: confirm (uploaded) or cancel. Nothing else is allowed."""
        upload, file = self._upload_and_file(user_id, upload_id)
        check_client_change(upload_id, upload.upload_status, target)
        if target is UploadStatus.CANCELLED:
            self.cancel(upload, reason="cancelled by the submitter")
        else:
            self._complete(upload, file, checksums or Checksums())

    def cancel(self, upload: UploadRecord, reason: str, expect_updated: Any = None) -> None:
        """pending|uploaded -> cancelled, then clear away everything S3 holds of it.

        The status change comes first: once it has won, S3 clean-up can safely follow (and a
        concurrent completion that lost its own condition deletes its object too).
        """
        if not self.uploads.release(
            upload, UploadStatus.CANCELLED, reason=reason, expect_updated=expect_updated
        ):
            raise self._not_changed(upload.upload_id, UploadStatus.CANCELLED)
        self._discard(upload)

    def _discard(self, upload: UploadRecord) -> None:
        """Clear an upload that left the active set away (segments, permanent copy).

        A validation job may have begun the permanent copy or opened segments meanwhile (it
        saves their ids conditional on the upload still being pending/uploaded): read after
        the status change, so either this sees the id or the job's save failed and it aborts
        its own.
        """
        current = self.uploads.get_upload(upload.upload_id) or upload
        self.objects.discard(current, self.files.get_file(upload.file_id))

    def _not_changed(self, upload_id: str, target: UploadStatus) -> Exception:
        """Explain a lost condition from the state as it is now."""
        current = self.uploads.get_upload(upload_id)
        if current is None:
            return NoSuchUpload(upload_id)
        if current.upload_status is target:
            return UploadNotPending(upload_id, current.upload_status.value)
        if current.upload_status is UploadStatus.PENDING:
            return UploadNotPending(
                upload_id,
                "pending",
                f"The upload with ID {upload_id!r} is being completed by a concurrent request; "
                "check its status again shortly.",
            )
        return UploadNotPending(
            upload_id,
            current.upload_status.value,
            f"The upload with ID {upload_id!r} changed to {current.upload_status.value!r} "
            "concurrently; nothing was updated.",
        )

    def _complete(self, upload: UploadRecord, file: FileRecord, checksums: Checksums) -> None:
        """pending -> uploaded: complete every segment the client did not complete itself.

        A client of the reference API completes none, so all are completed here (in
        parallel); ghga-cli completes each as soon as it is stored, leaving the last. If a
        part is missing or S3 refuses, the upload becomes ``failed`` (lock released, reason
        recorded) and the client gets ``uploadStatusChange``.
        """
        layout = self._layout(upload, file)
        try:
            if checksums.part_md5s and len(checksums.part_md5s) != layout.part_count:
                # Completing would only produce an upload the validation job must reject.
                raise _CompletionError(
                    f"the client reports {len(checksums.part_md5s)} parts, the file has "
                    f"{layout.part_count}"
                )
            self._complete_segments(upload, layout)
        except (StorageError, _CompletionError) as exc:
            reason = f"completing the upload failed: {exc}"
            if self.uploads.release(upload, UploadStatus.FAILED, reason=reason):
                self._discard(upload)
                raise UploadStatusChange(upload.upload_id, "uploaded", reason) from None
            raise self._not_changed(upload.upload_id, UploadStatus.UPLOADED) from None
        if not self.uploads.mark_uploaded(
            upload.upload_id,
            client_md5=checksums.md5,
            client_part_md5s=list(checksums.part_md5s),
        ):
            error = self._not_changed(upload.upload_id, UploadStatus.UPLOADED)
            current = self.uploads.get_upload(upload.upload_id)
            if current is not None and current.upload_status in (
                UploadStatus.CANCELLED,
                UploadStatus.FAILED,
            ):
                # A concurrent cancel won: the segments this call completed must not linger.
                self._discard(current)
            raise error
        self.enqueue_validation(upload.upload_id)

    def _complete_segments(self, upload: UploadRecord, layout: SegmentLayout) -> None:
        """Complete every segment not completed yet; one error names every missing part."""
        todo = [
            n
            for n in range(1, layout.segment_count + 1)
            if not (n in upload.segments_done and upload.segments_done[n].etag)
        ]
        if not todo:
            return
        missing: list[int] = []
        wrong: list[int] = []
        errors: list[BaseException] = []

        def complete(segment_no: int) -> None:
            try:
                self._complete_segment(upload, layout, segment_no)
            except SegmentIncomplete as exc:
                missing.extend(exc.missing)
                wrong.extend(exc.wrong_size)
            except (StorageError, DomainError) as exc:
                errors.append(exc)

        with ThreadPoolExecutor(min(_SEGMENT_WORKERS, len(todo))) as pool:
            list(pool.map(complete, todo))
        domain = [e for e in errors if isinstance(e, DomainError)]
        if domain:
            raise domain[0]  # the upload changed meanwhile (cancelled, confirmed)
        if errors:
            raise errors[0]
        if len(missing) == layout.part_count:
            raise _CompletionError("no parts have been uploaded")
        if missing or wrong:
            raise _CompletionError(parts_problem(sorted(missing), sorted(wrong)))

    def enqueue_validation(self, upload_id: str) -> None:
        """Ask the worker/Lambda to validate; a lost message is re-sent by the sweep."""
        try:
            self.queue.send({"job": "validate", "upload_id": upload_id})
        except JobQueueError:
            log.exception("could not enqueue validation of upload %s", upload_id)

    def sweep_stale(self, now: datetime) -> dict[str, int]:
        """Cancel pending uploads idle longer than ``UCS_STALE_UPLOAD_SECONDS``; re-queue
        validation for uploads left ``uploaded`` longer than ``UCS_REVALIDATE_SECONDS``.

        "Idle" means the upload item was not updated and S3 received no part since the cutoff.
        The cancel is the same conditional transaction as a client's cancel, additionally
        conditioned on the item not having changed since it was read. A running validation
        saves its progress (and so ``updated``) every few seconds, so only validations whose
        job was lost are re-queued; a re-queued one continues from its last checkpoint.
        """
        s = self.settings
        counts = {"cancelled": 0, "requeued": 0}
        cutoff = now - timedelta(seconds=s.stale_upload_seconds)
        for upload in list(self.uploads.uploads_in_status(UploadStatus.PENDING, cutoff)):
            if self._recently_active(upload, cutoff):
                continue
            try:
                self.cancel(
                    upload,
                    reason=f"stale: no activity for {s.stale_upload_seconds} seconds",
                    expect_updated=upload.updated,
                )
            except DomainError:
                continue  # it changed meanwhile: not stale
            counts["cancelled"] += 1
            log.info("sweep: cancelled stale upload %s", upload.upload_id)
        recheck = now - timedelta(seconds=s.revalidate_seconds)
        for upload in list(self.uploads.uploads_in_status(UploadStatus.UPLOADED, recheck)):
            self.enqueue_validation(upload.upload_id)
            counts["requeued"] += 1
        return counts

    def _recently_active(self, upload: UploadRecord, cutoff: datetime) -> bool:
        """Whether S3 received a part for one of the upload's open segments since ``cutoff``."""
        opened = {1: upload.s3_upload_id, **upload.segment_uploads}
        for segment_no, s3_id in opened.items():
            if segment_no in upload.segments_done:
                continue
            try:
                parts = self._segment_parts(upload, segment_no, s3_id)
            except StorageError:
                continue
            if any(p.last_modified is not None and p.last_modified > cutoff for p in parts):
                return True
        return False

    @staticmethod
    def _quietly(func: Any, *args: Any) -> None:
        """Best-effort S3 clean-up: failures are logged; lifecycle rules are the backstop."""
        try:
            func(*args)
        except StorageError:
            log.exception("S3 clean-up %s failed", getattr(func, "__name__", func))


class _CompletionError(Exception):
    """A reason not to complete the multipart upload found before asking S3."""
