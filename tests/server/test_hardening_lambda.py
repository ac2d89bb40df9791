"""Issue 11 at the Lambda entry point and below HTTP (in-process moto).

The HTTP tests are in tests/e2e/test_hardening.py. Here: what only a Lambda event can carry
(API Gateway's ``multiValueHeaders``), the same nested body through the Lambda handler, and the
rules behind the answers -- token claims, part lengths, the attempt window, the sweep's index.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
from chalice.local import LambdaContext, LambdaEventConverter, RouteMatcher

from tests.server.conftest import ENV, KEY, PART, Api, register, state, token
from ucs_lambda import jobs, tokens
from ucs_lambda.adapters.dynamo import UploadItem
from ucs_lambda.adapters.provision import create_tables
from ucs_lambda.config import get_settings
from ucs_lambda.domain.attempts import AttemptBudget
from ucs_lambda.domain.claims import TokenPolicy, check_claims
from ucs_lambda.domain.errors import NotAuthenticated
from ucs_lambda.domain.models import UploadRecord, UploadStatus
from ucs_lambda.domain.parts import PartBeyondFile, part_length
from ucs_lambda.ports import AttemptsSpent, ConditionLost

# ---- the Lambda event path ------------------------------------------------------------------


def lambda_call(
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes = b"",
    multi_value_headers: dict[str, list[str]] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """Invoke the app as API Gateway's REST proxy integration invokes the Lambda function."""
    from ucs_lambda.app import app

    converter = LambdaEventConverter(RouteMatcher(list(app.routes)))
    event = converter.create_lambda_event(method, path, headers, body)
    if multi_value_headers is not None:
        event["multiValueHeaders"] = multi_value_headers
    response = app(event, LambdaContext("api_handler", 1024))
    raw = response.get("body") or ""
    return response["statusCode"], response.get("headers") or {}, json.loads(raw) if raw else None


def test_two_authorization_headers_in_an_api_gateway_event_are_refused(env: dict) -> None:
    """Item 7: API Gateway keeps the last value in ``headers`` and all in ``multiValueHeaders``."""
    register("F1")
    good = f"Bearer {token('alice')}"
    bad = f"Bearer {token('alice', key='x' * 64)}"
    for values in ([bad, good], [good, bad], [good, good]):
        status, _, body = lambda_call(
            "GET",
            "/files/F1",
            {"authorization": values[-1]},
            multi_value_headers={"Authorization": values},
        )
        assert (status, body["exception_id"]) == (400, "invalidRequest"), (values, body)
    status, _, body = lambda_call(
        "GET", "/files/F1", {"authorization": good}, multi_value_headers={"authorization": [good]}
    )
    assert status == 200, body


def test_deeply_nested_json_through_the_lambda_handler_is_a_400(
    env: dict, caplog: pytest.LogCaptureFixture
) -> None:
    """Item 3: the Lambda handler answers 400 and logs no traceback."""
    register("F1")
    headers = {"authorization": f"Bearer {token('alice')}", "content-type": "application/json"}
    caplog.set_level(logging.DEBUG)
    for body in (b"[" * 100_000, b'{"a":' * 100_000):
        status, _, answer = lambda_call("POST", "/uploads", headers, body)
        assert (status, answer["exception_id"]) == (400, "invalidRequest"), answer
    assert not [r for r in caplog.records if r.exc_info], caplog.text


def test_429_carries_retry_after_and_the_error_body(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 5 through the Chalice test client: the header and the body agree."""
    monkeypatch.setenv("UCS_UPLOAD_ATTEMPTS_PER_WINDOW", "2")
    register("F1")
    for _ in range(2):
        upload = api.create_upload("F1")
        api.call("PATCH", f"/uploads/{upload['upload_id']}", {"upload_status": "cancelled"})
    r = api.call("POST", "/uploads", {"file_id": "F1"})
    assert r.status_code == 429
    body = json.loads(r.body)
    assert body["exception_id"] == "tooManyUploadAttempts"
    assert r.headers["Retry-After"] == str(body["data"]["retry_after"])
    assert 1 <= body["data"]["retry_after"] <= 3600


def test_a_429_after_a_stale_read_leaves_no_multipart_upload(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 5: when the read said there was room but the transaction found none (a racing
    request used it), the S3 multipart upload made meanwhile is aborted."""
    import dataclasses

    from ucs_lambda.services.uploads import UploadService

    monkeypatch.setenv("UCS_UPLOAD_ATTEMPTS_PER_WINDOW", "1")
    register("F1")
    first = api.create_upload("F1")
    api.call("PATCH", f"/uploads/{first['upload_id']}", {"upload_status": "cancelled"})
    real = UploadService._file_for_submitter

    def stale(self: UploadService, user_id: str, file_id: str) -> Any:
        return dataclasses.replace(real(self, user_id, file_id), attempt_count=0)

    monkeypatch.setattr(UploadService, "_file_for_submitter", stale)
    r = api.call("POST", "/uploads", {"file_id": "F1"})
    assert r.status_code == 429 and json.loads(r.body)["exception_id"] == "tooManyUploadAttempts"
    s3 = boto3.client("s3", region_name="us-east-1")
    assert not s3.list_multipart_uploads(Bucket=ENV["UCS_INBOX_BUCKET"]).get("Uploads")
    assert len(state().uploads.uploads_for_file("F1")) == 1


# ---- token claims ---------------------------------------------------------------------------

NOW = 1_800_000_000
POLICY = TokenPolicy(max_ttl=3600, leeway=60)


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "u", "iat": NOW, "exp": "1800000600"},
        {"sub": "u", "iat": NOW, "exp": True},
        {"sub": "u", "iat": True, "exp": NOW + 600},
        {"sub": "u", "iat": NOW, "exp": NOW + 600.0},
        {"sub": "u", "iat": NOW, "exp": 10**12},
        {"sub": "u", "iat": NOW, "exp": int("9" * 401)},
        {"sub": "u", "iat": -1, "exp": NOW + 600},
        {"sub": "u", "exp": NOW + 600},
        {"sub": "u", "iat": NOW},
        {"sub": "u", "iat": NOW + 61, "exp": NOW + 600},
        {"sub": "u", "iat": NOW, "exp": NOW + 3601},
        {"sub": "u", "iat": NOW, "exp": NOW},
        {"sub": "u", "iat": NOW + 30, "exp": NOW + 20},
        {"sub": "u", "iat": NOW, "exp": NOW + 600, "nbf": NOW + 61},
        {"sub": "u", "iat": NOW, "exp": NOW + 600, "nbf": "0"},
        {"sub": "", "iat": NOW, "exp": NOW + 600},
    ],
)
def test_claims_outside_the_profile_are_refused(claims: dict[str, Any]) -> None:
    with pytest.raises(NotAuthenticated):
        check_claims(claims, NOW, POLICY)


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "u", "iat": NOW, "exp": NOW + 3600},  # exactly the cap
        {"sub": "u", "iat": NOW + 60, "exp": NOW + 600},  # exactly the leeway
        {"sub": "u", "iat": NOW - 100, "exp": NOW + 1, "nbf": NOW + 60},
    ],
)
def test_claims_inside_the_profile_are_accepted(claims: dict[str, Any]) -> None:
    assert check_claims(claims, NOW, POLICY) == "u"


def test_mint_respects_the_cap_and_sets_audience_and_issuer(
    env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UCS_TOKEN_MAX_TTL", "600")
    with pytest.raises(ValueError, match="UCS_TOKEN_MAX_TTL"):
        tokens.mint("alice", ttl_seconds=601)
    assert tokens.verify(tokens.mint("alice", ttl_seconds=600)) == "alice"
    monkeypatch.setenv("UCS_TOKEN_AUDIENCE", "ucs")
    monkeypatch.setenv("UCS_TOKEN_ISSUER", "https://id.example")
    minted = tokens.mint("alice", ttl_seconds=60)
    assert tokens.verify(minted) == "alice"
    with pytest.raises(NotAuthenticated, match="aud"):
        tokens.verify(token("alice", ttl=60, iss="https://id.example"))
    with pytest.raises(NotAuthenticated, match="iss"):
        tokens.verify(token("alice", ttl=60, aud="ucs", iss="https://other.example"))
    assert tokens.verify(token("alice", ttl=60, aud="ucs", iss="https://id.example")) == "alice"
    assert KEY  # the fixture's key signed all of these


# ---- part lengths ---------------------------------------------------------------------------


def test_part_lengths_follow_the_registered_size() -> None:
    assert part_length(0, PART, 1) == 0  # an empty file is one empty part
    assert part_length(PART, PART, 1) == PART
    assert [part_length(2 * PART + 5, PART, n) for n in (1, 2, 3)] == [PART, PART, 5]
    for size, part_no in [(0, 2), (PART, 2), (2 * PART + 5, 4), (1, 10_000), (1, 0)]:
        with pytest.raises(PartBeyondFile):
            part_length(size, PART, part_no)


# ---- upload attempts ------------------------------------------------------------------------


def new_upload(file_id: str, n: int) -> UploadRecord:
    now = datetime.now(timezone.utc)
    return UploadRecord(
        upload_id=f"u{n}",
        file_id=file_id,
        s3_upload_id=f"s3-{n}",
        object_key=f"{file_id}/u{n}",
        upload_status=UploadStatus.PENDING,
        part_size=PART,
        created=now,
        updated=now,
    )


def test_attempt_window_counts_created_uploads_then_opens_again(env: dict) -> None:
    """Item 5: the fixed window opens with the first upload and ends ``window`` seconds later;
    the count changes in the creating transaction, so it is exactly the uploads created."""
    register("F1")
    repo = state()
    start, window, n = 1_000_000, 100, 0

    def create(now: int) -> None:
        nonlocal n
        n += 1
        upload = new_upload("F1", n)
        repo.uploads.create_upload(upload, AttemptBudget(3, window, now))
        assert repo.uploads.release(upload, UploadStatus.CANCELLED)

    for i in range(3):
        create(start + i)
    for now in (start + 50, start + window - 1):
        with pytest.raises(AttemptsSpent) as spent:
            create(now)
        assert spent.value.window_start == start
    assert AttemptBudget(3, window, start + window - 1).retry_after(start) == 1
    assert AttemptBudget(3, window, start + 2).retry_after(start) == window - 2
    create(start + window)  # the window ended: a new one opens
    file = repo.files.get_file("F1")
    assert (file.attempt_window_start, file.attempt_count) == (start + window, 1)
    assert len(repo.uploads.uploads_for_file("F1")) == 4  # the refused ones wrote nothing


def test_a_held_lock_is_not_an_attempt(env: dict) -> None:
    """Requests that find an active upload (racing creates, retries) use up nothing."""
    register("F1")
    repo = state()
    budget = AttemptBudget(3, 100, 1_000_000)
    repo.uploads.create_upload(new_upload("F1", 1), budget)
    for n in range(2, 6):
        with pytest.raises(ConditionLost):
            repo.uploads.create_upload(new_upload("F1", n), budget)
    assert repo.files.get_file("F1").attempt_count == 1
    with pytest.raises(ConditionLost):
        repo.uploads.create_upload(new_upload("nope", 9), budget)


# ---- the sweep's index ----------------------------------------------------------------------


def test_the_sweep_queries_the_status_index_and_never_scans(
    api: Api, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 5: stale pending and long-uploaded uploads are found without a table scan
    (on PostgreSQL by the (status, updated) index; the DynamoDB variant checks no Scan)."""
    register("F1")
    register("F2", data=b"x" * 10)
    stale = api.create_upload("F1")
    waiting = api.create_upload("F2")
    api.put_parts(waiting["upload_id"], b"x" * 10, waiting["part_size"])
    assert api.confirm(waiting["upload_id"]).status_code == 204

    def no_scan(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the sweep scanned the uploads table")

    if env["UCS_STATE_BACKEND"] == "dynamodb":
        monkeypatch.setattr(UploadItem, "scan", classmethod(no_scan))
    # Not yet stale: nothing happens.
    assert jobs.sweep_stale_uploads() == {"cancelled": 0, "requeued": 0}
    later = datetime.now(timezone.utc) + timedelta(days=8)
    assert jobs.sweep_stale_uploads(now=later) == {"cancelled": 1, "requeued": 1}
    assert api.call("GET", f"/uploads/{stale['upload_id']}").json_body["upload_status"] == (
        "cancelled"
    )


@pytest.mark.parametrize("backend", ["dynamodb"], indirect=True)
def test_create_resources_adds_the_status_index_to_an_older_table(env: dict) -> None:
    """An uploads table made before ``upload_status-index`` existed gets it added."""
    client = boto3.client("dynamodb", region_name="us-east-1")
    table = ENV["UCS_UPLOADS_TABLE"]
    client.delete_table(TableName=table)
    client.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "upload_id", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "upload_id", "AttributeType": "S"},
            {"AttributeName": "file_id", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "file_id-index",
                "KeySchema": [{"AttributeName": "file_id", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    assert create_tables(get_settings()) == [f"{table}/upload_status-index"]
    indexes = client.describe_table(TableName=table)["Table"]["GlobalSecondaryIndexes"]
    assert {i["IndexName"] for i in indexes} == {"file_id-index", "upload_status-index"}
    assert create_tables(get_settings()) == []  # idempotent
