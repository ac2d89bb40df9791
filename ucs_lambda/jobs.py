"""Background jobs: upload validation, DRS staging, and the periodic sweeps.

``handle_message(body)`` is the one entry point for queued jobs; AWS Lambda calls it from
``@app.on_sqs_message`` and the local worker from its polling loop. Every job is safe to run
twice (SQS delivers at least once): it re-reads the state and does nothing when the work is
already done, and its status changes are conditional writes.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from botocore.exceptions import ClientError

from .adapters.dynamo import Repository
from .adapters.s3 import Storage
from .adapters.sqs import JobQueue
from .config import Settings, get_settings
from .domain.errors import DomainError
from .domain.integrity import Evidence, Verdict, assess
from .domain.models import FileRecord, UploadRecord, UploadStatus
from .services.downloads import DownloadService
from .services.uploads import UploadService

log = logging.getLogger(__name__)

#: S3 user metadata naming the upload an object in the permanent bucket came from.
UPLOAD_ID_META = "upload-id"


class InvalidJobMessage(ValueError):
    """A message that no retry can fix (not a job we know); delete it instead of retrying."""


def handle_message(body: dict[str, Any]) -> None:
    """Run the job described by an SQS message body (already JSON-decoded).

    Raises :class:`InvalidJobMessage` for unknown jobs; any other exception means "retry
    later" (the message stays in the queue and is delivered again).
    """
    if not isinstance(body, dict):
        raise InvalidJobMessage("job message must be a JSON object")
    job = body.get("job")
    if job == "validate":
        upload_id = body.get("upload_id")
        if not isinstance(upload_id, str) or not upload_id:
            raise InvalidJobMessage("validate job needs an upload_id")
        validate_upload(upload_id)
    elif job == "stage":
        file_id = body.get("file_id")
        if not isinstance(file_id, str) or not file_id:
            raise InvalidJobMessage("stage job needs a file_id")
        DownloadService.from_env().stage(file_id)
    else:
        raise InvalidJobMessage(f"unknown job {job!r}")


# ---- validation: uploaded -> accepted | rejected ----------------------------------------


def validate_upload(upload_id: str, settings: Settings | None = None) -> str | None:
    """Validate an uploaded object and accept or reject it; returns the new status or None.

    A no-op (None) unless the upload is ``uploaded``, so replays are harmless.
    """
    s = settings or get_settings()
    repo, storage = Repository(s), Storage(s)
    upload = repo.get_upload(upload_id)
    if upload is None:
        log.warning("validate: upload %s does not exist", upload_id)
        return None
    if upload.upload_status is not UploadStatus.UPLOADED:
        log.info("validate: upload %s is %s; nothing to do", upload_id, upload.upload_status.value)
        return None
    file = repo.get_file(upload.file_id)
    if file is None:
        verdict = Verdict(False, "the file is no longer registered")
        return _reject(repo, storage, upload, verdict)
    info = storage.head(s.inbox_bucket, upload.object_key)
    if info is None:
        # Perhaps a concurrent run of this job accepted the upload and removed the object.
        current = repo.get_upload(upload_id)
        if current is None or current.upload_status is not UploadStatus.UPLOADED:
            return None
        return _reject(repo, storage, upload, Verdict(False, "the uploaded object is missing"))
    computed = None
    if info.size == file.size and info.size <= s.validate_read_max:
        computed = storage.md5_of(s.inbox_bucket, upload.object_key)
    verdict = assess(
        Evidence(
            registered_size=file.size,
            registered_md5=file.md5_checksum,
            object_size=info.size,
            object_etag=info.etag or (upload.object_etag or ""),
            s3_part_etags=upload.s3_part_etags,
            client_part_md5s=upload.client_part_md5s,
            client_md5=upload.client_md5,
            computed_md5=computed,
        )
    )
    if verdict.accepted:
        return _accept(repo, storage, upload, file, info.size, verdict.reason)
    return _reject(repo, storage, upload, verdict)


def _accept(
    repo: Repository,
    storage: Storage,
    upload: UploadRecord,
    file: FileRecord,
    size: int,
    note: str | None,
) -> str | None:
    """Copy inbox -> permanent (server-side), then uploaded -> accepted, then clean the inbox."""
    s = storage.settings
    storage.copy(
        s.inbox_bucket,
        upload.object_key,
        s.permanent_bucket,
        file.file_id,
        size,
        metadata={UPLOAD_ID_META: upload.upload_id, "md5": file.md5_checksum},
    )
    if repo.accept(upload, reason=note):
        storage.delete(s.inbox_bucket, upload.object_key)
        log.info("validate: upload %s accepted", upload.upload_id)
        return UploadStatus.ACCEPTED.value
    current = repo.get_upload(upload.upload_id)
    if current is not None and current.upload_status is UploadStatus.ACCEPTED:
        storage.delete(s.inbox_bucket, upload.object_key)  # a concurrent run won
        return None
    # Cancelled while this job was copying: remove the copy, but only if it is ours (a later
    # upload of the same file may own the permanent key by now).
    held = storage.head(s.permanent_bucket, file.file_id)
    if held is not None and held.metadata.get(UPLOAD_ID_META) == upload.upload_id:
        storage.delete(s.permanent_bucket, file.file_id)
    log.info("validate: upload %s changed during validation; copy discarded", upload.upload_id)
    return None


def _reject(
    repo: Repository, storage: Storage, upload: UploadRecord, verdict: Verdict
) -> str | None:
    """uploaded -> rejected with the reason, releasing the file's lock; then delete the object."""
    if not repo.release(upload, UploadStatus.REJECTED, reason=verdict.reason):
        return None
    try:
        storage.delete(storage.settings.inbox_bucket, upload.object_key)
    except ClientError:
        log.exception("validate: could not delete rejected object of %s", upload.upload_id)
    log.info("validate: upload %s rejected: %s", upload.upload_id, verdict.reason)
    return UploadStatus.REJECTED.value


# ---- sweeps -----------------------------------------------------------------------------


def sweep_stale_uploads(
    settings: Settings | None = None, now: datetime | None = None
) -> dict[str, int]:
    """Cancel pending uploads idle longer than ``UCS_STALE_UPLOAD_SECONDS``; re-queue
    validation for uploads left ``uploaded`` longer than ``UCS_REVALIDATE_SECONDS``.

    "Idle" means the upload item was not updated and S3 received no part since the cutoff.
    The cancel is the same conditional transaction as a client's cancel, additionally
    conditioned on the item not having changed since it was read.
    """
    s = settings or get_settings()
    now = now or datetime.now(timezone.utc)
    service = _service(s)
    counts = {"cancelled": 0, "requeued": 0}
    cutoff = now - timedelta(seconds=s.stale_upload_seconds)
    for upload in list(service.repo.uploads_in_status(UploadStatus.PENDING, cutoff)):
        try:
            parts = service.storage.list_parts(
                s.inbox_bucket, upload.object_key, upload.s3_upload_id
            )
        except ClientError:
            parts = []
        recent = [p for p in parts if p.last_modified is not None and p.last_modified > cutoff]
        if recent:
            continue
        try:
            service.cancel(
                upload,
                reason=f"stale: no activity for {s.stale_upload_seconds} seconds",
                expect_updated=upload.updated,
            )
        except DomainError:
            continue  # it changed meanwhile: not stale
        counts["cancelled"] += 1
        log.info("sweep: cancelled stale upload %s", upload.upload_id)
    recheck = now - timedelta(seconds=s.revalidate_seconds)
    for upload in list(service.repo.uploads_in_status(UploadStatus.UPLOADED, recheck)):
        service.enqueue_validation(upload.upload_id)
        counts["requeued"] += 1
    return counts


def _service(s: Settings) -> UploadService:
    return UploadService(s, Repository(s), Storage(s), JobQueue(s))


def cleanup_outbox(settings: Settings | None = None, now: float | None = None) -> int:
    """Delete outbox copies older than ``UCS_OUTBOX_MAX_AGE_SECONDS``; returns how many."""
    s = settings or get_settings()
    return DownloadService.from_settings(s).cleanup_outbox(now or time.time())
