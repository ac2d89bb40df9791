"""DynamoDB persistence with pynamodb: the files and uploads tables, and every status change.

The invariant "per file at most one upload in pending/uploaded/accepted, none after accepted"
lives in the ``active_upload_id`` attribute of the file item (docs/CONTRACTS.md); the same
item counts the uploads created per time window (``attempt_window_start``/``attempt_count``,
the churn limit). Every write that could break either is conditional, and the two-item
changes are single ``TransactWriteItems`` calls, so concurrent requests cannot both win; a read
here at most chooses which conditional write to send, the condition decides.

Methods return ``False`` (or raise :class:`ConditionLost`) when a condition did not hold; the
service layer then reads the current state, only to build a helpful error message.

Table names, region and endpoint are read from the settings on every call: pynamodb reads
``Meta`` when it first connects, so :func:`_bind` updates ``Meta`` and drops the cached
connection whenever they change (PITFALLS.md).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from pynamodb.attributes import (
    BinaryAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.connection import Connection
from pynamodb.exceptions import PutError, TransactWriteError, UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from ..config import Settings
from ..domain.attempts import AttemptBudget
from ..domain.models import (
    FileRecord,
    StagingProgress,
    StoredSegment,
    UploadRecord,
    UploadStatus,
    Verification,
    utcnow,
)
from ..domain.status import allowed_sources
from ..ports.state import AttemptsSpent, ConditionLost

FILE_ID_INDEX = "file_id-index"
#: Statuses in which the validation job works on an upload (hashing and assembling segments
#: while pending, the verdict once uploaded).
_VERIFIABLE = (UploadStatus.PENDING.value, UploadStatus.UPLOADED.value)
STATUS_INDEX = "upload_status-index"


class FileItem(Model):
    """A registered file; ``active_upload_id`` is the per-file upload lock."""

    class Meta:
        table_name = "ghga-files"
        region = "us-east-1"
        host: str | None = None

    file_id = UnicodeAttribute(hash_key=True)
    file_name = UnicodeAttribute()
    size = NumberAttribute()
    md5_checksum = UnicodeAttribute()
    grouping_label = UnicodeAttribute(null=True)
    format = UnicodeAttribute(null=True)
    creation_date = UTCDateTimeAttribute()
    update_date = UTCDateTimeAttribute()
    submitters = UnicodeSetAttribute(null=True)
    readers = UnicodeSetAttribute(null=True)
    active_upload_id = UnicodeAttribute(null=True)
    current_upload_id = UnicodeAttribute(null=True)
    accepted_upload_id = UnicodeAttribute(null=True)
    accepted_at = UTCDateTimeAttribute(null=True)
    # DRS staging: epoch seconds when the running staging job was claimed / finished.
    staging_started = NumberAttribute(null=True)
    staged_at = NumberAttribute(null=True)
    # Upload churn: start (epoch seconds) of the current attempt window and attempts in it.
    attempt_window_start = NumberAttribute(null=True)
    attempt_count = NumberAttribute(null=True)
    # Computed by the validation job from the accepted object (absent on older files).
    sha256_checksum = UnicodeAttribute(null=True)
    # ETag of the permanent object as accepted (absent on older files).
    permanent_etag = UnicodeAttribute(null=True)
    # The staging copy while it runs: the outbox multipart upload (copies above one
    # CopyObject), the source ETag it copies, bytes copied, when it began; and the lease of
    # the job run working on it.
    staging_copy_id = UnicodeAttribute(null=True)
    staging_etag = UnicodeAttribute(null=True)
    staged_bytes = NumberAttribute(null=True)
    staging_copy_started = NumberAttribute(null=True)
    staging_owner = UnicodeAttribute(null=True)
    staging_lease_until = NumberAttribute(null=True)


class FileIdIndex(GlobalSecondaryIndex):
    """Uploads by file (``file_id-index``)."""

    class Meta:
        index_name = FILE_ID_INDEX
        projection = AllProjection()

    file_id = UnicodeAttribute(hash_key=True)


class StatusIndex(GlobalSecondaryIndex):
    """Uploads by status and last change (``upload_status-index``), for the sweeps.

    Keys only: the sweeps find few candidates and read each one again consistently, and the
    index stays small (no copies of the part-ETag blobs of accepted uploads).
    """

    class Meta:
        index_name = STATUS_INDEX
        projection = KeysOnlyProjection()

    upload_status = UnicodeAttribute(hash_key=True)
    updated = UTCDateTimeAttribute(range_key=True)


class UploadItem(Model):
    """One multipart upload attempt.

    ``s3_part_etags`` and ``client_part_md5s`` are stored as the concatenated 16-byte binary
    digests (not hex text): 10,000 parts of both then take 320 KB, inside DynamoDB's 400 KB item
    limit, where hex strings would not fit.

    The ``verify_*`` attributes, ``verified_bytes`` and ``copy_upload_id`` are the validation
    job's saved progress and its lease (docs/CONTRACTS.md, "Validation"). ``segments`` maps
    each opened segment (``"<n>"``) to its S3 multipart upload id, ``segments_done`` each
    completed one to ``{"etag": <object ETag>, "parts": <packed part ETags>}``; both maps exist
    from the start (DynamoDB cannot set a path below a missing map). ``s3_part_etags`` and
    ``object_etag`` are only read, from uploads created before segments.
    """

    class Meta:
        table_name = "ghga-uploads"
        region = "us-east-1"
        host: str | None = None

    upload_id = UnicodeAttribute(hash_key=True)
    file_id = UnicodeAttribute()
    s3_upload_id = UnicodeAttribute()
    object_key = UnicodeAttribute()
    upload_status = UnicodeAttribute()
    part_size = NumberAttribute()
    created = UTCDateTimeAttribute()
    updated = UTCDateTimeAttribute()
    client_md5 = UnicodeAttribute(null=True)
    client_part_md5s = BinaryAttribute(null=True, legacy_encoding=False)
    s3_part_etags = BinaryAttribute(null=True, legacy_encoding=False)
    object_etag = UnicodeAttribute(null=True)
    status_reason = UnicodeAttribute(null=True)
    verified_bytes = NumberAttribute(null=True)
    verify_state = BinaryAttribute(null=True, legacy_encoding=False)
    verify_etag = UnicodeAttribute(null=True)
    verify_owner = UnicodeAttribute(null=True)
    verify_lease_until = NumberAttribute(null=True)
    copy_upload_id = UnicodeAttribute(null=True)
    segment_parts = NumberAttribute(null=True)
    copy_group = NumberAttribute(null=True)
    segments = MapAttribute(null=True)  # type: ignore[var-annotated]
    segments_done = MapAttribute(null=True)  # type: ignore[var-annotated]

    file_id_index = FileIdIndex()
    status_index = StatusIndex()


_bind_lock = threading.Lock()
_bound: dict[type, tuple[str, str, str | None]] = {}
_connections: dict[tuple[str, str | None], Connection] = {}


def _bind(settings: Settings) -> None:
    """Point the models at the configured tables/endpoint (cheap when nothing changed).

    The botocore clients are built here, under the lock, once per binding: pynamodb builds a
    connection's client lazily and without a lock, so the first requests of a threaded server
    (50 at once in tests/e2e/test_races.py) would each build one, ~0.1 s of CPU apiece.
    """
    wanted = {
        FileItem: (settings.files_table, settings.region, settings.dynamodb_endpoint),
        UploadItem: (settings.uploads_table, settings.region, settings.dynamodb_endpoint),
    }
    for model, target in wanted.items():
        if _bound.get(model) == target:
            continue
        with _bind_lock:
            if _bound.get(model) == target:
                continue  # bound by a concurrent request meanwhile
            model.Meta.table_name, model.Meta.region, model.Meta.host = target
            model._connection = None
            _ = model._get_connection().connection.client
            _bound[model] = target


def _transaction(settings: Settings) -> TransactWrite:
    """``TransactWrite`` needs its own connection; it ignores ``Meta.host`` (PITFALLS.md)."""
    key = (settings.region, settings.dynamodb_endpoint)
    conn = _connections.get(key)
    if conn is None:
        with _bind_lock:
            conn = _connections.get(key)
            if conn is None:
                conn = Connection(region=settings.region, host=settings.dynamodb_endpoint)
                _ = conn.client  # built once, before any thread uses it (see _bind)
                _connections[key] = conn
    return TransactWrite(connection=conn)


def reset() -> None:
    """Forget bound tables and connections (tests)."""
    with _bind_lock:
        _bound.clear()
        _connections.clear()
        FileItem._connection = None
        UploadItem._connection = None


def _lost(exc: TransactWriteError) -> bool:
    return exc.cause_response_code == "TransactionCanceledException"


def _cond_failed(exc: Exception) -> bool:
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"


def _pack(hexes: list[str]) -> bytes | None:
    """Hex MD5s -> concatenated binary digests (None for an empty list)."""
    return b"".join(bytes.fromhex(h) for h in hexes) if hexes else None


def _unpack(blob: bytes | None) -> list[str]:
    if not blob:
        return []
    return [blob[i : i + 16].hex() for i in range(0, len(blob), 16)]


def _file_record(item: FileItem) -> FileRecord:
    return FileRecord(
        file_id=item.file_id,
        file_name=item.file_name,
        size=int(item.size),
        md5_checksum=item.md5_checksum,
        grouping_label=item.grouping_label or "",
        format=item.format or "",
        creation_date=item.creation_date,
        update_date=item.update_date,
        submitters=frozenset(item.submitters or ()),
        readers=frozenset(item.readers or ()),
        active_upload_id=item.active_upload_id,
        current_upload_id=item.current_upload_id,
        accepted_upload_id=item.accepted_upload_id,
        accepted_at=item.accepted_at,
        staging_started=item.staging_started,
        staged_at=item.staged_at,
        attempt_window_start=(
            int(item.attempt_window_start) if item.attempt_window_start is not None else None
        ),
        attempt_count=int(item.attempt_count or 0),
        sha256_checksum=item.sha256_checksum,
        permanent_etag=item.permanent_etag,
        staging=_staging(item),
    )


def _staging(item: FileItem) -> StagingProgress | None:
    if item.staging_etag is None and item.staged_bytes is None:
        return None
    return StagingProgress(
        copy_id=item.staging_copy_id,
        source_etag=item.staging_etag,
        copied=int(item.staged_bytes or 0),
        started=float(item.staging_copy_started) if item.staging_copy_started else None,
    )


def _raw_map(attr: Any) -> dict[str, Any]:
    """A raw ``MapAttribute``'s content as a plain dict (pynamodb hands out the attribute)."""
    if attr is None:
        return {}
    return dict(attr.as_dict()) if hasattr(attr, "as_dict") else dict(attr)


def _segments_done(item: UploadItem) -> dict[int, StoredSegment]:
    if item.segments_done is None:  # completed by the version before segments: segment 1
        if item.object_etag and item.upload_status != UploadStatus.PENDING.value:
            return {1: StoredSegment(item.object_etag, tuple(_unpack(item.s3_part_etags)))}
        return {}
    done = {}
    for key, value in _raw_map(item.segments_done).items():
        value = _raw_map(value)
        parts = value.get("parts")
        done[int(key)] = StoredSegment(
            str(value.get("etag") or ""), tuple(_unpack(bytes(parts) if parts else None))
        )
    return done


def _upload_record(item: UploadItem) -> UploadRecord:
    return UploadRecord(
        upload_id=item.upload_id,
        file_id=item.file_id,
        s3_upload_id=item.s3_upload_id,
        object_key=item.object_key,
        upload_status=UploadStatus(item.upload_status),
        part_size=int(item.part_size),
        created=item.created,
        updated=item.updated,
        client_md5=item.client_md5,
        client_part_md5s=_unpack(item.client_part_md5s),
        status_reason=item.status_reason,
        verified_bytes=int(item.verified_bytes or 0),
        copy_upload_id=item.copy_upload_id,
        segment_parts=int(item.segment_parts) if item.segment_parts is not None else None,
        copy_group=int(item.copy_group) if item.copy_group is not None else None,
        segment_uploads={int(k): str(v) for k, v in _raw_map(item.segments).items()},
        segments_done=_segments_done(item),
    )


class Repository:
    """All reads and (conditional) writes of files and uploads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        _bind(settings)

    # ---- files -------------------------------------------------------------------------

    def get_file(self, file_id: str) -> FileRecord | None:
        try:
            return _file_record(FileItem.get(file_id, consistent_read=True))
        except FileItem.DoesNotExist:
            return None

    def get_files(self, file_ids: list[str]) -> dict[str, FileRecord]:
        """Many files by id with ``BatchGetItem`` (100 keys per call); missing ids are absent.

        Strongly consistent like :meth:`get_file`, so a bulk DRS request sees the same state
        as the single-object route. pynamodb retries keys DynamoDB leaves unprocessed.
        """
        unique = list(dict.fromkeys(file_ids))
        return {
            item.file_id: _file_record(item)
            for item in FileItem.batch_get(unique, consistent_read=True)
        }

    def register_file(self, record: FileRecord) -> None:
        """Create a file item; raises :class:`ConditionLost` when the id is already taken."""
        item = FileItem(
            record.file_id,
            file_name=record.file_name,
            size=record.size,
            md5_checksum=record.md5_checksum.lower(),
            grouping_label=record.grouping_label,
            format=record.format,
            creation_date=record.creation_date,
            update_date=record.update_date,
            submitters=set(record.submitters) or None,
            readers=set(record.readers) or None,
        )
        try:
            item.save(condition=FileItem.file_id.does_not_exist())
        except PutError as exc:
            if _cond_failed(exc):
                raise ConditionLost(record.file_id) from None
            raise

    def grant_reader(self, file_id: str, user_id: str) -> bool:
        """Add ``user_id`` to the file's readers; False when the file does not exist."""
        try:
            FileItem(file_id).update(
                actions=[FileItem.readers.add({user_id}), FileItem.update_date.set(utcnow())],
                condition=FileItem.file_id.exists(),
            )
        except UpdateError as exc:
            if _cond_failed(exc):
                return False
            raise
        return True

    # ---- uploads -----------------------------------------------------------------------

    def get_upload(self, upload_id: str) -> UploadRecord | None:
        try:
            return _upload_record(UploadItem.get(upload_id, consistent_read=True))
        except UploadItem.DoesNotExist:
            return None

    def get_uploads(self, upload_ids: list[str]) -> dict[str, UploadRecord]:
        """Many uploads by id with ``BatchGetItem`` (strongly consistent); missing are absent."""
        unique = list(dict.fromkeys(upload_ids))
        return {
            item.upload_id: _upload_record(item)
            for item in UploadItem.batch_get(unique, consistent_read=True)
        }

    def uploads_for_file(self, file_id: str) -> list[UploadRecord]:
        """All attempts for a file via the GSI (eventually consistent), oldest first."""
        items = [_upload_record(i) for i in UploadItem.file_id_index.query(file_id)]
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
        item = UploadItem(
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
            file = self.get_file(upload.file_id)
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
            try:
                with _transaction(self.settings) as tw:
                    tw.update(
                        FileItem(upload.file_id),
                        actions=lock + charge,
                        condition=FileItem.file_id.exists()
                        & FileItem.active_upload_id.does_not_exist()
                        & fits,
                    )
                    tw.save(item, condition=UploadItem.upload_id.does_not_exist())
                return
            except TransactWriteError as exc:
                if not _lost(exc):
                    raise
        raise ConditionLost(upload.upload_id)

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
        packed_client = _pack(client_part_md5s)
        if packed_client:
            actions.append(UploadItem.client_part_md5s.set(packed_client))
        return self._conditional_upload_update(upload_id, UploadStatus.UPLOADED, actions)

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
        value = {"etag": done.etag, "parts": _pack(list(done.part_etags)) or b""}
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

    def _update(self, upload_id: str, actions: list[Any], condition: Any) -> bool:
        try:
            UploadItem(upload_id).update(actions=actions, condition=condition)
        except UpdateError as exc:
            if _cond_failed(exc):
                return False
            raise
        return True

    def _conditional_upload_update(
        self, upload_id: str, target: UploadStatus, actions: list[Any]
    ) -> bool:
        sources = [s.value for s in allowed_sources(target)]
        return self._update(
            upload_id,
            actions,
            UploadItem.upload_id.exists() & UploadItem.upload_status.is_in(*sources),
        )

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
        upload_condition = UploadItem.upload_id.exists() & UploadItem.upload_status.is_in(*sources)
        if expect_updated is not None:
            upload_condition &= UploadItem.updated == expect_updated
        if verifier is not None:
            upload_condition &= UploadItem.verify_owner == verifier
        actions = [UploadItem.upload_status.set(target.value), UploadItem.updated.set(now)]
        if reason is not None:
            actions.append(UploadItem.status_reason.set(reason[:1000]))
        try:
            with _transaction(self.settings) as tw:
                tw.update(UploadItem(upload.upload_id), actions=actions, condition=upload_condition)
                tw.update(
                    FileItem(upload.file_id),
                    actions=[FileItem.active_upload_id.remove(), FileItem.update_date.set(now)],
                    condition=FileItem.active_upload_id == upload.upload_id,
                )
        except TransactWriteError as exc:
            if _lost(exc):
                return False
            raise
        return True

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
        try:
            with _transaction(self.settings) as tw:
                tw.update(UploadItem(upload.upload_id), actions=actions, condition=condition)
                tw.update(
                    FileItem(upload.file_id),
                    actions=file_actions,
                    condition=FileItem.active_upload_id == upload.upload_id,
                )
        except TransactWriteError as exc:
            if _lost(exc):
                return False
            raise
        return True

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
        item = UploadItem(upload_id)
        free = (
            UploadItem.verify_lease_until.does_not_exist()
            | (UploadItem.verify_lease_until < now)
            | (UploadItem.verify_owner == owner)
        )
        try:
            item.update(
                actions=[
                    UploadItem.verify_owner.set(owner),
                    UploadItem.verify_lease_until.set(now + lease_seconds),
                    UploadItem.updated.set(utcnow()),
                ],
                condition=UploadItem.upload_status.is_in(*_VERIFIABLE) & free,
            )
        except UpdateError as exc:
            if _cond_failed(exc):
                return None
            raise
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

        Only while the upload is ``uploaded``, this run holds the lease and the stored offset
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

    def uploads_in_status(
        self, status: UploadStatus, updated_before: datetime
    ) -> Iterator[UploadRecord]:
        """Uploads in ``status`` not updated since ``updated_before``, oldest first (sweeps).

        A query of ``upload_status-index`` reads only the candidates, not the whole table. The
        index is eventually consistent and holds keys only, so every hit is read again and
        yielded only while it still qualifies.
        """
        hits = UploadItem.status_index.query(
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

    # ---- DRS staging -------------------------------------------------------------------

    def claim_staging(self, file_id: str, now: float, timeout: float) -> bool:
        """Become the one staging job for an accepted file.

        Wins when no staging job is marked, or the marked one started more than ``timeout``
        seconds ago (so a crashed job never blocks the file forever).
        """
        try:
            FileItem(file_id).update(
                actions=[FileItem.staging_started.set(now)],
                condition=FileItem.accepted_upload_id.exists()
                & (
                    FileItem.staging_started.does_not_exist()
                    | (FileItem.staging_started < now - timeout)
                ),
            )
        except UpdateError as exc:
            if _cond_failed(exc):
                return False
            raise
        return True

    def mark_staged(self, file_id: str, now: float) -> None:
        """The outbox holds the file: record it and end the staging claim and its progress."""
        FileItem(file_id).update(
            actions=[FileItem.staged_at.set(now), *_STAGING_CLEARED],
            condition=FileItem.file_id.exists(),
        )

    def reset_staging(self, file_id: str) -> None:
        """The outbox copy is gone (cleanup): forget staging so a new request stages again."""
        try:
            FileItem(file_id).update(
                actions=[FileItem.staged_at.remove(), *_STAGING_CLEARED],
                condition=FileItem.file_id.exists(),
            )
        except UpdateError as exc:
            if not _cond_failed(exc):
                raise

    def claim_staging_run(
        self, file_id: str, owner: str, now: float, lease_seconds: float
    ) -> FileRecord | None:
        """Take the lease of the staging job of an accepted file for one job run.

        Wins when no run holds it, its holder let it expire, or ``owner`` holds it. Renews
        the request claim (``staging_started``) too, so that a staging copy that lasts many
        runs is never claimed again by a DRS request. Returns the file with its saved
        staging progress; None when the file is not accepted or a live run holds the lease.
        """
        item = FileItem(file_id)
        free = (
            FileItem.staging_lease_until.does_not_exist()
            | (FileItem.staging_lease_until < now)
            | (FileItem.staging_owner == owner)
        )
        try:
            item.update(
                actions=[
                    FileItem.staging_owner.set(owner),
                    FileItem.staging_lease_until.set(now + lease_seconds),
                    FileItem.staging_started.set(now),
                ],
                condition=FileItem.accepted_upload_id.exists() & free,
            )
        except UpdateError as exc:
            if _cond_failed(exc):
                return None
            raise
        return _file_record(item)

    def save_staging(
        self,
        file_id: str,
        owner: str,
        progress: StagingProgress,
        now: float,
        lease_seconds: float,
    ) -> bool:
        """Checkpoint the staging copy and extend the lease; False when the lease was lost."""
        actions = [
            FileItem.staging_etag.set(progress.source_etag),
            FileItem.staged_bytes.set(progress.copied),
            FileItem.staging_lease_until.set(now + lease_seconds),
            FileItem.staging_started.set(now),
        ]
        if progress.copy_id:
            actions.append(FileItem.staging_copy_id.set(progress.copy_id))
        else:
            actions.append(FileItem.staging_copy_id.remove())
        if progress.started is not None:
            actions.append(FileItem.staging_copy_started.set(progress.started))
        return self._file_update(file_id, actions, FileItem.staging_owner == owner)

    def finish_staging(self, file_id: str, owner: str, now: float) -> bool:
        """The staging run put the copy in the outbox: mark it staged, drop its progress."""
        return self._file_update(
            file_id,
            [FileItem.staged_at.set(now), *_STAGING_CLEARED],
            FileItem.staging_owner == owner,
        )

    def release_staging_run(self, file_id: str, owner: str) -> None:
        """Let the staging lease go at once (the continuation need not wait for it)."""
        self._file_update(
            file_id, [FileItem.staging_lease_until.set(0)], FileItem.staging_owner == owner
        )

    def _file_update(self, file_id: str, actions: list[Any], condition: Any) -> bool:
        try:
            FileItem(file_id).update(actions=actions, condition=condition)
        except UpdateError as exc:
            if _cond_failed(exc):
                return False
            raise
        return True


#: What ending (or forgetting) a staging copy removes from the file item.
_STAGING_CLEARED = [
    FileItem.staging_started.remove(),
    FileItem.staging_copy_id.remove(),
    FileItem.staging_etag.remove(),
    FileItem.staged_bytes.remove(),
    FileItem.staging_copy_started.remove(),
    FileItem.staging_owner.remove(),
    FileItem.staging_lease_until.remove(),
]
