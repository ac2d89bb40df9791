"""The operator's side of a stack: ``python -m ucs_lambda.admin`` run with the stack's
environment, users with tokens, registered files."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from tests.helpers import PROJECT_DIR


def admin(
    stack_env: dict[str, str], *args: str, timeout: float | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m ucs_lambda.admin <args>`` on the stack; the finished process, whatever
    its exit status (for tests of refusals)."""
    return subprocess.run(
        [sys.executable, "-m", "ucs_lambda.admin", *args],
        cwd=PROJECT_DIR,
        env=stack_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_admin(stack_env: dict[str, str], *args: str, timeout: float | None = None) -> str:
    """Run ``python -m ucs_lambda.admin <args>`` on the stack; its stdout (it must succeed)."""
    result = admin(stack_env, *args, timeout=timeout)
    assert result.returncode == 0, result.stderr or result.stdout
    return result.stdout.strip()


def new_user(
    stack_env: dict[str, str], prefix: str = "e2e", ttl: int | str | None = None
) -> dict[str, str]:
    """A fresh user ``<prefix>-<8 hex>`` and a token for it (``ttl`` seconds if given):
    ``{"user": ..., "token": ...}``."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ttl_args = ("--ttl", str(ttl)) if ttl is not None else ()
    return {"user": name, "token": run_admin(stack_env, "mint-token", "--user", name, *ttl_args)}


def register_file(
    stack_env: dict[str, str],
    submitter: str,
    content: bytes | Path = b"",
    *,
    size: int | None = None,
    md5: str | None = None,
    name: str | None = None,
    prefix: str = "e2e",
    readers: Sequence[str] = (),
) -> str:
    """Register a new file ``<prefix>-<12 hex>`` that ``submitter`` may upload; its id.

    ``content`` is the file's bytes, or a path: then its bytes (none if it is not a file) and
    its name are registered. ``size`` and ``md5`` replace what ``content`` gives (a file whose
    upload must not match); the name is ``<id>.bin`` unless given.
    """
    if isinstance(content, Path):
        name = name or content.name
        content = content.read_bytes() if content.is_file() else b""
    file_id = f"{prefix}-{uuid.uuid4().hex[:12]}"
    args = [
        "register-file",
        "--file-id",
        file_id,
        "--file-name",
        name or f"{file_id}.bin",
        "--size",
        str(len(content) if size is None else size),
        "--md5",
        md5 or hashlib.md5(content).hexdigest(),
        "--submitter",
        submitter,
    ]
    for reader in readers:
        args += ["--reader", reader]
    run_admin(stack_env, *args)
    return file_id


def grant(stack_env: dict[str, str], file_id: str, user: str) -> None:
    """Let ``user`` download ``file_id``."""
    run_admin(stack_env, "grant", "--file-id", file_id, "--user", user)
