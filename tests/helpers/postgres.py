"""A PostgreSQL for tests: throw-away databases on the server of ``build/pg-up.sh``.

Which server: ``$UCS_TEST_DATABASE_URL``, else the URL ``build/pg-up.sh`` wrote to
``<repo>/.pg/pg.env``. Each test session creates databases of its own (named after a prefix,
the process id and a random suffix), so parallel sessions and a developer's stack never see
each other's rows; :func:`truncate_all` empties one between tests (much faster than a new
database), keeping ``schema_migrations``. :func:`session_database` is all of it for a
session-scoped fixture.

Without a server, tests that need one fail when ``PG_REQUIRED=1`` (CI) and are skipped
otherwise (a developer machine without ``build/pg-up.sh``).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.helpers import PROJECT_DIR
from ucs_lambda.adapters.postgres import close_pools, migrate
from ucs_lambda.adapters.postgres.schema import DATA_TABLES
from ucs_lambda.config import Settings, get_settings

PG_ENV_FILE = PROJECT_DIR / ".pg" / "pg.env"


def _url_from_env_file() -> str | None:
    try:
        lines = PG_ENV_FILE.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.strip().partition("=")
        if key == "UCS_DATABASE_URL" and value:
            return value
    return None


TEST_DATABASE_URL: str | None = os.environ.get("UCS_TEST_DATABASE_URL") or _url_from_env_file()


def _connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(url, connect_timeout=3, autocommit=True, **kwargs)


def available() -> bool:
    """A server answers at :data:`TEST_DATABASE_URL`."""
    if not TEST_DATABASE_URL:
        return False
    try:
        with _connect(TEST_DATABASE_URL) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


def create_database(prefix: str) -> str:
    """Create an empty database ``<prefix>_<pid>_<random>``; its URL."""
    assert TEST_DATABASE_URL, "no test database server configured"
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}".lower()
    with _connect(TEST_DATABASE_URL) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _with_dbname(TEST_DATABASE_URL, name)


def drop_database(url: str) -> None:
    """Drop a database made by :func:`create_database`, ending its sessions first."""
    assert TEST_DATABASE_URL, "no test database server configured"
    name = conninfo_to_dict(url)["dbname"]
    with _connect(TEST_DATABASE_URL) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def truncate_all(url: str) -> None:
    """Empty every data table (files, uploads, segments, jobs); the schema and its
    ``schema_migrations`` stay."""
    with _connect(url) as conn:
        conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in DATA_TABLES)
            )
        )


def settings_for(url: str, **changes: Any) -> Settings:
    """The environment's settings with the postgres backend on ``url`` (and ``changes``)."""
    return dataclasses.replace(
        get_settings(), state_backend="postgres", database_url=url, **changes
    )


def require_server() -> None:
    """Skip the test (fail it with ``PG_REQUIRED=1``) when no server answers."""
    if available():
        return
    why = f"no PostgreSQL at {TEST_DATABASE_URL or '(none configured)'}; run build/pg-up.sh"
    if os.environ.get("PG_REQUIRED") == "1":
        pytest.fail(f"PG_REQUIRED=1: {why}")
    pytest.skip(why)


@contextmanager
def session_database(prefix: str) -> Iterator[str]:
    """A new, migrated database for the duration of the block (dropped after it)."""
    require_server()
    url = create_database(prefix)
    try:
        migrate(settings_for(url))
        yield url
    finally:
        close_pools()
        drop_database(url)
