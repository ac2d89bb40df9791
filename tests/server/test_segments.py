"""Uploads stored as segments, verified and stored while they are sent (issue 18).

In-process moto (with copies conditional on the source ETag, as S3's: build/moto_ranged.py).
A segment is its own multipart upload in the inbox; once the client says it is stored
(``POST /uploads/{id}/segments/{n}/complete``) the validation job hashes it in file order and
copies it into the permanent object's multipart upload while the upload is still pending.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import datetime, timezone
from typing import Any

import pytest
import requests

from tests.helpers import stored_state as tamper_with
from ucs_lambda import jobs
from ucs_lambda.adapters import dynamo
from ucs_lambda.adapters.s3 import S3Storage
from ucs_lambda.bootstrap import services
from ucs_lambda.config import get_settings
from ucs_lambda.domain.models import StoredSegment, UploadRecord, UploadStatus
from ucs_lambda.domain.parts import GiB, MiB, TiB, part_size_for
from ucs_lambda.domain.segments import MAX_SEGMENTS, SegmentLayout

from .conftest import PART, Api, md5, payload, queued_jobs, register, state
from .test_jobs import keys, repo, s3
from .test_validation import details, other_bytes, run_jobs

# ---- the layout ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, 5 * MiB, 100 * MiB, 4 * GiB, 200 * 10**9, 10_000 * 16 * MiB, 5 * TiB],
    ids=["empty", "1B", "5MiB", "100MiB", "4GiB", "200GB", "10000-parts", "5TiB"],
)
def test_every_size_up_to_5_tib_fits_s3s_limits(size: int) -> None:
    """Segments cover the file without gap; copy parts are whole upload parts (>= 5 MiB but
    the last, <= 5 GiB), at most 10,000 of them, numbered in file order; <= 256 segments."""
    part_size = part_size_for(size)
    layout = SegmentLayout.plan(size, part_size, 128 * MiB, 64 * MiB)
    layout.check()
    assert layout.segment_count <= MAX_SEGMENTS
    offset = 0
    copies = []
    for n in range(1, layout.segment_count + 1):
        start, length = layout.span(n)
        assert start == offset
        offset += length
        assert [layout.segment_of(p)[0] for p in layout.parts_of(n)] == [n] * len(
            layout.parts_of(n)
        )
        for r in layout.copy_ranges(n):
            copies.append((r.part_no, start + r.first, r.size))
    assert offset == size
    numbers = [c[0] for c in copies]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert max(numbers) <= 10_000
    assert all(5 * MiB <= c[2] <= 5 * GiB for c in copies[:-1])
    assert sum(c[2] for c in copies) == size
    assert all(a[1] + a[2] == b[1] for a, b in zip(copies, copies[1:]))


def test_the_segment_of_a_byte_and_of_a_part_agree() -> None:
    layout = SegmentLayout(size=10 * PART + 7, part_size=PART, segment_parts=3, copy_group=2)
    assert layout.segment_count == 4
    assert [layout.segment_at(o) for o in (0, 3 * PART - 1, 3 * PART, 10 * PART + 6)] == [
        1,
        1,
        2,
        4,
    ]
    assert layout.segment_of(7) == (3, 1) and layout.span(4) == (9 * PART, 2 * PART + 7 - PART)
    assert [(r.part_no, r.first, r.size) for r in layout.copy_ranges(2)] == [
        (3, 0, 2 * PART),
        (4, 2 * PART, PART),
    ]


def test_a_segment_being_completed_is_not_verified_yet() -> None:
    """Its parts are recorded before S3 completes it (``etag == ""``): the verified prefix
    ends before it, so no hash checkpoint can name an ETag-less object (a later run would
    find the saved state for "another object" and start over from byte 0)."""
    now = datetime.now(timezone.utc)
    upload = UploadRecord(
        upload_id="u",
        file_id="f",
        s3_upload_id="s3",
        object_key="f/u",
        upload_status=UploadStatus.PENDING,
        part_size=PART,
        created=now,
        updated=now,
        segment_parts=2,
        copy_group=1,
        segments_done={
            1: StoredSegment("etag-1", ("a", "b")),
            2: StoredSegment("", ("c", "d")),
            3: StoredSegment("etag-3", ("e", "f")),
        },
    )
    layout = upload.layout(6 * PART, PART)
    assert upload.done_prefix_end(layout) == 2 * PART
    assert sorted(upload.stored_segments()) == [1, 3]


# ---- the API --------------------------------------------------------------------------------


@pytest.fixture
def segmented(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments of two parts; copy parts of one part; multipart assembly for every size."""
    monkeypatch.setenv("UCS_SEGMENT_SIZE", str(2 * PART))
    monkeypatch.setenv("UCS_COPY_PART_SIZE", str(PART))
    monkeypatch.setenv("UCS_SINGLE_COPY_MAX", str(PART))


def put(url: str, body: bytes) -> str:
    r = requests.put(url, data=body, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.headers["ETag"]).strip('"')


def presign(api: Api, uid: str, numbers: list[int]) -> dict[int, str]:
    r = api.call("POST", f"/uploads/{uid}/signed_urls", {"part_numbers": numbers})
    assert r.status_code == 200, r.body
    return {u["part_no"]: u["url"] for u in r.json_body["urls"]}


def send(api: Api, uid: str, data: bytes, numbers: list[int]) -> None:
    urls = presign(api, uid, numbers)
    for n in numbers:
        put(urls[n], data[(n - 1) * PART : n * PART])


def complete(api: Api, uid: str, segment_no: int) -> Any:
    return api.call("POST", f"/uploads/{uid}/segments/{segment_no}/complete")


def permanent_uploads() -> list[str]:
    return [u["Key"] for u in s3().list_multipart_uploads(Bucket="t-permanent").get("Uploads", [])]


def inbox_uploads() -> list[str]:
    return [u["Key"] for u in s3().list_multipart_uploads(Bucket="t-inbox").get("Uploads", [])]


def test_parts_go_to_their_segments_multipart_upload(api: Api, segmented: None) -> None:
    data = payload(5 * PART + 10)
    register("F1", data)
    up = api.create_upload("F1")
    uid = up["upload_id"]
    assert up["segment_parts"] == 2
    urls = presign(api, uid, [1, 2, 3, 6])
    # part 1 and 2: segment 1 (the upload's object key), local 1 and 2; part 3: segment 2
    # local 1; part 6: segment 3 local 2 -- each segment opened once, when first presigned.
    assert f"/F1/{uid}?" in urls[1] and "partNumber=2" in urls[2]
    assert f"/F1/{uid}/2?" in urls[3] and "partNumber=1" in urls[3]
    assert f"/F1/{uid}/3?" in urls[6] and "partNumber=2" in urls[6]
    rec = repo().uploads.get_upload(uid)
    assert rec is not None and sorted(rec.segment_uploads) == [1, 2, 3]
    assert sorted(inbox_uploads()) == [f"F1/{uid}", f"F1/{uid}/2", f"F1/{uid}/3"]
    presign(api, uid, [4, 5])  # the same segments again: nothing new opened
    assert len(inbox_uploads()) == 3


def test_racing_requests_open_a_segment_once(api: Api, segmented: None) -> None:
    """Two presign requests for a new segment at once: one multipart upload is kept, the
    other is aborted, and both hand out URLs of the kept one."""
    data = payload(4 * PART)
    register("F1", data)
    uid = api.create_upload("F1")["upload_id"]
    rec = repo().uploads.get_upload(uid)
    assert rec is not None
    service = services().uploads
    barrier = threading.Barrier(2)
    uploads = type(state().uploads)
    real = uploads.open_segment

    def open_together(self: Any, *a: Any) -> bool:
        barrier.wait(timeout=10)
        return real(self, *a)

    results: list[dict[int, str]] = []
    with pytest.MonkeyPatch.context() as m:
        m.setattr(uploads, "open_segment", open_together)
        threads = [
            threading.Thread(target=lambda: results.append(service._open_segments(rec, {2})))
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
    assert len(results) == 2 and results[0] == results[1]
    kept = repo().uploads.get_upload(uid)
    assert kept is not None and kept.segment_uploads[2] == results[0][2]
    assert inbox_uploads().count(f"F1/{uid}/2") == 1


def test_a_streamed_upload_is_verified_and_stored_while_it_is_sent(
    api: Api, segmented: None
) -> None:
    """Each completed segment is verified and copied at once: after the confirmation only
    the last segment is left, and the permanent object is assembled from the copies."""
    data = payload(7 * PART + 3, seed=31)  # 8 parts, 4 segments
    register("F1", data, readers=("rita",))
    uid = api.create_upload("F1")["upload_id"]
    verified = []
    for segment_no, parts in enumerate(([1, 2], [3, 4], [5, 6]), 1):
        send(api, uid, data, parts)
        r = complete(api, uid, segment_no)
        assert r.status_code == 200, r.body
        assert r.json_body["part_numbers"] == [parts[0], parts[-1]]
        assert queued_jobs() == [{"job": "validate", "upload_id": uid}]
        jobs.handle_message({"job": "validate", "upload_id": uid})
        body = details(api, uid)
        assert body["upload_status"] == "pending"
        verified.append(body["verified_bytes"])
    assert verified == [2 * PART, 4 * PART, 6 * PART]  # growing while the client sends
    assert permanent_uploads() == ["F1"]  # the assembly runs beside the upload
    listed = s3().list_parts(
        Bucket="t-permanent", Key="F1", UploadId=repo().uploads.get_upload(uid).copy_upload_id
    )
    assert [p["PartNumber"] for p in listed["Parts"]] == [1, 2, 3, 4, 5, 6]
    send(api, uid, data, [7, 8])
    assert api.confirm(uid).status_code == 204  # completes the last segment
    assert len(run_jobs()) == 1
    body = details(api, uid)
    assert (body["upload_status"], body["verified_bytes"]) == ("accepted", len(data))
    stored = s3().get_object(Bucket="t-permanent", Key="F1")
    assert stored["Body"].read() == data and stored["ETag"].strip('"').endswith("-8")
    f = repo().files.get_file("F1")
    assert f is not None and f.sha256_checksum == hashlib.sha256(data).hexdigest()
    assert f.permanent_etag == stored["ETag"].strip('"')
    assert keys("t-inbox") == [] and inbox_uploads() == [] and permanent_uploads() == []


@pytest.fixture
def big_segments(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """64 MiB in 8 MiB parts, 4 segments of 16 MiB, 12 MiB hashed and copied per job run."""
    monkeypatch.setenv("UCS_PART_SIZE", str(8 * MiB))
    monkeypatch.setenv("UCS_SEGMENT_SIZE", str(16 * MiB))
    monkeypatch.setenv("UCS_COPY_PART_SIZE", str(8 * MiB))
    monkeypatch.setenv("UCS_JOB_BUDGET_BYTES", str(12 * MiB))
    monkeypatch.setenv("UCS_VALIDATE_RANGE_SIZE", str(4 * MiB))
    return payload(64 * MiB, seed=32)


def stream(api: Api, registered: bytes, stored: bytes) -> tuple[str, list[tuple[str, int]]]:
    """Upload ``stored`` segment by segment as ghga-cli does (each completed as soon as it is
    sent, jobs delivered in between), confirm, deliver the rest; (upload id, the upload's
    (status, verified_bytes) after every job run)."""
    register("F1", registered)
    up = api.create_upload("F1")
    uid, part = up["upload_id"], up["part_size"]
    runs: list[tuple[str, int]] = []

    def deliver() -> None:
        while batch := queued_jobs():
            for body in batch:
                jobs.handle_message(body)
                b = details(api, uid)
                runs.append((b["upload_status"], b["verified_bytes"]))

    count = -(-len(stored) // part)
    per = up["segment_parts"]
    for segment_no in range(1, -(-count // per) + 1):
        numbers = list(range((segment_no - 1) * per + 1, min(segment_no * per, count) + 1))
        urls = presign(api, uid, numbers)
        for n in numbers:
            put(urls[n], stored[(n - 1) * part : n * part])
        if segment_no * per < count:  # the last one is completed by the confirmation
            assert complete(api, uid, segment_no).status_code == 200
        deliver()
    assert api.confirm(uid).status_code == 204
    deliver()
    return uid, runs


def test_a_64_mib_upload_verified_and_assembled_over_many_runs_is_accepted(
    api: Api, big_segments: bytes
) -> None:
    _uid, runs = stream(api, big_segments, big_segments)
    assert len(runs) >= 4 and runs[-1] == ("accepted", 64 * MiB)
    pending = [v for s, v in runs if s == "pending"]
    assert pending and pending == sorted(pending) and pending[-1] >= 36 * MiB  # while sending
    stored = s3().get_object(Bucket="t-permanent", Key="F1")
    assert stored["Body"].read() == big_segments
    assert stored["ETag"].strip('"').endswith("-8")  # one copy part per upload part
    assert keys("t-inbox") == [] and permanent_uploads() == []


def test_one_flipped_byte_in_the_last_segment_is_rejected_leaving_nothing(
    api: Api, big_segments: bytes
) -> None:
    stored = bytearray(big_segments)
    stored[64 * MiB - 1000] ^= 0x01
    uid, runs = stream(api, big_segments, bytes(stored))
    assert runs[-1][0] == "rejected" and len(runs) >= 4
    body = details(api, uid)
    assert (
        md5(bytes(stored)) in body["status_reason"] and md5(big_segments) in body["status_reason"]
    )
    # Three segments were already copied into the permanent multipart upload: it is aborted.
    assert keys("t-permanent") == [] and permanent_uploads() == []
    assert keys("t-inbox") == [] and inbox_uploads() == []


def test_a_confirmed_upload_with_a_segment_not_stored_gets_no_verdict_on_a_prefix(
    api: Api, segmented: None
) -> None:
    """Cannot happen through the API (the confirmation completes every segment first); if
    the record says otherwise, the job refuses the upload naming the segment instead of
    judging the MD5 of the bytes before it."""
    data = payload(5 * PART)
    register("F1", data)
    up = api.create_upload("F1")
    api.put_parts(up["upload_id"], data, up["part_size"])
    assert api.confirm(up["upload_id"]).status_code == 204
    tamper_with.segment_done(up["upload_id"], 2, etag="", part_etags=())
    run_jobs()
    body = details(api, up["upload_id"])
    assert body["upload_status"] == "rejected", body
    assert "segment 2 of the confirmed upload is not stored" in body["status_reason"]
    assert "checksum" not in body["status_reason"]
    assert keys("t-permanent") == [] and permanent_uploads() == []


def test_segment_completion_refuses_what_it_cannot_do(api: Api, segmented: None) -> None:
    data = payload(5 * PART)
    register("F1", data)
    uid = api.create_upload("F1")["upload_id"]
    send(api, uid, data, [1])
    r = complete(api, uid, 1)  # part 2 is missing
    assert r.status_code == 400 and r.json_body["exception_id"] == "segmentIncomplete"
    assert (
        r.json_body["data"]["missing_parts"] == [2]
        and "upload them first" in (r.json_body["description"])
    )
    r = complete(api, uid, 4)
    assert r.status_code == 400 and r.json_body["data"]["segment_count"] == 3
    assert complete(api, uid, 0).status_code == 400
    assert api.call("POST", f"/uploads/{uid}/segments/x/complete").status_code == 400
    send(api, uid, data, [2])
    first = complete(api, uid, 1)
    assert first.status_code == 200 and complete(api, uid, 1).json_body == first.json_body
    r = api.call("POST", f"/uploads/{uid}/signed_urls", {"part_numbers": [2, 3]})
    assert r.status_code == 400 and r.json_body["data"]["segment_no"] == 1  # can't change
    r = api.call("POST", f"/uploads/{uid}/segments/1/complete", user="mallory")
    assert r.status_code == 403
    assert api.call("PATCH", f"/uploads/{uid}", {"upload_status": "cancelled"}).status_code == 204
    r = complete(api, uid, 2)
    assert r.status_code == 400 and r.json_body["exception_id"] == "uploadNotPending"


def test_resume_lists_parts_of_completed_and_open_segments(api: Api, segmented: None) -> None:
    data = payload(5 * PART)
    register("F1", data)
    uid = api.create_upload("F1")["upload_id"]
    send(api, uid, data, [1, 2, 4])
    assert complete(api, uid, 1).status_code == 200
    parts = api.call("GET", f"/uploads/{uid}/parts").json_body["parts"]
    assert [(p["part_no"], p["size"], p["etag"]) for p in parts] == [
        (n, PART, md5(data[(n - 1) * PART : n * PART])) for n in (1, 2, 4)
    ]


def test_a_cancel_while_segments_are_stored_leaves_nothing(api: Api, segmented: None) -> None:
    data = payload(6 * PART)
    register("F1", data)
    uid = api.create_upload("F1")["upload_id"]
    send(api, uid, data, [1, 2, 3, 5])
    assert complete(api, uid, 1).status_code == 200
    run_jobs()
    assert permanent_uploads() == ["F1"] and keys("t-inbox") == [f"F1/{uid}"]
    assert api.call("PATCH", f"/uploads/{uid}", {"upload_status": "cancelled"}).status_code == 204
    assert keys("t-inbox") == [] and inbox_uploads() == []
    assert keys("t-permanent") == [] and permanent_uploads() == []
    run_jobs()
    assert details(api, uid)["upload_status"] == "cancelled"


def test_a_segment_replaced_between_plan_and_copy_never_reaches_the_permanent_bucket(
    api: Api, segmented: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other bytes put under a completed segment's key after it was hashed, right before
    its copy: the copy is conditional on the ETag it was planned for (412), the upload
    fails, and the permanent multipart upload is aborted."""
    data = payload(4 * PART, seed=33)
    register("F1", data)
    uid = api.create_upload("F1")["upload_id"]
    send(api, uid, data, [1, 2])
    assert complete(api, uid, 1).status_code == 200
    real = S3Storage.copy_parts

    def replace_then_copy(self: S3Storage, *a: Any, **k: Any) -> Any:
        s3().put_object(Bucket="t-inbox", Key=f"F1/{uid}", Body=other_bytes(data[: 2 * PART]))
        return real(self, *a, **k)

    monkeypatch.setattr(S3Storage, "copy_parts", replace_then_copy)
    run_jobs()
    body = details(api, uid)
    assert body["upload_status"] == "failed"  # pending: failed; once confirmed: rejected
    assert "changed after it was completed" in body["status_reason"]
    assert keys("t-permanent") == [] and permanent_uploads() == []
    assert keys("t-inbox") == [] and inbox_uploads() == []


def test_a_single_copy_of_a_replaced_segment_is_refused(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-CopyObject path is conditional too: replaced after the verdict, never copied."""
    data = payload(3 * PART, seed=34)
    register("F1", data)
    up = api.create_upload("F1")
    api.put_parts(up["upload_id"], data, up["part_size"])
    assert api.confirm(up["upload_id"]).status_code == 204
    real = S3Storage.copy_object

    def replace_then_copy(self: S3Storage, *a: Any, **k: Any) -> Any:
        s3().put_object(Bucket="t-inbox", Key=f"F1/{up['upload_id']}", Body=other_bytes(data))
        return real(self, *a, **k)

    monkeypatch.setattr(S3Storage, "copy_object", replace_then_copy)
    run_jobs()
    body = details(api, up["upload_id"])
    assert body["upload_status"] == "rejected" and "changed" in body["status_reason"]
    assert keys("t-permanent") == []


@pytest.mark.parametrize("backend", ["dynamodb"], indirect=True)
def test_an_upload_created_before_segments_is_finished_as_one_segment(api: Api) -> None:
    """A pending upload of the previous version (no segment attributes) is presigned,
    listed, confirmed and verified as one segment of all its parts. Only DynamoDB holds
    uploads of that version (PostgreSQL came after segments)."""
    data = payload(3 * PART + 10, seed=35)
    register("F1", data)
    uid = api.create_upload("F1")["upload_id"]
    item = dynamo.Tables.bind(get_settings()).uploads.get(uid, consistent_read=True)
    item.update(
        actions=[
            dynamo.UploadItem.segment_parts.remove(),
            dynamo.UploadItem.copy_group.remove(),
            dynamo.UploadItem.segments.remove(),
            dynamo.UploadItem.segments_done.remove(),
        ]
    )
    assert api.call("GET", f"/uploads/{uid}").json_body["segment_parts"] == 10_000
    md5s = api.put_parts(uid, data, PART)
    listed = api.call("GET", f"/uploads/{uid}/parts").json_body["parts"]
    assert [p["etag"] for p in listed] == md5s
    assert api.confirm(uid).status_code == 204
    run_jobs()
    assert details(api, uid)["upload_status"] == "accepted"
    assert s3().get_object(Bucket="t-permanent", Key="F1")["Body"].read() == data


def test_the_stale_sweep_cancels_an_idle_segmented_upload_and_clears_it(
    api: Api, segmented: None
) -> None:
    from datetime import datetime, timedelta, timezone

    data = payload(6 * PART)
    register("F1", data)
    uid = api.create_upload("F1")["upload_id"]
    send(api, uid, data, [1, 2, 3])
    assert complete(api, uid, 1).status_code == 200
    run_jobs()
    later = datetime.now(timezone.utc) + timedelta(seconds=get_settings().stale_upload_seconds + 5)
    assert jobs.sweep_stale_uploads(now=later)["cancelled"] == 1
    rec = repo().uploads.get_upload(uid)
    assert rec is not None and rec.upload_status is UploadStatus.CANCELLED
    assert inbox_uploads() == [] and keys("t-inbox") == [] and permanent_uploads() == []


def test_the_old_budget_names_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UCS_VALIDATE_BUDGET_SECONDS", "12")
    monkeypatch.setenv("UCS_VALIDATE_BUDGET_BYTES", "34")
    assert (get_settings().job_budget_seconds, get_settings().job_budget_bytes) == (12.0, 34)
    monkeypatch.setenv("UCS_JOB_BUDGET_SECONDS", "56")
    monkeypatch.setenv("UCS_JOB_BUDGET_BYTES", "78")
    assert (get_settings().job_budget_seconds, get_settings().job_budget_bytes) == (56.0, 78)
