"""The database schema as versioned migrations, and applying the missing ones.

Why Python data and not ``.sql`` files: the server is packaged in several ways (Chalice,
wheels, the WSGI image), and a module needs nothing from any of them. A migration, once
released, is never edited: a change is a new entry with the next version.

:func:`migrate` may run in several processes at once (every worker and API process at start,
``admin migrate``): each migration is applied in its own transaction under a transaction-level
advisory lock, and recorded in ``schema_migrations`` in the same transaction, so it is applied
exactly once and a process that waited finds it recorded.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import ConnectionPool

from .db import run

#: ``pg_advisory_xact_lock`` key of the migrations ("ucs-mig" in ASCII).
MIGRATION_LOCK = 0x7563732D6D6967

_CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

_INITIAL = """
CREATE TABLE files (
    file_id text PRIMARY KEY,
    file_name text NOT NULL,
    size bigint NOT NULL,
    md5_checksum text NOT NULL,
    grouping_label text NOT NULL DEFAULT '',
    format text NOT NULL DEFAULT '',
    creation_date timestamptz NOT NULL,
    update_date timestamptz NOT NULL,
    submitters text[] NOT NULL DEFAULT '{}',
    readers text[] NOT NULL DEFAULT '{}',
    -- the per-file upload lock: set while an upload is pending/uploaded/accepted
    active_upload_id text,
    current_upload_id text,
    accepted_upload_id text,
    accepted_at timestamptz,
    staging_started double precision,
    staged_at double precision,
    attempt_window_start bigint,
    attempt_count integer NOT NULL DEFAULT 0,
    sha256_checksum text,
    permanent_etag text,
    staging_copy_id text,
    staging_etag text,
    staged_bytes bigint,
    staging_copy_started double precision,
    staging_owner text,
    staging_lease_until double precision
);

CREATE TABLE uploads (
    upload_id text PRIMARY KEY,
    file_id text NOT NULL REFERENCES files (file_id),
    s3_upload_id text NOT NULL,
    object_key text NOT NULL,
    status text NOT NULL CHECK (
        status IN ('pending', 'cancelled', 'failed', 'uploaded', 'accepted', 'rejected')
    ),
    part_size bigint NOT NULL,
    created timestamptz NOT NULL,
    updated timestamptz NOT NULL,
    client_md5 text,
    -- concatenated 16-byte MD5 digests, one per part (10,000 parts: 160 KB)
    client_part_md5s bytea,
    status_reason text,
    verified_bytes bigint,
    verify_state bytea,
    verify_etag text,
    verify_owner text,
    verify_lease_until double precision,
    copy_upload_id text,
    segment_parts integer,
    copy_group integer
);

-- The specification's rule, kept by the database itself: per file at most one upload in
-- pending/uploaded/accepted (the adapter also keeps files.active_upload_id, like DynamoDB).
CREATE UNIQUE INDEX uploads_one_active_per_file ON uploads (file_id)
    WHERE status IN ('pending', 'uploaded', 'accepted');
CREATE INDEX uploads_status_updated ON uploads (status, updated);
CREATE INDEX uploads_file_created ON uploads (file_id, created);

-- One row per segment: opened (s3_upload_id) and/or completed (etag, part_etags; an empty
-- etag means "parts recorded, S3 completing").
CREATE TABLE upload_segments (
    upload_id text NOT NULL REFERENCES uploads (upload_id) ON DELETE CASCADE,
    segment_no integer NOT NULL CHECK (segment_no >= 1),
    s3_upload_id text,
    etag text,
    part_etags bytea,
    PRIMARY KEY (upload_id, segment_no)
);

CREATE TABLE jobs (
    job_id bigserial PRIMARY KEY,
    body text NOT NULL,
    state text NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'dead')),
    available_at timestamptz NOT NULL DEFAULT now(),
    receive_count integer NOT NULL DEFAULT 0,
    receipt uuid,
    created timestamptz NOT NULL DEFAULT now(),
    last_error text
);
CREATE INDEX jobs_ready ON jobs (available_at, job_id) WHERE state = 'ready';
CREATE UNIQUE INDEX jobs_receipt ON jobs (receipt);
"""

#: Every migration: (version, name, SQL), in order. Append only.
MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "initial", _INITIAL),
]

#: Tables holding the service's data (what tests empty between cases), children first.
DATA_TABLES = ("upload_segments", "uploads", "files", "jobs")


def migrate(pool: ConnectionPool) -> list[str]:
    """Apply the migrations this database lacks, in order; the names of those applied."""
    applied: list[str] = []
    for version, name, sql in MIGRATIONS:

        def apply(conn: Any, version: int = version, name: str = name, sql: str = sql) -> bool:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(_CREATE_MIGRATIONS_TABLE)
            done = conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = %s", (version,)
            ).fetchone()
            if done:
                return False
            conn.execute(sql)
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name)
            )
            return True

        if run(pool, apply):
            applied.append(name)
    return applied


def applied_versions(pool: ConnectionPool) -> list[int]:
    """The versions recorded in ``schema_migrations`` (empty before the first migration)."""

    def read(conn: Any) -> list[int]:
        exists = conn.execute("SELECT to_regclass('schema_migrations') AS t").fetchone()
        if exists is None or exists["t"] is None:
            return []
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        return [int(r["version"]) for r in rows]

    return run(pool, read)
