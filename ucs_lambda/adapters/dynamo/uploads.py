"""Uploads in DynamoDB: attempts, segments, the file's upload lock, and the validation lease.

The invariant "per file at most one upload in pending/uploaded/accepted, none after accepted"
lives in the ``active_upload_id`` attribute of the file item (docs/CONTRACTS.md); the same
item counts the uploads created per time window (``attempt_window_start``/``attempt_count``,
the churn limit). Every write that could break either is conditional, and the two-item
changes are single ``TransactWriteItems`` calls, so concurrent requests cannot both win; a
read here at most chooses which conditional write to send, the condition decides.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from ...config import Settings
from ...domain.attempts import AttemptBudget
from ...domain.models import StoredSegment, UploadRecord, UploadStatus, Verification, utcnow
from ...domain.status import allowed_sources
from ...ports.state import AttemptsSpent, ConditionLost
from .conditional import conditional
from .files import DynamoFiles
from .records import pack, upload_record
from .tables import FileItem, Tables, UploadItem

#: Statuses in which the validation job works on an upload (hashing and assembling segments
#: while pending, the verdict once uploaded).
_VERIFIABLE = (UploadStatus.PENDING.value, UploadStatus.UPLOADED.value)


class DynamoUploads:
    """:class:`~ucs_lambda.ports.state.UploadStore` and
    :class:`~ucs_lambda.ports.state.VerificationLeases` on the uploads table (and the file
    items whose lock they change)."""

    def __init__(self, settings: Settings) -> None:
        self.tables = Tables.bind(settings)
        self.items = self.tables.uploads
        self.files = DynamoFiles(settings)

    def get_upload(self, upload_id: str) -> UploadRecord | None:
        try:
            return upload_record(self.items.get(upload_id, consistent_read=True))
        except self.items.DoesNotExist:
            return None

    def get_uploads(self, upload_ids: list[str]) -> dict[str, UploadRecord]:
        """Many uploads by id with ``BatchGetItem`` (strongly consistent); missing are absent."""
        unique = list(dict.fromkeys(upload_ids))
        return {
            item.upload_id: upload_record(item)
            for item in self.items.batch_get(unique, consistent_read=True)
        }

    def uploads_for_file(self, file_id: str) -> list[UploadRecord]:
        """All attempts for a file via the GSI (eventually consistent), oldest first."""
        items = [upload_record(i) for i in self.items.file_id_index.query(file_id)]
        return sorted(items, key=lambda u: u.created)

    def create_upload(self, upload: UploadRecord, budget: AttemptBudget) -> None:
        """Store a new pending upload, take the file's lock and count the attempt: one transaction.

        Conditions: the file exists and has no ``active_upload_id``, the upload id is new, and
        the upload fits the file's attempt window: counted into the running window if it has
        room, or opening a new window if none is running. Which of the two transactions to
        send is chosen from a consistent read of the file; their conditions decide, and one
        lost because a racing request changed the file is sent once more from a fresh read.
        Raises :class:`ConditionLost` (lock taken, file gone) or :class:`AttemptsSpent`.
        """
        now = upload.created
        item = self.items(
            upload.upload_id,
            file_id=upload.file_id,
            s3_upload_id=upload.s3_upload_id,
            object_key=upload.object_key,
            upload_status=upload.upload_status.value,
            part_size=upload.part_size,
            created=now,
            updated=now,
            segment_parts=upload.segment_parts,
            copy_group=upload.copy_group,
            segments={str(n): s3_id for n, s3_id in upload.segment_uploads.items()},
            segments_done={},
        )
        lock = [
            FileItem.active_upload_id.set(upload.upload_id),
            FileItem.current_upload_id.set(upload.upload_id),
            FileItem.update_date.set(now),
        ]
        for _ in range(2):
            file = self.files.get_file(upload.file_id)
            if file is None or file.active_upload_id:
                raise ConditionLost(upload.upload_id)
            start = file.attempt_window_start
            if budget.spent(start, file.attempt_count):
                raise AttemptsSpent(start)
            if budget.is_current(start):
                charge = [FileItem.attempt_count.add(1)]
                fits = (FileItem.attempt_window_start > budget.current_after) & (
                    FileItem.attempt_count < budget.limit
                )
            else:
                charge = [
                    FileItem.attempt_window_start.set(budget.now),
                    FileItem.attempt_count.set(1),
                ]
                fits = FileItem.attempt_window_start.does_not_exist() | (
                    FileItem.attempt_window_start <= budget.current_after
                )
            file_condition = (
                FileItem.file_id.exists() & FileItem.active_upload_id.does_not_exist() & fits
            )
            if self._insert_locked(item, upload.file_id, lock + charge, file_condition):
                return
        raise ConditionLost(upload.upload_id)

    def _insert_locked(
        self, item: UploadItem, file_id: str, file_actions: list[Any], file_condition: Any
    ) -> bool:
        def write() -> None:
            with self.tables.transaction() as tw:
                tw.update(
                    self.tables.files(file_id), actions=file_actions, condition=file_condition
                )
                tw.save(item, condition=UploadItem.upload_id.does_not_exist())

        return conditional(write)

    def mark_uploaded(
        self, upload_id: str, client_md5: str | None, client_part_md5s: list[str]
    ) -> bool:
        """pending -> uploaded (the lock stays); False when the upload is no longer pending."""
        actions = [
            UploadItem.upload_status.set(UploadStatus.UPLOADED.value),
            UploadItem.updated.set(utcnow()),
        ]
        if client_md5:
            actions.append(UploadItem.client_md5.set(client_md5.lower()))
        packed_client = pack(client_part_md5s)
        if packed_client:
            actions.append(UploadItem.client_part_md5s.set(packed_client))
        sources = [s.value for s in allowed_sources(UploadStatus.UPLOADED)]
        return self._update(
            upload_id,
            actions,
            UploadItem.upload_id.exists() & UploadItem.upload_status.is_in(*sources),
        )

    # ---- segments ----------------------------------------------------------------------

    def open_segment(self, upload_id: str, segment_no: int, s3_upload_id: str) -> bool:
        """Record the multipart upload of a new segment; False when the segment already has
        one (a concurrent request opened it: use that one) or the upload is not pending."""
        path = UploadItem.segments[str(segment_no)]  # type: ignore[index]
        return self._update(
            upload_id,
            [path.set(s3_upload_id)],
            (UploadItem.upload_status == UploadStatus.PENDING.value) & path.does_not_exist(),
        )

    def record_segment(self, upload_id: str, segment_no: int, done: StoredSegment) -> bool:
        """Record a completed segment (idempotent); False when the upload is not pending.

        An upload created before segments has no ``segments_done`` map (DynamoDB cannot set a
        path below a missing map): its first segment creates the map instead.
        """
        value = {"etag": done.etag, "parts": pack(list(done.part_etags)) or b""}
        pending = UploadItem.upload_status == UploadStatus.PENDING.value
        updated = UploadItem.updated.set(utcnow())
        for _ in range(2):
            entry = UploadItem.segments_done[str(segment_no)]  # type: ignore[index]
            if self._update(
                upload_id, [entry.set(value), updated], pending & UploadItem.segments_done.exists()
            ):
                return True
            if self._update(
                upload_id,
                [UploadItem.segments_done.set({str(segment_no): value}), updated],
                pending & UploadItem.segments_done.does_not_exist(),
            ):
                return True
        return False

    # ---- ending an upload --------------------------------------------------------------

    def release(
        self,
        upload: UploadRecord,
        target: UploadStatus,
        reason: str | None = None,
        expect_updated: datetime | None = None,
        verifier: str | None = None,
    ) -> bool:
        """Move an upload to cancelled/failed/rejected and release the file's lock, atomically.

        The upload's status must be one the target may be reached from (status machine), and
        the file's lock must be held by this upload. ``expect_updated`` additionally requires
        that the upload did not change since it was read (the stale sweep uses it);
        ``verifier`` that this validation run still holds the lease. Returns False when a
        condition did not hold: nothing was written.
        """
        sources = [s.value for s in allowed_sources(target)]
        now = utcnow()
        condition = UploadItem.upload_id.exists() & UploadItem.upload_status.is_in(*sources)
        if expect_updated is not None:
            condition &= UploadItem.updated == expect_updated
        if verifier is not None:
            condition &= UploadItem.verify_owner == verifier
        actions = [UploadItem.upload_status.set(target.value), UploadItem.updated.set(now)]
        if reason is not None:
            actions.append(UploadItem.status_reason.set(reason[:1000]))
        file_actions = [FileItem.active_upload_id.remove(), FileItem.update_date.set(now)]
        return self._with_lock(upload, actions, condition, file_actions)

    def accept(
        self,
        upload: UploadRecord,
        reason: str | None = None,
        sha256: str | None = None,
        verifier: str | None = None,
        permanent_etag: str | None = None,
    ) -> bool:
        """uploaded -> accepted; the lock stays for good and the file records the acceptance
        (the SHA-256 the validation computed, the permanent object's ETag). ``verifier``:
        this validation run must still hold the lease."""
        now = utcnow()
        actions = [
            UploadItem.upload_status.set(UploadStatus.ACCEPTED.value),
            UploadItem.updated.set(now),
        ]
        if reason is not None:
            actions.append(UploadItem.status_reason.set(reason[:1000]))
        condition = UploadItem.upload_status == UploadStatus.UPLOADED.value
        if verifier is not None:
            condition &= UploadItem.verify_owner == verifier
        file_actions = [
            FileItem.accepted_upload_id.set(upload.upload_id),
            FileItem.accepted_at.set(now),
            FileItem.update_date.set(now),
        ]
        if sha256 is not None:
            file_actions.append(FileItem.sha256_checksum.set(sha256))
        if permanent_etag:
            file_actions.append(FileItem.permanent_etag.set(permanent_etag))
        return self._with_lock(upload, actions, condition, file_actions)

    def _with_lock(
        self, upload: UploadRecord, actions: list[Any], condition: Any, file_actions: list[Any]
    ) -> bool:
        """Change the upload and its file in one transaction, while the upload holds the lock."""

        def write() -> None:
            with self.tables.transaction() as tw:
                tw.update(self.items(upload.upload_id), actions=actions, condition=condition)
                tw.update(
                    self.tables.files(upload.file_id),
                    actions=file_actions,
                    condition=FileItem.active_upload_id == upload.upload_id,
                )

        return conditional(write)

    def uploads_in_status(
        self, status: UploadStatus, updated_before: datetime
    ) -> Iterator[UploadRecord]:
        """Uploads in ``status`` not updated since ``updated_before``, oldest first (sweeps).

        A query of ``upload_status-index`` reads only the candidates, not the whole table. The
        index is eventually consistent and holds keys only, so every hit is read again and
        yielded only while it still qualifies.
        """
        hits = self.items.status_index.query(
            status.value, range_key_condition=UploadItem.updated < updated_before
        )
        for hit in hits:
            upload = self.get_upload(hit.upload_id)
            if (
                upload is not None
                and upload.upload_status is status
                and upload.updated < updated_before
            ):
                yield upload

    # ---- validation progress and lease ---------------------------------------------------

    def claim_verification(
        self, upload_id: str, owner: str, now: float, lease_seconds: float
    ) -> Verification | None:
        """Take the validation lease of a ``pending`` or ``uploaded`` upload (segments are
        verified while the client still sends) for ``lease_seconds``.

        Wins when no run holds it, its holder let it expire (crashed), or ``owner`` holds it
        already. Returns the saved progress, read in the same write; None when the upload is
        neither pending nor uploaded, or a live run holds the lease.
        """
        item = self.items(upload_id)
        free = (
            UploadItem.verify_lease_until.does_not_exist()
            | (UploadItem.verify_lease_until < now)
            | (UploadItem.verify_owner == owner)
        )
        claimed = conditional(
            lambda: item.update(
                actions=[
                    UploadItem.verify_owner.set(owner),
                    UploadItem.verify_lease_until.set(now + lease_seconds),
                    UploadItem.updated.set(utcnow()),
                ],
                condition=UploadItem.upload_status.is_in(*_VERIFIABLE) & free,
            )
        )
        if not claimed:
            return None
        return Verification(
            owner=owner,
            offset=int(item.verified_bytes or 0),
            state=item.verify_state,
            etag=item.verify_etag,
            copy_upload_id=item.copy_upload_id,
        )

    def save_verification(
        self,
        progress: Verification,
        upload_id: str,
        previous_offset: int,
        now: float,
        lease_seconds: float,
    ) -> bool:
        """Checkpoint: store the hash state and offset, and extend the lease.

        Only while the upload is verifiable, this run holds the lease and the stored offset
        is still ``previous_offset`` (so no other run advanced it); False otherwise.
        """
        stored = UploadItem.verified_bytes == previous_offset
        if previous_offset == 0:
            stored |= UploadItem.verified_bytes.does_not_exist()
        actions = [
            UploadItem.verified_bytes.set(progress.offset),
            UploadItem.verify_state.set(progress.state),
            UploadItem.verify_etag.set(progress.etag),
            UploadItem.verify_lease_until.set(now + lease_seconds),
            UploadItem.updated.set(utcnow()),
        ]
        return self._verifier_update(upload_id, progress.owner, actions, stored)

    def renew_verification(
        self, upload_id: str, owner: str, now: float, lease_seconds: float
    ) -> bool:
        """Extend the lease (work that is not hashing, e.g. the accept copy); False if lost."""
        actions = [
            UploadItem.verify_lease_until.set(now + lease_seconds),
            UploadItem.updated.set(utcnow()),
        ]
        return self._verifier_update(upload_id, owner, actions)

    def save_copy_upload(self, upload_id: str, owner: str, copy_upload_id: str | None) -> bool:
        """Remember (or forget, with None) the multipart upload of the accept copy."""
        if copy_upload_id is None:
            action = UploadItem.copy_upload_id.remove()
        else:
            action = UploadItem.copy_upload_id.set(copy_upload_id)
        return self._verifier_update(upload_id, owner, [action])

    def release_verification(self, upload_id: str, owner: str) -> None:
        """Let the lease go at once (the next run need not wait for it to expire)."""
        self._verifier_update(
            upload_id, owner, [UploadItem.verify_lease_until.set(0)], any_status=True
        )

    def _verifier_update(
        self,
        upload_id: str,
        owner: str,
        actions: list[Any],
        extra: Any = None,
        any_status: bool = False,
    ) -> bool:
        condition = UploadItem.verify_owner == owner
        if not any_status:
            condition &= UploadItem.upload_status.is_in(*_VERIFIABLE)
        if extra is not None:
            condition &= extra
        return self._update(upload_id, actions, condition)

    def _update(self, upload_id: str, actions: list[Any], condition: Any) -> bool:
        return conditional(
            lambda: self.items(upload_id).update(actions=actions, condition=condition)
        )
