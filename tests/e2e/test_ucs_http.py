"""The Upload Controller Service over real HTTP, on the local stack (`make stack`)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.admin import new_user, register_file
from tests.helpers.support import call, s3_client
from tests.helpers.ucs import race

pytestmark = pytest.mark.e2e


def test_stack_json_has_what_the_contract_names(local_stack: dict[str, Any]) -> None:
    for key in (
        "ucs_url",
        "aws_endpoint_url",
        "inbox_bucket",
        "permanent_bucket",
        "outbox_bucket",
        "demo_file_id",
        "demo_token",
    ):
        assert local_stack[key], key
    status, body = call(
        "GET",
        f"{local_stack['ucs_url']}/files/{local_stack['demo_file_id']}",
        local_stack["demo_token"],
    )
    assert status == 200
    assert body["file_id"] == local_stack["demo_file_id"]
    assert (
        call("GET", f"{local_stack['ucs_url']}/files/{local_stack['demo_file_id']}", None)[0] == 401
    )


def test_twenty_simultaneous_create_upload_requests_have_one_winner(
    local_stack: dict[str, Any], stack_env: dict[str, str]
) -> None:
    """Exactly one of 20 racing POST /uploads wins, in each of 10 rounds.

    This runs over HTTP against the stack, whose DynamoDB is a *single-threaded* moto
    server: moto's threaded server does not evaluate conditional writes atomically
    (several racing writers can all succeed), so there a pass or a failure would say
    nothing about our code. Served one request at a time, moto honours the conditions as
    real DynamoDB does, and the rule is carried by the conditional transaction alone.
    """
    user = new_user(stack_env, "racer")
    token = user["token"]
    uploads_url = f"{local_stack['ucs_url']}/uploads"
    for _round in range(10):
        body = {"file_id": register_file(stack_env, user["user"], size=1024, md5="0" * 32)}
        results = race(20, lambda body=body: call("POST", uploads_url, token, body))
        statuses = sorted(status for status, _ in results)
        assert statuses == [200] + [400] * 19, statuses
        winner = next(body for status, body in results if status == 200)
        for status, body in results:
            if status == 400:
                assert body["exception_id"] == "existingActiveUpload"
                assert body["data"]["active_upload"]["upload_id"] == winner["upload_id"]


def test_presigned_part_url_accepts_curl_put(
    local_stack: dict[str, Any], stack_env: dict[str, str], tmp_path: Path
) -> None:
    payload = os.urandom(100_000)
    md5 = hashlib.md5(payload).hexdigest()
    user = new_user(stack_env, "curl")
    token = user["token"]
    file_id = register_file(stack_env, user["user"], payload)
    ucs = local_stack["ucs_url"]

    status, upload = call("POST", f"{ucs}/uploads", token, {"file_id": file_id})
    assert status == 200, upload
    status, signed = call("POST", f"{ucs}/uploads/{upload['upload_id']}/parts/1/signed_urls", token)
    assert status == 200, signed
    source = tmp_path / "part.bin"
    source.write_bytes(payload)
    curl = subprocess.run(
        ["curl", "-sS", "--fail", "-T", str(source), "-D", "-", "-o", os.devnull, signed["url"]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert curl.returncode == 0, curl.stderr
    assert f'etag: "{md5}"' in curl.stdout.lower()

    status, _ = call(
        "PATCH",
        f"{ucs}/uploads/{upload['upload_id']}",
        token,
        {"upload_status": "uploaded", "checksums": {"md5": md5, "part_md5s": [md5]}},
    )
    assert status == 204
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, details = call("GET", f"{ucs}/uploads/{upload['upload_id']}", token)
        if details["upload_status"] != "uploaded":
            break
        time.sleep(0.2)
    assert details["upload_status"] == "accepted", details

    s3 = s3_client(local_stack)
    stored = s3.get_object(Bucket=local_stack["permanent_bucket"], Key=file_id)["Body"].read()
    assert stored == payload
