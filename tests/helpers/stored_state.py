"""Write stored state directly, past the ports, for tests of what the services do with
records the API could never produce (tampered progress, a lost segment, a stale claim).

Each function works on the backend of the current configuration (``UCS_STATE_BACKEND``), so
the same test runs on DynamoDB and PostgreSQL; none of this is used by the services.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ucs_lambda.config import Settings, get_settings


@dataclass(frozen=True)
class StoredLease:
    """The validation lease and progress as stored on an upload."""

    verified_bytes: int
    verify_owner: str | None
    verify_lease_until: float | None
    verify_state: bytes | None


#: Upload fields that may be set here (None removes the value).
UPLOAD_FIELDS = ("verify_etag", "verified_bytes", "client_part_md5s")
#: File fields that may be set here.
FILE_FIELDS = ("staging_started",)


def upload(upload_id: str, **fields: Any) -> None:
    """Overwrite stored fields of an upload (``client_part_md5s=None`` forgets them)."""
    unknown = set(fields) - set(UPLOAD_FIELDS)
    assert not unknown, f"not supported here: {unknown}"
    settings = get_settings()
    if settings.state_backend == "postgres":
        _pg_update(settings, "uploads", "upload_id", upload_id, fields)
        return
    from ucs_lambda.adapters.dynamo import Tables, UploadItem

    actions = [
        getattr(UploadItem, name).remove()
        if value is None
        else getattr(UploadItem, name).set(value)
        for name, value in fields.items()
    ]
    Tables.bind(settings).uploads(upload_id).update(actions=actions)


def file(file_id: str, **fields: Any) -> None:
    """Overwrite stored fields of a file."""
    unknown = set(fields) - set(FILE_FIELDS)
    assert not unknown, f"not supported here: {unknown}"
    settings = get_settings()
    if settings.state_backend == "postgres":
        _pg_update(settings, "files", "file_id", file_id, fields)
        return
    from ucs_lambda.adapters.dynamo import FileItem, Tables

    actions = [getattr(FileItem, name).set(value) for name, value in fields.items()]
    Tables.bind(settings).files(file_id).update(actions=actions)


def segment_done(upload_id: str, segment_no: int, etag: str, part_etags: Sequence[str]) -> None:
    """Record segment ``segment_no`` as completed with this ETag and these part ETags."""
    settings = get_settings()
    if settings.state_backend == "postgres":
        from ucs_lambda.adapters.postgres.rows import pack

        _pg_execute(
            settings,
            "INSERT INTO upload_segments (upload_id, segment_no, etag, part_etags)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (upload_id, segment_no)"
            " DO UPDATE SET etag = excluded.etag, part_etags = excluded.part_etags",
            upload_id,
            segment_no,
            etag,
            pack(list(part_etags)) or b"",
        )
        return
    from ucs_lambda.adapters.dynamo import Tables, UploadItem
    from ucs_lambda.adapters.dynamo.records import pack

    value = {"etag": etag, "parts": pack(list(part_etags)) or b""}
    entry = UploadItem.segments_done[str(segment_no)]  # type: ignore[index]
    Tables.bind(settings).uploads(upload_id).update(actions=[entry.set(value)])


def stored_lease(upload_id: str) -> StoredLease:
    settings = get_settings()
    if settings.state_backend == "postgres":
        row = _pg_row(
            settings,
            "SELECT verified_bytes, verify_owner, verify_lease_until, verify_state "
            "FROM uploads WHERE upload_id = %s",
            upload_id,
        )
        return StoredLease(int(row[0] or 0), row[1], row[2], bytes(row[3]) if row[3] else None)
    from ucs_lambda.adapters.dynamo import Tables

    item = Tables.bind(settings).uploads.get(upload_id, consistent_read=True)
    return StoredLease(
        int(item.verified_bytes or 0),
        item.verify_owner,
        item.verify_lease_until,
        item.verify_state,
    )


def queue_raw(body: str) -> None:
    """Queue a job body as it is (also one that is not JSON, which the port cannot send)."""
    settings = get_settings()
    if settings.state_backend == "postgres":
        _pg_execute(settings, "INSERT INTO jobs (body) VALUES (%s)", body)
        return
    from ucs_lambda.bootstrap import services

    queue = services(settings).queue
    queue.client.send_message(QueueUrl=queue.url, MessageBody=body)  # type: ignore[attr-defined]


def job_counts() -> tuple[int, int]:
    """(visible, in flight) jobs of the queue; dead-lettered jobs count as neither."""
    settings = get_settings()
    if settings.state_backend == "postgres":
        row = _pg_row(
            settings,
            "SELECT count(*) FILTER (WHERE available_at <= now()),"
            " count(*) FILTER (WHERE available_at > now()) FROM jobs WHERE state = 'ready'",
        )
        return int(row[0]), int(row[1])
    from ucs_lambda.bootstrap import services

    queue = services(settings).queue
    attrs = queue.client.get_queue_attributes(  # type: ignore[attr-defined]
        QueueUrl=queue.url,  # type: ignore[attr-defined]
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attrs["ApproximateNumberOfMessages"]),
        int(attrs["ApproximateNumberOfMessagesNotVisible"]),
    )


def _pg_update(
    settings: Settings, table: str, key: str, key_value: str, fields: dict[str, Any]
) -> None:
    import psycopg
    from psycopg import sql

    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder()) for name in fields
    )
    statement = sql.SQL("UPDATE {} SET {} WHERE {} = %s").format(
        sql.Identifier(table), assignments, sql.Identifier(key)
    )
    with psycopg.connect(str(settings.database_url), autocommit=True) as conn:
        done = conn.execute(statement, [*fields.values(), key_value])
        assert done.rowcount == 1, f"no {table} row {key_value!r}"


def _pg_execute(settings: Settings, statement: str, *params: Any) -> None:
    import psycopg

    with psycopg.connect(str(settings.database_url), autocommit=True) as conn:
        conn.execute(statement, params)


def _pg_row(settings: Settings, query: str, *params: Any) -> tuple[Any, ...]:
    import psycopg

    with psycopg.connect(str(settings.database_url), autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None, f"no row for {params}"
    return tuple(row)
