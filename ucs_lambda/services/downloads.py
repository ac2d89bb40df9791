"""DRS3 use cases: resolve an object, stage it into the outbox, clean the outbox up.

Staging is asynchronous: a request for an object that is not in the outbox makes sure exactly
one staging job exists (a conditional write on the file item decides which request enqueues
it) and tells the client when to retry. The staging marker expires, so a crashed job does not
block the file forever.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from ..adapters.dynamo import Repository
from ..adapters.s3 import Storage
from ..adapters.sqs import JobQueue, QueueError
from ..config import Settings, get_settings
from ..domain import access
from ..domain.errors import NoSuchObject
from ..domain.models import FileRecord, iso

log = logging.getLogger(__name__)

MIN_RETRY_AFTER = 2
MAX_RETRY_AFTER = 300


@dataclass(frozen=True)
class ObjectAnswer:
    """Either a ready ``DrsObject`` or "retry after N seconds" while staging."""

    drs_object: dict[str, Any] | None = None
    retry_after: int = 0


def retry_after_for(size: int, bytes_per_second: int) -> int:
    """Estimated seconds until a copy of ``size`` bytes is staged, within 2..300."""
    estimate = math.ceil(size / max(bytes_per_second, 1)) + 1
    return max(MIN_RETRY_AFTER, min(MAX_RETRY_AFTER, estimate))


class DownloadService:
    """GA4GH DRS 1.1 over the permanent and outbox buckets."""

    def __init__(
        self, settings: Settings, repo: Repository, storage: Storage, queue: JobQueue
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.storage = storage
        self.queue = queue

    @classmethod
    def from_settings(cls, settings: Settings) -> DownloadService:
        return cls(settings, Repository(settings), Storage(settings), JobQueue(settings))

    @classmethod
    def from_env(cls) -> DownloadService:
        return cls.from_settings(get_settings())

    def service_info(self, host: str) -> dict[str, Any]:
        """GA4GH service-info for this DRS."""
        s = self.settings
        return {
            "id": f"{_reverse(s.drs_hostname or host)}.drs",
            "name": "GHGA DRS3",
            "type": {"group": "org.ga4gh", "artifact": "drs", "version": "1.1.0"},
            "description": "Download API of the GHGA file services (DRS on S3).",
            "organization": {"name": s.organization_name, "url": s.organization_url},
            "version": "1.0.0",
        }

    def _readable_file(self, user_id: str, object_id: str) -> FileRecord:
        file = self.repo.get_file(object_id)
        if file is None:
            raise NoSuchObject(object_id)
        access.require_reader(file, user_id)
        if not file.accepted_upload_id:
            raise NoSuchObject(object_id)  # registered, but no accepted upload yet
        return file

    def get_object(self, user_id: str, object_id: str, host: str) -> ObjectAnswer:
        """200 data when the outbox holds the object; else ensure staging and say when to retry."""
        file = self._readable_file(user_id, object_id)
        s = self.settings
        info = self.storage.head(s.outbox_bucket, file.file_id)
        if info is not None and info.size == file.size:
            return ObjectAnswer(drs_object=self._drs_object(file, host))
        now = time.time()
        if self.repo.claim_staging(file.file_id, now, s.staging_timeout_seconds):
            # The claim is free again once a job has *finished* staging (it copies, then ends
            # its claim): a request that looked at the outbox just before the copy landed then
            # wins a claim it does not need. Look again before starting a redundant job.
            info = self.storage.head(s.outbox_bucket, file.file_id)
            if info is not None and info.size == file.size:
                self.repo.mark_staged(file.file_id, now)
                return ObjectAnswer(drs_object=self._drs_object(file, host))
            try:
                self.queue.send({"job": "stage", "file_id": file.file_id})
            except QueueError:
                self.repo.reset_staging(file.file_id)  # let the next request try again
                raise
            log.info("drs: staging of %s requested", file.file_id)
        return ObjectAnswer(retry_after=retry_after_for(file.size, s.staging_bytes_per_second))

    def _drs_object(self, file: FileRecord, host: str) -> dict[str, Any]:
        url = self.storage.presign_get(self.settings.outbox_bucket, file.file_id)
        checksums = [{"type": "md5", "checksum": file.md5_checksum}]
        if file.sha256_checksum:  # recorded by the validation job (not on older files)
            checksums.append({"type": "sha-256", "checksum": file.sha256_checksum})
        return {
            "id": file.file_id,
            "name": file.file_name,
            "self_uri": f"drs://{self.settings.drs_hostname or host}/{file.file_id}",
            "size": file.size,
            "created_time": iso(file.accepted_at or file.creation_date),
            "checksums": checksums,
            "access_methods": [{"type": "s3", "access_url": {"url": url, "headers": []}}],
        }

    def stage(self, file_id: str) -> bool:
        """Job: copy permanent -> outbox (server-side) and mark the file staged.

        Harmless when replayed: an object already in the outbox is only marked. Returns True
        when this call copied. Failures raise, so SQS redelivers the message; meanwhile the
        staging marker expires and a new request may claim staging again.
        """
        s = self.settings
        file = self.repo.get_file(file_id)
        if file is None or not file.accepted_upload_id:
            log.warning("stage: %s is not an accepted file; nothing to do", file_id)
            return False
        held = self.storage.head(s.outbox_bucket, file_id)
        if held is not None and held.size == file.size:
            self.repo.mark_staged(file_id, time.time())
            return False
        self.storage.copy(s.permanent_bucket, file_id, s.outbox_bucket, file_id, file.size)
        self.repo.mark_staged(file_id, time.time())
        log.info("stage: %s copied to the outbox", file_id)
        return True

    def cleanup_outbox(self, now: float) -> int:
        """Delete outbox objects older than ``UCS_OUTBOX_MAX_AGE_SECONDS``; reset their staging."""
        s = self.settings
        removed = 0
        for obj in self.storage.list_objects(s.outbox_bucket):
            if now - obj.last_modified.timestamp() <= s.outbox_max_age_seconds:
                continue
            self.storage.delete(s.outbox_bucket, obj.key)
            self.repo.reset_staging(obj.key)
            removed += 1
        return removed


def _reverse(host: str) -> str:
    """``drs.example.org:443`` -> ``org.example.drs`` (service-info ids are reverse-DNS)."""
    name = host.split(":")[0] or "localhost"
    return ".".join(reversed(name.split(".")))
