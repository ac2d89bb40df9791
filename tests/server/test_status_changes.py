"""Every status change, valid and invalid; invalid ones leave the state untouched."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ucs_lambda import jobs
from ucs_lambda.adapters import aws
from ucs_lambda.adapters.s3 import S3Storage
from ucs_lambda.config import get_settings
from ucs_lambda.domain.models import UploadStatus
from ucs_lambda.ports import State, StorageError

from .conftest import PART, Api, md5, payload, queued_jobs, register
from .conftest import state as stores


def repo() -> State:
    return stores()


def s3() -> Any:
    return aws.client("s3", get_settings())


def state(upload_id: str) -> tuple[str, str | None, str | None]:
    up = repo().uploads.get_upload(upload_id)
    assert up is not None
    f = repo().files.get_file(up.file_id)
    assert f is not None
    return up.upload_status.value, up.status_reason, f.active_upload_id


def inbox_keys() -> list[str]:
    return [o["Key"] for o in s3().list_objects_v2(Bucket="t-inbox").get("Contents", [])]


def open_multiparts() -> list[str]:
    return [u["Key"] for u in s3().list_multipart_uploads(Bucket="t-inbox").get("Uploads", [])]


def patch(api: Api, upload_id: str, body: Any, **kw: Any) -> Any:
    return api.call("PATCH", f"/uploads/{upload_id}", body, **kw)


# ---- builders for each status ---------------------------------------------------------------

DATA = payload(3 * PART + 100)


def make(api: Api, status: str) -> str:
    """An upload of file F1 in ``status`` (the file's registered MD5 decides rejection)."""
    register("F1", DATA, md5_hex=("0" * 32 if status == "rejected" else None))
    up = api.create_upload("F1")
    uid = up["upload_id"]
    if status == "pending":
        return uid
    if status == "failed":
        assert patch(api, uid, {"upload_status": "uploaded"}).status_code == 400
        return uid
    if status == "cancelled":
        assert patch(api, uid, {"upload_status": "cancelled"}).status_code == 204
        return uid
    api.put_parts(uid, DATA, up["part_size"])
    assert api.confirm(uid).status_code == 204
    if status in ("accepted", "rejected"):
        for job in queued_jobs():
            jobs.handle_message(job)
    assert state(uid)[0] == status
    return uid


# ---- valid changes --------------------------------------------------------------------------


def test_pending_to_uploaded(api: Api) -> None:
    register("F1", DATA)
    up = api.create_upload("F1")
    uid = up["upload_id"]
    md5s = api.put_parts(uid, DATA, up["part_size"])
    r = api.confirm(uid, {"md5": md5(DATA), "part_md5s": md5s})
    assert r.status_code == 204 and r.body in (b"", "")
    assert state(uid) == ("uploaded", None, uid)
    rec = repo().uploads.get_upload(uid)
    assert rec is not None
    assert rec.part_etags() == md5s
    assert rec.client_part_md5s == md5s and rec.client_md5 == md5(DATA)
    assert rec.segments_done[1].etag.endswith("-4")
    assert inbox_keys() == [f"F1/{uid}"]
    assert open_multiparts() == []
    assert queued_jobs() == [{"job": "validate", "upload_id": uid}]
    assert api.call("GET", f"/uploads/{uid}").json_body["upload_status"] == "uploaded"


def test_pending_to_cancelled_releases_the_lock(api: Api) -> None:
    register("F1", DATA)
    up = api.create_upload("F1")
    uid = up["upload_id"]
    api.put_parts(uid, DATA[:PART], PART)
    assert patch(api, uid, {"upload_status": "cancelled"}).status_code == 204
    assert state(uid) == ("cancelled", "cancelled by the submitter", None)
    assert open_multiparts() == [] and inbox_keys() == []
    second = api.create_upload("F1")
    assert second["upload_id"] != uid
    assert api.call("GET", "/files/F1").json_body["current_upload_id"] == second["upload_id"]
    history = repo().uploads.uploads_for_file("F1")  # via the file_id-index GSI
    assert [(u.upload_id, u.upload_status.value) for u in history] == [
        (uid, "cancelled"),
        (second["upload_id"], "pending"),
    ]


def test_uploaded_to_cancelled_deletes_the_object(api: Api) -> None:
    uid = make(api, "uploaded")
    assert inbox_keys() == [f"F1/{uid}"]
    assert patch(api, uid, {"upload_status": "cancelled"}).status_code == 204
    assert state(uid)[0] == "cancelled" and state(uid)[2] is None
    assert inbox_keys() == []
    queued_jobs()
    # a validation message arriving afterwards is a no-op
    jobs.handle_message({"job": "validate", "upload_id": uid})
    assert state(uid)[0] == "cancelled"


def test_completion_failure_marks_failed(api: Api) -> None:
    register("F1", DATA)
    uid = api.create_upload("F1")["upload_id"]
    r = patch(api, uid, {"upload_status": "uploaded"})
    assert r.status_code == 400
    body = json.loads(r.body)
    assert body["exception_id"] == "uploadStatusChange"
    assert body["data"] == {"upload_id": uid, "target_status": "uploaded"}
    status, reason, lock = state(uid)
    assert status == "failed" and "no parts" in (reason or "") and lock is None
    assert open_multiparts() == []
    assert api.call("GET", f"/uploads/{uid}").json_body["status_reason"] == reason
    api.create_upload("F1")  # a failed upload does not block the file


def test_part_count_mismatch_fails_the_upload(api: Api) -> None:
    register("F1", DATA)
    up = api.create_upload("F1")
    uid = up["upload_id"]
    md5s = api.put_parts(uid, DATA, up["part_size"])
    r = api.confirm(uid, {"md5": md5(DATA), "part_md5s": md5s[:-1]})
    assert r.status_code == 400 and json.loads(r.body)["exception_id"] == "uploadStatusChange"
    assert state(uid)[0] == "failed"


def test_parts_of_other_sizes_fail_the_upload(api: Api) -> None:
    """Parts that do not fit the layout (moto takes any length on a signed URL; S3 and Ceph
    refuse them): the completion names them, the upload fails, S3 is not asked."""
    register("F1", DATA)
    up = api.create_upload("F1")
    uid = up["upload_id"]
    api.put_parts(uid, DATA[:200], 100)  # two 100-byte parts
    r = api.confirm(uid)
    assert r.status_code == 400
    status, reason, lock = state(uid)
    assert status == "failed" and lock is None
    assert "2 parts not stored (parts 3, 4)" in (reason or "")
    assert "2 parts of another size than the file's layout (parts 1, 2)" in (reason or "")


def test_s3_refusing_completion_marks_failed(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 refuses to complete a segment (e.g. EntityTooSmall) -> failed, with S3's reason."""
    register("F1", DATA)
    up = api.create_upload("F1")
    uid = up["upload_id"]
    api.put_parts(uid, DATA, up["part_size"])

    def refuse(self: S3Storage, *args: Any) -> None:
        raise StorageError("EntityTooSmall", "Your proposed upload is smaller than allowed")

    monkeypatch.setattr(S3Storage, "complete_multipart_upload", refuse)
    r = api.confirm(uid)
    assert r.status_code == 400
    status, reason, lock = state(uid)
    assert status == "failed" and "EntityTooSmall" in (reason or "") and lock is None


def test_concurrent_cancel_during_completion(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel that wins while S3 completes: the confirm answers uploadNotPending and the
    assembled object is removed."""
    register("F1", DATA)
    up = api.create_upload("F1")
    uid = up["upload_id"]
    api.put_parts(uid, DATA, up["part_size"])
    real = S3Storage.complete_multipart_upload

    def complete_then_cancel(self: S3Storage, *args: Any) -> None:
        real(self, *args)
        rec = repo().uploads.get_upload(uid)
        assert rec is not None and repo().uploads.release(rec, UploadStatus.CANCELLED, "race")

    monkeypatch.setattr(S3Storage, "complete_multipart_upload", complete_then_cancel)
    r = api.confirm(uid)
    assert r.status_code == 400
    body = json.loads(r.body)
    assert body["exception_id"] == "uploadNotPending"
    assert body["data"]["current_upload_status"] == "cancelled"
    assert inbox_keys() == []
    assert queued_jobs() == []


def test_accepted_blocks_new_uploads_forever(api: Api) -> None:
    uid = make(api, "accepted")
    r = api.call("POST", "/uploads", {"file_id": "F1"})
    assert r.status_code == 400
    body = json.loads(r.body)
    assert body["exception_id"] == "existingActiveUpload"
    assert body["data"]["active_upload"]["upload_id"] == uid
    assert body["data"]["active_upload"]["upload_status"] == "accepted"


@pytest.mark.parametrize("status", ["rejected", "cancelled", "failed"])
def test_terminal_non_accepted_allow_a_new_upload(api: Api, status: str) -> None:
    make(api, status)
    api.create_upload("F1")


# ---- invalid changes ------------------------------------------------------------------------

STATUSES = ["pending", "uploaded", "cancelled", "failed", "accepted", "rejected"]
VALID = {("pending", "uploaded"), ("pending", "cancelled"), ("uploaded", "cancelled")}


INVALID = [(s, t) for s in STATUSES for t in STATUSES if (s, t) not in VALID]


@pytest.mark.parametrize(("start", "target"), INVALID)
def test_invalid_changes_leave_state_untouched(api: Api, start: str, target: str) -> None:
    """Every change the seed's diagram lacks (the three valid ones are tested above)."""
    uid = make(api, start)
    queued_jobs()
    before = state(uid)
    objects = inbox_keys()
    r = patch(api, uid, {"upload_status": target})
    assert r.status_code == 400
    body = json.loads(r.body)
    if target in ("uploaded", "cancelled"):
        assert body["exception_id"] == "uploadNotPending"
        assert body["data"] == {"upload_id": uid, "current_upload_status": start}
    else:
        assert body["exception_id"] == "uploadStatusChange"
        assert body["data"] == {"upload_id": uid, "target_status": target}
    assert state(uid) == before
    assert inbox_keys() == objects
    assert queued_jobs() == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"upload_status": None},
        {"upload_status": 3},
        {"upload_status": "done"},
        {"upload_status": "UPLOADED"},
        {"upload_status": "uploaded", "checksums": "x"},
        {"upload_status": "uploaded", "checksums": {"md5": "xyz"}},
        {"upload_status": "uploaded", "checksums": {"part_md5s": ["0" * 31]}},
        {"upload_status": "uploaded", "checksums": {"part_md5s": "0" * 32}},
        {"upload_status": "uploaded", "checksums": {"sha256": "0" * 64}},
    ],
)
def test_patch_bad_bodies(api: Api, body: dict) -> None:
    uid = make(api, "pending")
    r = patch(api, uid, body)
    assert r.status_code == 400
    assert json.loads(r.body)["exception_id"] == "invalidRequest"
    assert state(uid) == ("pending", None, uid)


def test_patch_unknown_and_forbidden(api: Api) -> None:
    uid = make(api, "pending")
    r = patch(api, "nope", {"upload_status": "cancelled"})
    assert r.status_code == 404 and json.loads(r.body)["exception_id"] == "noSuchUpload"
    r = patch(api, uid, {"upload_status": "cancelled"}, user="mallory")
    assert r.status_code == 403 and json.loads(r.body)["exception_id"] == "noFileAccess"
    assert state(uid) == ("pending", None, uid)


def test_repository_conditions_refuse_wrong_sources(api: Api) -> None:
    """The conditional writes themselves (not only the pre-checks) refuse invalid changes."""
    uid = make(api, "pending")
    rec = repo().uploads.get_upload(uid)
    assert rec is not None
    assert not repo().uploads.accept(rec)  # pending -> accepted: condition fails
    assert not repo().uploads.release(rec, UploadStatus.REJECTED)  # pending -> rejected
    assert repo().uploads.release(rec, UploadStatus.CANCELLED)
    assert not repo().uploads.release(rec, UploadStatus.CANCELLED)  # already released
    assert not repo().uploads.mark_uploaded(uid, None, [])
    assert state(uid)[0] == "cancelled"
