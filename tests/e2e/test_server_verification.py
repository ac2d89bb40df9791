"""The server's read-back verification on the local stack (issue 10, issue 15 item 1).

A stack of its own runs the validation in small pieces (1 MiB ranges, 4 MiB per invocation,
a checkpoint every 0.2 s, a 3 s lease) and with the removed ``UCS_VALIDATE_READ_MAX`` set as
when the bug was found, so that "large" objects are a few MiB: the attack of issue 10 (other
bytes of the registered size, no or lying checksums) ends ``rejected``; a worker SIGKILLed in
the middle of a validation is restarted and the upload still ends ``accepted``, continued from
its last checkpoint; concurrent duplicate runs give one verdict; a cancel in the middle wins.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.admin import new_user, register_file, run_admin
from tests.helpers.cli import download, summary_of, upload
from tests.helpers.invariants import check_files
from tests.helpers.jobs import run_jobs_in_parallel, send_jobs
from tests.helpers.localstack import E2E_ENV, E2E_PART_SIZE, stacklib
from tests.helpers.support import (
    PROJECT_DIR,
    assert_nothing_stored,
    call,
    s3_client,
    stored_bytes,
)
from tests.helpers.ucs import put_part, staged, wait_for

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
VERIFY_ENV = {
    **E2E_ENV,
    "UCS_VALIDATE_RANGE_SIZE": str(1 * MiB),
    "UCS_VALIDATE_BUDGET_BYTES": str(4 * MiB),
    "UCS_VALIDATE_CHECKPOINT_SECONDS": "0.2",
    "UCS_VALIDATE_LEASE_SECONDS": "3",
    "UCS_REVALIDATE_SECONDS": "3",
    "UCS_WORKER_SWEEP_SECONDS": "1",
    "UCS_VALIDATE_READ_MAX": str(1 * MiB),  # gone: must change nothing
}
#: Slower still, so that a validation lasts long enough to be watched, killed or cancelled.
SLOW = {"UCS_VALIDATE_RANGE_SIZE": str(64 * 1024), "UCS_VALIDATE_CONCURRENCY": "1"}


@pytest.fixture(scope="module")
def vstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state_dir = tmp_path_factory.mktemp("verify-stack")
    with stacklib.launch(state_dir, extra_env=VERIFY_ENV) as info:
        yield {**info, "state_dir": state_dir, "full_env": {**os.environ, **info["env"]}}


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state_dir = tmp_path_factory.mktemp("slow-verify-stack")
    with stacklib.launch(state_dir, extra_env={**VERIFY_ENV, **SLOW}) as info:
        yield {**info, "state_dir": state_dir, "full_env": {**os.environ, **info["env"]}}


def plain_upload(
    stack: dict[str, Any], user: dict[str, str], file_id: str, data: bytes, checksums: Any
) -> str:
    """What any HTTP client of ucs.yaml does: create, PUT parts, PATCH uploaded."""
    token, ucs = user["token"], stack["ucs_url"]
    status, created = call("POST", f"{ucs}/uploads", token, {"file_id": file_id})
    assert status == 200, created
    upload_id, part_size = created["upload_id"], created["part_size"]
    assert created["server_verifies"] is True and created["verified_bytes"] == 0
    for n, start in enumerate(range(0, len(data), part_size), 1):
        put_part(stack, token, upload_id, n, data[start : start + part_size])
    body: dict[str, Any] = {"upload_status": "uploaded"}
    if checksums is not None:
        body["checksums"] = checksums
    status, answer = call("PATCH", f"{ucs}/uploads/{upload_id}", token, body)
    assert status == 204, answer
    return str(upload_id)


def part_md5s(data: bytes, part_size: int = E2E_PART_SIZE) -> list[str]:
    return [
        hashlib.md5(data[i : i + part_size]).hexdigest() for i in range(0, len(data), part_size)
    ]


def details(stack: dict[str, Any], token: str, upload_id: str) -> dict[str, Any]:
    status, body = call("GET", f"{stack['ucs_url']}/uploads/{upload_id}", token)
    assert status == 200, body
    return dict(body)


def settled(stack: dict[str, Any], token: str, upload_id: str, timeout: float = 90) -> dict:
    return dict(
        wait_for(
            lambda: (d := details(stack, token, upload_id))["upload_status"] != "uploaded" and d,
            f"upload {upload_id} to be decided",
            timeout,
        )
    )


@pytest.mark.parametrize("evidence", ["none", "honest-parts-lying-md5"])
@pytest.mark.parametrize("size", [E2E_PART_SIZE - 1, 6 * MiB], ids=["one-part", "6MiB"])
def test_other_bytes_of_the_registered_size_are_rejected(
    vstack: dict[str, Any], evidence: str, size: int
) -> None:
    """The attack of issue 10, over plain HTTP: rejected with both MD5s, and the file can
    still be uploaded afterwards (it used to be ``accepted`` and locked for good)."""
    user = new_user(vstack["full_env"], "verify")
    registered = os.urandom(size)
    wrong = os.urandom(size)
    file_id = register_file(vstack["full_env"], user["user"], registered)
    checksums = None
    if evidence != "none":
        checksums = {"md5": hashlib.md5(registered).hexdigest(), "part_md5s": part_md5s(wrong)}
    upload_id = plain_upload(vstack, user, file_id, wrong, checksums)
    decided = settled(vstack, user["token"], upload_id)
    assert decided["upload_status"] == "rejected", decided
    reason = decided["status_reason"]
    assert hashlib.md5(wrong).hexdigest() in reason, reason
    assert hashlib.md5(registered).hexdigest() in reason, reason
    assert decided["verified_bytes"] == size
    assert_nothing_stored(vstack, file_id)
    check_files(vstack, [file_id])
    # The right bytes afterwards: accepted, and the SHA-256 is what DRS hands out.
    upload_id = plain_upload(vstack, user, file_id, registered, None)
    assert settled(vstack, user["token"], upload_id)["upload_status"] == "accepted"
    assert stored_bytes(vstack, file_id) == registered
    run_admin(vstack["full_env"], "grant", "--file-id", file_id, "--user", user["user"])
    staged(vstack, user["token"], file_id)
    status, obj = call("GET", f"{vstack['drs_url']}/objects/{file_id}", user["token"])
    assert status == 200 and obj["checksums"] == [
        {"type": "md5", "checksum": hashlib.md5(registered).hexdigest()},
        {"type": "sha-256", "checksum": hashlib.sha256(registered).hexdigest()},
    ]
    check_files(vstack, [file_id])


def test_ghga_cli_round_trip_over_many_validation_jobs(
    ghga_cli: list[str], vstack: dict[str, Any], tmp_path: Path
) -> None:
    user = new_user(vstack["full_env"], "verify")
    data = os.urandom(13 * MiB + 5)  # 4 validation jobs of 4 MiB
    source = tmp_path / "data.bin"
    source.write_bytes(data)
    file_id = register_file(vstack["full_env"], user["user"], data)
    result = upload(ghga_cli, vstack, user["token"], file_id, source, "--json")
    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert summary["status"] == "accepted"
    body = details(vstack, user["token"], summary["upload_id"])
    assert (body["upload_status"], body["verified_bytes"]) == ("accepted", len(data))
    log = Path(vstack["log_dir"], "worker.log").read_text(errors="replace")
    # The client reports each 1 MiB segment as it is stored, so the server verifies them in
    # runs of a segment or a few while the bytes move: how many runs end by the 4 MiB budget
    # (a continuation) depends on the timing. Continuations are counted where the budget alone
    # decides (tests/e2e/test_ceph_verification.py, tests/server/test_segments.py). Every run
    # continued from the last checkpoint: none started over.
    assert f"validate: upload {summary['upload_id']}: " not in log
    run_admin(vstack["full_env"], "grant", "--file-id", file_id, "--user", user["user"])
    out = tmp_path / "out"
    out.mkdir()
    result = download(ghga_cli, vstack, user["token"], file_id, out)
    assert result.returncode == 0, result.stderr
    assert (out / f"{file_id}.bin").read_bytes() == data


def watch_until_midway(stack: dict[str, Any], token: str, upload_id: str, size: int) -> list[int]:
    """Poll GET /uploads/{id} until the server is visibly in the middle of verifying."""
    seen: list[int] = []

    def midway() -> bool:
        body = details(stack, token, upload_id)
        assert body["upload_status"] == "uploaded", body
        seen.append(body["verified_bytes"])
        return 0 < seen[-1] < size

    wait_for(midway, "the validation to be under way", 60)
    return seen


def slow_upload(stack: dict[str, Any]) -> tuple[dict[str, str], str, str, bytes]:
    user = new_user(stack["full_env"], "verify")
    data = os.urandom(12 * MiB)
    file_id = register_file(stack["full_env"], user["user"], data)
    upload_id = plain_upload(stack, user, file_id, data, None)
    return user, file_id, upload_id, data


def test_a_worker_killed_mid_validation_and_restarted_ends_accepted(
    slow_stack: dict[str, Any],
) -> None:
    user, file_id, upload_id, data = slow_upload(slow_stack)
    token = user["token"]
    before = watch_until_midway(slow_stack, token, upload_id, len(data))
    stacklib.request_restart(slow_stack["state_dir"], "worker")  # SIGKILL, then start again
    # The killed run's message stays invisible (900 s); its lease expires after 3 s and the
    # sweep re-queues the upload, whose validation continues from the last checkpoint.
    after: list[int] = []

    def decided() -> bool:
        body = details(slow_stack, token, upload_id)
        after.append(body["verified_bytes"])
        return body["upload_status"] != "uploaded"

    wait_for(decided, "the validation to end after the worker crash", 120)
    body = details(slow_stack, token, upload_id)
    assert (body["upload_status"], body["verified_bytes"]) == ("accepted", len(data))
    progress = before + after
    assert progress == sorted(progress), progress  # continued, never restarted from 0
    assert stored_bytes(slow_stack, file_id) == data
    check_files(slow_stack, [file_id])


def test_concurrent_duplicate_validation_runs_give_one_verdict(
    slow_stack: dict[str, Any], tmp_path: Path
) -> None:
    """A second worker and parallel duplicate runs (like concurrent Lambda invocations) on
    the one validation: one run advances it at a time, and it is accepted exactly once."""
    user, file_id, upload_id, data = slow_upload(slow_stack)
    env = slow_stack["full_env"]
    log = tmp_path / "second-worker.log"
    with log.open("wb") as out:
        second = subprocess.Popen(
            [sys.executable, "-m", "ucs_lambda.worker"],
            cwd=PROJECT_DIR,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        watch_until_midway(slow_stack, user["token"], upload_id, len(data))
        message = {"job": "validate", "upload_id": upload_id}
        send_jobs(slow_stack, [message] * 4)
        parallel_log = run_jobs_in_parallel(env, [message] * 4)
        decided = settled(slow_stack, user["token"], upload_id, 120)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    assert decided["upload_status"] == "accepted"
    # The verdict may come from either worker or from one of the parallel runs: once in all.
    logs = log.read_text() + Path(slow_stack["log_dir"], "worker.log").read_text() + parallel_log
    assert logs.count(f"validate: upload {upload_id} accepted") == 1
    assert stored_bytes(slow_stack, file_id) == data
    check_files(slow_stack, [file_id])


def test_a_cancel_in_the_middle_of_a_validation_wins(slow_stack: dict[str, Any]) -> None:
    user, file_id, upload_id, data = slow_upload(slow_stack)
    token = user["token"]
    watch_until_midway(slow_stack, token, upload_id, len(data))
    url = f"{slow_stack['ucs_url']}/uploads/{upload_id}"
    status, answer = call("PATCH", url, token, {"upload_status": "cancelled"})
    assert status == 204, answer
    # Let the running job notice, and the sweeps run a few times: nothing revives it.
    log = Path(slow_stack["log_dir"], "worker.log")
    wait_for(
        lambda: (
            f"upload {upload_id} changed" in log.read_text(errors="replace")
            or f"upload {upload_id} is cancelled" in log.read_text(errors="replace")
        ),
        "the validation job to stop",
        60,
    )
    time.sleep(3)
    assert details(slow_stack, token, upload_id)["upload_status"] == "cancelled"
    assert_nothing_stored(slow_stack, file_id)
    check_files(slow_stack, [file_id])


def cancel_mid_assembly(stack: dict[str, Any], user: dict[str, str], segments: int) -> None:
    """A client of the segment extension sends the first of ``segments`` segments and completes
    it; the server verifies it and starts the permanent object's assembly while the upload is
    still pending. The client then cancels: the assembly's multipart upload is aborted, the
    segment deleted, nothing of the upload is left anywhere."""
    token, ucs = user["token"], stack["ucs_url"]
    part_size = int(stack["env"]["UCS_PART_SIZE"])
    segment_size = int(stack["env"]["UCS_SEGMENT_SIZE"])
    data = os.urandom(segments * segment_size - 1)
    file_id = register_file(stack["full_env"], user["user"], data)
    status, created = call("POST", f"{ucs}/uploads", token, {"file_id": file_id})
    assert status == 200, created
    upload_id = created["upload_id"]
    assert created["segment_parts"] == segment_size // part_size, created
    for n in range(1, created["segment_parts"] + 1):
        put_part(stack, token, upload_id, n, data[(n - 1) * part_size : n * part_size])
    status, answer = call("POST", f"{ucs}/uploads/{upload_id}/segments/1/complete", token)
    assert status == 200, answer
    s3, permanent = s3_client(stack), stack["permanent_bucket"]
    wait_for(
        lambda: (
            details(stack, token, upload_id)["verified_bytes"] > 0
            and s3.list_multipart_uploads(Bucket=permanent, Prefix=file_id).get("Uploads")
        ),
        "the first segment to be verified and its assembly to start while pending",
        60,
    )
    assert details(stack, token, upload_id)["upload_status"] == "pending"
    status, answer = call(
        "PATCH", f"{ucs}/uploads/{upload_id}", token, {"upload_status": "cancelled"}
    )
    assert status == 204, answer
    # A job still copying notices the cancel at its next save and aborts what it began.
    wait_for(
        lambda: not s3.list_multipart_uploads(Bucket=permanent, Prefix=file_id).get("Uploads"),
        "the permanent multipart upload to be aborted",
        60,
    )
    assert details(stack, token, upload_id)["upload_status"] == "cancelled"
    assert_nothing_stored(stack, file_id)
    check_files(stack, [file_id])


def test_a_cancel_during_the_streamed_assembly_leaves_nothing(vstack: dict[str, Any]) -> None:
    cancel_mid_assembly(vstack, new_user(vstack["full_env"], "verify"), segments=3)
