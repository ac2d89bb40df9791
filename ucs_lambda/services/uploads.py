"""Upload use cases: what each UCS operation does, independent of HTTP.

Every method takes the authenticated user id, authorises against the file (for upload
operations: the upload's file), and raises domain errors. Status changes go through the
repository's conditional writes; after a lost condition the current state is read only to
explain the refusal.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..adapters.dynamo import AttemptsSpent, ConditionLost, Repository, utcnow
from ..adapters.s3 import ObjectMissing, Part, Storage, StorageError
from ..adapters.sqs import JobQueue, JobQueueError
from ..config import Settings, get_settings
from ..domain import access
from ..domain.attempts import AttemptBudget
from ..domain.errors import (
    BulkRequestTooLarge,
    DomainError,
    ExistingActiveUpload,
    FileNotRegistered,
    InvalidRequest,
    NoSuchUpload,
    TooManyUploadAttempts,
    UploadNotPending,
    UploadStatusChange,
)
from ..domain.integrity import is_md5_hex
from ..domain.models import FileRecord, UploadRecord, UploadStatus
from ..domain.parts import MAX_PARTS, FileTooLarge, PartBeyondFile, part_length, part_size_for
from ..domain.status import check_client_change

log = logging.getLogger(__name__)

#: How long a duplicate confirmation waits for the one that completed the upload (seconds).
_CONCURRENT_COMPLETION_WAIT = 10.0


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


class UploadService:
    """The UCS operations (ucs.yaml plus the documented extensions)."""

    def __init__(
        self,
        settings: Settings,
        repo: Repository,
        storage: Storage,
        queue: JobQueue,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.storage = storage
        self.queue = queue

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadService:
        return cls(settings, Repository(settings), Storage(settings), JobQueue(settings))

    @classmethod
    def from_env(cls) -> UploadService:
        return cls.from_settings(get_settings())

    # ---- lookups with authorisation ----------------------------------------------------

    def _file_for_submitter(self, user_id: str, file_id: str) -> FileRecord:
        file = self.repo.get_file(file_id)
        if file is None:
            raise FileNotRegistered(file_id)
        access.require_submitter(file, user_id)
        return file

    def _upload_and_file(self, user_id: str, upload_id: str) -> tuple[UploadRecord, FileRecord]:
        upload = self.repo.get_upload(upload_id)
        if upload is None:
            raise NoSuchUpload(upload_id)
        file = self.repo.get_file(upload.file_id)
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

    def _pending_upload(self, user_id: str, upload_id: str) -> UploadRecord:
        return self._pending_upload_and_file(user_id, upload_id)[0]

    # ---- operations --------------------------------------------------------------------

    def lookup_files(self, user_id: str, file_ids: list[str]) -> list[dict[str, Any]]:
        """Batch ``GET /files/{id}`` plus each file's current upload (extension, one call).

        A client uploading a study checks every file before any byte moves; per file the
        answer is what the single routes would say: metadata and the current upload's details,
        or the error (404 ``fileNotRegistered``, 403 ``noFileAccess``). Two ``BatchGetItem``
        reads, not two calls per file.
        """
        limit = self.settings.max_batch_files
        if len(file_ids) > limit:
            raise BulkRequestTooLarge(len(file_ids), limit)
        ids = list(dict.fromkeys(file_ids))
        files = self.repo.get_files(ids)
        allowed: dict[str, FileRecord] = {}
        results: dict[str, dict[str, Any]] = {}
        for file_id in ids:
            file = files.get(file_id)
            try:
                if file is None:
                    raise FileNotRegistered(file_id)
                access.require_submitter(file, user_id)
            except DomainError as exc:
                status = 404 if isinstance(exc, FileNotRegistered) else 403
                results[file_id] = {"file_id": file_id, "status": status, "error": exc.to_body()}
                continue
            allowed[file_id] = file
        current = [f.current_upload_id for f in allowed.values() if f.current_upload_id]
        uploads = self.repo.get_uploads(current) if current else {}
        for file_id, file in allowed.items():
            upload = uploads.get(file.current_upload_id or "")
            results[file_id] = {
                "file_id": file_id,
                "status": 200,
                "metadata": file.metadata(),
                "current_upload": upload.details() if upload else None,
            }
        return [results[file_id] for file_id in ids]

    def get_file_metadata(self, user_id: str, file_id: str) -> dict[str, Any]:
        return self._file_for_submitter(user_id, file_id).metadata()

    def get_upload(self, user_id: str, upload_id: str) -> dict[str, Any]:
        return self._upload_for_submitter(user_id, upload_id).details()

    def _existing_active(self, file_id: str) -> ExistingActiveUpload:
        """The error for a file whose lock is taken (reads state after the failed write)."""
        file = self.repo.get_file(file_id)
        active_id = file.active_upload_id if file else None
        active = self.repo.get_upload(active_id) if active_id else None
        details = active.details() if active else {"upload_id": active_id}
        return ExistingActiveUpload(file_id, details)

    def create_upload(self, user_id: str, file_id: str) -> dict[str, Any]:
        """Start a multipart upload; the transaction, not the pre-check, enforces one per file."""
        file = self._file_for_submitter(user_id, file_id)
        if file.active_upload_id:  # fast path: no S3 work for an obvious conflict
            raise self._existing_active(file_id)
        s = self.settings
        try:
            part_size = part_size_for(file.size, default=s.part_size, minimum=s.min_part_size)
        except FileTooLarge as exc:  # admin refuses such files; defend anyway
            raise InvalidRequest(str(exc), {"file_id": file_id}) from None
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
        )
        try:
            self.repo.create_upload(upload, budget)
        except AttemptsSpent as exc:
            self._quietly(self.storage.abort_multipart_upload, s.inbox_bucket, key, s3_upload_id)
            raise self._too_many(file_id, budget, exc.window_start) from None
        except ConditionLost:
            self._quietly(self.storage.abort_multipart_upload, s.inbox_bucket, key, s3_upload_id)
            if self.repo.get_file(file_id) is None:
                raise FileNotRegistered(file_id) from None
            raise self._existing_active(file_id) from None
        except Exception:
            self._quietly(self.storage.abort_multipart_upload, s.inbox_bucket, key, s3_upload_id)
            raise
        return upload.details()

    def _part_urls(
        self, upload: UploadRecord, file: FileRecord, part_numbers: list[int], field: str
    ) -> list[dict[str, Any]]:
        """Presigned PUT URLs, each signed for its part's exact ``Content-Length``.

        With only ``host`` signed, a URL took a body of any size, and part numbers the file
        does not have could be filled; the completion then assembled whatever S3 held. Now S3
        refuses another length (``SignatureDoesNotMatch``) and part numbers past the registered
        size are refused here. ``Content-MD5`` is not signed (docs/CONTRACTS.md says why).
        """
        lengths = []
        for n in part_numbers:
            try:
                lengths.append(part_length(file.size, upload.part_size, n))
            except PartBeyondFile as exc:
                parts = "1 part" if exc.count == 1 else f"{exc.count} parts"
                raise InvalidRequest(
                    f"Part {n} does not exist: the file's {file.size} bytes make {parts} "
                    f"of at most {upload.part_size} bytes.",
                    {"field": field, "part_no": n, "part_count": exc.count},
                ) from None
        bucket = self.settings.inbox_bucket
        return [
            {
                "part_no": n,
                "url": self.storage.presign_upload_part(
                    bucket, upload.object_key, upload.s3_upload_id, n, length
                ),
            }
            for n, length in zip(part_numbers, lengths)
        ]

    @staticmethod
    def _too_many(
        file_id: str, budget: AttemptBudget, window_start: int | None
    ) -> TooManyUploadAttempts:
        return TooManyUploadAttempts(
            file_id, budget.limit, budget.window_seconds, budget.retry_after(window_start)
        )

    def presign_part(self, user_id: str, upload_id: str, part_no: int) -> dict[str, Any]:
        upload, file = self._pending_upload_and_file(user_id, upload_id)
        return {"url": self._part_urls(upload, file, [part_no], "part_no")[0]["url"]}

    def presign_parts(
        self, user_id: str, upload_id: str, part_numbers: list[int]
    ) -> dict[str, Any]:
        """Batch presign (extension): one request for up to ``UCS_MAX_BATCH_URLS`` parts."""
        upload, file = self._pending_upload_and_file(user_id, upload_id)
        urls = self._part_urls(upload, file, part_numbers, "part_numbers")
        return {"urls": urls, "expires_in": self.settings.presign_ttl}

    def list_parts(self, user_id: str, upload_id: str) -> dict[str, Any]:
        """The parts S3 holds (extension, for resuming); only while pending."""
        upload = self._pending_upload(user_id, upload_id)
        parts = self._s3_parts(upload)
        return {"parts": [{"part_no": p.part_no, "size": p.size, "etag": p.etag} for p in parts]}

    def _s3_parts(self, upload: UploadRecord) -> list[Part]:
        return self.storage.list_parts(
            self.settings.inbox_bucket, upload.object_key, upload.s3_upload_id
        )

    def update_status(
        self,
        user_id: str,
        upload_id: str,
        target: UploadStatus,
        checksums: Checksums | None = None,
    ) -> None:
        """``PATCH /uploads/{id}``: confirm (uploaded) or cancel. Nothing else is allowed."""
        upload = self._upload_for_submitter(user_id, upload_id)
        check_client_change(upload_id, upload.upload_status, target)
        if target is UploadStatus.CANCELLED:
            self.cancel(upload, reason="cancelled by the submitter")
        else:
            self._complete(upload, checksums or Checksums())

    def cancel(self, upload: UploadRecord, reason: str, expect_updated: Any = None) -> None:
        """pending|uploaded -> cancelled, then abort the multipart upload and delete the object.

        The status change comes first: once it has won, S3 clean-up can safely follow (and a
        concurrent completion that lost its own condition deletes its object too).
        """
        if not self.repo.release(
            upload, UploadStatus.CANCELLED, reason=reason, expect_updated=expect_updated
        ):
            raise self._not_changed(upload.upload_id, UploadStatus.CANCELLED)
        self._cleanup_inbox(upload)

    def _cleanup_inbox(self, upload: UploadRecord) -> None:
        bucket = self.settings.inbox_bucket
        self._quietly(
            self.storage.abort_multipart_upload, bucket, upload.object_key, upload.s3_upload_id
        )
        self._quietly(self.storage.delete, bucket, upload.object_key)
        # A validation job may have begun the accept copy (it saves the copy's id before
        # copying, conditional on the upload still being ``uploaded``): read after the status
        # change, so either this sees the id or the job's save failed and it aborts it itself.
        current = self.repo.get_upload(upload.upload_id)
        if current is not None and current.copy_upload_id:
            self._quietly(
                self.storage.abort_multipart_upload,
                self.settings.permanent_bucket,
                upload.file_id,
                current.copy_upload_id,
            )

    def _not_changed(self, upload_id: str, target: UploadStatus) -> Exception:
        """Explain a lost condition from the state as it is now."""
        current = self.repo.get_upload(upload_id)
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

    def _complete(self, upload: UploadRecord, checksums: Checksums) -> None:
        """pending -> uploaded: complete the S3 multipart upload from the parts S3 lists.

        If S3 refuses (no parts, parts too small, ...), the upload becomes ``failed`` (lock
        released, reason recorded) and the client gets ``uploadStatusChange``.
        """
        bucket = self.settings.inbox_bucket
        try:
            parts = self._s3_parts(upload)
            if not parts:
                raise _CompletionError("no parts have been uploaded")
            if checksums.part_md5s and len(checksums.part_md5s) != len(parts):
                # Completing would only produce an object the validation job must reject.
                raise _CompletionError(
                    f"the client reports {len(checksums.part_md5s)} parts, S3 holds {len(parts)}"
                )
            self.storage.complete_multipart_upload(
                bucket, upload.object_key, upload.s3_upload_id, parts
            )
            info = self.storage.head(bucket, upload.object_key)
        except (StorageError, _CompletionError) as exc:
            if isinstance(exc, ObjectMissing) and self._completed_concurrently(upload):
                # A duplicate confirmation (a client retrying a lost response) must not turn
                # the upload that the first one completed into ``failed``.
                raise self._not_changed(upload.upload_id, UploadStatus.UPLOADED) from None
            reason = f"completing the multipart upload failed: {exc}"
            if self.repo.release(upload, UploadStatus.FAILED, reason=reason):
                self._cleanup_inbox(upload)
                raise UploadStatusChange(upload.upload_id, "uploaded", reason) from None
            raise self._not_changed(upload.upload_id, UploadStatus.UPLOADED) from None
        etag = info.etag if info else ""
        if not self.repo.mark_uploaded(
            upload.upload_id,
            s3_part_etags=[p.etag for p in parts],
            object_etag=etag,
            client_md5=checksums.md5,
            client_part_md5s=list(checksums.part_md5s),
        ):
            error = self._not_changed(upload.upload_id, UploadStatus.UPLOADED)
            current = self.repo.get_upload(upload.upload_id)
            if current is not None and current.upload_status in (
                UploadStatus.CANCELLED,
                UploadStatus.FAILED,
            ):
                # A concurrent cancel won: the object this call assembled must not linger.
                self._quietly(self.storage.delete, bucket, upload.object_key)
            raise error
        self.enqueue_validation(upload.upload_id)

    def _completed_concurrently(self, upload: UploadRecord) -> bool:
        """Whether S3's "no such upload" means another request already completed this upload.

        S3 then no longer knows the multipart upload but holds the object; the other request
        is about to mark the upload ``uploaded``: wait briefly for that, so the answer can say
        what became of the upload.
        """
        if self.storage.head(self.settings.inbox_bucket, upload.object_key) is None:
            return False  # aborted, not completed (a cancel, which changed the status first)
        deadline = time.monotonic() + _CONCURRENT_COMPLETION_WAIT
        while time.monotonic() < deadline:
            current = self.repo.get_upload(upload.upload_id)
            if current is None or current.upload_status is not UploadStatus.PENDING:
                break
            time.sleep(0.1)
        return True

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
        for upload in list(self.repo.uploads_in_status(UploadStatus.PENDING, cutoff)):
            try:
                parts = self.storage.list_parts(
                    s.inbox_bucket, upload.object_key, upload.s3_upload_id
                )
            except StorageError:
                parts = []
            recent = [p for p in parts if p.last_modified is not None and p.last_modified > cutoff]
            if recent:
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
        for upload in list(self.repo.uploads_in_status(UploadStatus.UPLOADED, recheck)):
            self.enqueue_validation(upload.upload_id)
            counts["requeued"] += 1
        return counts

    @staticmethod
    def _quietly(func: Any, *args: Any) -> None:
        """Best-effort S3 clean-up: failures are logged; lifecycle rules are the backstop."""
        try:
            func(*args)
        except StorageError:
            log.exception("S3 clean-up %s failed", getattr(func, "__name__", func))


class _CompletionError(Exception):
    """A reason not to complete the multipart upload found before asking S3."""
