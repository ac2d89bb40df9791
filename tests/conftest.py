"""Fixtures shared by the whole suite: the local stacks and the client as users run it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PROJECT_DIR
from tests.helpers.localstack import E2E_ENV, launch_on_ceph, launch_on_postgres, stacklib


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
def pg_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One local stack with state and jobs in PostgreSQL (``--db postgres``; S3 on moto, the
    settings of ``local_stack``) per session, in a database of its own. Its worker runs 4 job
    slots on every machine (the default depends on the cores), as tests of two workers assume.

    Without a PostgreSQL it fails when ``PG_REQUIRED=1`` and is skipped otherwise
    (``tests.helpers.postgres.require_server``).
    """
    state_dir = tmp_path_factory.mktemp("pg-stack")
    env = {**E2E_ENV, "UCS_WORKER_CONCURRENCY": "4"}
    with launch_on_postgres(state_dir, extra_env=env) as info:
        yield {**info, "state_dir": state_dir}


@pytest.fixture(scope="session")
def pg_stack_env(pg_stack: dict[str, Any]) -> dict[str, str]:
    """Environment for processes (admin commands, workers) that act on the PostgreSQL stack."""
    return {**os.environ, **pg_stack["env"]}


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


@pytest.fixture(scope="session")
def ceph_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One local stack with S3 on the Ceph RGW of ``build/ceph-up.sh`` per session."""
    with launch_on_ceph(tmp_path_factory.mktemp("ceph-stack")) as info:
        yield info


@pytest.fixture(scope="session")
def ceph_stack_env(ceph_stack: dict[str, Any]) -> dict[str, str]:
    """Environment for processes (admin commands, boto3) that act on the stack on Ceph."""
    return {**os.environ, **ceph_stack["env"]}
