"""Fixtures for the server tests: in-process moto, a Chalice test client, tokens, helpers.

Every test that uses ``env`` runs on both state backends (the ``backend`` parameter):
``dynamodb`` (in-process moto DynamoDB + SQS) and ``postgres`` (one database per session,
from tests.helpers.postgres, emptied before each test; S3 is moto's in both). Resources are
created with the same code as ``admin create-resources``. Sizes are shrunk via configuration
(``UCS_PART_SIZE``, ``UCS_MIN_PART_SIZE``, ``UCS_COPY_PART_SIZE``) together with moto's
minimum part size, so multipart paths run with kilobytes instead of megabytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import jwt
import pytest
import requests

os.environ.setdefault("S3_UPLOAD_PART_MIN_SIZE", str(64 * 1024))

import moto.s3.models as moto_s3_models
from chalice.test import Client
from moto import mock_aws

from tests.helpers import buildscripts, postgres
from ucs_lambda.adapters import sqs
from ucs_lambda.adapters.provision import create_all
from ucs_lambda.bootstrap import services
from ucs_lambda.config import get_settings
from ucs_lambda.domain.models import FileRecord
from ucs_lambda.ports import QueuedJob, State

moto_ranged = buildscripts.load("moto_ranged")

KiB = 1024
PART = 64 * KiB
KEY = "test-signing-key-0123456789abcdef0123456789"
OLD_KEY = "test-old-key-0123456789abcdef0123456789abc"

ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "UCS_FILES_TABLE": "t-files",
    "UCS_UPLOADS_TABLE": "t-uploads",
    "UCS_INBOX_BUCKET": "t-inbox",
    "UCS_PERMANENT_BUCKET": "t-permanent",
    "UCS_OUTBOX_BUCKET": "t-outbox",
    "UCS_JOB_QUEUE": "t-jobs",
    "UCS_TOKEN_KEYS": f"{KEY},{OLD_KEY}",
    "UCS_PART_SIZE": str(PART),
    "UCS_MIN_PART_SIZE": str(PART),
    "UCS_COPY_PART_SIZE": str(PART),
    "UCS_MAX_BATCH_URLS": "50",
}
UNSET = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_PROFILE",
    "AWS_REGION",
    "UCS_TOKEN_KEYS_PARAMETER",
    "UCS_STACK_FILE",
    "UCS_STATE_BACKEND",
    "UCS_DATABASE_URL",
)

BACKENDS = ("dynamodb", "postgres")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One migrated database for the session's PostgreSQL tests (tests.helpers.postgres).

    Without a PostgreSQL server the postgres variants fail when ``PG_REQUIRED=1`` (CI) and
    are skipped otherwise (a developer machine without build/pg-up.sh)."""
    with postgres.session_database("server") as url:
        yield url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> dict[str, str]:
    """The state backend under test, as environment variables (the PostgreSQL database is
    emptied first)."""
    if request.param == "dynamodb":
        return {"UCS_STATE_BACKEND": "dynamodb"}
    url = request.getfixturevalue("postgres_url")
    postgres.truncate_all(url)
    return {"UCS_STATE_BACKEND": "postgres", "UCS_DATABASE_URL": url}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, backend: dict[str, str]) -> Iterator[dict[str, str]]:
    """Test configuration in ``os.environ`` and a fresh in-process moto with our resources."""
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**ENV, **backend}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(moto_s3_models, "S3_UPLOAD_PART_MIN_SIZE", PART)
    moto_ranged.patch_copy_conditions()  # copies conditional on the source ETag, as S3's
    moto_ranged.serialize_in_process_requests()  # one request at a time, as per item in S3
    # Cached clients/connections are kept across tests on purpose (building them is most of
    # a test's cost); moto intercepts them whichever mock_aws context is active.
    sqs.reset()
    with mock_aws():
        create_all(get_settings())
        yield {**ENV, **backend}


def state() -> State:
    """The state ports of the configuration under test."""
    return services().state


@pytest.fixture
def client(env: dict[str, str], tmp_path: Any) -> Client:
    """Chalice's test client; ``project_dir`` without ``.chalice`` so no stage env overrides."""
    from ucs_lambda.app import app

    return Client(app, project_dir=str(tmp_path))


def token(user: str, ttl: int = 3600, key: str = KEY, **extra: Any) -> str:
    now = int(time.time())
    claims = {"sub": user, "iat": now, "exp": now + ttl, **extra}
    return jwt.encode(claims, key, algorithm="HS256")


def auth(user: str = "alice", **kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, **kw)}", "Content-Type": "application/json"}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def payload(size: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def register(
    file_id: str = "F1",
    data: bytes | None = None,
    size: int | None = None,
    submitters: tuple[str, ...] = ("alice",),
    readers: tuple[str, ...] = (),
    md5_hex: str | None = None,
) -> FileRecord:
    data = payload(3 * PART + 100) if data is None else data
    now = datetime.now(timezone.utc)
    record = FileRecord(
        file_id=file_id,
        file_name=f"{file_id}.bin",
        size=len(data) if size is None else size,
        md5_checksum=md5_hex or md5(data),
        grouping_label="group",
        format="bin",
        creation_date=now,
        update_date=now,
        submitters=frozenset(submitters),
        readers=frozenset(readers),
    )
    state().files.register_file(record)
    return record


@dataclass
class Api:
    """Small JSON helper around the Chalice test client."""

    client: Client

    def call(
        self, method: str, path: str, body: Any = None, user: str | None = "alice", **kw: Any
    ) -> Any:
        headers = auth(user) if user else {"Content-Type": "application/json"}
        headers.update(kw.pop("headers", {}))
        raw = kw.pop("raw", None)
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        return self.client.http.request(method, path, headers=headers, body=data)

    def create_upload(self, file_id: str = "F1", user: str = "alice") -> dict[str, Any]:
        r = self.call("POST", "/uploads", {"file_id": file_id}, user=user)
        assert r.status_code == 200, r.body
        return r.json_body

    def put_parts(self, upload_id: str, data: bytes, part_size: int) -> list[str]:
        """Upload ``data`` through presigned URLs (moto intercepts ``requests``)."""
        chunks = [data[i : i + part_size] for i in range(0, len(data), part_size)] or [b""]
        r = self.call(
            "POST",
            f"/uploads/{upload_id}/signed_urls",
            {"part_numbers": list(range(1, len(chunks) + 1))},
        )
        assert r.status_code == 200, r.body
        md5s = []
        for entry, chunk in zip(r.json_body["urls"], chunks):
            resp = requests.put(entry["url"], data=chunk, timeout=10)
            assert resp.status_code == 200, resp.text
            assert resp.headers["ETag"].strip('"') == md5(chunk)
            md5s.append(md5(chunk))
        return md5s

    def confirm(self, upload_id: str, checksums: dict | None = None) -> Any:
        body: dict[str, Any] = {"upload_status": "uploaded"}
        if checksums is not None:
            body["checksums"] = checksums
        return self.call("PATCH", f"/uploads/{upload_id}", body)

    def upload_file(
        self, data: bytes, file_id: str = "F1", checksums: bool = True
    ) -> dict[str, Any]:
        up = self.create_upload(file_id)
        md5s = self.put_parts(up["upload_id"], data, up["part_size"])
        sums = {"md5": md5(data), "part_md5s": md5s} if checksums else None
        r = self.confirm(up["upload_id"], sums)
        assert r.status_code == 204, r.body
        return up


@pytest.fixture
def api(client: Client) -> Api:
    return Api(client)


def queued_jobs() -> list[dict[str, Any]]:
    """Drain the job queue and return the message bodies."""
    q = services().queue
    found = []
    while True:
        msgs: list[QueuedJob] = q.receive(wait_seconds=0)
        if not msgs:
            return found
        for m in msgs:
            found.append(json.loads(m.body))
            q.delete(m.receipt)
