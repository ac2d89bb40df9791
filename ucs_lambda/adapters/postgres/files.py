"""Registered files and their staging claims in PostgreSQL (ports FileStore + StagingClaims).

Every change is one conditional ``UPDATE ... WHERE <condition>``: its row count says whether
the condition held, exactly where the DynamoDB adapter sends a ``ConditionExpression``
(``adapters/dynamo``), so both backends keep the same contracts (docs/CONTRACTS.md).
"""

from __future__ import annotations

from psycopg_pool import ConnectionPool

from ...config import Settings
from ...domain.models import FileRecord, StagingProgress, utcnow
from ...ports.state import ConditionLost
from .db import fetch_all, fetch_one, matched, pool_for
from .rows import file_record

#: What ending (or forgetting) a staging copy clears on the file row (dynamo's same list).
_STAGING_CLEARED = """
    staging_started = NULL, staging_copy_id = NULL, staging_etag = NULL, staged_bytes = NULL,
    staging_copy_started = NULL, staging_owner = NULL, staging_lease_until = NULL
"""


class PostgresFiles:
    """The ``files`` table: registration, readers, and the DRS staging claim and lease."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def pool(self) -> ConnectionPool:
        """Looked up per use (cheap), so a forked process gets a pool of its own."""
        return pool_for(self.settings)

    # ---- FileStore -----------------------------------------------------------------------

    def get_file(self, file_id: str) -> FileRecord | None:
        row = fetch_one(self.pool, "SELECT * FROM files WHERE file_id = %s", (file_id,))
        return file_record(row) if row is not None else None

    def get_files(self, file_ids: list[str]) -> dict[str, FileRecord]:
        """Many files in one statement (one snapshot); missing ids are absent."""
        unique = list(dict.fromkeys(file_ids))
        if not unique:
            return {}
        rows = fetch_all(self.pool, "SELECT * FROM files WHERE file_id = ANY(%s)", (unique,))
        return {row["file_id"]: file_record(row) for row in rows}

    def register_file(self, record: FileRecord) -> None:
        """Create a file; :class:`ConditionLost` when the id is already taken."""
        created = matched(
            self.pool,
            """
            INSERT INTO files (file_id, file_name, size, md5_checksum, grouping_label, format,
                               creation_date, update_date, submitters, readers)
            VALUES (%(file_id)s, %(file_name)s, %(size)s, %(md5)s, %(grouping_label)s,
                    %(format)s, %(creation_date)s, %(update_date)s,
                    %(submitters)s::text[], %(readers)s::text[])
            ON CONFLICT (file_id) DO NOTHING
            """,
            {
                "file_id": record.file_id,
                "file_name": record.file_name,
                "size": record.size,
                "md5": record.md5_checksum.lower(),
                "grouping_label": record.grouping_label,
                "format": record.format,
                "creation_date": record.creation_date,
                "update_date": record.update_date,
                "submitters": sorted(record.submitters),
                "readers": sorted(record.readers),
            },
        )
        if not created:
            raise ConditionLost(record.file_id)

    def grant_reader(self, file_id: str, user_id: str) -> bool:
        """Add a reader (a set: granting twice keeps one); False when the file is missing."""
        return matched(
            self.pool,
            """
            UPDATE files SET
                readers = CASE WHEN %(user)s::text = ANY(readers) THEN readers
                               ELSE array_append(readers, %(user)s::text) END,
                update_date = %(now)s
            WHERE file_id = %(file_id)s
            """,
            {"user": user_id, "now": utcnow(), "file_id": file_id},
        )

    # ---- StagingClaims -------------------------------------------------------------------

    def claim_staging(self, file_id: str, now: float, timeout: float) -> bool:
        """Become the one staging request for an accepted file (none marked, or the marked
        one started more than ``timeout`` seconds ago, so a crashed job never blocks it)."""
        return matched(
            self.pool,
            """
            UPDATE files SET staging_started = %(now)s
            WHERE file_id = %(file_id)s AND accepted_upload_id IS NOT NULL
              AND (staging_started IS NULL OR staging_started < %(expired)s)
            """,
            {"now": now, "expired": now - timeout, "file_id": file_id},
        )

    def mark_staged(self, file_id: str, now: float) -> None:
        """The outbox holds the file: record it, end the claim and forget the progress.

        A missing file raises :class:`ConditionLost` (DynamoDB's conditional update fails
        there too; the services only call this for a file they just claimed).
        """
        if not matched(
            self.pool,
            "UPDATE files SET staged_at = %(now)s, " + _STAGING_CLEARED + " WHERE file_id = %(id)s",
            {"now": now, "id": file_id},
        ):
            raise ConditionLost(file_id)

    def reset_staging(self, file_id: str) -> None:
        """The outbox copy is gone: forget staging (a missing file is ignored)."""
        matched(
            self.pool,
            "UPDATE files SET staged_at = NULL, " + _STAGING_CLEARED + " WHERE file_id = %s",
            (file_id,),
        )

    def claim_staging_run(
        self, file_id: str, owner: str, now: float, lease_seconds: float
    ) -> FileRecord | None:
        """Take the staging lease of an accepted file for one job run (free, expired, or held
        by ``owner``), renewing the request claim; the file as written, or None."""
        row = fetch_one(
            self.pool,
            """
            UPDATE files SET staging_owner = %(owner)s, staging_lease_until = %(until)s,
                             staging_started = %(now)s
            WHERE file_id = %(file_id)s AND accepted_upload_id IS NOT NULL
              AND (staging_lease_until IS NULL OR staging_lease_until < %(now)s
                   OR staging_owner = %(owner)s)
            RETURNING *
            """,
            {"owner": owner, "until": now + lease_seconds, "now": now, "file_id": file_id},
        )
        return file_record(row) if row is not None else None

    def save_staging(
        self,
        file_id: str,
        owner: str,
        progress: StagingProgress,
        now: float,
        lease_seconds: float,
    ) -> bool:
        """Checkpoint the staging copy and extend the lease; False when the lease was lost.

        ``started`` is kept when the progress does not name one (as in DynamoDB).
        """
        return matched(
            self.pool,
            """
            UPDATE files SET
                staging_etag = %(etag)s, staged_bytes = %(copied)s,
                staging_lease_until = %(until)s, staging_started = %(now)s,
                staging_copy_id = %(copy_id)s,
                staging_copy_started = COALESCE(%(started)s::double precision,
                                                staging_copy_started)
            WHERE file_id = %(file_id)s AND staging_owner = %(owner)s
            """,
            {
                "etag": progress.source_etag,
                "copied": progress.copied,
                "until": now + lease_seconds,
                "now": now,
                "copy_id": progress.copy_id or None,
                "started": progress.started,
                "file_id": file_id,
                "owner": owner,
            },
        )

    def finish_staging(self, file_id: str, owner: str, now: float) -> bool:
        """Mark staged and drop the progress, while ``owner`` holds the lease."""
        return matched(
            self.pool,
            "UPDATE files SET staged_at = %(now)s, "
            + _STAGING_CLEARED
            + " WHERE file_id = %(id)s AND staging_owner = %(owner)s",
            {"now": now, "id": file_id, "owner": owner},
        )

    def release_staging_run(self, file_id: str, owner: str) -> None:
        """Let the staging lease go at once (the continuation need not wait for it)."""
        matched(
            self.pool,
            "UPDATE files SET staging_lease_until = 0 WHERE file_id = %s AND staging_owner = %s",
            (file_id, owner),
        )
