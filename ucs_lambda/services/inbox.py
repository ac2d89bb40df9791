"""What S3 holds for one upload, and how it is cleared away.

An upload lives in the inbox as segments (each a multipart upload, then an object once
completed) and, once its assembly began, as a multipart upload of the permanent object.
A cancelled, failed or rejected upload leaves none of it: open segment uploads are aborted,
completed segments deleted, the permanent multipart upload aborted (so nothing unverified
ever becomes a permanent object). An accepted upload's segments are deleted once the
permanent object is complete. Clean-up is best effort: failures are logged, and the
buckets' lifecycle rules (abort incomplete multipart uploads) are the backstop.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from ..adapters.s3 import Storage, StorageError
from ..config import Settings
from ..domain.models import UploadRecord

log = logging.getLogger(__name__)

#: Parallel aborts when an upload with many open segments is cleared away.
_ABORT_WORKERS = 8


class UploadObjects:
    """The S3 side of clearing an upload away."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage

    def segment_keys(self, upload: UploadRecord) -> list[str]:
        numbers = set(upload.segment_uploads) | set(upload.segments_done) | {1}
        return [upload.segment_key(n) for n in sorted(numbers)]

    def discard(self, upload: UploadRecord) -> None:
        """Abort every open segment upload and the permanent copy; delete the segments."""
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
