"""DRS3: service-info, object resolution with staging (202 -> 200), access rules, cleanup."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from tests.helpers import stored_state as tamper_with
from ucs_lambda import jobs
from ucs_lambda.adapters import aws
from ucs_lambda.adapters.s3 import S3Storage
from ucs_lambda.bootstrap import services
from ucs_lambda.config import get_settings
from ucs_lambda.domain.models import FileRecord, StagingProgress
from ucs_lambda.services.downloads import (
    MAX_RETRY_AFTER,
    UNMEASURED_RETRY_AFTER,
    estimate_staging,
)

from .conftest import PART, Api, md5, payload, queued_jobs, register, state

DATA = payload(3 * PART + 100)
OBJ = "/ga4gh/drs/v1/objects/F1"


def s3() -> Any:
    return aws.client("s3", get_settings())


def keys(bucket: str) -> list[str]:
    return [o["Key"] for o in s3().list_objects_v2(Bucket=bucket).get("Contents", [])]


def accepted_file(api: Api, readers: tuple[str, ...] = ("rita",)) -> None:
    """F1 uploaded by alice, validated and accepted; ``readers`` may download it."""
    register("F1", DATA, readers=readers)
    uid = api.upload_file(DATA)["upload_id"]
    while batch := queued_jobs():  # (continuations too, when a test lowered the budget)
        for job in batch:
            jobs.handle_message(job)
    rec = state().uploads.get_upload(uid)
    assert rec is not None and rec.upload_status.value == "accepted"


def get(api: Api, path: str = OBJ, user: str | None = "rita", **kw: Any) -> Any:
    return api.call("GET", path, user=user, **kw)


def drs_error(resp: Any) -> dict[str, Any]:
    body = json.loads(resp.body)
    assert body["status_code"] == resp.status_code
    assert isinstance(body["msg"], str) and body["msg"]
    assert {"exception_id", "description", "data"} <= set(body)
    return body


def run_jobs() -> list[dict]:
    """Deliver the queued jobs and the continuations they queue."""
    found = []
    while batch := queued_jobs():
        for job in batch:
            jobs.handle_message(job)
        found.extend(batch)
    return found


def test_staging_then_object(api: Api) -> None:
    accepted_file(api)
    r = get(api)
    assert r.status_code == 202
    assert r.headers["Retry-After"].isdigit() and 1 <= int(r.headers["Retry-After"]) <= 300
    assert r.headers["Cache-Control"] == "no-store"
    assert get(api).status_code == 202  # still staging: no second job
    assert run_jobs() == [{"job": "stage", "file_id": "F1"}]
    assert keys("t-outbox") == ["F1"]
    r = get(api, headers={"Host": "drs.example.org"})  # never trusted (issue 11)
    assert r.status_code == 200
    obj = r.json_body
    url = obj["access_methods"][0]["access_url"]["url"]
    assert obj == {
        "id": "F1",
        "name": "F1.bin",
        "self_uri": "drs://127.0.0.1/F1",  # the local default: UCS_DRS_HOSTNAME is unset
        "size": len(DATA),
        "created_time": obj["created_time"],
        "checksums": [
            {"type": "md5", "checksum": md5(DATA)},
            {"type": "sha-256", "checksum": hashlib.sha256(DATA).hexdigest()},
        ],
        "access_methods": [
            {
                "type": "s3",
                "access_id": "s3",
                "access_url": {"url": url, "headers": ["Accept: */*"]},
            }
        ],
    }
    assert obj["created_time"].endswith("Z")
    q = parse_qs(urlparse(url).query)
    assert q["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and q["X-Amz-Expires"] == ["900"]
    assert urlparse(url).path.endswith("/t-outbox/F1") or "t-outbox" in urlparse(url).netloc
    assert requests.get(url, timeout=10).content == DATA
    ranged = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=10)
    assert ranged.content == DATA[10:20]
    f = state().files.get_file("F1")
    assert f is not None and f.staged_at is not None and f.staging_started is None


def test_configured_hostname(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UCS_DRS_HOSTNAME", "data.ghga.de")
    accepted_file(api)
    get(api)
    run_jobs()
    assert get(api).json_body["self_uri"] == "drs://data.ghga.de/F1"


def test_access_rules(api: Api) -> None:
    accepted_file(api, readers=("rita",))
    r = get(api, user=None)
    assert r.status_code == 401 and drs_error(r)["exception_id"] == "notAuthenticated"
    r = get(api, user="alice")  # the submitter is not a reader
    assert r.status_code == 403
    assert drs_error(r)["exception_id"] == "noFileAccess"
    r = get(api, "/ga4gh/drs/v1/objects/NOPE")
    assert r.status_code == 404
    body = drs_error(r)
    assert body["exception_id"] == "noSuchObject" and body["data"] == {"object_id": "NOPE"}
    assert queued_jobs() == []


def test_forged_token_is_401(api: Api) -> None:
    accepted_file(api)
    from .conftest import token

    bad = token("rita", key="another-key-that-is-long-enough-123456")
    r = api.client.http.get(OBJ, headers={"Authorization": f"Bearer {bad}"})
    assert r.status_code == 401 and drs_error(r)["exception_id"] == "notAuthenticated"


@pytest.mark.parametrize("status", ["none", "pending", "uploaded", "rejected"])
def test_not_yet_accepted_is_404(api: Api, status: str) -> None:
    register("F1", DATA, readers=("rita",), md5_hex=("0" * 32 if status == "rejected" else None))
    if status != "none":
        up = api.create_upload("F1")
        if status != "pending":
            api.put_parts(up["upload_id"], DATA, up["part_size"])
            assert api.confirm(up["upload_id"]).status_code == 204
        if status == "rejected":
            run_jobs()
    queued_jobs()
    r = get(api)
    assert r.status_code == 404 and drs_error(r)["exception_id"] == "noSuchObject"
    assert queued_jobs() == []


def test_stage_replay_is_harmless(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    accepted_file(api)
    get(api)
    run_jobs()
    calls = []
    monkeypatch.setattr(S3Storage, "copy_object", lambda self, *a, **k: calls.append(a))
    monkeypatch.setattr(S3Storage, "copy_parts", lambda self, *a, **k: calls.append(a))
    jobs.handle_message({"job": "stage", "file_id": "F1"})  # duplicate delivery
    jobs.handle_message({"job": "stage", "file_id": "NOPE"})  # unknown file: no-op
    assert calls == []
    assert get(api).status_code == 200


def test_staging_marker_expires(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A staging job that died (message lost) does not block the file forever."""
    accepted_file(api)
    assert get(api).status_code == 202
    assert queued_jobs() == [{"job": "stage", "file_id": "F1"}]  # the job is lost
    assert get(api).status_code == 202
    assert queued_jobs() == []  # marker still fresh: no new job
    old = time.time() - 2 * 3600
    tamper_with.file("F1", staging_started=old)
    assert get(api).status_code == 202
    assert run_jobs() == [{"job": "stage", "file_id": "F1"}]
    assert get(api).status_code == 200


def test_failed_staging_is_retried(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    accepted_file(api)
    get(api)
    messages = queued_jobs()

    def broken(self: S3Storage, *a: Any, **k: Any) -> None:
        raise RuntimeError("copy failed")

    with monkeypatch.context() as m:
        m.setattr(S3Storage, "copy_object", broken)
        with pytest.raises(RuntimeError):
            jobs.handle_message(messages[0])  # SQS would redeliver
    f = state().files.get_file("F1")
    assert f is not None and f.staging_started is not None and f.staged_at is None
    jobs.handle_message(messages[0])  # the redelivery succeeds
    assert get(api).status_code == 200


def test_multipart_staging_copy(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UCS_COPY_PART_SIZE", str(PART))
    monkeypatch.setenv("UCS_SINGLE_COPY_MAX", str(PART))
    accepted_file(api)
    get(api)
    run_jobs()
    obj = s3().get_object(Bucket="t-outbox", Key="F1")
    assert obj["Body"].read() == DATA and obj["ETag"].strip('"').endswith("-4")


def test_outbox_cleanup(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    accepted_file(api)
    get(api)
    run_jobs()
    assert jobs.cleanup_outbox() == 0  # fresh copies stay
    assert keys("t-outbox") == ["F1"]
    assert jobs.cleanup_outbox(now=time.time() + 8 * 24 * 3600) == 1
    assert keys("t-outbox") == []
    f = state().files.get_file("F1")
    assert f is not None and f.staged_at is None and f.staging_started is None
    assert keys("t-permanent") == ["F1"]
    assert get(api).status_code == 202  # staged again on demand
    assert run_jobs() == [{"job": "stage", "file_id": "F1"}]
    assert get(api).status_code == 200


def test_cleanup_schedule_handler(api: Api, client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    accepted_file(api)
    get(api)
    run_jobs()
    monkeypatch.setenv("UCS_OUTBOX_MAX_AGE_SECONDS", "-10")
    event = client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
    )
    client.lambda_.invoke("cleanup_outbox", event)
    assert keys("t-outbox") == []


def test_deleted_outbox_object_is_staged_again(api: Api) -> None:
    """The outbox is checked with HEAD, so an object removed behind our back is re-staged."""
    accepted_file(api)
    get(api)
    run_jobs()
    s3().delete_object(Bucket="t-outbox", Key="F1")
    assert get(api).status_code == 202
    assert run_jobs() == [{"job": "stage", "file_id": "F1"}]


def test_service_info(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UCS_DRS_HOSTNAME", "drs.example.org")
    monkeypatch.setenv("UCS_DRS_MAX_BULK_OBJECTS", "7")
    r = get(api, "/ga4gh/drs/v1/service-info", headers={"Host": "evil.example:1"})
    assert r.status_code == 200
    info = r.json_body
    assert info["type"] == {"group": "org.ga4gh", "artifact": "drs", "version": "1.4.0"}
    assert info["organization"] == {"name": "GHGA", "url": "https://www.ghga.de"}
    assert info["id"] == "org.example.drs.drs" and info["name"] and info["version"]
    assert info["maxBulkRequestLength"] == 7 and info["drs"] == {"maxBulkRequestLength": 7}
    assert get(api, "/ga4gh/drs/v1/service-info", user=None).status_code == 401


def _file(size: int, staging: StagingProgress | None = None) -> FileRecord:
    now = datetime.now(timezone.utc)
    return FileRecord("F", "f", size, "0" * 32, "", "", now, now, staging=staging)


def test_retry_after_follows_the_measured_rate() -> None:
    """Before anything is measured the configured rate is only a guess: a short answer (a
    copy may be done in a second). Once bytes were copied, the rate they took decides."""
    now = 1000.0
    assert estimate_staging(_file(0), 100, now).retry_after == 1
    assert estimate_staging(_file(10_000), 100, now).retry_after == UNMEASURED_RETRY_AFTER
    assert estimate_staging(_file(150), 100, now).retry_after == 2
    # 1,000 of 10,000 bytes in 10 s: 90 s to go.
    copying = StagingProgress("copy", "etag", 1_000, now - 10)
    estimate = estimate_staging(_file(10_000, copying), 100, now)
    assert (estimate.retry_after, estimate.staged_bytes, estimate.size) == (90, 1_000, 10_000)
    slow = StagingProgress("copy", "etag", 1, now - 10)
    assert estimate_staging(_file(10**15, slow), 100, now).retry_after == MAX_RETRY_AFTER


# ---- a staging copy over many job runs (issue 18) ---------------------------------------------


@pytest.fixture
def staged_in_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Staging above one CopyObject: 64 KiB copy parts, one part per job run."""
    monkeypatch.setenv("UCS_SINGLE_COPY_MAX", str(PART))
    monkeypatch.setenv("UCS_COPY_PART_SIZE", str(PART))
    monkeypatch.setenv("UCS_COPY_CONCURRENCY", "1")
    monkeypatch.setenv("UCS_JOB_BUDGET_SECONDS", "0.001")


def test_a_staging_copy_over_many_runs_completes_and_shows_its_progress(
    api: Api, staged_in_parts: None
) -> None:
    """Every run copies one part, saves the bytes copied and queues its continuation; the
    202s in between say how far it is; the staged object is the accepted one, byte for byte."""
    accepted_file(api)
    first = get(api)
    assert first.status_code == 202 and first.json_body == {"staged_bytes": 0, "size": len(DATA)}
    runs, progress = 0, []
    while batch := queued_jobs():
        for body in batch:
            jobs.handle_message(body)
            runs += 1
        r = get(api)
        if r.status_code == 202:
            progress.append(r.json_body["staged_bytes"])
            assert 1 <= int(r.headers["Retry-After"]) <= 300
    assert runs >= 4  # 4 parts, one per run
    assert progress == [PART, 2 * PART, 3 * PART]
    r = get(api)
    assert r.status_code == 200
    url = r.json_body["access_methods"][0]["access_url"]["url"]
    body = requests.get(url, timeout=10).content
    assert (
        body == DATA and hashlib.sha256(body).hexdigest() == r.json_body["checksums"][1]["checksum"]
    )
    assert s3().list_multipart_uploads(Bucket="t-outbox").get("Uploads", []) == []
    f = state().files.get_file("F1")
    assert f is not None and f.staging is None and f.staged_at is not None


def test_a_permanent_object_replaced_during_staging_is_never_staged(
    api: Api, staged_in_parts: None
) -> None:
    """Every staging part is conditional on the permanent object's ETag as accepted: other
    bytes there between two runs end the copy, the outbox keeps nothing."""
    accepted_file(api)
    get(api)
    jobs.handle_message(queued_jobs()[0])  # one part copied
    s3().put_object(Bucket="t-permanent", Key="F1", Body=b"x" * len(DATA))
    run_jobs()
    assert keys("t-outbox") == []
    assert s3().list_multipart_uploads(Bucket="t-outbox").get("Uploads", []) == []
    f = state().files.get_file("F1")
    assert f is not None and f.staging is None and f.staged_at is None
    assert get(api).status_code == 202  # a new request claims staging again (and fails again)


def test_two_staging_runs_never_copy_at_once(api: Api, staged_in_parts: None) -> None:
    """The staging lease: a duplicate message delivered while a run holds it does nothing."""
    accepted_file(api)
    get(api)
    message = queued_jobs()[0]
    service = services().downloads
    owner_file = state().claims.claim_staging_run("F1", "other-run", time.time(), 60)
    assert owner_file is not None
    assert service.stage("F1") is None  # the lease is held: nothing copied
    assert keys("t-outbox") == []
    state().claims.release_staging_run("F1", "other-run")
    jobs.handle_message(message)
    run_jobs()
    assert get(api).status_code == 200
