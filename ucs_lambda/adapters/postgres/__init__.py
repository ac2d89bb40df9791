"""The PostgreSQL backend (psycopg 3): the state ports and the job queue on one database.

``UCS_STATE_BACKEND=postgres`` with ``UCS_DATABASE_URL``: files, uploads, the validation and
staging leases and the jobs live in PostgreSQL instead of DynamoDB and SQS, with the same
conditions and guarantees (docs/CONTRACTS.md). Modules: ``db`` (pools, transactions, error
translation), ``schema`` (migrations), ``rows`` (records), ``files``, ``uploads``, ``jobs``.
"""

from __future__ import annotations

from ...config import Settings
from ...ports.state import State
from . import schema
from .db import PostgresError, close_pools, pool_for
from .files import PostgresFiles
from .jobs import PostgresJobQueue
from .uploads import PostgresUploads


def postgres_state(settings: Settings) -> State:
    """The state ports on PostgreSQL; all of them share the one pool of the database URL."""
    files = PostgresFiles(settings)
    uploads = PostgresUploads(settings)
    return State(files=files, uploads=uploads, leases=uploads, claims=files)


def migrate(settings: Settings) -> list[str]:
    """Bring the database's schema up to date; the names of the migrations applied now."""
    return schema.migrate(pool_for(settings))


__all__ = [
    "PostgresError",
    "PostgresFiles",
    "PostgresJobQueue",
    "PostgresUploads",
    "close_pools",
    "migrate",
    "pool_for",
    "postgres_state",
]
