"""The local stack (``build/stack.py``) as the tests run it: small parts on moto, real ones on
Ceph RGW; state and jobs in DynamoDB and SQS (moto), or in PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.helpers import buildscripts

stacklib = buildscripts.load("stack")

# Small parts keep multi-part cases cheap on moto (which holds objects in memory and is slow):
# the services and moto's own S3 minimum are lowered together, by configuration only.
E2E_PART_SIZE = 256 * 1024
# New uploads per file and window: above the default (10), for tests and the fuzzer that
# create and cancel uploads of one file repeatedly (tests/e2e/test_hardening.py checks the limit).
E2E_UPLOAD_ATTEMPTS = 30
E2E_ENV = {
    "S3_UPLOAD_PART_MIN_SIZE": str(E2E_PART_SIZE),
    "UCS_PART_SIZE": str(E2E_PART_SIZE),
    "UCS_MIN_PART_SIZE": str(E2E_PART_SIZE),
    "UCS_COPY_PART_SIZE": str(4 * E2E_PART_SIZE),
    # Segments of 4 parts: files of more than 1 MiB are verified and stored while they are
    # sent (the client reports each segment), as a 512 MiB file is with the defaults.
    "UCS_SEGMENT_SIZE": str(4 * E2E_PART_SIZE),
    "UCS_UPLOAD_ATTEMPTS_PER_WINDOW": str(E2E_UPLOAD_ATTEMPTS),
}

# The stack on Ceph RGW (S3 there; DynamoDB and SQS stay on moto). RGW enforces S3's 5 MiB
# minimum part size at CompleteMultipartUpload, so it runs with real 5 MiB parts. Assembled
# copies use 10 MiB copy parts (two upload parts each): the permanent object's multipart ETag
# (other part boundaries) tells an assembly apart from the uploaded segment's. Each launch
# gets its own buckets (the cluster outlives the stack), removed again when the stack stops.
CEPH_PART_SIZE = 5 * 1024 * 1024
CEPH_COPY_PART_SIZE = 10 * 1024 * 1024
CEPH_ENV = {
    "UCS_PART_SIZE": str(CEPH_PART_SIZE),
    "UCS_MIN_PART_SIZE": str(CEPH_PART_SIZE),
    "UCS_COPY_PART_SIZE": str(CEPH_COPY_PART_SIZE),
}
BUCKET_KINDS = ("inbox", "permanent", "outbox")


@contextlib.contextmanager
def launch_on_ceph(
    state_dir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[dict[str, Any]]:
    """Launch the stack with ``--s3 ceph`` on fresh buckets; skip (or fail) without Ceph."""
    from tests.helpers.ceph import require_ceph, s3_client

    cfg = require_ceph()
    prefix = f"e2e-{uuid.uuid4().hex[:10]}"
    buckets = {f"UCS_{kind.upper()}_BUCKET": f"{prefix}-{kind}" for kind in BUCKET_KINDS}
    env = {**CEPH_ENV, **buckets, **(extra_env or {})}
    try:
        with stacklib.launch(state_dir, s3_backend="ceph", extra_env=env) as info:
            yield info
    finally:
        stacklib.remove_buckets(s3_client(cfg), list(buckets.values()))


@contextlib.contextmanager
def launch_on_postgres(
    state_dir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[dict[str, Any]]:
    """Launch the stack with ``--db postgres`` (S3 on moto); skip (fail with ``PG_REQUIRED=1``)
    without a PostgreSQL.

    The server is the tests' (``tests.helpers.postgres``: ``$UCS_TEST_DATABASE_URL``, else the
    one of ``build/pg-up.sh``), handed to the stack as ``STACK_PG_URL`` unless that is set: the
    stack creates a database of its own there (``stack_<hash>``, dropped at the stop). Its
    ``stack.json`` has ``db_backend`` ``postgres`` and the ``database_url`` the services use.
    """
    from tests.helpers.postgres import TEST_DATABASE_URL, require_server

    require_server()
    env = dict(extra_env or {})
    if not os.environ.get("STACK_PG_URL") and TEST_DATABASE_URL:
        env.setdefault("STACK_PG_URL", TEST_DATABASE_URL)
    with stacklib.launch(state_dir, db_backend="postgres", extra_env=env) as info:
        assert info["db_backend"] == "postgres" and info["database_url"], info
        yield info
