"""What the fault matrix, the crash series and the load run share: running the client on the
local stack and judging how a run ended.

The judgement is the same everywhere: a run ends either with a verified result (upload:
``accepted`` and the permanent object byte-identical to the local file; download: the file at
its final name byte-identical, no working file left) or with a clear error (a known exit code, one
``ghga-cli: error:`` line, no traceback) that leaves a resumable state, proven by a rerun
without faults that ends verified. A file at the final name is never incomplete.

Stored bytes are read with boto3 and DynamoDB directly, never through the client under test.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import boto3

from tests.helpers import invariants
from tests.helpers.cli import archived_file, download_args, run_cli, summary_of, upload_args
from tests.helpers.faultproxy import FaultProxy
from tests.helpers.support import stored_bytes
from tests.helpers.ucs import staged

#: Exit codes a faulted run may end with: integrity (5), network after retries (6), timeout (7).
#: Usage (2), auth (3) and conflict (4) would mean the client misread a transient fault.
FAULT_EXIT_CODES = (5, 6, 7)
ACTIVE = ("pending", "uploaded", "accepted")


class Outcome(str):
    """``"ok"`` (verified at once) or ``"recovered"`` (clear error, rerun verified)."""


def write_source(directory: Path, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"src-{uuid.uuid4().hex[:8]}.bin"
    path.write_bytes(data)
    return path


def archive(
    cli: list[str],
    stack: dict[str, Any],
    stack_env: dict[str, str],
    user: dict[str, str],
    data: bytes,
) -> str:
    """Register, upload (no faults), grant and stage a file; return its id."""
    file_id = archived_file(cli, stack, stack_env, user, data, prefix="arc")
    staged(stack, user["token"], file_id)
    return file_id


# --------------------------------------------------------------------------------------------
# Judging a run
# --------------------------------------------------------------------------------------------


def assert_clear_error(result: subprocess.CompletedProcess) -> None:
    assert result.returncode in FAULT_EXIT_CODES, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "ghga-cli: error:" in result.stderr, result.stderr[-2000:]
    assert summary_of(result)["status"] == "error"


def uploads_of(stack: dict[str, Any], file_id: str) -> list[dict[str, str]]:
    """The upload items of a file (status, created, id) straight from DynamoDB."""
    env = stack["env"]
    client = boto3.client(
        "dynamodb",
        endpoint_url=stack["dynamodb_endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    table = env.get("UCS_UPLOADS_TABLE", "ghga-uploads")
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": table,
        "IndexName": "file_id-index",
        "KeyConditionExpression": "file_id = :f",
        "ExpressionAttributeValues": {":f": {"S": file_id}},
    }
    while True:
        page = client.query(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return [
        {
            "upload_id": i["upload_id"]["S"],
            "upload_status": i["upload_status"]["S"],
            "created": i["created"]["S"],
        }
        for i in items
    ]


def invariant_violations(stack: dict[str, Any], file_id: str) -> list[str]:
    """The per-file upload rules (:mod:`tests.helpers.invariants`), checked when the file's
    scenario has settled."""
    state = invariants.read_file_state(stack, file_id)
    return list(invariants.violations(*state))


def active_upload_violations(stack: dict[str, Any], file_id: str) -> list[str]:
    """Minimal check, safe while transfers run (one query reads all uploads of the file): at
    most one upload pending/uploaded/accepted, none created after the accepted one."""
    uploads = uploads_of(stack, file_id)
    problems = []
    active = [u for u in uploads if u["upload_status"] in ACTIVE]
    if len(active) > 1:
        problems.append(f"{file_id}: {len(active)} active uploads {active}")
    accepted = [u for u in uploads if u["upload_status"] == "accepted"]
    for done in accepted:
        later = [u for u in uploads if u["created"] > done["created"]]
        if later:
            problems.append(f"{file_id}: uploads created after the accepted one: {later}")
    return problems


def judge_upload(
    cli: list[str],
    stack: dict[str, Any],
    token: str,
    file_id: str,
    source: Path,
    result: subprocess.CompletedProcess,
    *,
    killed: bool = False,
) -> Outcome:
    """Check a (possibly faulted or killed) upload run, rerun it without faults if it did not
    finish, and check the rerun. Returns ``ok`` or ``recovered``."""
    data = source.read_bytes()
    assert not invariant_violations(stack, file_id), invariant_violations(stack, file_id)
    if result.returncode == 0:
        summary = summary_of(result)
        assert summary["status"] == "accepted", summary
        assert stored_bytes(stack, file_id) == data
        return Outcome("ok")
    if not killed:
        assert_clear_error(result)
        statuses = {u["upload_status"] for u in uploads_of(stack, file_id)}
        # Resumable: the upload is still pending or uploaded (never lost to a transient fault).
        assert statuses & {"pending", "uploaded"}, statuses
    with FaultProxy() as proxy:
        rerun = run_cli(cli, upload_args(stack, file_id, source), token=token, proxy=proxy)
    if killed and rerun.returncode == 4 and "already uploaded and accepted" in rerun.stderr:
        # Killed after the UCS took the PATCH: the upload went on to acceptance without the
        # client. The documented answer to uploading an accepted file is exit 4 (conflict,
        # "nothing to do"); what counts is that the stored bytes are this file's.
        assert stored_bytes(stack, file_id) == data
        assert not invariant_violations(stack, file_id), invariant_violations(stack, file_id)
        return Outcome("recovered")
    assert rerun.returncode == 0, (rerun.returncode, rerun.stderr[-3000:])
    assert summary_of(rerun)["status"] == "accepted"
    assert stored_bytes(stack, file_id) == data
    assert not invariant_violations(stack, file_id), invariant_violations(stack, file_id)
    return Outcome("recovered")


def _leftovers(out: Path, name: str) -> list[str]:
    """Files next to the download other than ``name``: none may remain, except an *empty*
    working directory (a kill between the final rename and its removal leaves it)."""
    return sorted(
        p.name
        for p in out.iterdir()
        if p.name != name and not (p.name == ".ghga-cli" and not any(p.iterdir()))
    )


def judge_download(
    cli: list[str],
    stack: dict[str, Any],
    token: str,
    file_id: str,
    out: Path,
    data: bytes,
    result: subprocess.CompletedProcess,
    *,
    killed: bool = False,
) -> Outcome:
    """Check a (possibly faulted or killed) download run; rerun without faults if needed."""
    target = out / f"{file_id}.bin"
    if target.exists():
        # Whatever happened, a file at the final name is complete and right.
        assert target.read_bytes() == data, "a wrong or incomplete file is at the final name"
    if result.returncode == 0:
        assert target.exists()
        assert _leftovers(out, target.name) == [], _leftovers(out, target.name)
        return Outcome("ok")
    if not killed:
        assert_clear_error(result)
        assert not target.exists()
    if target.exists():
        # Killed after the rename: the download is complete; only leftovers may remain.
        assert _leftovers(out, target.name) == [], _leftovers(out, target.name)
        return Outcome("recovered")
    with FaultProxy() as proxy:
        rerun = run_cli(cli, download_args(stack, file_id, out), token=token, proxy=proxy)
    assert rerun.returncode == 0, (rerun.returncode, rerun.stderr[-3000:])
    assert target.read_bytes() == data
    assert _leftovers(out, target.name) == [], _leftovers(out, target.name)
    return Outcome("recovered")
