"""The state ports: files, uploads, the validation lease and the staging claims.

Every status change is a *conditional* write: a method returns ``False`` (or ``None``, or
raises :class:`ConditionLost`) when its condition did not hold, and then nothing was written.
Which condition a method checks is part of its contract (docs/CONTRACTS.md, RELIABILITY.md);
both adapters (DynamoDB, PostgreSQL) enforce them in the store, never by a read followed by
an unconditional write. The specification's rule "per file at most one upload in
pending/uploaded/accepted, none after accepted" is kept by :meth:`UploadStore.create_upload`,
:meth:`UploadStore.release` and :meth:`UploadStore.accept` together.

Times: ``datetime`` values are timezone-aware UTC; the lease and claim methods take and
compare epoch seconds (``now``) so that tests can move the clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ..domain.attempts import AttemptBudget
from ..domain.models import (
    FileRecord,
    StagingProgress,
    StoredSegment,
    UploadRecord,
    UploadStatus,
    Verification,
)


class StoreError(Exception):
    """The state store failed (unreachable, timed out, refused): not a lost condition.

    Adapters raise their own subclasses, so callers need no driver's exception types."""


class ConditionLost(Exception):
    """A conditional write found the item in a different state than required."""


class AttemptsSpent(Exception):
    """The file's upload-attempt window has no room (nothing was written)."""

    def __init__(self, window_start: int | None) -> None:
        super().__init__(f"attempt window opened at {window_start} is spent")
        self.window_start = window_start


class FileStore(Protocol):
    """Registered files and their readers."""

    def get_file(self, file_id: str) -> FileRecord | None:
        """The file, read consistently; None when it is not registered."""

    def get_files(self, file_ids: list[str]) -> dict[str, FileRecord]:
        """Many files by id, read consistently; missing ids are absent from the answer."""

    def register_file(self, record: FileRecord) -> None:
        """Create a file; :class:`ConditionLost` when the id is already taken."""

    def grant_reader(self, file_id: str, user_id: str) -> bool:
        """Add a reader; False when the file does not exist."""


class UploadStore(Protocol):
    """Upload attempts, their segments, and the file's upload lock."""

    def get_upload(self, upload_id: str) -> UploadRecord | None: ...

    def get_uploads(self, upload_ids: list[str]) -> dict[str, UploadRecord]:
        """Many uploads by id, read consistently; missing ids are absent."""

    def uploads_for_file(self, file_id: str) -> list[UploadRecord]:
        """Every attempt for a file, oldest first."""

    def create_upload(self, upload: UploadRecord, budget: AttemptBudget) -> None:
        """Store a new pending upload, take the file's lock and count the attempt, atomically.

        Conditions: the file exists and no upload holds its lock (none pending, uploaded or
        accepted), the upload id is new, and the attempt fits the file's window (counted
        into a running window with room, or opening a new one). Raises
        :class:`ConditionLost` (lock taken, file gone) or :class:`AttemptsSpent`.
        """

    def mark_uploaded(
        self, upload_id: str, client_md5: str | None, client_part_md5s: list[str]
    ) -> bool:
        """pending -> uploaded (the lock stays); False when the upload is not pending."""

    def open_segment(self, upload_id: str, segment_no: int, s3_upload_id: str) -> bool:
        """Record a new segment's multipart upload; False when the segment has one already
        (a concurrent request opened it) or the upload is not pending."""

    def record_segment(self, upload_id: str, segment_no: int, done: StoredSegment) -> bool:
        """Record a completed segment (idempotent); False when the upload is not pending."""

    def release(
        self,
        upload: UploadRecord,
        target: UploadStatus,
        reason: str | None = None,
        expect_updated: datetime | None = None,
        verifier: str | None = None,
    ) -> bool:
        """Move an upload to cancelled/failed/rejected and release the file's lock, atomically.

        Conditions: the upload's status may reach ``target`` (domain.status), this upload
        holds the file's lock, the upload is unchanged since ``expect_updated`` (if given)
        and ``verifier`` holds the validation lease (if given).
        """

    def accept(
        self,
        upload: UploadRecord,
        reason: str | None = None,
        sha256: str | None = None,
        verifier: str | None = None,
        permanent_etag: str | None = None,
    ) -> bool:
        """uploaded -> accepted, and the file records the acceptance, atomically; the lock
        stays for good. Conditions: uploaded, holds the lock, ``verifier`` holds the lease."""

    def uploads_in_status(
        self, status: UploadStatus, updated_before: datetime
    ) -> Iterator[UploadRecord]:
        """Uploads in ``status`` not updated since ``updated_before``, oldest first (sweeps);
        each one still qualifies when it is yielded."""


class VerificationLeases(Protocol):
    """The validation job's lease on an upload and its saved progress."""

    def claim_verification(
        self, upload_id: str, owner: str, now: float, lease_seconds: float
    ) -> Verification | None:
        """Take the lease of a pending or uploaded upload (free, expired, or held by
        ``owner``) and return the saved progress; None otherwise."""

    def save_verification(
        self,
        progress: Verification,
        upload_id: str,
        previous_offset: int,
        now: float,
        lease_seconds: float,
    ) -> bool:
        """Checkpoint hash state and offset and extend the lease; only while the upload is
        pending/uploaded, ``progress.owner`` holds the lease and the stored offset is still
        ``previous_offset``."""

    def renew_verification(
        self, upload_id: str, owner: str, now: float, lease_seconds: float
    ) -> bool: ...

    def save_copy_upload(self, upload_id: str, owner: str, copy_upload_id: str | None) -> bool:
        """Remember (or forget, with None) the multipart upload of the permanent copy."""

    def release_verification(self, upload_id: str, owner: str) -> None:
        """Let the lease go at once (in any status)."""


class StagingClaims(Protocol):
    """Who stages an accepted file into the outbox, and how far the copy got."""

    def claim_staging(self, file_id: str, now: float, timeout: float) -> bool:
        """Become the one staging request for an accepted file (none marked, or the marked
        one started more than ``timeout`` seconds ago)."""

    def mark_staged(self, file_id: str, now: float) -> None:
        """The outbox holds the file: record it, end the claim and forget the progress."""

    def reset_staging(self, file_id: str) -> None:
        """The outbox copy is gone: forget staging (a missing file is ignored)."""

    def claim_staging_run(
        self, file_id: str, owner: str, now: float, lease_seconds: float
    ) -> FileRecord | None:
        """Take the staging lease for one job run (free, expired, or held by ``owner``) of
        an accepted file; renews the request claim. Returns the file, or None."""

    def save_staging(
        self,
        file_id: str,
        owner: str,
        progress: StagingProgress,
        now: float,
        lease_seconds: float,
    ) -> bool:
        """Checkpoint the staging copy and extend the lease; False when the lease was lost."""

    def finish_staging(self, file_id: str, owner: str, now: float) -> bool:
        """Mark staged and drop the progress, while ``owner`` holds the lease."""

    def release_staging_run(self, file_id: str, owner: str) -> None:
        """Let the staging lease go at once."""


@dataclass(frozen=True)
class State:
    """The state adapters of one backend, as the services receive them."""

    files: FileStore
    uploads: UploadStore
    leases: VerificationLeases
    claims: StagingClaims
