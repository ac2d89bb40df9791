"""Connections to PostgreSQL: one pool per database URL and process, and transactions on it.

Why here and nowhere else: the services must never see psycopg's types, so every statement of
this adapter runs through :func:`run` (or its small helpers), which translates psycopg's
errors into :class:`PostgresError`. The ports' own exceptions (``ConditionLost``,
``AttemptsSpent``, ``JobQueueError``) raised by the work pass through untouched, after the
transaction was rolled back.

Pools are created lazily, on first use, under a lock, and keyed by process id as well as URL:
a pool's worker threads and sockets do not survive ``fork`` (gunicorn workers, the job
worker's children), so a forked child builds its own instead of touching its parent's.
Every connection talks READ COMMITTED in UTC with a statement timeout, and is named ``ucs``
in ``pg_stat_activity``.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from ...config import ConfigError, Settings
from ...ports.state import StoreError

#: Longest any one statement may run (ms): a stuck query fails instead of holding a request.
STATEMENT_TIMEOUT_MS = 30_000
#: Longest a request waits for a free pooled connection (s).
POOL_TIMEOUT_SECONDS = 10.0
#: Connection defaults, used unless the URL sets them itself.
CONNECT_DEFAULTS = {"application_name": "ucs", "connect_timeout": "10"}
#: Attempts of a transaction that PostgreSQL aborted to resolve a deadlock or a
#: serialization conflict (rare under READ COMMITTED; never retried forever).
TRANSACTION_ATTEMPTS = 3

T = TypeVar("T")
Row = dict[str, Any]


class PostgresError(StoreError):
    """The database failed (unreachable, timed out, refused a statement)."""


class UniqueConflict(PostgresError):
    """A unique constraint or index refused a row (the callers turn it into ConditionLost)."""


class Unmatched(Exception):
    """A conditional statement matched no row: the transaction is rolled back (internal)."""


_lock = threading.Lock()
_pools: dict[tuple[int, str], ConnectionPool] = {}


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Per new connection: explicit transactions at READ COMMITTED (whatever the server's
    default isolation is), and rows as dicts (column names, not positions)."""
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    conn.row_factory = dict_row  # type: ignore[assignment]


def _connect_kwargs(url: str) -> dict[str, Any]:
    """Server settings for every session, merged with whatever the URL already says.

    ``options`` from the URL are kept and ours appended, so an operator's own ``-c`` settings
    survive; a statement timeout given there wins (it comes last only when not given).
    """
    given = conninfo_to_dict(url)
    kwargs: dict[str, Any] = {k: v for k, v in CONNECT_DEFAULTS.items() if k not in given}
    own = given.get("options") or ""
    settings = ["-c TimeZone=UTC"]
    if "statement_timeout" not in str(own):
        settings.append(f"-c statement_timeout={STATEMENT_TIMEOUT_MS}")
    kwargs["options"] = " ".join([*settings, str(own)]).strip()
    kwargs["autocommit"] = False
    return kwargs


def pool_for(settings: Settings) -> ConnectionPool:
    """The pool of ``settings.database_url`` in this process, created and opened on first use."""
    url = settings.database_url
    if not url:
        raise ConfigError("the postgres backend needs UCS_DATABASE_URL")
    key = (os.getpid(), url)
    pool = _pools.get(key)
    if pool is not None:
        return pool
    with _lock:
        pool = _pools.get(key)
        if pool is None:
            pool = ConnectionPool(
                url,
                kwargs=_connect_kwargs(url),
                min_size=1,
                max_size=max(1, settings.database_pool_size),
                timeout=POOL_TIMEOUT_SECONDS,
                configure=_configure,
                check=ConnectionPool.check_connection,
                name="ucs",
                open=False,
            )
            # Not waiting: an unreachable database fails the requests that need it (after the
            # pool timeout) instead of the import or the first constructor.
            pool.open(wait=False)
            _pools[key] = pool
    return pool


def close_pools() -> None:
    """Close this process's pools (tests, shutdown); the next use opens new ones.

    Pools inherited from a parent process are only forgotten: closing them would close the
    parent's connections.
    """
    with _lock:
        pid = os.getpid()
        mine = [p for (owner, _), p in _pools.items() if owner == pid]
        _pools.clear()
    for pool in mine:
        pool.close()


def run(pool: ConnectionPool, work: Callable[[psycopg.Connection[Row]], T]) -> T:
    """Run ``work`` in one transaction and commit; roll back when it raises.

    A transaction PostgreSQL aborted as a deadlock victim or for a serialization failure is
    run again (at most :data:`TRANSACTION_ATTEMPTS` times, after a short random pause), so
    work must only depend on what it reads inside. psycopg's errors leave as
    :class:`PostgresError` (a unique violation as :class:`UniqueConflict`); any other
    exception of ``work`` leaves unchanged.
    """
    for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
        try:
            with pool.connection() as conn, conn.transaction():
                return work(conn)  # type: ignore[arg-type]
        except (errors.SerializationFailure, errors.DeadlockDetected) as exc:
            if attempt == TRANSACTION_ATTEMPTS:
                raise PostgresError(f"transaction aborted {attempt} times: {exc}") from exc
            time.sleep(random.uniform(0.005, 0.05) * attempt)
        except errors.UniqueViolation as exc:
            raise UniqueConflict(str(exc)) from exc
        except psycopg.Error as exc:
            raise PostgresError(f"{type(exc).__name__}: {exc}") from exc
    raise AssertionError("unreachable")


def matched(pool: ConnectionPool, query: str, params: Any = None) -> bool:
    """Run one conditional statement in its own transaction: did it match a row?"""
    return run(pool, lambda conn: conn.execute(query, params).rowcount > 0)  # type: ignore[arg-type]


def fetch_one(pool: ConnectionPool, query: str, params: Any = None) -> Row | None:
    """The first row of one statement (its own transaction), or None."""
    return run(pool, lambda conn: conn.execute(query, params).fetchone())  # type: ignore[arg-type]


def fetch_all(pool: ConnectionPool, query: str, params: Any = None) -> list[Row]:
    """Every row of one statement (its own transaction)."""
    return run(pool, lambda conn: conn.execute(query, params).fetchall())  # type: ignore[arg-type]


def require(conn: psycopg.Connection[Row], query: str, params: Any = None) -> Row:
    """Inside a transaction: run a conditional statement that must match; its first row.

    Raises :class:`Unmatched` otherwise, which rolls the whole transaction back (see
    :func:`all_or_nothing`).
    """
    row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    if row is None:
        raise Unmatched
    return row


def all_or_nothing(pool: ConnectionPool, work: Callable[[psycopg.Connection[Row]], Any]) -> bool:
    """Run a multi-statement change: True when committed, False when a :func:`require`d
    statement matched nothing (then nothing was written)."""
    try:
        run(pool, work)
    except Unmatched:
        return False
    return True
