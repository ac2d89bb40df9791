"""The controller served by gunicorn through ucs_lambda.wsgi, with S3 on Ceph RGW (or moto) and
state and jobs in DynamoDB/SQS (moto server) or PostgreSQL.

Two dimensions, four cases: S3 is the local Ceph RGW when one runs (``make ceph-up``; marker
``ceph``), else moto; the state backend is DynamoDB and SQS from a moto server, or a fresh
PostgreSQL database (``tests.helpers.postgres``; skipped without a server, failed with
``PG_REQUIRED=1``) with no DynamoDB or SQS at all -- "gunicorn + Ceph + PostgreSQL" runs no moto
server. The flow: create an upload, presign part 1, PUT the bytes to the presigned URL, confirm
with checksums, let the job worker (``python -m ucs_lambda.worker``) validate it until the
upload is ``accepted``, and read the permanent object back with boto3.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.helpers import PROJECT_DIR, buildscripts, ceph, postgres
from tests.helpers.admin import run_admin
from tests.helpers.support import GUNICORN, free_port, gunicorn

KEY = "wsgi-test-key-0123456789abcdef0123456789abcdef"
ACCEPT_TIMEOUT = 90.0
BUCKETS = ("inbox", "permanent", "outbox")


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
        log.close()


def s3_client(env: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL_S3"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture(params=[pytest.param("ceph", marks=pytest.mark.ceph), "moto"])
def s3_backend(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The S3 part of the services' environment: Ceph's endpoint and keys, or moto's.

    The test's buckets (``UCS_*_BUCKET`` of this run) are removed from Ceph afterwards: the
    cluster outlives the test."""
    if request.param == "moto":
        yield {"AWS_ENDPOINT_URL_S3": request.getfixturevalue("moto_server")}
        return
    env = ceph.s3_env(ceph.require_ceph())
    run = uuid.uuid4().hex[:8]
    buckets = {f"UCS_{name.upper()}_BUCKET": f"{name}-{run}" for name in BUCKETS}
    try:
        yield {**env, **buckets}
    finally:
        buildscripts.load("stack").remove_buckets(s3_client(env), list(buckets.values()))


@pytest.fixture(params=["dynamodb", "postgres"])
def state_backend(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The state/jobs part of the environment: DynamoDB tables and an SQS queue on a moto
    server, or a fresh PostgreSQL database (dropped after the test)."""
    run = uuid.uuid4().hex[:8]
    if request.param == "dynamodb":
        moto = request.getfixturevalue("moto_server")
        yield {
            "AWS_ENDPOINT_URL_DYNAMODB": moto,
            "AWS_ENDPOINT_URL_SQS": moto,
            "UCS_FILES_TABLE": f"files-{run}",
            "UCS_UPLOADS_TABLE": f"uploads-{run}",
            "UCS_JOB_QUEUE": f"jobs-{run}",
        }
        return
    postgres.require_server()
    url = postgres.create_database("wsgi")
    # Nothing listens there: a stray DynamoDB or SQS call fails at once instead of
    # reaching a server (or AWS).
    nowhere = f"http://127.0.0.1:{free_port()}"
    try:
        yield {
            "UCS_STATE_BACKEND": "postgres",
            "UCS_DATABASE_URL": url,
            "AWS_ENDPOINT_URL_DYNAMODB": nowhere,
            "AWS_ENDPOINT_URL_SQS": nowhere,
        }
    finally:
        postgres.drop_database(url)


def wait_accepted(api: str, upload_id: str, token: str, worker: subprocess.Popen) -> Any:
    """Poll the upload until the worker's validation decided it; its last details."""
    deadline = time.monotonic() + ACCEPT_TIMEOUT
    while True:
        status, body = call("GET", f"{api}/uploads/{upload_id}", token=token)
        assert status == 200, body
        if body["upload_status"] not in ("pending", "uploaded"):
            return body
        assert worker.poll() is None, "the worker exited"
        assert time.monotonic() < deadline, f"not decided after {ACCEPT_TIMEOUT:.0f} s: {body}"
        time.sleep(0.3)


@pytest.mark.skipif(not GUNICORN.exists(), reason="gunicorn is not installed")
def test_gunicorn_serves_an_upload(
    s3_backend: dict[str, str],
    state_backend: dict[str, str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    run = uuid.uuid4().hex[:8]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "UCS_"))},
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        **{f"UCS_{name.upper()}_BUCKET": f"{name}-{run}" for name in BUCKETS},
        **s3_backend,  # Ceph's endpoint, keys and buckets (moto accepts any keys)
        **state_backend,
        "UCS_TOKEN_KEYS": KEY,
        "UCS_DRS_HOSTNAME": "drs.example.org",  # a deployment must name it (wsgi.py)
        "UCS_STACK_FILE": str(tmp_path / "no-stack.json"),
        "PYTHONUNBUFFERED": "1",
    }
    payload = os.urandom(300_000)
    md5 = hashlib.md5(payload).hexdigest()
    file_id = f"F-{run}"

    run_admin(env, "create-resources", timeout=60)
    run_admin(
        env,
        "register-file",
        "--file-id",
        file_id,
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

    worker_log = tmp_path / "worker.log"
    with gunicorn(env, tmp_path / "gunicorn.log", workers=2) as api:
        status, body = call("POST", f"{api}/uploads", {"file_id": file_id}, token)
        assert status == 200, body
        upload_id = body["upload_id"]
        status, body = call(
            "POST", f"{api}/uploads/{upload_id}/signed_urls", {"part_numbers": [1]}, token
        )
        assert status == 200, body
        url = body["urls"][0]["url"]
        assert url.startswith(s3_backend["AWS_ENDPOINT_URL_S3"]), url
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

        # The job worker validates the upload from the job queue (SQS or PostgreSQL).
        with worker_log.open("wb") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "ucs_lambda.worker"],
                cwd=PROJECT_DIR,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            body = wait_accepted(api, upload_id, token, worker)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        assert body["upload_status"] == "accepted", (body, worker_log.read_text())
        status, body = call("GET", f"{api}/no/such/route", token=token)
        assert status == 404 and body["exception_id"] == "notFound", body
    assert b"Traceback" not in (tmp_path / "gunicorn.log").read_bytes()
    log = worker_log.read_text(errors="replace")
    assert f"validate: upload {upload_id} accepted" in log and "Traceback" not in log, log
    assert " ERROR " not in log, log  # no failed job, poll or sweep
    assert worker.returncode == 0, log
    # The accepted file is in the permanent bucket, read back without the services.
    s3 = s3_client(env)
    stored = s3.get_object(Bucket=env["UCS_PERMANENT_BUCKET"], Key=file_id)["Body"].read()
    assert stored == payload
    # Ceph and PostgreSQL: no moto server ran for anything.
    params = request.node.callspec.params
    uses_moto = params["s3_backend"] == "moto" or params["state_backend"] == "dynamodb"
    assert (tmp_path / "moto.log").exists() == uses_moto
