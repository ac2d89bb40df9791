"""Records the domain reasons about; the DynamoDB adapter converts its items into these."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .parts import MAX_PARTS
from .segments import SegmentLayout


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


def utcnow() -> datetime:
    """Now, timezone-aware UTC (what every stored ``datetime`` is)."""
    return datetime.now(timezone.utc)


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
    #: ETag of the permanent object as accepted (staging copies only that object).
    permanent_etag: str | None = None
    #: The staging copy permanent -> outbox, while one runs (see :class:`StagingProgress`).
    staging: StagingProgress | None = None


@dataclass(frozen=True)
class StagingProgress:
    """How far the staging copy of a file stands (saved on the file item by the staging job).

    ``copy_id`` is the outbox multipart upload of a copy larger than one ``CopyObject``;
    ``source_etag`` the permanent object's ETag it copies (every part is conditional on it);
    ``copied`` bytes done; ``started`` (epoch seconds) when the copy began, for the rate.
    """

    copy_id: str | None = None
    source_etag: str | None = None
    copied: int = 0
    started: float | None = None


@dataclass(frozen=True)
class StoredSegment:
    """A completed segment: its object's ETag and the ETags of its parts, in order."""

    etag: str
    part_etags: tuple[str, ...]


@dataclass
class UploadRecord:
    """One multipart upload attempt (uploads table), stored as segments (domain/segments.py).

    ``s3_upload_id``/``object_key`` are segment 1's multipart upload and object; segment
    ``n > 1`` is ``<object_key>/<n>``. ``segment_uploads`` maps every opened segment to its
    multipart upload, ``segments_done`` every completed one to its checksums. An upload
    created before segments existed has no ``segment_parts``: it is one segment of all parts.
    """

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
    status_reason: str | None = None
    #: Bytes of the stored object the validation job has hashed so far (progress).
    verified_bytes: int = 0
    #: Multipart upload of the permanent object (assembled from the segments), once begun.
    copy_upload_id: str | None = None
    #: Upload parts per segment and per copy part (None: an upload from before segments).
    segment_parts: int | None = None
    copy_group: int | None = None
    segment_uploads: dict[int, str] = field(default_factory=dict)
    segments_done: dict[int, StoredSegment] = field(default_factory=dict)

    def layout(self, size: int, copy_part_size: int) -> SegmentLayout:
        """The segment layout of this upload for a file of ``size`` bytes."""
        if self.segment_parts is None:  # before segments: one segment of every part
            legacy = SegmentLayout.plan(size, self.part_size, 0, copy_part_size, 1)
            return SegmentLayout(size, self.part_size, MAX_PARTS, legacy.copy_group)
        return SegmentLayout(size, self.part_size, self.segment_parts, self.copy_group or 1)

    def segment_key(self, segment_no: int) -> str:
        """The inbox key of a segment's object (segment 1 keeps the upload's object key)."""
        return self.object_key if segment_no == 1 else f"{self.object_key}/{segment_no}"

    def segment_upload(self, segment_no: int) -> str | None:
        """The multipart upload of a segment, once opened."""
        if segment_no == 1:
            return self.segment_uploads.get(1, self.s3_upload_id)
        return self.segment_uploads.get(segment_no)

    def done_prefix_end(self, layout: SegmentLayout) -> int:
        """Bytes from the start of the file up to the first segment not yet completed.

        A segment being completed (its parts recorded, its ETag not yet: ``etag == ""``)
        is not readable yet, and a hash checkpoint must name the ETag of what it read.
        """
        end = 0
        stored = self.stored_segments()
        for segment_no in range(1, layout.segment_count + 1):
            if segment_no not in stored:
                break
            offset, length = layout.span(segment_no)
            end = offset + length
        return end

    def stored_segments(self) -> dict[int, StoredSegment]:
        """The segments S3 has completed (readable objects with their ETag)."""
        return {n: seg for n, seg in self.segments_done.items() if seg.etag}

    def part_etags(self) -> list[str]:
        """The ETags of every part of the completed segments, in part order."""
        return [e for n in sorted(self.segments_done) for e in self.segments_done[n].part_etags]


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
