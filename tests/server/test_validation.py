"""The server verifies every byte it accepts (issue 10) and records a SHA-256 (issue 15).

In-process moto. Wrong bytes of the right size are rejected whatever the client sends and
whatever the size relative to every threshold (range size, per-invocation budget, part and copy
part sizes, the removed ``UCS_VALIDATE_READ_MAX``); the right bytes are accepted with their
SHA-256 recorded and served. Multi-invocation validations continue from saved hash state;
duplicated messages, crashed runs and cancels never produce a second or a wrong verdict.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import stored_state as tamper_with
from ucs_lambda import jobs
from ucs_lambda.adapters.s3 import S3Storage
from ucs_lambda.bootstrap import services
from ucs_lambda.config import ConfigError
from ucs_lambda.domain import digests
from ucs_lambda.domain.models import UploadStatus
from ucs_lambda.ports import StorageError
from ucs_lambda.services.validation import ValidationService

from .conftest import PART, Api, md5, payload, queued_jobs, register, state
from .test_jobs import keys, repo, s3

MiB = 1024 * 1024


def other_bytes(data: bytes) -> bytes:
    """Bytes of the same size that differ from ``data`` everywhere."""
    return bytes(b ^ 0x5A for b in data)


def on_read(
    monkeypatch: pytest.MonkeyPatch, before: Callable[[int], None] = lambda n: None
) -> list[int]:
    """Record the first byte of every ranged read of the validation; ``before(n)`` runs
    before the n-th read (1-based) and may act (cancel, deliver a duplicate) or raise."""
    firsts: list[int] = []
    real = S3Storage.read_range

    def read(self: S3Storage, bucket: str, key: str, first: int, last: int, etag: str) -> bytes:
        firsts.append(first)
        before(len(firsts))
        return real(self, bucket, key, first, last, etag)

    monkeypatch.setattr(S3Storage, "read_range", read)
    return firsts


def upload(api: Api, registered: bytes, stored: bytes, evidence: str, file_id: str = "F1") -> str:
    """Register ``registered``, upload ``stored`` through presigned part URLs, confirm.

    ``evidence``: ``none`` (what a client of the reference ucs.yaml sends), ``honest`` (part
    MD5s and whole-file MD5 of what was uploaded), ``lying-md5`` (honest part MD5s, but the
    registered MD5 claimed for the whole file).
    """
    register(file_id, registered)
    up = api.create_upload(file_id)
    part_md5s = api.put_parts(up["upload_id"], stored, up["part_size"])
    checksums = {
        "none": None,
        "honest": {"md5": md5(stored), "part_md5s": part_md5s},
        "lying-md5": {"md5": md5(registered), "part_md5s": part_md5s},
    }[evidence]
    assert api.confirm(up["upload_id"], checksums).status_code == 204
    return str(up["upload_id"])


def run_jobs(limit: int = 1000) -> list[dict[str, Any]]:
    """Deliver queued jobs (and the continuations they queue) until the queue is empty."""
    done: list[dict[str, Any]] = []
    while batch := queued_jobs():
        for body in batch:
            jobs.handle_message(body)
            done.append(body)
        assert len(done) < limit, "validation does not end"
    return done


def details(api: Api, uid: str) -> dict[str, Any]:
    r = api.call("GET", f"/uploads/{uid}")
    assert r.status_code == 200, r.body
    return dict(r.json_body)


def assert_rejected(api: Api, uid: str, *words: str) -> str:
    body = details(api, uid)
    assert body["upload_status"] == "rejected", body
    for word in words:
        assert word in body["status_reason"], (word, body["status_reason"])
    assert keys("t-inbox") == [] and keys("t-permanent") == []
    f = repo().files.get_file("F1")
    assert f is not None and f.accepted_upload_id is None and f.sha256_checksum is None
    return str(body["status_reason"])


#: Configurations that put one small object below and above every threshold of the job.
CONFIGS: dict[str, dict[str, str]] = {
    # one range, one invocation, one CopyObject
    "one-range": {"UCS_COPY_PART_SIZE": str(8 * PART)},
    # many ranges, read 3 at a time, and a multipart copy into the permanent object
    "many-ranges": {
        "UCS_VALIDATE_RANGE_SIZE": "10000",
        "UCS_VALIDATE_CONCURRENCY": "3",
        "UCS_SINGLE_COPY_MAX": str(PART),
    },
    # several invocations (continuations) of 50,000 bytes each
    "many-invocations": {"UCS_JOB_BUDGET_BYTES": "50000", "UCS_VALIDATE_RANGE_SIZE": "7000"},
    # one segment per part: hashed in order across segment objects, assembled part by part
    "segments": {"UCS_SEGMENT_SIZE": str(PART), "UCS_VALIDATE_RANGE_SIZE": "10000"},
    # the removed threshold, set as the stack used to be run when the bug was found
    "old-read-limit": {"UCS_VALIDATE_READ_MAX": "1048576"},
}
SIZES = {"one-part": PART - 3, "multipart": 3 * PART + 100}


@pytest.fixture(params=list(CONFIGS), ids=list(CONFIGS))
def config(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in CONFIGS[request.param].items():
        monkeypatch.setenv(name, value)
    return str(request.param)


@pytest.mark.parametrize("size", SIZES.values(), ids=list(SIZES))
@pytest.mark.parametrize("evidence", ["none", "lying-md5"])
def test_wrong_bytes_of_the_right_size_are_rejected(
    api: Api, config: str, size: int, evidence: str
) -> None:
    """The bug of issue 10: honest part MD5s (or none) of the wrong bytes were accepted."""
    registered = payload(size, seed=7)
    stored = other_bytes(registered)
    uid = upload(api, registered, stored, evidence)
    invocations = len(run_jobs())
    reason = assert_rejected(api, uid, "checksum mismatch", md5(stored), md5(registered))
    assert "computed by the server" in reason
    assert details(api, uid)["verified_bytes"] == size  # it read every byte to decide
    if config == "many-invocations":
        assert invocations == -(-size // 50000)


@pytest.mark.parametrize("size", SIZES.values(), ids=list(SIZES))
def test_a_client_md5_differing_from_the_registered_one_rejects_early(
    api: Api, config: str, size: int
) -> None:
    registered = payload(size, seed=8)
    stored = other_bytes(registered)
    uid = upload(api, registered, stored, "honest")
    run_jobs()
    assert_rejected(api, uid, f"the client's MD5 {md5(stored)} differs", md5(registered))
    assert details(api, uid)["verified_bytes"] == 0  # decided before reading


@pytest.mark.parametrize("size", SIZES.values(), ids=list(SIZES))
def test_a_part_of_another_size_fails_the_confirmation(api: Api, config: str, size: int) -> None:
    """The stored size is checked part by part when the segments are completed (moto takes
    any length on a URL signed for another; S3 and Ceph refuse it): the upload fails with
    the part named, nothing is verified, nothing reaches the permanent bucket."""
    stored = payload(size, seed=9)
    register("F1", stored, size=size + 1)
    up = api.create_upload("F1")
    api.put_parts(up["upload_id"], stored, up["part_size"])
    r = api.confirm(up["upload_id"])
    assert r.status_code == 400 and r.json_body["exception_id"] == "uploadStatusChange"
    body = details(api, up["upload_id"])
    assert body["upload_status"] == "failed"
    assert "of another size than the file's layout" in body["status_reason"]
    assert run_jobs() == [] and keys("t-inbox") == [] and keys("t-permanent") == []


def drs_object(api: Api, file_id: str = "F1") -> dict[str, Any]:
    """The DRS object of an accepted file, after running its staging job."""
    path = f"/ga4gh/drs/v1/objects/{file_id}"
    assert api.call("GET", path, user="rita").status_code == 202
    run_jobs()
    r = api.call("GET", path, user="rita")
    assert r.status_code == 200, r.body
    return dict(r.json_body)


@pytest.mark.parametrize("size", [0, *SIZES.values()], ids=["empty", *SIZES])
@pytest.mark.parametrize("evidence", ["none", "honest"])
def test_the_right_bytes_are_accepted_with_their_sha256_recorded_and_served(
    api: Api, config: str, size: int, evidence: str
) -> None:
    data = payload(size, seed=10)
    register("F1", data, readers=("rita",))
    up = api.create_upload("F1")
    part_md5s = api.put_parts(up["upload_id"], data, up["part_size"])
    sums = {"md5": md5(data), "part_md5s": part_md5s} if evidence == "honest" else None
    assert api.confirm(up["upload_id"], sums).status_code == 204
    run_jobs()
    body = details(api, up["upload_id"])
    assert body["upload_status"] == "accepted" and body["status_reason"] is None, body
    assert body["verified_bytes"] == size and body["server_verifies"] is True
    sha256 = hashlib.sha256(data).hexdigest()
    f = repo().files.get_file("F1")
    assert f is not None and f.sha256_checksum == sha256
    stored = s3().get_object(Bucket="t-permanent", Key="F1")
    assert stored["Body"].read() == data
    assert stored["Metadata"] == {"upload-id": up["upload_id"], "md5": md5(data)}
    assert f.permanent_etag == stored["ETag"].strip('"')
    assert drs_object(api)["checksums"] == [
        {"type": "md5", "checksum": md5(data)},
        {"type": "sha-256", "checksum": sha256},
    ]
    assert keys("t-inbox") == []


def test_a_file_accepted_before_sha256_was_recorded_still_downloads(api: Api) -> None:
    """Files accepted by an older version keep MD5 only; their DRS object lists just that."""
    data = payload(PART + 5)
    register("F1", data, readers=("rita",))
    uid = api.upload_file(data, checksums=True)["upload_id"]
    queued_jobs()
    s3().copy_object(
        Bucket="t-permanent", Key="F1", CopySource={"Bucket": "t-inbox", "Key": f"F1/{uid}"}
    )
    rec = repo().uploads.get_upload(uid)
    assert rec is not None and repo().uploads.accept(rec)  # the old accept: no SHA-256
    assert drs_object(api)["checksums"] == [{"type": "md5", "checksum": md5(data)}]


# ---- many invocations -------------------------------------------------------------------------

BIG = 64 * MiB


@pytest.fixture
def big(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A 64 MiB object in 16 MiB parts, validated 12 MiB per invocation (>= 4 continuations)."""
    monkeypatch.setenv("UCS_PART_SIZE", str(16 * MiB))
    monkeypatch.setenv("UCS_COPY_PART_SIZE", str(32 * MiB))  # 2-part copies when multipart
    monkeypatch.setenv("UCS_JOB_BUDGET_BYTES", str(12 * MiB))
    monkeypatch.setenv("UCS_VALIDATE_RANGE_SIZE", str(4 * MiB))
    return payload(BIG, seed=11)


def step_through(api: Api, uid: str) -> list[tuple[str, int]]:
    """Deliver one job message at a time; the upload's (status, verified_bytes) after each."""
    seen = []
    while batch := queued_jobs():
        assert len(batch) == 1, batch  # one continuation at a time
        jobs.handle_message(batch[0])
        body = details(api, uid)
        seen.append((body["upload_status"], body["verified_bytes"]))
    return seen


def test_a_64_mib_object_over_many_invocations_is_accepted(api: Api, big: bytes) -> None:
    uid = upload(api, big, big, "none")
    seen = step_through(api, uid)
    offsets = [12 * MiB * n for n in range(1, 6)]
    assert seen == [*(("uploaded", o) for o in offsets), ("accepted", BIG)]
    assert len(seen) - 1 >= 4  # continuations
    f = repo().files.get_file("F1")
    assert f is not None and f.sha256_checksum == hashlib.sha256(big).hexdigest()
    assert s3().get_object(Bucket="t-permanent", Key="F1")["Body"].read() == big


def test_one_flipped_byte_in_the_last_continuation_is_rejected(api: Api, big: bytes) -> None:
    stored = bytearray(big)
    stored[BIG - 1000] ^= 0x01  # inside the last 12 MiB, i.e. the last continuation
    uid = upload(api, big, bytes(stored), "none")
    seen = step_through(api, uid)
    assert [s for s, _ in seen] == ["uploaded"] * 5 + ["rejected"]
    assert_rejected(api, uid, md5(bytes(stored)), md5(big))


def test_the_permanent_copy_continues_across_invocations(
    api: Api, big: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A budget too small for the whole copy: parts already copied are not copied again."""
    monkeypatch.setenv("UCS_JOB_BUDGET_BYTES", "0")
    monkeypatch.setenv("UCS_JOB_BUDGET_SECONDS", "0.001")  # one range and one part per run
    monkeypatch.setenv("UCS_VALIDATE_CONCURRENCY", "1")
    monkeypatch.setenv("UCS_COPY_CONCURRENCY", "1")
    monkeypatch.setenv("UCS_SINGLE_COPY_MAX", str(16 * MiB))
    copied: list[int] = []
    real = S3Storage.copy_parts

    def spy(self: S3Storage, *a: Any, **k: Any) -> Any:
        for part in real(self, *a, **k):
            copied.append(part.part_no)
            yield part

    monkeypatch.setattr(S3Storage, "copy_parts", spy)
    uid = upload(api, big, big, "none")
    seen = step_through(api, uid)
    assert seen[-1] == ("accepted", BIG)
    assert sorted(copied) == [1, 2]  # 64 MiB in 32 MiB copy parts, each copied once
    # 16 runs read 4 MiB each; the copy parts go beside the first two of them.
    assert len(seen) == BIG // (4 * MiB)
    assert s3().get_object(Bucket="t-permanent", Key="F1")["Body"].read() == big
    assert s3().list_multipart_uploads(Bucket="t-permanent").get("Uploads", []) == []


@pytest.fixture
def range_by_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """One 64 KiB range at a time and a checkpoint after each: every step can be watched."""
    monkeypatch.setenv("UCS_VALIDATE_RANGE_SIZE", str(PART))
    monkeypatch.setenv("UCS_VALIDATE_CONCURRENCY", "1")
    monkeypatch.setenv("UCS_VALIDATE_CHECKPOINT_SECONDS", "0")


# ---- progress ---------------------------------------------------------------------------------


def test_progress_is_visible_while_the_server_verifies(
    api: Api, monkeypatch: pytest.MonkeyPatch, range_by_range: None
) -> None:
    """``verified_bytes`` in GET /uploads/{id} grows during one slow validation run."""
    data = payload(5 * PART, seed=12)
    uid = upload(api, data, data, "none")
    observed: list[tuple[str, int]] = []
    leases = type(state().leases)
    real = leases.save_verification

    def save_then_look(self: Any, *a: Any, **k: Any) -> bool:
        saved = real(self, *a, **k)
        body = details(api, uid)  # what a client polling the upload sees meanwhile
        observed.append((body["upload_status"], body["verified_bytes"]))
        return saved

    monkeypatch.setattr(leases, "save_verification", save_then_look)
    assert len(run_jobs()) == 1  # one run
    assert observed == [("uploaded", n * PART) for n in range(1, 6)]
    body = details(api, uid)
    assert (body["upload_status"], body["verified_bytes"]) == ("accepted", 5 * PART)


# ---- concurrency, crashes, cancels ------------------------------------------------------------


def count_verdicts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every verdict written (accept or reject that won its condition)."""
    verdicts: list[str] = []
    uploads = type(state().uploads)
    accept, release = uploads.accept, uploads.release

    def spy_accept(self: Any, *a: Any, **k: Any) -> bool:
        won = accept(self, *a, **k)
        if won:
            verdicts.append("accepted")
        return won

    def spy_release(self: Any, upload: Any, target: UploadStatus, *a: Any, **k: Any) -> bool:
        won = release(self, upload, target, *a, **k)
        if won and target is UploadStatus.REJECTED:
            verdicts.append("rejected")
        return won

    monkeypatch.setattr(uploads, "accept", spy_accept)
    monkeypatch.setattr(uploads, "release", spy_release)
    return verdicts


def test_duplicated_continuation_messages_give_one_verdict(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UCS_VALIDATE_BUDGET_BYTES", str(PART))
    monkeypatch.setenv("UCS_VALIDATE_RANGE_SIZE", str(PART // 4))
    verdicts = count_verdicts(monkeypatch)
    data = payload(6 * PART + 1, seed=13)
    uid = upload(api, data, data, "none")
    message = {"job": "validate", "upload_id": uid}
    duplicate_during_run: list[Any] = []

    def deliver_a_duplicate(n: int) -> None:
        if not duplicate_during_run:  # a second delivery while the first run holds the lease
            duplicate_during_run.append(services().validation.validate(uid))

    on_read(monkeypatch, deliver_a_duplicate)
    assert queued_jobs() == [message]
    jobs.handle_message(message)
    # (every reader thread may have delivered one) each left the work to the lease holder
    assert duplicate_during_run and set(duplicate_during_run) == {None}
    assert details(api, uid)["verified_bytes"] == PART
    # Three more copies of the continuation, as SQS may deliver (and the sweep re-queue):
    for _ in range(3):
        api_queue_send(message)
    run_jobs()
    for _ in range(2):  # replays after the verdict
        jobs.handle_message(message)
    assert verdicts == ["accepted"]
    assert details(api, uid)["upload_status"] == "accepted"
    assert s3().get_object(Bucket="t-permanent", Key="F1")["Body"].read() == data


def api_queue_send(body: dict[str, Any]) -> None:
    services().queue.send(body)


class Crash(BaseException):
    """Stands for SIGKILL: not an ``Exception``, nothing in the job handles it."""


def test_a_run_that_died_is_continued_from_its_last_checkpoint(
    api: Api, monkeypatch: pytest.MonkeyPatch, range_by_range: None
) -> None:
    monkeypatch.setenv("UCS_VALIDATE_LEASE_SECONDS", "0.3")
    data = payload(6 * PART, seed=14)
    uid = upload(api, data, data, "none")
    message = queued_jobs()[0]
    real_release = ValidationService._release

    def die_at_the_4th(n: int) -> None:
        if n == 4:
            raise Crash  # dies while reading the 4th range, after 3 checkpoints

    reads = on_read(monkeypatch, die_at_the_4th)
    monkeypatch.setattr(ValidationService, "_release", lambda *a: None)  # no clean exit
    with pytest.raises(Crash):
        jobs.handle_message(message)
    monkeypatch.setattr(ValidationService, "_release", real_release)
    assert details(api, uid)["verified_bytes"] == 3 * PART
    # The redelivered message while the dead run's lease is still valid: left alone.
    assert services().validation.validate(uid) is None
    time.sleep(0.4)  # the lease expires (UCS_VALIDATE_LEASE_SECONDS)
    reads.clear()
    jobs.handle_message(message)
    assert reads == [3 * PART, 4 * PART, 5 * PART]  # continued, not restarted
    assert details(api, uid)["upload_status"] == "accepted"
    f = repo().files.get_file("F1")
    assert f is not None and f.sha256_checksum == hashlib.sha256(data).hexdigest()


def test_a_failing_read_leaves_the_upload_to_the_retry(
    api: Api, monkeypatch: pytest.MonkeyPatch, range_by_range: None
) -> None:
    """An S3 error mid-way: the job raises (SQS redelivers), the lease is freed at once."""
    data = payload(4 * PART, seed=15)
    uid = upload(api, data, data, "none")
    message = queued_jobs()[0]

    def fail_the_2nd(n: int) -> None:
        if n == 2:
            raise StorageError("InternalError", "boom")

    on_read(monkeypatch, fail_the_2nd)
    with pytest.raises(StorageError, match="boom"):
        jobs.handle_message(message)
    assert details(api, uid)["upload_status"] == "uploaded"
    assert details(api, uid)["verified_bytes"] == PART
    jobs.handle_message(message)  # the redelivery, at once: no lease to wait for
    assert details(api, uid)["upload_status"] == "accepted"


def test_a_cancel_between_invocations_ends_cancelled(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UCS_VALIDATE_BUDGET_BYTES", str(PART))
    verdicts = count_verdicts(monkeypatch)
    data = payload(5 * PART, seed=16)
    uid = upload(api, data, data, "none")
    for _ in range(2):
        [message] = queued_jobs()
        jobs.handle_message(message)
    assert details(api, uid)["verified_bytes"] == 2 * PART
    r = api.call("PATCH", f"/uploads/{uid}", {"upload_status": "cancelled"})
    assert r.status_code == 204
    run_jobs()  # the pending continuation
    jobs.handle_message(message)  # and a replay
    assert details(api, uid)["upload_status"] == "cancelled"
    assert verdicts == []
    assert keys("t-inbox") == [] and keys("t-permanent") == []


def test_a_cancel_during_a_run_stops_it_without_a_verdict(
    api: Api, monkeypatch: pytest.MonkeyPatch, range_by_range: None
) -> None:
    verdicts = count_verdicts(monkeypatch)
    data = payload(5 * PART, seed=17)
    uid = upload(api, data, data, "none")

    def cancel_at_the_3rd(n: int) -> None:
        if n == 3:
            r = api.call("PATCH", f"/uploads/{uid}", {"upload_status": "cancelled"})
            assert r.status_code == 204

    on_read(monkeypatch, cancel_at_the_3rd)
    run_jobs()
    body = details(api, uid)
    assert body["upload_status"] == "cancelled" and verdicts == []
    assert keys("t-inbox") == [] and keys("t-permanent") == []


def test_a_cancel_between_invocations_of_the_accept_copy_aborts_it(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy's multipart upload (saved in the item) is aborted by the cancel itself."""
    monkeypatch.setenv("UCS_JOB_BUDGET_SECONDS", "0.001")  # one part per run
    monkeypatch.setenv("UCS_COPY_CONCURRENCY", "1")
    monkeypatch.setenv("UCS_SINGLE_COPY_MAX", str(PART))
    verdicts = count_verdicts(monkeypatch)
    data = payload(3 * PART + 100, seed=18)
    uid = upload(api, data, data, "none")
    for _ in range(2):  # reads everything and copies part 1 beside it, then part 2
        [message] = queued_jobs()
        jobs.handle_message(message)
    assert [u["Key"] for u in s3().list_multipart_uploads(Bucket="t-permanent")["Uploads"]] == [
        "F1"
    ]
    r = api.call("PATCH", f"/uploads/{uid}", {"upload_status": "cancelled"})
    assert r.status_code == 204
    run_jobs()
    assert details(api, uid)["upload_status"] == "cancelled" and verdicts == []
    assert keys("t-permanent") == [] and keys("t-inbox") == []
    assert s3().list_multipart_uploads(Bucket="t-permanent").get("Uploads", []) == []


def orphan_copy(file_id: str = "F1") -> str:
    """A permanent multipart upload no record names: what a run killed between
    CreateMultipartUpload and saving its id leaves (or a create retried after its answer
    was lost)."""
    return str(s3().create_multipart_upload(Bucket="t-permanent", Key=file_id)["UploadId"])


def permanent_uploads() -> list[str]:
    return [u["Key"] for u in s3().list_multipart_uploads(Bucket="t-permanent").get("Uploads", [])]


@pytest.mark.parametrize("ending", ["rejected", "accepted", "cancelled"])
def test_an_unnamed_permanent_copy_is_aborted_when_the_upload_ends(
    api: Api, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    monkeypatch.setenv("UCS_JOB_BUDGET_SECONDS", "0.001")  # one part per run
    monkeypatch.setenv("UCS_COPY_CONCURRENCY", "1")
    monkeypatch.setenv("UCS_SINGLE_COPY_MAX", str(PART))
    data = payload(3 * PART + 100, seed=19)
    stored = other_bytes(data) if ending == "rejected" else data
    uid = upload(api, data, stored, "none")
    [message] = queued_jobs()
    jobs.handle_message(message)  # the recorded copy begun
    orphan_copy()
    assert permanent_uploads() == ["F1", "F1"]
    if ending == "cancelled":
        r = api.call("PATCH", f"/uploads/{uid}", {"upload_status": "cancelled"})
        assert r.status_code == 204
    run_jobs()
    assert details(api, uid)["upload_status"] == ending
    assert permanent_uploads() == []
    assert keys("t-inbox") == []
    if ending == "accepted":
        assert s3().get_object(Bucket="t-permanent", Key="F1")["Body"].read() == data


def test_another_uploads_permanent_copy_is_left_alone(api: Api) -> None:
    """A cancel of an upload that no longer holds the file's lock must not touch the copy of
    the upload that does (same permanent key)."""
    data = payload(2 * PART, seed=20)
    register("F1", data)
    first = api.create_upload("F1")["upload_id"]
    r = api.call("PATCH", f"/uploads/{first}", {"upload_status": "cancelled"})
    assert r.status_code == 204
    second = api.create_upload("F1")["upload_id"]
    theirs = orphan_copy()  # stands for the second upload's copy in progress
    upload_record = repo().uploads.get_upload(first)
    assert upload_record is not None
    services().validation.objects.discard(upload_record, repo().files.get_file("F1"))
    listed = s3().list_multipart_uploads(Bucket="t-permanent").get("Uploads", [])
    assert [u["UploadId"] for u in listed] == [theirs]
    assert repo().files.get_file("F1").active_upload_id == second  # type: ignore[union-attr]


def test_a_replaced_object_is_never_accepted(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Other bytes stored under the segment's key between invocations: every read is
    conditional on the ETag the segment was completed with, so the upload is rejected and
    nothing reaches the permanent bucket."""
    monkeypatch.setenv("UCS_JOB_BUDGET_BYTES", str(PART))
    data = payload(3 * PART, seed=19)
    uid = upload(api, data, data, "none")
    [message] = queued_jobs()
    jobs.handle_message(message)
    assert details(api, uid)["verified_bytes"] == PART
    s3().put_object(Bucket="t-inbox", Key=f"F1/{uid}", Body=other_bytes(data))
    run_jobs()
    assert_rejected(api, uid, "a stored segment changed after it was completed")


@pytest.mark.parametrize("tamper", ["etag", "state"])
def test_saved_state_not_matching_the_object_is_hashed_again_from_byte_0(
    api: Api, monkeypatch: pytest.MonkeyPatch, tamper: str
) -> None:
    """Saved hash state is continued only on the object (ETag) and offset it belongs to."""
    monkeypatch.setenv("UCS_JOB_BUDGET_BYTES", str(PART))
    data = payload(3 * PART, seed=22)
    uid = upload(api, data, data, "none")
    [message] = queued_jobs()
    jobs.handle_message(message)
    if tamper == "etag":
        tamper_with.upload(uid, verify_etag="0" * 32 + "-3")
    else:  # a state that covers other bytes than verified_bytes says
        tamper_with.upload(uid, verified_bytes=PART + 1)
    reads = on_read(monkeypatch)
    run_jobs()
    assert reads[0] == 0 and sorted(reads) == reads
    body = details(api, uid)
    assert (body["upload_status"], body["verified_bytes"]) == ("accepted", 3 * PART)


def test_no_verdict_without_a_trustworthy_hash(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    data = payload(PART, seed=20)
    uid = upload(api, data, data, "none")
    [message] = queued_jobs()
    monkeypatch.setattr(digests, "_verified", None)
    monkeypatch.setattr(digests, "_failure", digests.DigestUnavailable("self-test failed"))
    with pytest.raises(digests.DigestUnavailable):
        jobs.handle_message(message)
    body = details(api, uid)
    assert (body["upload_status"], body["verified_bytes"]) == ("uploaded", 0)


def test_the_lease_is_stored_in_the_upload_item(api: Api) -> None:
    data = payload(PART, seed=21)
    uid = upload(api, data, data, "none")
    run_jobs()
    lease = tamper_with.stored_lease(uid)
    assert lease.verified_bytes == PART and lease.verify_owner
    assert lease.verify_lease_until == 0  # released when the run ended
    md5_state, _ = digests.unpack(lease.verify_state, PART)
    assert md5_state.hexdigest() == md5(data)


@pytest.mark.parametrize(
    "env",
    [
        {"UCS_VALIDATE_LEASE_SECONDS": "5", "UCS_VALIDATE_CHECKPOINT_SECONDS": "5"},
        {"UCS_VALIDATE_CONCURRENCY": "0"},
        {"UCS_VALIDATE_RANGE_SIZE": "0"},
        {"UCS_VALIDATE_BUDGET_SECONDS": "0"},
    ],
    ids=json.dumps,
)
def test_settings_that_cannot_work_are_refused(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, api: Api
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError):
        _ = services().validation


def test_the_worker_refuses_to_start_without_a_trustworthy_hash(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str]
) -> None:
    from ucs_lambda import worker

    monkeypatch.setattr(digests, "_verified", None)
    monkeypatch.setattr(digests, "_failure", digests.DigestUnavailable("self-test failed: x"))
    assert worker.main(["--sweep-seconds", "0"]) == 3
    assert "cannot validate uploads here: self-test failed" in capsys.readouterr().err


def test_the_default_budget_fits_the_job_functions_lambda_timeout() -> None:
    """600 s of reading or copying leave 300 s of the 900 s timeout for the ranges and copy parts in
    flight, the last checkpoint and the continuation message (docs/CONTRACTS.md)."""
    config = json.loads((Path(__file__).parents[2] / ".chalice" / "config.json").read_text())
    for name, stage in config["stages"].items():
        timeout = stage["lambda_functions"]["on_job_message"]["lambda_timeout"]
        budget = float(stage["environment_variables"].get("UCS_JOB_BUDGET_SECONDS", 600))
        assert budget + 300 <= timeout, (name, budget, timeout)
