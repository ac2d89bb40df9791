"""The server's read-back verification with S3 on Ceph RGW (issue 10, issue 15 item 1, issue 18).

The validation job's ranged GETs carry ``If-Match`` with the multipart ETag RGW gives each
segment object, its assembly of the permanent object continues across invocations through
RGW's own part listing of the copy's multipart upload (``UploadPartCopy`` with
``x-amz-copy-source-if-match``), and the SHA-256 it computes is served by DRS. A stack of its
own with a tiny budget makes a 15 MiB object take many invocations: one 2 MiB range (and one
copy part) each. Segments of two 5 MiB parts, 5 MiB copy parts and no single-request copies
make both the assembly and the staging copy multipart copies of four parts, one per run.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_ceph_e2e import multipart_etag
from tests.e2e.test_server_verification import (
    cancel_mid_assembly,
    part_md5s,
    plain_upload,
    settled,
)
from tests.helpers.admin import new_user, register_file, run_admin
from tests.helpers.cli import download, summary_of, upload
from tests.helpers.localstack import CEPH_PART_SIZE, launch_on_ceph
from tests.helpers.support import assert_nothing_stored, call, s3_client, stored_bytes
from tests.helpers.ucs import staged

pytestmark = [pytest.mark.e2e, pytest.mark.ceph]

MiB = 1024 * 1024
ENV = {
    "UCS_VALIDATE_RANGE_SIZE": str(2 * MiB),
    "UCS_JOB_BUDGET_SECONDS": "0.001",  # one range (or one copy part) per invocation
    "UCS_VALIDATE_CONCURRENCY": "2",
    "UCS_COPY_CONCURRENCY": "1",
    "UCS_VALIDATE_CHECKPOINT_SECONDS": "0.2",
    "UCS_VALIDATE_LEASE_SECONDS": "5",
    "UCS_SEGMENT_SIZE": str(2 * CEPH_PART_SIZE),
    "UCS_SINGLE_COPY_MAX": "0",
    "UCS_COPY_PART_SIZE": str(CEPH_PART_SIZE),
}


@pytest.fixture(scope="module")
def cstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with launch_on_ceph(tmp_path_factory.mktemp("ceph-verify"), extra_env=ENV) as info:
        yield {**info, "full_env": {**os.environ, **info["env"]}}


@pytest.fixture(scope="module")
def user(cstack: dict[str, Any]) -> dict[str, str]:
    """The module's user, on its own stack (overrides tests/e2e/conftest.py's)."""
    return new_user(cstack["full_env"], "cv")


def test_ghga_cli_upload_on_ceph_is_read_back_over_many_jobs(
    ghga_cli: list[str], cstack: dict[str, Any], user: dict[str, str], tmp_path: Path
) -> None:
    data = os.urandom(3 * CEPH_PART_SIZE + 7)  # 2 segments, 8 ranges of 2 MiB, 4 copy parts
    source = tmp_path / "data.bin"
    source.write_bytes(data)
    file_id = register_file(cstack["full_env"], user["user"], data)
    result = upload(ghga_cli, cstack, user["token"], file_id, source, "--json")
    assert result.returncode == 0, result.stderr
    upload_id = summary_of(result)["upload_id"]
    status, body = call("GET", f"{cstack['ucs_url']}/uploads/{upload_id}", user["token"])
    assert (body["upload_status"], body["verified_bytes"]) == ("accepted", len(data))
    log = Path(cstack["log_dir"], "worker.log").read_text(errors="replace")
    continued = log.count(f"upload {upload_id} continues in the next job")
    assert continued >= 7, continued  # 8 reading runs at least
    assert stored_bytes(cstack, file_id) == data
    s3 = s3_client(cstack)
    assembled = s3.head_object(Bucket=cstack["permanent_bucket"], Key=file_id)["ETag"]
    # Four copy parts: neither segment object's ETag (two parts each) nor a single copy's.
    assert assembled.strip('"') == multipart_etag(data, CEPH_PART_SIZE)
    run_admin(cstack["full_env"], "grant", "--file-id", file_id, "--user", user["user"])
    staged(cstack, user["token"], file_id)
    log = Path(cstack["log_dir"], "worker.log").read_text(errors="replace")
    assert log.count(f"stage: {file_id} continues in the next job") >= 3  # 4 runs at least
    outbox = s3.head_object(Bucket=cstack["outbox_bucket"], Key=file_id)["ETag"]
    assert outbox.strip('"') == multipart_etag(data, CEPH_PART_SIZE)
    status, obj = call("GET", f"{cstack['drs_url']}/objects/{file_id}", user["token"])
    assert status == 200
    assert obj["checksums"][1] == {"type": "sha-256", "checksum": hashlib.sha256(data).hexdigest()}
    out = tmp_path / "out"
    out.mkdir()
    result = download(ghga_cli, cstack, user["token"], file_id, out)
    assert result.returncode == 0, result.stderr
    assert (out / f"{file_id}.bin").read_bytes() == data


@pytest.mark.parametrize("evidence", ["none", "honest-parts-lying-md5"])
def test_other_bytes_of_the_registered_size_on_ceph_are_rejected(
    cstack: dict[str, Any], user: dict[str, str], evidence: str
) -> None:
    registered = os.urandom(2 * CEPH_PART_SIZE + 3)
    wrong = os.urandom(len(registered))
    md5 = hashlib.md5(registered).hexdigest()
    file_id = register_file(cstack["full_env"], user["user"], size=len(registered), md5=md5)
    checksums = None
    if evidence != "none":
        checksums = {"md5": md5, "part_md5s": part_md5s(wrong, CEPH_PART_SIZE)}
    upload_id = plain_upload(cstack, user, file_id, wrong, checksums)
    details = settled(cstack, user["token"], upload_id, 120)
    assert details["upload_status"] == "rejected", details
    assert hashlib.md5(wrong).hexdigest() in details["status_reason"]
    assert md5 in details["status_reason"]
    assert details["verified_bytes"] == len(wrong)
    assert_nothing_stored(cstack, file_id)
    # The right bytes from the same reference client: accepted, stored as sent.
    upload_id = plain_upload(cstack, user, file_id, registered, None)
    assert settled(cstack, user["token"], upload_id, 120)["upload_status"] == "accepted"
    assert stored_bytes(cstack, file_id) == registered


def test_a_cancel_during_the_streamed_assembly_on_ceph_leaves_nothing(
    cstack: dict[str, Any], user: dict[str, str]
) -> None:
    cancel_mid_assembly(cstack, user, segments=2)
