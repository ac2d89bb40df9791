"""In-memory fakes of the ports, for service tests that need no store (no moto, no database).

They keep the ports' contracts where the services rely on them (conditional claims return
False when taken, a failing queue names what it did not send) and nothing more: the adapters'
own conditions are tested on the real stores (tests/server, both backends).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from ucs_lambda.domain.models import (
    FileRecord,
    StagingProgress,
    UploadRecord,
    UploadStatus,
    utcnow,
)
from ucs_lambda.ports import (
    ConditionLost,
    JobQueueError,
    ListedObject,
    ObjectInfo,
    QueuedJob,
    State,
)


def a_file(file_id: str = "F1", **fields: Any) -> FileRecord:
    """A registered file with sensible defaults (override any field)."""
    now = utcnow()
    values: dict[str, Any] = {
        "file_id": file_id,
        "file_name": f"{file_id}.bin",
        "size": 1000,
        "md5_checksum": "0" * 32,
        "grouping_label": "",
        "format": "bin",
        "creation_date": now,
        "update_date": now,
        **fields,
    }
    return FileRecord(**values)


class InMemoryFiles:
    """FileStore + StagingClaims in a dict."""

    def __init__(self, *files: FileRecord) -> None:
        self.files = {f.file_id: f for f in files}

    def get_file(self, file_id: str) -> FileRecord | None:
        return self.files.get(file_id)

    def get_files(self, file_ids: list[str]) -> dict[str, FileRecord]:
        return {i: self.files[i] for i in file_ids if i in self.files}

    def register_file(self, record: FileRecord) -> None:
        if record.file_id in self.files:
            raise ConditionLost(record.file_id)
        self.files[record.file_id] = record

    def grant_reader(self, file_id: str, user_id: str) -> bool:
        return self._change(file_id, readers=self.files[file_id].readers | {user_id})

    def claim_staging(self, file_id: str, now: float, timeout: float) -> bool:
        file = self.files.get(file_id)
        if file is None or not file.accepted_upload_id:
            return False
        if file.staging_started is not None and file.staging_started >= now - timeout:
            return False
        return self._change(file_id, staging_started=now)

    def mark_staged(self, file_id: str, now: float) -> None:
        self._change(file_id, staged_at=now, staging_started=None, staging=None)

    def reset_staging(self, file_id: str) -> None:
        self._change(file_id, staged_at=None, staging_started=None, staging=None)

    def claim_staging_run(
        self, file_id: str, owner: str, now: float, lease_seconds: float
    ) -> FileRecord | None:
        raise NotImplementedError("staging runs are tested on the real stores")

    def save_staging(
        self, file_id: str, owner: str, progress: StagingProgress, now: float, lease: float
    ) -> bool:
        raise NotImplementedError("staging runs are tested on the real stores")

    def finish_staging(self, file_id: str, owner: str, now: float) -> bool:
        raise NotImplementedError("staging runs are tested on the real stores")

    def release_staging_run(self, file_id: str, owner: str) -> None:
        raise NotImplementedError("staging runs are tested on the real stores")

    def _change(self, file_id: str, **fields: Any) -> bool:
        if file_id not in self.files:
            return False
        self.files[file_id] = dataclasses.replace(self.files[file_id], **fields)
        return True


class InMemoryUploads:
    """The reads of UploadStore (writes and leases are tested on the real stores)."""

    def __init__(self, *uploads: UploadRecord) -> None:
        self.uploads = {u.upload_id: u for u in uploads}

    def get_upload(self, upload_id: str) -> UploadRecord | None:
        return self.uploads.get(upload_id)

    def get_uploads(self, upload_ids: list[str]) -> dict[str, UploadRecord]:
        return {i: self.uploads[i] for i in upload_ids if i in self.uploads}

    def uploads_for_file(self, file_id: str) -> list[UploadRecord]:
        return sorted(
            (u for u in self.uploads.values() if u.file_id == file_id), key=lambda u: u.created
        )

    def uploads_in_status(
        self, status: UploadStatus, updated_before: datetime
    ) -> Iterator[UploadRecord]:
        found = [
            u
            for u in self.uploads.values()
            if u.upload_status is status and u.updated < updated_before
        ]
        yield from sorted(found, key=lambda u: u.updated)

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(f"{name}: tested on the real stores")


class RecordingQueue:
    """A JobQueue that keeps what was sent; ``refuse`` makes sending fail (nothing queued)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.refuse = False

    def send(self, body: dict[str, Any]) -> None:
        self.send_many([body])

    def send_many(self, bodies: list[dict[str, Any]]) -> None:
        if self.refuse:
            raise JobQueueError("queue refused", list(bodies))
        self.sent.extend(bodies)

    def receive(self, wait_seconds: int = 1, max_messages: int = 10) -> list[QueuedJob]:
        return []

    def delete(self, receipt: str) -> None:
        pass

    def retry_later(self, receipt: str, delay_seconds: int) -> None:
        pass


class FakeStorage:
    """Objects as (bucket, key) -> size; presigned URLs are fake but name what they sign."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], int] = {}

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        size = self.objects.get((bucket, key))
        return None if size is None else ObjectInfo(size, "e" * 32, utcnow(), {})

    def presign_get(self, bucket: str, key: str) -> str:
        return f"https://storage.invalid/{bucket}/{key}?X-Amz-Signature=fake"

    def list_objects(self, bucket: str) -> list[ListedObject]:
        return [ListedObject(k, s, utcnow()) for (b, k), s in self.objects.items() if b == bucket]

    def delete(self, bucket: str, key: str) -> None:
        self.objects.pop((bucket, key), None)

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(f"{name}: tested on moto and Ceph")


def state(files: InMemoryFiles, uploads: InMemoryUploads | None = None) -> State:
    uploads = uploads or InMemoryUploads()
    return State(files=files, uploads=uploads, leases=uploads, claims=files)  # type: ignore[arg-type]
