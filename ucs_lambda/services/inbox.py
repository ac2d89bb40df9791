"""What S3 holds for one upload, and how it is cleared away.

An upload lives in the inbox as segments (each a multipart upload, then an object once
completed) and, once its assembly began, as a multipart upload of the permanent object.
A cancelled, failed or rejected upload leaves none of it: open segment uploads are aborted,
completed segments deleted, the permanent multipart upload aborted (so nothing unverified
ever becomes a permanent object). An accepted upload's segments are deleted once the
permanent object is complete.

The recorded permanent copy is not the only multipart upload S3 may hold on the permanent
key: a run killed between ``CreateMultipartUpload`` and saving its id, or a create retried
after its answer was lost, leaves one that no record names. So once no other upload of the
file can own the key (the file's lock is free, or held by this upload), every multipart upload
on it is aborted. Clean-up is best effort: failures are logged, and the buckets' lifecycle
rules (abort incomplete multipart uploads) are the backstop.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from ..config import Settings
from ..domain.models import FileRecord, UploadRecord
from ..ports import ObjectStorage, StorageError

log = logging.getLogger(__name__)

#: Parallel aborts when an upload with many open segments is cleared away.
_ABORT_WORKERS = 8


class UploadObjects:
    """The S3 side of clearing an upload away."""

    def __init__(self, settings: Settings, storage: ObjectStorage) -> None:
        self.settings = settings
        self.storage = storage

    def segment_keys(self, upload: UploadRecord) -> list[str]:
        numbers = set(upload.segment_uploads) | set(upload.segments_done) | {1}
        return [upload.segment_key(n) for n in sorted(numbers)]

    def discard(self, upload: UploadRecord, file_now: FileRecord | None) -> None:
        """Abort every open segment upload and the permanent copies; delete the segments.

        ``upload`` and ``file_now`` are read after the upload left the active set.
        """
        bucket = self.settings.inbox_bucket
        open_segments = [
            (upload.segment_key(n), s3_id)
            for n, s3_id in {1: upload.s3_upload_id, **upload.segment_uploads}.items()
            if n not in upload.segments_done
        ]
        if open_segments:
            with ThreadPoolExecutor(min(_ABORT_WORKERS, len(open_segments))) as pool:
                for key, s3_id in open_segments:
                    pool.submit(
                        self._quietly, self.storage.abort_multipart_upload, bucket, key, s3_id
                    )
        self.delete_segments(upload)
        if upload.copy_upload_id:
            self._quietly(
                self.storage.abort_multipart_upload,
                self.settings.permanent_bucket,
                upload.file_id,
                upload.copy_upload_id,
            )
        self.abort_unnamed_copies(upload, file_now)

    def finish_accepted(self, upload: UploadRecord, file_now: FileRecord | None) -> None:
        """After the acceptance: the segments and any unnamed permanent copy go."""
        self.delete_segments(upload)
        self.abort_unnamed_copies(upload, file_now)

    def abort_unnamed_copies(self, upload: UploadRecord, file_now: FileRecord | None) -> None:
        """Abort every multipart upload on the permanent key, unless another upload of the
        file holds its lock now (then they may be that upload's copy)."""
        if file_now is None or file_now.active_upload_id not in (None, upload.upload_id):
            return
        bucket, key = self.settings.permanent_bucket, upload.file_id
        try:
            found = self.storage.list_multipart_uploads(bucket, key)
        except StorageError:
            log.exception("S3 clean-up list_multipart_uploads failed")
            return
        for s3_id in found:
            log.warning(
                "upload %s: aborting multipart upload %s of %s", upload.upload_id, s3_id, key
            )
            self._quietly(self.storage.abort_multipart_upload, bucket, key, s3_id)

    def delete_segments(self, upload: UploadRecord) -> None:
        """Delete the upload's segment objects from the inbox (missing ones are fine)."""
        self._quietly(
            self.storage.delete_many, self.settings.inbox_bucket, self.segment_keys(upload)
        )

    @staticmethod
    def _quietly(func: object, *args: object) -> None:
        try:
            func(*args)  # type: ignore[operator]
        except StorageError:
            log.exception("S3 clean-up %s failed", getattr(func, "__name__", func))
