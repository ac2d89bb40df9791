"""The controller served by gunicorn through ucs_lambda.wsgi, with S3 on Ceph RGW (or moto).

DynamoDB and SQS come from a moto server here; S3 is the local Ceph RGW when one runs
(``make ceph-up``; marker ``ceph``), else moto. The flow: create an upload, presign part 1, PUT the
bytes to the presigned URL, confirm with checksums, and read the status back.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ceph
from tests.helpers.admin import run_admin
from tests.helpers.support import GUNICORN, free_port, gunicorn

KEY = "wsgi-test-key-0123456789abcdef0123456789abcdef"


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited"
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} not ready")


def call(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture(params=[pytest.param("ceph", marks=pytest.mark.ceph), "moto"])
def s3_backend(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "ceph":
        return ceph.s3_env(ceph.require_ceph())
    return {}


@pytest.fixture
def moto_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/moto-api/", proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.skipif(not GUNICORN.exists(), reason="gunicorn is not installed")
def test_gunicorn_serves_an_upload(
    s3_backend: dict[str, str], moto_server: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "UCS_"))},
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL_S3": moto_server,
        **s3_backend,  # Ceph's endpoint and keys (moto accepts any keys for DynamoDB/SQS)
        "AWS_ENDPOINT_URL_DYNAMODB": moto_server,
        "AWS_ENDPOINT_URL_SQS": moto_server,
        "UCS_FILES_TABLE": f"files-{run}",
        "UCS_UPLOADS_TABLE": f"uploads-{run}",
        "UCS_INBOX_BUCKET": f"inbox-{run}",
        "UCS_PERMANENT_BUCKET": f"permanent-{run}",
        "UCS_OUTBOX_BUCKET": f"outbox-{run}",
        "UCS_JOB_QUEUE": f"jobs-{run}",
        "UCS_TOKEN_KEYS": KEY,
        "UCS_DRS_HOSTNAME": "drs.example.org",  # a deployment must name it (wsgi.py)
        "UCS_STACK_FILE": str(tmp_path / "no-stack.json"),
    }
    payload = os.urandom(300_000)
    md5 = hashlib.md5(payload).hexdigest()

    run_admin(env, "create-resources", timeout=60)
    run_admin(
        env,
        "register-file",
        "--file-id",
        f"F-{run}",
        "--file-name",
        "data.bin",
        "--size",
        str(len(payload)),
        "--md5",
        md5,
        "--submitter",
        "alice",
        timeout=60,
    )
    token = run_admin(env, "mint-token", "--user", "alice", timeout=60)

    with gunicorn(env, tmp_path / "gunicorn.log", workers=2) as api:
        status, body = call("POST", f"{api}/uploads", {"file_id": f"F-{run}"}, token)
        assert status == 200, body
        upload_id = body["upload_id"]
        status, body = call(
            "POST", f"{api}/uploads/{upload_id}/signed_urls", {"part_numbers": [1]}, token
        )
        assert status == 200, body
        url = body["urls"][0]["url"]
        expected_host = s3_backend.get("AWS_ENDPOINT_URL_S3", moto_server)
        assert url.startswith(expected_host), url
        # an explicit type: urllib's default (form-urlencoded) makes moto's server wait
        req = urllib.request.Request(
            url, data=payload, method="PUT", headers={"Content-Type": "application/octet-stream"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 200
            assert resp.headers["ETag"].strip('"') == md5
        status, body = call(
            "PATCH",
            f"{api}/uploads/{upload_id}",
            {"upload_status": "uploaded", "checksums": {"md5": md5, "part_md5s": [md5]}},
            token,
        )
        assert status in (200, 204), body
        status, body = call("GET", f"{api}/uploads/{upload_id}", token=token)
        assert status == 200 and body["upload_status"] in ("uploaded", "accepted"), body
        status, body = call("GET", f"{api}/no/such/route", token=token)
        assert status == 404 and body["exception_id"] == "notFound", body
    assert b"Traceback" not in (tmp_path / "gunicorn.log").read_bytes()
