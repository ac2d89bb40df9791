"""Hostile input on the local stack: names and ids, bodies, part numbers, sizes, checksums.

Decision (admin): ``register-file`` refuses file ids outside ``[A-Za-z0-9._-]`` (1..128, not
starting with a dot) and file names that are not a plain base name (separators, ``.``/``..``,
control or invisible formatting characters, more than 255 UTF-8 bytes). File ids end up in URL
paths and S3 keys, file names in the downloader's target path. The client does not trust the
server either: names that still reach it (an older registration, another tool writing the
table; injected here straight into DynamoDB) never make it write outside its output directory.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.helpers.admin import admin, register_file, run_admin
from tests.helpers.cli import EXIT_INTEGRITY, download, upload
from tests.helpers.invariants import check_files, read_file_state
from tests.helpers.localstack import E2E_PART_SIZE
from tests.helpers.report_schema import load_report
from tests.helpers.support import call, put_parts_directly
from tests.helpers.ucs import accepted_file, settled, start_upload

pytestmark = pytest.mark.e2e

HOSTILE_NAMES = [
    "../../escaped.bin",
    "/tmp/absolute-escape.bin",
    "..",
    "a\x00b.bin",
    "x" * 5000,
    "..\\..\\windows.bin",
    "C:\\evil.bin",
    "\u202egnp.exe",
    "\uff0e\uff0e\uff0fwide.bin",
    "nested/dir/name.bin",
    "con.txt",
    "\u2024\u2024/dots.bin",
]


def register_args(file_id: str, name: str, size: int = 10) -> list[str]:
    return [
        "register-file",
        "--file-id",
        file_id,
        "--file-name",
        name,
        "--size",
        str(size),
        "--md5",
        "0" * 32,
        "--submitter",
        "someone",
    ]


@pytest.mark.parametrize(
    "file_id",
    ["../x", "/etc/passwd", "a/b", ".hidden", "x" * 129, "a b", "caf\u00e9", "\u202eabc", "a%2Fb"],
)
def test_admin_refuses_hostile_file_ids(stack_env: dict[str, str], file_id: str) -> None:
    result = admin(stack_env, *register_args(file_id, "ok.bin"))
    assert result.returncode == 2, result.stdout
    assert "--file-id" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "name", [n for n in HOSTILE_NAMES if "\x00" not in n and n not in ("con.txt",)]
)
def test_admin_refuses_hostile_file_names(stack_env: dict[str, str], name: str) -> None:
    file_id = f"h-{uuid.uuid4().hex[:10]}"
    result = admin(stack_env, *register_args(file_id, name))
    assert result.returncode == 2, result.stdout
    assert "--file-name" in result.stderr and "Traceback" not in result.stderr


def test_admin_refuses_sizes_outside_s3_limits(stack_env: dict[str, str]) -> None:
    for size in (-1, 5 * 1024**4 + 1):
        result = admin(stack_env, *register_args(f"h-{uuid.uuid4().hex[:10]}", "a.bin", size))
        assert result.returncode == 2 and "--size" in result.stderr, result.stderr


def files_table(stack: dict[str, Any]) -> Any:
    env = stack["env"]
    return boto3.resource(
        "dynamodb",
        endpoint_url=stack["dynamodb_endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    ).Table(env.get("UCS_FILES_TABLE", "ghga-files"))


def everything_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_download_never_writes_outside_the_output_directory(
    ghga_cli: list[str],
    local_stack: dict[str, Any],
    stack_env: dict[str, str],
    user: dict[str, str],
    tmp_path: Path,
) -> None:
    data = os.urandom(2000)
    file_id, _ = accepted_file(local_stack, stack_env, user, data)
    run_admin(stack_env, "grant", "--file-id", file_id, "--user", user["user"])
    table = files_table(local_stack)
    sandbox = tmp_path / "sandbox"
    for index, name in enumerate(HOSTILE_NAMES):
        # What the admin now refuses, written as another tool (or an older version) could.
        table.update_item(
            Key={"file_id": file_id},
            UpdateExpression="SET file_name = :n",
            ExpressionAttributeValues={":n": name},
        )
        out = sandbox / f"out{index}"
        out.mkdir(parents=True)
        result = download(ghga_cli, local_stack, user["token"], file_id, out, "--json")
        assert result.returncode == 0, (name, result.stderr)
        written = list(out.iterdir())
        assert len(written) == 1, (name, written)
        assert written[0].read_bytes() == data
        assert load_report(result.stdout)["output"] == str(written[0]), result.stdout
        assert written[0].parent == out and len(written[0].name.encode()) <= 255
    expected = {f"out{i}" for i in range(len(HOSTILE_NAMES))}
    inside = {p for p in everything_under(sandbox) if "/" in p}
    assert everything_under(sandbox) - inside == expected
    assert not Path("/tmp/absolute-escape.bin").exists()


@pytest.mark.parametrize("file_id", ["../../etc/passwd", "/abs", "..", "x" * 3000, "a\u202eb"])
def test_download_of_hostile_ids_fails_cleanly_inside_the_directory(
    ghga_cli: list[str],
    local_stack: dict[str, Any],
    user: dict[str, str],
    tmp_path: Path,
    file_id: str,
) -> None:
    out = tmp_path / "sandbox" / "out"
    out.mkdir(parents=True)
    result = download(ghga_cli, local_stack, user["token"], file_id, out)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert everything_under(tmp_path) == {"sandbox", "sandbox/out"}


def test_oversized_bodies_are_refused(local_stack: dict[str, Any], user: dict[str, str]) -> None:
    ucs = local_stack["ucs_url"]
    pad = "x" * (1024 * 1024 + 1)
    for method, path in [
        ("POST", "/uploads"),
        ("PATCH", "/uploads/whatever"),
        ("POST", "/uploads/whatever/signed_urls"),
    ]:
        status, body = call(method, ucs + path, user["token"], {"file_id": "x", "pad": pad})
        assert status == 413 and body["exception_id"] == "payloadTooLarge", (path, status)


def test_part_numbers_outside_s3_limits_are_refused(
    local_stack: dict[str, Any], stack_env: dict[str, str], user: dict[str, str]
) -> None:
    file_id = register_file(stack_env, user["user"], size=1000, md5="0" * 32)
    status, upload_ = call(
        "POST", f"{local_stack['ucs_url']}/uploads", user["token"], {"file_id": file_id}
    )
    assert status == 200
    base = f"{local_stack['ucs_url']}/uploads/{upload_['upload_id']}"
    for part in ["0", "10001", "-1", "abc", "1.5", "1e3", "99999999999999999999", "%20"]:
        status, body = call("POST", f"{base}/parts/{part}/signed_urls", user["token"])
        assert status == 400 and body["exception_id"] == "invalidRequest", (part, body)
    for numbers in [[0], [10001], [True], ["1"], [1.0], list(range(1, 1002)), []]:
        status, body = call("POST", f"{base}/signed_urls", user["token"], {"part_numbers": numbers})
        assert status == 400 and body["exception_id"] == "invalidRequest", (numbers[:3], body)
    check_files(local_stack, [file_id])


def test_parts_smaller_than_s3_allows_end_failed(
    local_stack: dict[str, Any], stack_env: dict[str, str], user: dict[str, str]
) -> None:
    """Two tiny parts: S3 refuses to complete (all but the last part need the minimum size).

    The part URLs would refuse such parts (signed for the registered part lengths), so they are
    written around them, as parts in the store the service did not plan.
    """
    first, second = os.urandom(1000), os.urandom(1000)
    file_id = register_file(
        stack_env, user["user"], size=2000, md5=hashlib.md5(first + second).hexdigest()
    )
    status, created = call(
        "POST", f"{local_stack['ucs_url']}/uploads", user["token"], {"file_id": file_id}
    )
    assert status == 200, created
    upload_id = created["upload_id"]
    put_parts_directly(local_stack, file_id, [first, second])
    status, body = call(
        "PATCH",
        f"{local_stack['ucs_url']}/uploads/{upload_id}",
        user["token"],
        {"upload_status": "uploaded"},
    )
    assert status == 400 and body["exception_id"] == "uploadStatusChange", body
    details = settled(local_stack, user["token"], upload_id)
    assert details["upload_status"] == "failed" and details["status_reason"], details
    check_files(local_stack, [file_id])


@pytest.mark.parametrize("local_md5", [True, False], ids=["local-md5", "server-verifies"])
def test_registered_md5_disagreeing_with_the_file_is_refused_with_both_checksums(
    ghga_cli: list[str],
    local_stack: dict[str, Any],
    stack_env: dict[str, str],
    user: dict[str, str],
    tmp_path: Path,
    local_md5: bool,
) -> None:
    """With ``--local-md5`` the client compares the MD5 before confirming: it says why and
    confirms nothing. By default the server, which reads every upload back, rejects it; the
    client reports both checksums from the rejection and the file can be uploaded again."""
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(2 * E2E_PART_SIZE + 5))
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    file_id = register_file(stack_env, user["user"], size=source.stat().st_size, md5="f" * 32)
    extra = ["--local-md5"] if local_md5 else []
    result = upload(ghga_cli, local_stack, user["token"], file_id, source, "--json", *extra)
    assert result.returncode == EXIT_INTEGRITY, (result.returncode, result.stderr)
    assert md5 in result.stderr and "f" * 32 in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    summary = load_report(result.stdout)
    assert summary["status"] == "error" and summary["exit_code"] == EXIT_INTEGRITY
    _, uploads = read_file_state(local_stack, file_id)
    expected = "pending" if local_md5 else "rejected"  # resumable / released for a new upload
    assert [u["upload_status"] for u in uploads] == [expected]
    check_files(local_stack, [file_id])


@pytest.mark.parametrize("wrong", ["size", "md5"])
def test_registered_size_or_md5_disagreeing_with_the_bytes_ends_rejected(
    local_stack: dict[str, Any], stack_env: dict[str, str], user: dict[str, str], wrong: str
) -> None:
    """A client that checks nothing first (plain HTTP): a wrong MD5 is rejected by the
    validation, a wrong size already by the confirmation (the part's size is checked when its
    segment is completed; S3 and Ceph would have refused the body on the signed length),
    each saying why."""
    data = os.urandom(1000)
    md5 = hashlib.md5(data).hexdigest()
    size, registered_md5 = (1001, md5) if wrong == "size" else (1000, "e" * 32)
    file_id = register_file(stack_env, user["user"], size=size, md5=registered_md5)
    upload_id = start_upload(local_stack, user["token"], file_id, data)
    status, _ = call(
        "PATCH",
        f"{local_stack['ucs_url']}/uploads/{upload_id}",
        user["token"],
        {"upload_status": "uploaded"},
    )
    assert status == (400 if wrong == "size" else 204)
    details = settled(local_stack, user["token"], upload_id)
    expected = {"size": ("failed", "of another size"), "md5": ("rejected", "md5")}[wrong]
    assert details["upload_status"] == expected[0], details
    assert expected[1] in details["status_reason"].lower(), details
    check_files(local_stack, [file_id])
