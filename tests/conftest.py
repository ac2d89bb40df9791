"""Fixtures shared by the whole suite: the local stack and the client as users run it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "build"))

import stack as stacklib  # noqa: E402

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


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One local stack (moto S3/SQS, single-threaded moto DynamoDB, Chalice, worker) per session."""
    state_dir = tmp_path_factory.mktemp("stack")
    with stacklib.launch(state_dir, extra_env=E2E_ENV) as info:
        yield info


@pytest.fixture(scope="session")
def stack_env(local_stack: dict[str, Any]) -> dict[str, str]:
    """Environment for processes (admin commands, boto3) that act on the local stack."""
    return {**os.environ, **local_stack["env"]}


@pytest.fixture(scope="session")
def ghga_cli() -> list[str]:
    """The installed console script, as a user would run it."""
    script = shutil.which("ghga-cli", path=str(Path(sys.executable).parent))
    assert script, "ghga-cli console script is not installed in the test environment"
    return [script]


@pytest.fixture(scope="session")
def ghga_pyz(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The shiv zipapp, built from this checkout, run with its own extraction root."""
    out = tmp_path_factory.mktemp("pyz")
    pyz = out / "ghga-cli.pyz"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "shiv",
            "--quiet",
            "-c",
            "ghga-cli",
            "-o",
            str(pyz),
            str(PROJECT_DIR),
        ],
        check=True,
        capture_output=True,
    )
    # Run from outside the checkout, extracting into a directory of the test's own.
    return ["env", f"SHIV_ROOT={out / 'shiv-root'}", sys.executable, str(pyz)]


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
    from tests.ceph_support import require_ceph, s3_client

    cfg = require_ceph()
    prefix = f"e2e-{uuid.uuid4().hex[:10]}"
    buckets = {f"UCS_{kind.upper()}_BUCKET": f"{prefix}-{kind}" for kind in BUCKET_KINDS}
    env = {**CEPH_ENV, **buckets, **(extra_env or {})}
    try:
        with stacklib.launch(state_dir, s3_backend="ceph", extra_env=env) as info:
            yield info
    finally:
        stacklib.remove_buckets(s3_client(cfg), list(buckets.values()))


@pytest.fixture(scope="session")
def ceph_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One local stack with S3 on the Ceph RGW of ``build/ceph-up.sh`` per session."""
    with launch_on_ceph(tmp_path_factory.mktemp("ceph-stack")) as info:
        yield info


@pytest.fixture(scope="session")
def ceph_stack_env(ceph_stack: dict[str, Any]) -> dict[str, str]:
    """Environment for processes (admin commands, boto3) that act on the stack on Ceph."""
    return {**os.environ, **ceph_stack["env"]}
