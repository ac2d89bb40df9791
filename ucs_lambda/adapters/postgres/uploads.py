"""Upload attempts, their segments and the validation lease in PostgreSQL (ports UploadStore +
VerificationLeases).

The conditions are the DynamoDB adapter's, one for one (``adapters/dynamo``). A one-row change
is one ``UPDATE ... WHERE <condition>``; a two-row change (create, release, accept) is one
transaction that first updates the *file* row under the file's conditions, so concurrent
requests for one file queue on that row lock, and under READ COMMITTED the waiting ones
re-check the conditions on the winner's row, match nothing and roll back. Every such
transaction locks the file row before the upload row, so they cannot deadlock each other.
The partial unique index ``uploads_one_active_per_file`` refuses a second active upload even
if the lock were bypassed (schema.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import psycopg
from psycopg_pool import ConnectionPool

from ...config import Settings
from ...domain.attempts import AttemptBudget
from ...domain.models import StoredSegment, UploadRecord, UploadStatus, Verification, utcnow
from ...domain.status import allowed_sources
from ...ports.state import AttemptsSpent, ConditionLost
from .db import (
    Row,
    UniqueConflict,
    all_or_nothing,
    fetch_all,
    fetch_one,
    matched,
    pool_for,
    require,
    run,
)
from .rows import SELECT_UPLOADS, pack, upload_record

#: Statuses in which the validation job works on an upload (as in the DynamoDB adapter).
_VERIFIABLE = [UploadStatus.PENDING.value, UploadStatus.UPLOADED.value]
#: Longest stored ``status_reason`` (as in the DynamoDB adapter).
REASON_LIMIT = 1000
#: Candidates the sweeps read per statement.
SWEEP_PAGE = 100
#: Tries of create_upload whose conditions failed for a reason gone when it looked (as dynamo).
_CREATE_TRIES = 2

_TAKE_LOCK = """
UPDATE files SET
    active_upload_id = %(upload_id)s, current_upload_id = %(upload_id)s, update_date = %(now)s,
    attempt_count = CASE WHEN attempt_window_start > %(after)s THEN attempt_count + 1 ELSE 1 END,
    attempt_window_start = CASE WHEN attempt_window_start > %(after)s THEN attempt_window_start
                                ELSE %(window_now)s END
WHERE file_id = %(file_id)s AND active_upload_id IS NULL
  AND (attempt_window_start IS NULL OR attempt_window_start <= %(after)s
       OR attempt_count < %(limit)s)
RETURNING file_id
"""

_INSERT_UPLOAD = """
INSERT INTO uploads (upload_id, file_id, s3_upload_id, object_key, status, part_size,
                     created, updated, segment_parts, copy_group)
VALUES (%(upload_id)s, %(file_id)s, %(s3_upload_id)s, %(object_key)s, %(status)s,
        %(part_size)s, %(now)s, %(now)s, %(segment_parts)s, %(copy_group)s)
ON CONFLICT DO NOTHING
RETURNING upload_id
"""

_INSERT_OPENED = """
INSERT INTO upload_segments (upload_id, segment_no, s3_upload_id)
SELECT %s, n, s FROM unnest(%s::integer[], %s::text[]) AS t(n, s)
"""

_UNLOCK_FILE = """
UPDATE files SET active_upload_id = NULL, update_date = %(now)s
WHERE file_id = %(file_id)s AND active_upload_id = %(upload_id)s
RETURNING file_id
"""

_RELEASE_UPLOAD = """
UPDATE uploads SET status = %(target)s, updated = %(now)s,
                   status_reason = COALESCE(%(reason)s::text, status_reason)
WHERE upload_id = %(upload_id)s AND status = ANY(%(sources)s::text[])
  AND (%(expect_updated)s::timestamptz IS NULL OR updated = %(expect_updated)s::timestamptz)
  AND (%(verifier)s::text IS NULL OR verify_owner = %(verifier)s::text)
RETURNING upload_id
"""

_RECORD_ACCEPTANCE = """
UPDATE files SET accepted_upload_id = %(upload_id)s, accepted_at = %(now)s,
                 update_date = %(now)s,
                 sha256_checksum = COALESCE(%(sha256)s::text, sha256_checksum),
                 permanent_etag = COALESCE(%(permanent_etag)s::text, permanent_etag)
WHERE file_id = %(file_id)s AND active_upload_id = %(upload_id)s
RETURNING file_id
"""

_ACCEPT_UPLOAD = """
UPDATE uploads SET status = 'accepted', updated = %(now)s,
                   status_reason = COALESCE(%(reason)s::text, status_reason)
WHERE upload_id = %(upload_id)s AND status = 'uploaded'
  AND (%(verifier)s::text IS NULL OR verify_owner = %(verifier)s::text)
RETURNING upload_id
"""

# FOR SHARE: a concurrent status change (mark_uploaded) waits until the segment is recorded,
# or this statement waits for it and then finds the upload no longer pending.
_OPEN_SEGMENT = """
WITH u AS (
    SELECT upload_id FROM uploads
    WHERE upload_id = %(upload_id)s AND status = 'pending'
    FOR SHARE
)
INSERT INTO upload_segments (upload_id, segment_no, s3_upload_id)
SELECT upload_id, %(segment_no)s, %(s3_upload_id)s FROM u
ON CONFLICT (upload_id, segment_no) DO UPDATE SET s3_upload_id = EXCLUDED.s3_upload_id
    WHERE upload_segments.s3_upload_id IS NULL
"""

_RECORD_SEGMENT = """
WITH u AS (
    UPDATE uploads SET updated = %(now)s
    WHERE upload_id = %(upload_id)s AND status = 'pending'
    RETURNING upload_id
)
INSERT INTO upload_segments (upload_id, segment_no, etag, part_etags)
SELECT upload_id, %(segment_no)s, %(etag)s, %(parts)s FROM u
ON CONFLICT (upload_id, segment_no) DO UPDATE
    SET etag = EXCLUDED.etag, part_etags = EXCLUDED.part_etags
"""

_SWEEP_PAGE = """
SELECT upload_id, updated FROM uploads
WHERE status = %(status)s AND updated < %(before)s
  AND (%(after_updated)s::timestamptz IS NULL
       OR (updated, upload_id) > (%(after_updated)s::timestamptz, %(after_id)s::text))
ORDER BY updated, upload_id
LIMIT %(limit)s
"""

_CLAIM_VERIFICATION = """
UPDATE uploads SET verify_owner = %(owner)s, verify_lease_until = %(until)s, updated = %(ts)s
WHERE upload_id = %(upload_id)s AND status = ANY(%(verifiable)s::text[])
  AND (verify_lease_until IS NULL OR verify_lease_until < %(now)s
       OR verify_owner = %(owner)s)
RETURNING verified_bytes, verify_state, verify_etag, copy_upload_id
"""

_SAVE_VERIFICATION = """
UPDATE uploads SET verified_bytes = %(offset)s, verify_state = %(state)s,
                   verify_etag = %(etag)s, verify_lease_until = %(until)s, updated = %(ts)s
WHERE upload_id = %(upload_id)s AND verify_owner = %(owner)s
  AND status = ANY(%(verifiable)s::text[])
  AND (verified_bytes = %(previous)s OR (%(never_saved)s AND verified_bytes IS NULL))
"""

_RENEW_VERIFICATION = """
UPDATE uploads SET verify_lease_until = %(until)s, updated = %(ts)s
WHERE upload_id = %(upload_id)s AND verify_owner = %(owner)s
  AND status = ANY(%(verifiable)s::text[])
"""

_SAVE_COPY_UPLOAD = """
UPDATE uploads SET copy_upload_id = %(copy_upload_id)s
WHERE upload_id = %(upload_id)s AND verify_owner = %(owner)s
  AND status = ANY(%(verifiable)s::text[])
"""


def _reason(reason: str | None) -> str | None:
    return reason[:REASON_LIMIT] if reason is not None else None


class PostgresUploads:
    """The ``uploads`` and ``upload_segments`` tables, and the file lock they share."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def pool(self) -> ConnectionPool:
        """Looked up per use (cheap), so a forked process gets a pool of its own."""
        return pool_for(self.settings)

    # ---- reads ---------------------------------------------------------------------------

    def get_upload(self, upload_id: str) -> UploadRecord | None:
        row = fetch_one(self.pool, SELECT_UPLOADS + " WHERE u.upload_id = %s", (upload_id,))
        return upload_record(row) if row is not None else None

    def get_uploads(self, upload_ids: list[str]) -> dict[str, UploadRecord]:
        """Many uploads in one statement (one snapshot); missing ids are absent."""
        unique = list(dict.fromkeys(upload_ids))
        if not unique:
            return {}
        rows = fetch_all(self.pool, SELECT_UPLOADS + " WHERE u.upload_id = ANY(%s)", (unique,))
        return {row["upload_id"]: upload_record(row) for row in rows}

    def uploads_for_file(self, file_id: str) -> list[UploadRecord]:
        """Every attempt for a file, oldest first (read consistently, unlike dynamo's GSI)."""
        rows = fetch_all(
            self.pool,
            SELECT_UPLOADS + " WHERE u.file_id = %s ORDER BY u.created, u.upload_id",
            (file_id,),
        )
        return [upload_record(row) for row in rows]

    def uploads_in_status(
        self, status: UploadStatus, updated_before: datetime
    ) -> Iterator[UploadRecord]:
        """Uploads in ``status`` not updated since ``updated_before``, oldest first (sweeps).

        Candidates are read a page at a time (no connection is held while the caller works
        on one) and each is read again just before it is yielded, and yielded only if it
        still qualifies, as in the DynamoDB adapter.
        """
        after: tuple[datetime, str] | None = None
        while True:
            page = fetch_all(
                self.pool,
                _SWEEP_PAGE,
                {
                    "status": status.value,
                    "before": updated_before,
                    "after_updated": after[0] if after else None,
                    "after_id": after[1] if after else None,
                    "limit": SWEEP_PAGE,
                },
            )
            for hit in page:
                upload = self.get_upload(hit["upload_id"])
                if (
                    upload is not None
                    and upload.upload_status is status
                    and upload.updated < updated_before
                ):
                    yield upload
            if len(page) < SWEEP_PAGE:
                return
            after = (page[-1]["updated"], page[-1]["upload_id"])

    # ---- the lock and the status changes -------------------------------------------------

    def create_upload(self, upload: UploadRecord, budget: AttemptBudget) -> None:
        """Take the file's lock, count the attempt and store the pending upload: one
        transaction (see the protocol for the conditions).

        The file row's ``UPDATE`` decides lock and window in one statement (counted into a
        running window with room, or opening a new one). When it matches nothing, the file
        is read in the same transaction only to name the reason: gone or locked ->
        :class:`ConditionLost`, window spent -> :class:`AttemptsSpent`. A reason already gone
        when looked at (the lock was released meanwhile) is tried once more, like dynamo's.
        A taken upload id, or an active upload the unique index knows of -> ConditionLost.
        """
        params = {
            "upload_id": upload.upload_id,
            "file_id": upload.file_id,
            "s3_upload_id": upload.s3_upload_id,
            "object_key": upload.object_key,
            "status": upload.upload_status.value,
            "part_size": upload.part_size,
            "now": upload.created,
            "segment_parts": upload.segment_parts,
            "copy_group": upload.copy_group,
            "after": budget.current_after,
            "window_now": budget.now,
            "limit": budget.limit,
        }
        opened = sorted(upload.segment_uploads.items())

        def attempt(conn: psycopg.Connection[Row]) -> bool:
            if conn.execute(_TAKE_LOCK, params).fetchone() is None:
                file = conn.execute(
                    "SELECT active_upload_id, attempt_window_start, attempt_count"
                    " FROM files WHERE file_id = %s",
                    (upload.file_id,),
                ).fetchone()
                if file is None or file["active_upload_id"]:
                    raise ConditionLost(upload.upload_id)
                start = file["attempt_window_start"]
                start = int(start) if start is not None else None
                if budget.spent(start, int(file["attempt_count"] or 0)):
                    raise AttemptsSpent(start)
                return False  # changed since the UPDATE looked: try again
            if conn.execute(_INSERT_UPLOAD, params).fetchone() is None:
                raise ConditionLost(upload.upload_id)  # rolls the file's lock back
            if opened:
                conn.execute(
                    _INSERT_OPENED,
                    (upload.upload_id, [n for n, _ in opened], [s for _, s in opened]),
                )
            return True

        for _ in range(_CREATE_TRIES):
            try:
                if run(self.pool, attempt):
                    return
            except UniqueConflict:
                raise ConditionLost(upload.upload_id) from None
        raise ConditionLost(upload.upload_id)

    def mark_uploaded(
        self, upload_id: str, client_md5: str | None, client_part_md5s: list[str]
    ) -> bool:
        """pending -> uploaded (the lock stays); False when the upload is not pending.

        The client's MD5s are stored only when given (a retried request without them keeps
        what an earlier one stored), as in dynamo.
        """
        return matched(
            self.pool,
            """
            UPDATE uploads SET status = 'uploaded', updated = %(now)s,
                client_md5 = COALESCE(%(md5)s::text, client_md5),
                client_part_md5s = COALESCE(%(part_md5s)s::bytea, client_part_md5s)
            WHERE upload_id = %(upload_id)s AND status = ANY(%(sources)s::text[])
            """,
            {
                "now": utcnow(),
                "md5": client_md5.lower() if client_md5 else None,
                "part_md5s": pack(client_part_md5s),
                "upload_id": upload_id,
                "sources": [s.value for s in allowed_sources(UploadStatus.UPLOADED)],
            },
        )

    def open_segment(self, upload_id: str, segment_no: int, s3_upload_id: str) -> bool:
        """Record a new segment's multipart upload; False when the segment has one already
        (a concurrent request opened it: use that one) or the upload is not pending."""
        return matched(
            self.pool,
            _OPEN_SEGMENT,
            {"upload_id": upload_id, "segment_no": segment_no, "s3_upload_id": s3_upload_id},
        )

    def record_segment(self, upload_id: str, segment_no: int, done: StoredSegment) -> bool:
        """Record a completed segment (again: overwritten, so idempotent) and touch the
        upload's ``updated``; False when the upload is not pending."""
        return matched(
            self.pool,
            _RECORD_SEGMENT,
            {
                "now": utcnow(),
                "upload_id": upload_id,
                "segment_no": segment_no,
                "etag": done.etag,
                "parts": pack(list(done.part_etags)) or b"",
            },
        )

    def release(
        self,
        upload: UploadRecord,
        target: UploadStatus,
        reason: str | None = None,
        expect_updated: datetime | None = None,
        verifier: str | None = None,
    ) -> bool:
        """Move an upload to cancelled/failed/rejected and release the file's lock: one
        transaction. Conditions: this upload holds the lock, its status may reach ``target``,
        it is unchanged since ``expect_updated`` and ``verifier`` holds the lease (each if
        given). False when one did not hold (nothing was written)."""
        params = {
            "now": utcnow(),
            "file_id": upload.file_id,
            "upload_id": upload.upload_id,
            "target": target.value,
            "reason": _reason(reason),
            "sources": [s.value for s in allowed_sources(target)],
            "expect_updated": expect_updated,
            "verifier": verifier,
        }

        def change(conn: psycopg.Connection[Row]) -> None:
            require(conn, _UNLOCK_FILE, params)
            require(conn, _RELEASE_UPLOAD, params)

        return all_or_nothing(self.pool, change)

    def accept(
        self,
        upload: UploadRecord,
        reason: str | None = None,
        sha256: str | None = None,
        verifier: str | None = None,
        permanent_etag: str | None = None,
    ) -> bool:
        """uploaded -> accepted, and the file records the acceptance (SHA-256 and permanent
        ETag when given), in one transaction; the lock stays for good. Conditions: the
        upload is uploaded and holds the lock, ``verifier`` (if given) holds the lease."""
        params = {
            "now": utcnow(),
            "file_id": upload.file_id,
            "upload_id": upload.upload_id,
            "reason": _reason(reason),
            "sha256": sha256,
            "permanent_etag": permanent_etag or None,
            "verifier": verifier,
        }

        def change(conn: psycopg.Connection[Row]) -> None:
            require(conn, _RECORD_ACCEPTANCE, params)
            require(conn, _ACCEPT_UPLOAD, params)

        return all_or_nothing(self.pool, change)

    # ---- VerificationLeases --------------------------------------------------------------

    def claim_verification(
        self, upload_id: str, owner: str, now: float, lease_seconds: float
    ) -> Verification | None:
        """Take the lease of a pending or uploaded upload (free, expired, or held by
        ``owner``) and return the saved progress, read in the same statement; else None."""
        row = fetch_one(
            self.pool,
            _CLAIM_VERIFICATION,
            {
                "owner": owner,
                "until": now + lease_seconds,
                "ts": utcnow(),
                "upload_id": upload_id,
                "verifiable": _VERIFIABLE,
                "now": now,
            },
        )
        if row is None:
            return None
        state = row["verify_state"]
        return Verification(
            owner=owner,
            offset=int(row["verified_bytes"] or 0),
            state=bytes(state) if state is not None else None,
            etag=row["verify_etag"],
            copy_upload_id=row["copy_upload_id"],
        )

    def save_verification(
        self,
        progress: Verification,
        upload_id: str,
        previous_offset: int,
        now: float,
        lease_seconds: float,
    ) -> bool:
        """Checkpoint hash state and offset and extend the lease, while the upload is
        pending/uploaded, ``progress.owner`` holds the lease and the stored offset is still
        ``previous_offset`` (0 also matches "never saved")."""
        return matched(
            self.pool,
            _SAVE_VERIFICATION,
            {
                "offset": progress.offset,
                "state": progress.state,
                "etag": progress.etag,
                "until": now + lease_seconds,
                "ts": utcnow(),
                "upload_id": upload_id,
                "owner": progress.owner,
                "verifiable": _VERIFIABLE,
                "previous": previous_offset,
                "never_saved": previous_offset == 0,
            },
        )

    def renew_verification(
        self, upload_id: str, owner: str, now: float, lease_seconds: float
    ) -> bool:
        """Extend the lease (work that is not hashing, e.g. the accept copy); False if lost."""
        return matched(
            self.pool,
            _RENEW_VERIFICATION,
            {
                "until": now + lease_seconds,
                "ts": utcnow(),
                "upload_id": upload_id,
                "owner": owner,
                "verifiable": _VERIFIABLE,
            },
        )

    def save_copy_upload(self, upload_id: str, owner: str, copy_upload_id: str | None) -> bool:
        """Remember (or forget, with None) the multipart upload of the permanent copy."""
        return matched(
            self.pool,
            _SAVE_COPY_UPLOAD,
            {
                "copy_upload_id": copy_upload_id,
                "upload_id": upload_id,
                "owner": owner,
                "verifiable": _VERIFIABLE,
            },
        )

    def release_verification(self, upload_id: str, owner: str) -> None:
        """Let the lease go at once, in any status (the next run need not wait for it)."""
        matched(
            self.pool,
            "UPDATE uploads SET verify_lease_until = 0 WHERE upload_id = %s AND verify_owner = %s",
            (upload_id, owner),
        )
