"""Records the domain reasons about; the DynamoDB adapter converts its items into these."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class UploadStatus(str, enum.Enum):
    """Status of one multipart upload attempt (ucs.yaml ``UploadStatus``)."""

    PENDING = "pending"
    CANCELLED = "cancelled"
    FAILED = "failed"
    UPLOADED = "uploaded"
    ACCEPTED = "accepted"
    REJECTED = "rejected"

    @classmethod
    def parse(cls, value: object) -> UploadStatus | None:
        """The status named by ``value``, or None when it names none."""
        try:
            return cls(value)
        except ValueError:
            return None


#: Statuses that hold the per-file lock (``active_upload_id``): at most one per file.
ACTIVE_STATUSES = frozenset({UploadStatus.PENDING, UploadStatus.UPLOADED, UploadStatus.ACCEPTED})

#: Advertised in file metadata and upload details: the validation job reads back every
#: accepted object and checks its size and MD5 itself, so a client need not hash the whole
#: file for the server's sake (its own local check stays its choice).
SERVER_VERIFIES = True


def iso(dt: datetime | None) -> str | None:
    """RFC 3339 timestamp in UTC with a ``Z`` suffix (or None)."""
    if dt is None:
        return None
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class FileRecord:
    """A registered file (files table)."""

    file_id: str
    file_name: str
    size: int
    md5_checksum: str
    grouping_label: str
    format: str
    creation_date: datetime
    update_date: datetime
    submitters: frozenset[str] = frozenset()
    readers: frozenset[str] = frozenset()
    active_upload_id: str | None = None
    current_upload_id: str | None = None
    accepted_upload_id: str | None = None
    accepted_at: datetime | None = None
    staging_started: float | None = None
    staged_at: float | None = None
    #: Upload churn: start (epoch seconds) of the file's attempt window, uploads created in it.
    attempt_window_start: int | None = None
    attempt_count: int = 0
    #: SHA-256 the validation job computed from the accepted object (None: accepted before
    #: the server recorded one, or not accepted yet).
    sha256_checksum: str | None = None

    def metadata(self) -> dict[str, Any]:
        """ucs.yaml ``FileMetadata`` plus the ``server_verifies`` extension."""
        return {
            "file_id": self.file_id,
            "file_name": self.file_name,
            "md5_checksum": self.md5_checksum,
            "size": self.size,
            "grouping_label": self.grouping_label,
            "creation_date": iso(self.creation_date),
            "update_date": iso(self.update_date),
            "format": self.format,
            "current_upload_id": self.current_upload_id,
            "server_verifies": SERVER_VERIFIES,
        }


@dataclass
class UploadRecord:
    """One multipart upload attempt (uploads table)."""

    upload_id: str
    file_id: str
    s3_upload_id: str
    object_key: str
    upload_status: UploadStatus
    part_size: int
    created: datetime
    updated: datetime
    client_md5: str | None = None
    client_part_md5s: list[str] = field(default_factory=list)
    s3_part_etags: list[str] = field(default_factory=list)
    object_etag: str | None = None
    status_reason: str | None = None
    #: Bytes of the stored object the validation job has hashed so far (progress).
    verified_bytes: int = 0
    #: Multipart upload of the accept copy into the permanent bucket, once begun.
    copy_upload_id: str | None = None

    def details(self) -> dict[str, Any]:
        """ucs.yaml ``UploadDetails`` plus the ``status_reason``, ``server_verifies`` and
        ``verified_bytes`` extensions."""
        return {
            "upload_id": self.upload_id,
            "file_id": self.file_id,
            "part_size": self.part_size,
            "upload_status": self.upload_status.value,
            "status_reason": self.status_reason,
            "server_verifies": SERVER_VERIFIES,
            "verified_bytes": self.verified_bytes,
        }


@dataclass(frozen=True)
class Verification:
    """Where the validation job of one upload stands (saved in the upload item).

    ``state`` holds the MD5 and SHA-256 states (``digests.pack``) after the first ``offset``
    bytes of the object whose ETag is ``etag``; ``copy_upload_id`` is the multipart upload of
    the accept copy once it has started. ``owner`` is the job run holding the lease.
    """

    owner: str
    offset: int = 0
    state: bytes | None = None
    etag: str | None = None
    copy_upload_id: str | None = None
