"""Validation job, stale-upload sweep and the Lambda wiring of both."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from chalice.test import Client

from tests.helpers import stored_state as tamper_with
from ucs_lambda import jobs
from ucs_lambda.adapters import aws
from ucs_lambda.adapters.s3 import S3Storage
from ucs_lambda.config import get_settings
from ucs_lambda.domain.integrity import multipart_etag
from ucs_lambda.domain.models import UploadStatus
from ucs_lambda.ports import Part, State

from .conftest import PART, Api, md5, payload, queued_jobs, register, state

DATA = payload(3 * PART + 100)


def repo() -> State:
    return state()


def s3() -> Any:
    return aws.client("s3", get_settings())


def keys(bucket: str) -> list[str]:
    return [o["Key"] for o in s3().list_objects_v2(Bucket=bucket).get("Contents", [])]


def status(upload_id: str) -> str:
    rec = repo().uploads.get_upload(upload_id)
    assert rec is not None
    return rec.upload_status.value


def uploaded(api: Api, data: bytes = DATA, checksums: bool = True, **reg: Any) -> str:
    register("F1", data, **reg)
    uid = api.upload_file(data, "F1", checksums=checksums)["upload_id"]
    assert queued_jobs() == [{"job": "validate", "upload_id": uid}]
    return uid


def run_validation(uid: str) -> None:
    jobs.handle_message({"job": "validate", "upload_id": uid})


def test_accept_copies_to_permanent(api: Api) -> None:
    uid = uploaded(api)
    run_validation(uid)
    assert status(uid) == "accepted"
    rec = repo().uploads.get_upload(uid)
    assert rec is not None and rec.status_reason is None
    assert keys("t-inbox") == []
    assert keys("t-permanent") == ["F1"]
    obj = s3().get_object(Bucket="t-permanent", Key="F1")
    assert obj["Body"].read() == DATA
    assert obj["Metadata"]["upload-id"] == uid
    f = repo().files.get_file("F1")
    assert f is not None and f.accepted_upload_id == uid and f.active_upload_id == uid


def test_accept_without_client_checksums_reads_every_byte(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference client sends only ``upload_status``: the server reads the object itself."""
    read: list[tuple[int, int]] = []
    real = S3Storage.read_range

    def spy(self: S3Storage, bucket: str, key: str, first: int, last: int, etag: str) -> bytes:
        read.append((first, last))
        return real(self, bucket, key, first, last, etag)

    monkeypatch.setattr(S3Storage, "read_range", spy)
    uid = uploaded(api, checksums=False)
    run_validation(uid)
    assert status(uid) == "accepted"
    assert read == [(0, len(DATA) - 1)]  # one range: the object is smaller than a range
    body = api.call("GET", f"/uploads/{uid}").json_body
    assert body["verified_bytes"] == len(DATA) and body["status_reason"] is None


def test_objects_above_the_old_read_limit_are_read_too(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``UCS_VALIDATE_READ_MAX`` is gone: no size accepts on part checksums alone (issue 10)."""
    monkeypatch.setenv("UCS_VALIDATE_READ_MAX", str(PART))
    read: list[int] = []
    real = S3Storage.read_range

    def spy(self: S3Storage, *a: Any) -> bytes:
        data = real(self, *a)
        read.append(len(data))
        return data

    monkeypatch.setattr(S3Storage, "read_range", spy)
    uid = uploaded(api)
    run_validation(uid)
    assert status(uid) == "accepted" and sum(read) == len(DATA)


def _assert_rejected(api: Api, uid: str, words: str) -> None:
    run_validation(uid)
    rec = repo().uploads.get_upload(uid)
    assert rec is not None and rec.upload_status is UploadStatus.REJECTED
    assert words in (rec.status_reason or "")
    assert keys("t-inbox") == [] and keys("t-permanent") == []
    f = repo().files.get_file("F1")
    assert f is not None and f.active_upload_id is None and f.accepted_upload_id is None
    body = api.call("GET", f"/uploads/{uid}").json_body
    assert body["upload_status"] == "rejected" and words in body["status_reason"]
    api.create_upload("F1")  # the lock is released


def test_a_part_of_another_size_fails_the_confirmation(api: Api) -> None:
    """moto takes a body of any length on a URL signed for another (S3 and Ceph refuse it,
    tests/e2e/test_hardening.py): completing the segment names the part, the upload fails."""
    register("F1", DATA, size=len(DATA) + 1)
    up = api.create_upload("F1")
    api.put_parts(up["upload_id"], DATA, up["part_size"])
    r = api.confirm(up["upload_id"])
    assert r.status_code == 400 and r.json_body["exception_id"] == "uploadStatusChange"
    assert "1 part of another size than the file's layout (parts 4)" in r.json_body["description"]
    assert status(up["upload_id"]) == "failed"
    assert keys("t-inbox") == [] and queued_jobs() == []


def test_reject_on_registered_checksum(api: Api) -> None:
    """The client's MD5 (of the real bytes) disagrees with the registered one: early reject."""
    uid = uploaded(api, md5_hex="f" * 32)
    _assert_rejected(api, uid, f"the client's MD5 {md5(DATA)} differs from the registered MD5")


def test_reject_on_registered_checksum_without_client_checksums(api: Api) -> None:
    """No client evidence: the MD5 the server computes decides, and the reason names both."""
    uid = uploaded(api, checksums=False, md5_hex="f" * 32)
    _assert_rejected(api, uid, f"computed by the server) is {md5(DATA)}")
    assert f"the registered MD5 is {'f' * 32}" in (repo_reason(uid) or "")


def repo_reason(uid: str) -> str | None:
    rec = repo().uploads.get_upload(uid)
    return rec.status_reason if rec else None


def test_reject_on_part_checksums(api: Api) -> None:
    register("F1", DATA)
    up = api.create_upload("F1")
    uid = up["upload_id"]
    md5s = api.put_parts(uid, DATA, up["part_size"])
    md5s[1] = "0" * 32
    assert api.confirm(uid, {"md5": md5(DATA), "part_md5s": md5s}).status_code == 204
    queued_jobs()
    _assert_rejected(api, uid, f"part 2: the client's MD5 is {'0' * 32}")


def test_reject_on_object_etag(api: Api) -> None:
    uid = uploaded(api)
    rec = repo().uploads.get_upload(uid)
    assert rec is not None
    # Pretend S3 listed other part ETags than the ones the object consists of.
    done = rec.segments_done[1]
    tamper_with.segment_done(uid, 1, etag=done.etag, part_etags=("0" * 32,) * 4)
    tamper_with.upload(uid, client_part_md5s=None)
    _assert_rejected(api, uid, "ETag")


def test_replay_is_harmless(api: Api) -> None:
    uid = uploaded(api)
    run_validation(uid)
    run_validation(uid)  # duplicate delivery
    assert status(uid) == "accepted"
    assert keys("t-permanent") == ["F1"]
    jobs.handle_message({"job": "validate", "upload_id": "unknown"})


def test_missing_object_is_rejected(api: Api) -> None:
    uid = uploaded(api)
    rec = repo().uploads.get_upload(uid)
    assert rec is not None
    s3().delete_object(Bucket="t-inbox", Key=rec.object_key)
    _assert_rejected(api, uid, "missing")


@pytest.mark.parametrize(
    "body", [[], "x", {}, {"job": "nope"}, {"job": "validate"}, {"job": "stage", "file_id": 3}]
)
def test_invalid_messages(body: Any) -> None:
    with pytest.raises(jobs.InvalidJobMessage):
        jobs.handle_message(body)


def test_multipart_copy_above_one_copy_object(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file larger than UCS_SINGLE_COPY_MAX is stored with UploadPartCopy parts (of
    UCS_COPY_PART_SIZE, whole upload parts), each conditional on its segment's ETag."""
    monkeypatch.setenv("UCS_COPY_PART_SIZE", str(PART))
    monkeypatch.setenv("UCS_SINGLE_COPY_MAX", str(PART))
    calls: list[dict] = []
    client = s3()
    real = client.upload_part_copy

    def spy(**kw: Any) -> Any:
        calls.append(kw)
        return real(**kw)

    monkeypatch.setattr(client, "upload_part_copy", spy)
    uid = uploaded(api)
    run_validation(uid)
    assert status(uid) == "accepted"
    assert sorted(c["CopySourceRange"] for c in calls) == sorted(
        [f"bytes={i * PART}-{min((i + 1) * PART, len(DATA)) - 1}" for i in range(4)]
    )
    assert all(c["CopySourceIfMatch"].strip('"').endswith("-4") for c in calls)
    obj = s3().get_object(Bucket="t-permanent", Key="F1")
    assert obj["Body"].read() == DATA
    assert obj["ETag"].strip('"').endswith("-4")


def test_single_copy_of_a_one_segment_file(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    client = s3()

    def fail(**kw: Any) -> Any:
        raise AssertionError("no multipart copy expected")

    monkeypatch.setattr(client, "upload_part_copy", fail)
    uid = uploaded(api)
    run_validation(uid)
    assert s3().get_object(Bucket="t-permanent", Key="F1")["Body"].read() == DATA


@pytest.mark.parametrize(
    ("single_copy_max", "step"),
    [(4 * PART, "copy_object"), (PART, "complete_multipart_upload")],
    ids=["single-copy", "multipart-copy"],
)
def test_cancel_during_validation_discards_the_copy(
    api: Api, monkeypatch: pytest.MonkeyPatch, single_copy_max: int, step: str
) -> None:
    """Cancelled just after the accept copy landed: the copy is removed, nothing accepted."""
    monkeypatch.setenv("UCS_SINGLE_COPY_MAX", str(single_copy_max))
    uid = uploaded(api)
    real = getattr(S3Storage, step)

    def copy_then_cancel(self: S3Storage, *a: Any, **k: Any) -> None:
        real(self, *a, **k)
        assert (
            api.call("PATCH", f"/uploads/{uid}", {"upload_status": "cancelled"}).status_code == 204
        )

    monkeypatch.setattr(S3Storage, step, copy_then_cancel)
    run_validation(uid)
    assert status(uid) == "cancelled"
    assert keys("t-permanent") == [] and keys("t-inbox") == []
    assert s3().list_multipart_uploads(Bucket="t-permanent").get("Uploads", []) == []


def test_etag_helper_matches_s3(api: Api) -> None:
    uid = uploaded(api)
    rec = repo().uploads.get_upload(uid)
    assert rec is not None
    segment = rec.segments_done[1]
    assert segment.etag == multipart_etag(list(segment.part_etags))


# ---- stale uploads --------------------------------------------------------------------------


def _multiparts() -> list[str]:
    return [u["Key"] for u in s3().list_multipart_uploads(Bucket="t-inbox").get("Uploads", [])]


def test_stale_pending_upload_is_cancelled(api: Api) -> None:
    register("F1", DATA)
    up = api.create_upload("F1")
    uid = up["upload_id"]
    api.put_parts(uid, DATA[:PART], PART)
    later = datetime.now(timezone.utc) + timedelta(days=8)
    assert jobs.sweep_stale_uploads(now=datetime.now(timezone.utc)) == {
        "cancelled": 0,
        "requeued": 0,
    }
    assert status(uid) == "pending"
    assert jobs.sweep_stale_uploads(now=later)["cancelled"] == 1
    rec = repo().uploads.get_upload(uid)
    assert rec is not None and rec.upload_status is UploadStatus.CANCELLED
    assert "stale" in (rec.status_reason or "")
    assert _multiparts() == []
    api.create_upload("F1")  # lock released


def test_recent_parts_keep_an_upload_alive(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    register("F1", DATA)
    uid = api.create_upload("F1")["upload_id"]
    later = datetime.now(timezone.utc) + timedelta(days=8)
    monkeypatch.setattr(S3Storage, "list_parts", lambda self, *a: [Part(1, PART, "0" * 32, later)])
    assert jobs.sweep_stale_uploads(now=later)["cancelled"] == 0
    assert status(uid) == "pending"


def test_sweep_requeues_validation_of_old_uploaded(api: Api) -> None:
    uid = uploaded(api)
    later = datetime.now(timezone.utc) + timedelta(hours=2)
    assert jobs.sweep_stale_uploads(now=later) == {"cancelled": 0, "requeued": 1}
    assert queued_jobs() == [{"job": "validate", "upload_id": uid}]


def test_schedule_handler_sweeps(client: Client, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    register("F1", DATA)
    uid = api.create_upload("F1")["upload_id"]
    monkeypatch.setenv("UCS_STALE_UPLOAD_SECONDS", "-5")
    event = client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
    )
    client.lambda_.invoke("sweep_stale_uploads", event)
    assert status(uid) == "cancelled"
    assert _multiparts() == []


def test_sqs_handler_runs_jobs(client: Client, api: Api) -> None:
    uid = uploaded(api)
    event = client.events.generate_sqs_event(
        message_bodies=[json.dumps({"job": "validate", "upload_id": uid})], queue_name="t-jobs"
    )
    client.lambda_.invoke("on_job_message", event)
    assert status(uid) == "accepted"
    bad = client.events.generate_sqs_event(message_bodies=["{", '{"job": "x"}'], queue_name="t")
    client.lambda_.invoke("on_job_message", bad)  # dropped, not raised
