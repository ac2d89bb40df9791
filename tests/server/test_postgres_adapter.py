"""The PostgreSQL adapter against a real PostgreSQL: every condition of the state ports, the
races they exist for, the job queue's delivery rules and the migrations.

Runs on the server of ``build/pg-up.sh`` (or ``$UCS_TEST_DATABASE_URL``) in a database of its
own, emptied before each test; skipped without a server unless ``PG_REQUIRED=1``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from tests.helpers import postgres
from ucs_lambda.adapters.postgres import (
    PostgresError,
    PostgresFiles,
    PostgresJobQueue,
    PostgresUploads,
    close_pools,
    migrate,
    pool_for,
    postgres_state,
)
from ucs_lambda.adapters.postgres import db as pg_db
from ucs_lambda.adapters.postgres import uploads as pg_uploads
from ucs_lambda.adapters.postgres.schema import MIGRATIONS, applied_versions
from ucs_lambda.config import Settings
from ucs_lambda.domain.attempts import AttemptBudget
from ucs_lambda.domain.models import (
    FileRecord,
    StagingProgress,
    StoredSegment,
    UploadRecord,
    UploadStatus,
    Verification,
    utcnow,
)
from ucs_lambda.ports.jobs import JobCounts, JobQueueError
from ucs_lambda.ports.state import AttemptsSpent, ConditionLost

S = UploadStatus
MD5 = "0123456789ABCDEF0123456789ABCDEF"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
NOW = 1_800_000_000
BUDGET = AttemptBudget(limit=10, window_seconds=3600, now=NOW)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with postgres.session_database("ucs_adapter") as url:
        yield url


@pytest.fixture
def settings(pg_url: str) -> Settings:
    postgres.truncate_all(pg_url)
    return postgres.settings_for(
        pg_url, database_pool_size=10, job_visibility_seconds=60, job_max_receives=3
    )


@pytest.fixture
def files(settings: Settings) -> PostgresFiles:
    return PostgresFiles(settings)


@pytest.fixture
def uploads(settings: Settings) -> PostgresUploads:
    return PostgresUploads(settings)


@pytest.fixture
def queue(settings: Settings) -> PostgresJobQueue:
    return PostgresJobQueue(settings)


def sql(settings: Settings, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """A statement past the adapter (autocommit); its rows, if any."""
    with psycopg.connect(str(settings.database_url), autocommit=True) as conn:
        cur = conn.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def a_file(file_id: str = "GHGAF1", **changes: Any) -> FileRecord:
    record = FileRecord(
        file_id=file_id,
        file_name=f"{file_id}.bam",
        size=1234,
        md5_checksum=MD5,
        grouping_label="g1",
        format="bam",
        creation_date=T0,
        update_date=T0,
        submitters=frozenset({"alice"}),
        readers=frozenset({"bob", "carol"}),
    )
    return replace(record, **changes)


def an_upload(
    file_id: str = "GHGAF1", created: datetime | None = None, **changes: Any
) -> UploadRecord:
    upload_id = changes.pop("upload_id", str(uuid.uuid4()))
    when = created or utcnow()
    record = UploadRecord(
        upload_id=upload_id,
        file_id=file_id,
        s3_upload_id=f"s3-{upload_id}",
        object_key=f"{file_id}/{upload_id}",
        upload_status=S.PENDING,
        part_size=16 * 1024 * 1024,
        created=when,
        updated=when,
        segment_parts=8,
        copy_group=4,
        segment_uploads={1: f"s3-{upload_id}"},
    )
    return replace(record, **changes)


def registered(files: PostgresFiles, file_id: str = "GHGAF1") -> FileRecord:
    files.register_file(a_file(file_id))
    found = files.get_file(file_id)
    assert found is not None
    return found


def started(
    files: PostgresFiles, uploads: PostgresUploads, file_id: str = "GHGAF1"
) -> UploadRecord:
    """A registered file with one pending upload; the upload as stored."""
    if files.get_file(file_id) is None:
        registered(files, file_id)
    upload = an_upload(file_id)
    uploads.create_upload(upload, BUDGET)
    stored = uploads.get_upload(upload.upload_id)
    assert stored is not None
    return stored


def accepted_file(files: PostgresFiles, uploads: PostgresUploads, file_id: str = "GHGAF1") -> str:
    upload = started(files, uploads, file_id)
    assert uploads.mark_uploaded(upload.upload_id, None, [])
    assert uploads.accept(upload, sha256="ab" * 32, permanent_etag='"etag"')
    return upload.upload_id


# ---- files --------------------------------------------------------------------------------


def test_files_are_registered_once_read_singly_and_in_bulk(files: PostgresFiles) -> None:
    files.register_file(a_file("GHGAF1"))
    files.register_file(a_file("GHGAF2", submitters=frozenset(), readers=frozenset()))

    one = files.get_file("GHGAF1")
    assert one is not None
    assert one.md5_checksum == MD5.lower()
    assert (one.file_name, one.size, one.grouping_label, one.format) == (
        "GHGAF1.bam",
        1234,
        "g1",
        "bam",
    )
    assert one.submitters == {"alice"} and one.readers == {"bob", "carol"}
    assert one.creation_date == T0 and one.creation_date.utcoffset() == timedelta(0)
    assert one.active_upload_id is None and one.attempt_count == 0 and one.staging is None
    assert files.get_file("GHGAF9") is None

    many = files.get_files(["GHGAF2", "GHGAF9", "GHGAF1", "GHGAF2"])
    assert sorted(many) == ["GHGAF1", "GHGAF2"]
    assert many["GHGAF2"].readers == frozenset() and many["GHGAF2"].submitters == frozenset()
    assert files.get_files([]) == {}

    with pytest.raises(ConditionLost):
        files.register_file(a_file("GHGAF1", file_name="other.bam"))
    assert files.get_file("GHGAF1").file_name == "GHGAF1.bam"  # type: ignore[union-attr]


def test_grant_reader_adds_once_and_needs_the_file(files: PostgresFiles) -> None:
    registered(files)
    assert files.grant_reader("GHGAF1", "dave")
    assert files.grant_reader("GHGAF1", "dave")
    assert files.get_file("GHGAF1").readers == {"bob", "carol", "dave"}  # type: ignore[union-attr]
    assert not files.grant_reader("GHGAF9", "dave")


# ---- the upload lock ----------------------------------------------------------------------


def test_create_upload_takes_the_lock_counts_the_attempt_and_stores_the_upload(
    files: PostgresFiles, uploads: PostgresUploads
) -> None:
    registered(files)
    upload = an_upload(segment_uploads={1: "mp-1", 3: "mp-3"})
    uploads.create_upload(upload, BUDGET)

    file = files.get_file("GHGAF1")
    assert file is not None
    assert file.active_upload_id == file.current_upload_id == upload.upload_id
    assert (file.attempt_window_start, file.attempt_count) == (NOW, 1)
    assert file.update_date == upload.created

    stored = uploads.get_upload(upload.upload_id)
    assert stored is not None
    assert stored.upload_status is S.PENDING
    assert stored.created == stored.updated == upload.created
    assert (stored.segment_parts, stored.copy_group, stored.part_size) == (8, 4, upload.part_size)
    assert stored.segment_uploads == {1: "mp-1", 3: "mp-3"}
    assert (
        stored.segments_done == {} and stored.client_part_md5s == [] and stored.verified_bytes == 0
    )
    assert uploads.get_uploads([upload.upload_id, "nope"]) == {upload.upload_id: stored}
    assert uploads.uploads_for_file("GHGAF1") == [stored]


def test_an_upload_without_segment_rows_reads_back(
    files: PostgresFiles, uploads: PostgresUploads
) -> None:
    registered(files)
    upload = an_upload(segment_uploads={}, segment_parts=None, copy_group=None)
    uploads.create_upload(upload, BUDGET)
    stored = uploads.get_upload(upload.upload_id)
    assert stored is not None
    assert (stored.segment_uploads, stored.segments_done) == ({}, {})
    assert (stored.segment_parts, stored.copy_group) == (None, None)
    assert stored.segment_upload(1) == upload.s3_upload_id


def test_create_upload_loses_while_locked_or_without_file_or_with_a_taken_id(
    files: PostgresFiles, uploads: PostgresUploads
) -> None:
    first = started(files, uploads)
    with pytest.raises(ConditionLost):
        uploads.create_upload(an_upload(), BUDGET)
    with pytest.raises(ConditionLost):
        uploads.create_upload(an_upload("GHGAF9"), BUDGET)
    assert files.get_file("GHGAF1").attempt_count == 1  # type: ignore[union-attr]

    assert uploads.release(first, S.CANCELLED)
    with pytest.raises(ConditionLost):  # the id is taken: nothing written, the lock stays free
        uploads.create_upload(an_upload(upload_id=first.upload_id), BUDGET)
    file = files.get_file("GHGAF1")
    assert file is not None and file.active_upload_id is None and file.attempt_count == 1


def test_of_50_concurrent_create_upload_calls_exactly_one_wins(
    files: PostgresFiles, uploads: PostgresUploads
) -> None:
    registered(files)
    barrier = threading.Barrier(50)
    outcomes: list[str] = []
    lock = threading.Lock()

    def create() -> None:
        barrier.wait()
        try:
            uploads.create_upload(an_upload(), BUDGET)
            outcome = "won"
        except ConditionLost:
            outcome = "lost"
        except Exception as exc:  # a deadlock or a 500 would land here
            outcome = f"error {type(exc).__name__}: {exc}"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=create) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(outcomes) == {"won": 1, "lost": 49}
    file = files.get_file("GHGAF1")
    assert file is not None and file.attempt_count == 1
    assert [u.upload_id for u in uploads.uploads_for_file("GHGAF1")] == [file.active_upload_id]


def test_the_database_refuses_a_second_active_upload_of_a_file(
    settings: Settings, files: PostgresFiles, uploads: PostgresUploads
) -> None:
    first = started(files, uploads)
    insert = (
        "INSERT INTO uploads (upload_id, file_id, s3_upload_id, object_key, status, part_size,"
        " created, updated) VALUES (%s, 'GHGAF1', 's3', 'k', %s, 1, now(), now())"
    )
    for status in ("pending", "uploaded", "accepted"):
        with pytest.raises(psycopg.errors.UniqueViolation):
            sql(settings, insert, str(uuid.uuid4()), status)
    sql(settings, insert, str(uuid.uuid4()), "cancelled")  # inactive ones are not limited

    # Even with the file's lock cleared behind the adapter's back, the index refuses.
    sql(settings, "UPDATE files SET active_upload_id = NULL")
    with pytest.raises(ConditionLost):
        uploads.create_upload(an_upload(), BUDGET)
    assert files.get_file("GHGAF1").active_upload_id is None  # type: ignore[union-attr]
    assert uploads.get_upload(first.upload_id).upload_status is S.PENDING  # type: ignore[union-attr]


def test_the_attempt_window_limits_new_uploads_until_it_ends(
    files: PostgresFiles, uploads: PostgresUploads
) -> None:
    registered(files)
    budget = AttemptBudget(limit=2, window_seconds=100, now=NOW)
    for _ in range(2):
        upload = an_upload()
        uploads.create_upload(upload, budget)
        assert uploads.release(upload, S.CANCELLED)
    with pytest.raises(AttemptsSpent) as spent:
        uploads.create_upload(an_upload(), replace(budget, now=NOW + 99))
    assert spent.value.window_start == NOW
    file = files.get_file("GHGAF1")
    assert file is not None and file.active_upload_id is None and file.attempt_count == 2

    later = replace(budget, now=NOW + 100)  # the window has ended: a new one opens
    uploads.create_upload(an_upload(), later)
    file = files.get_file("GHGAF1")
    assert file is not None and (file.attempt_window_start, file.attempt_count) == (NOW + 100, 1)


def test_mark_uploaded_only_from_pending_and_keeps_10000_part_md5s(
    files: PostgresFiles, uploads: PostgresUploads
) -> None:
    upload = started(files, uploads)
    md5s = [f"{i:032x}" for i in range(10_000)]
    assert uploads.mark_uploaded(upload.upload_id, MD5, md5s)
    stored = uploads.get_upload(upload.upload_id)
    assert stored is not None
    assert stored.upload_status is S.UPLOADED and stored.updated > upload.updated
    assert stored.client_md5 == MD5.lower() and stored.client_part_md5s == md5s
    assert not uploads.mark_uploaded(upload.upload_id, None, [])
    assert not uploads.mark_uploaded("nope", None, [])
    assert files.get_file("GHGAF1").active_upload_id == upload.upload_id  # type: ignore[union-attr]


def test_release_checks_status_lock_unchanged_upload_and_verifier(
    files: PostgresFiles, uploads: PostgresUploads
) -> None:
    upload = started(files, uploads)
    assert uploads.claim_verification(upload.upload_id, "run-1", NOW, 60) is not None
    current = uploads.get_upload(upload.upload_id)
    assert current is not None

    assert not uploads.release(current, S.ACCEPTED)  # never via release
    assert not uploads.release(current, S.REJECTED)  # rejected only from uploaded
    assert not uploads.release(current, S.CANCELLED, expect_updated=upload.updated)  # changed
    assert not uploads.release(current, S.FAILED, verifier="run-2")
    unchanged = uploads.get_upload(upload.upload_id)
    assert unchanged == current
    assert files.get_file("GHGAF1").active_upload_id == upload.upload_id  # type: ignore[union-attr]

    reason = "x" * 1500
    assert uploads.release(
        current, S.FAILED, reason, expect_updated=current.updated, verifier="run-1"
    )
    released = uploads.get_upload(upload.upload_id)
    assert released is not None
    assert released.upload_status is S.FAILED and released.status_reason == "x" * 1000
    file = files.get_file("GHGAF1")
    assert file is not None and file.active_upload_id is None
    assert file.current_upload_id == upload.upload_id
    assert not uploads.release(current, S.CANCELLED)  # failed is final

    other = started(files, uploads)
    assert not uploads.release(current, S.CANCELLED)  # does not hold the lock
    assert uploads.release(other, S.CANCELLED)  # no reason: none stored
    assert uploads.get_upload(other.upload_id).status_reason is None  # type: ignore[union-attr]


def test_accept_records_on_the_file_keeps_the_lock_and_happens_once(
    files: PostgresFiles, uploads: PostgresUploads
) -> None:
    upload = started(files, uploads)
    assert not uploads.accept(upload)  # pending
    assert uploads.mark_uploaded(upload.upload_id, None, [])
    assert uploads.claim_verification(upload.upload_id, "run-1", NOW, 60) is not None
    assert not uploads.accept(upload, verifier="run-2")

    assert uploads.accept(upload, "ok", sha256="ab" * 32, verifier="run-1", permanent_etag='"e"')
    stored = uploads.get_upload(upload.upload_id)
    assert (
        stored is not None and stored.upload_status is S.ACCEPTED and stored.status_reason == "ok"
    )
    file = files.get_file("GHGAF1")
    assert file is not None
    assert file.accepted_upload_id == file.active_upload_id == upload.upload_id
    assert file.accepted_at == stored.updated
    assert (file.sha256_checksum, file.permanent_etag) == ("ab" * 32, '"e"')

    assert not uploads.accept(upload, sha256="cd" * 32)
    assert not uploads.release(upload, S.CANCELLED)
    with pytest.raises(ConditionLost):
        uploads.create_upload(an_upload(), BUDGET)
    assert files.get_file("GHGAF1").sha256_checksum == "ab" * 32  # type: ignore[union-attr]


def test_of_concurrent_accepts_and_cancels_exactly_one_wins(
    files: PostgresFiles, uploads: PostgresUploads
) -> None:
    upload = started(files, uploads)
    assert uploads.mark_uploaded(upload.upload_id, None, [])
    barrier = threading.Barrier(20)
    results: list[tuple[str, bool]] = []

    def change(i: int) -> None:
        barrier.wait()
        if i % 2:
            results.append(("accept", uploads.accept(upload)))
        else:
            results.append(("cancel", uploads.release(upload, S.CANCELLED)))

    threads = [threading.Thread(target=change, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [kind for kind, won in results if won]
    assert len(results) == 20 and len(winners) == 1
    file = files.get_file("GHGAF1")
    status = uploads.get_upload(upload.upload_id).upload_status  # type: ignore[union-attr]
    assert file is not None
    if winners == ["accept"]:
        assert status is S.ACCEPTED and file.active_upload_id == upload.upload_id
    else:
        assert status is S.CANCELLED and file.active_upload_id is None


# ---- segments -----------------------------------------------------------------------------


def test_segments_open_once_and_record_idempotently_while_pending(
    files: PostgresFiles, uploads: PostgresUploads
) -> None:
    upload = started(files, uploads)
    assert uploads.open_segment(upload.upload_id, 2, "mp-2")
    assert not uploads.open_segment(upload.upload_id, 2, "mp-2b")
    assert not uploads.open_segment(upload.upload_id, 1, "mp-1b")  # opened at create
    assert not uploads.open_segment("nope", 2, "mp")

    parts = ("aa" * 16, "bb" * 16)
    assert uploads.record_segment(upload.upload_id, 2, StoredSegment("", parts))  # completing
    assert uploads.record_segment(upload.upload_id, 2, StoredSegment('"e2"', parts))
    assert uploads.record_segment(upload.upload_id, 2, StoredSegment('"e2"', parts))
    assert uploads.record_segment(upload.upload_id, 3, StoredSegment("", ("cc" * 16,)))
    assert uploads.record_segment(upload.upload_id, 4, StoredSegment('"e4"', ()))
    assert uploads.open_segment(upload.upload_id, 3, "mp-3")  # recorded, but not yet opened
    assert not uploads.record_segment("nope", 2, StoredSegment('"e"', parts))

    stored = uploads.get_upload(upload.upload_id)
    assert stored is not None
    assert stored.segment_uploads == {1: upload.s3_upload_id, 2: "mp-2", 3: "mp-3"}
    assert stored.segments_done == {
        2: StoredSegment('"e2"', parts),
        3: StoredSegment("", ("cc" * 16,)),
        4: StoredSegment('"e4"', ()),
    }
    assert sorted(stored.stored_segments()) == [2, 4]
    assert stored.updated > upload.updated

    assert uploads.mark_uploaded(upload.upload_id, None, [])
    assert not uploads.open_segment(upload.upload_id, 5, "mp-5")
    assert not uploads.record_segment(upload.upload_id, 5, StoredSegment('"e5"', ()))
    assert uploads.get_upload(upload.upload_id).segments_done == stored.segments_done  # type: ignore[union-attr]


def test_concurrent_opens_of_one_segment_have_one_winner(
    files: PostgresFiles, uploads: PostgresUploads
) -> None:
    upload = started(files, uploads)
    barrier = threading.Barrier(10)
    results: list[bool] = []

    def open_it(i: int) -> None:
        barrier.wait()
        results.append(uploads.open_segment(upload.upload_id, 7, f"mp-{i}"))

    threads = [threading.Thread(target=open_it, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 9 + [True]


# ---- the validation lease -----------------------------------------------------------------


def test_the_verification_lease_is_claimed_saved_renewed_and_taken_over_when_expired(
    files: PostgresFiles, uploads: PostgresUploads
) -> None:
    upload = started(files, uploads)
    uid = upload.upload_id
    assert uploads.claim_verification(uid, "A", NOW, 60) == Verification(owner="A")
    assert uploads.claim_verification(uid, "B", NOW + 59, 60) is None  # live lease
    assert uploads.claim_verification(uid, "A", NOW + 1, 60) == Verification(owner="A")

    first = Verification(owner="A", offset=100, state=b"\x01state", etag='"e1"')
    assert uploads.save_verification(first, uid, 0, NOW + 2, 60)  # 0 = never saved
    assert not uploads.save_verification(replace(first, offset=200), uid, 0, NOW + 3, 60)
    assert not uploads.save_verification(replace(first, owner="B"), uid, 100, NOW + 3, 60)
    second = replace(first, offset=200, state=b"\x01later")
    assert uploads.save_verification(second, uid, 100, NOW + 3, 60)
    assert uploads.get_upload(uid).verified_bytes == 200  # type: ignore[union-attr]
    assert uploads.renew_verification(uid, "A", NOW + 10, 60)
    assert not uploads.renew_verification(uid, "B", NOW + 10, 60)
    assert uploads.claim_verification(uid, "B", NOW + 69, 60) is None  # renewed to NOW + 70

    taken = uploads.claim_verification(uid, "B", NOW + 71, 60)  # A let it expire
    assert taken == Verification(owner="B", offset=200, state=b"\x01later", etag='"e1"')
    assert not uploads.save_verification(replace(second, offset=300), uid, 200, NOW + 72, 60)
    assert not uploads.renew_verification(uid, "A", NOW + 72, 60)
    assert not uploads.save_copy_upload(uid, "A", "copy-1")
    assert uploads.save_copy_upload(uid, "B", "copy-1")
    assert uploads.claim_verification(uid, "B", NOW + 73, 60).copy_upload_id == "copy-1"  # type: ignore[union-attr]
    assert uploads.save_copy_upload(uid, "B", None)
    assert uploads.get_upload(uid).copy_upload_id is None  # type: ignore[union-attr]

    uploads.release_verification(uid, "A")  # not the holder: nothing happens
    assert uploads.claim_verification(uid, "A", NOW + 74, 60) is None
    uploads.release_verification(uid, "B")
    assert uploads.claim_verification(uid, "A", NOW + 74, 60) is not None  # free at once


def test_the_lease_needs_a_pending_or_uploaded_upload(
    files: PostgresFiles, uploads: PostgresUploads
) -> None:
    upload = started(files, uploads)
    assert uploads.mark_uploaded(upload.upload_id, None, [])
    assert uploads.claim_verification(upload.upload_id, "A", NOW, 60) is not None
    assert uploads.release(upload, S.CANCELLED)
    assert not uploads.renew_verification(upload.upload_id, "A", NOW, 60)
    assert not uploads.save_verification(Verification("A", 10), upload.upload_id, 0, NOW, 60)
    assert not uploads.save_copy_upload(upload.upload_id, "A", "copy")
    assert uploads.claim_verification(upload.upload_id, "A", NOW, 60) is None
    uploads.release_verification(upload.upload_id, "A")  # in any status, no error
    assert uploads.claim_verification("nope", "A", NOW, 60) is None


# ---- staging ------------------------------------------------------------------------------


def test_staging_claims_need_an_accepted_file_and_expire(
    files: PostgresFiles, uploads: PostgresUploads
) -> None:
    started(files, uploads)
    assert not files.claim_staging("GHGAF1", NOW, 100)  # not accepted
    assert files.claim_staging_run("GHGAF1", "A", NOW, 60) is None
    assert not files.claim_staging("GHGAF9", NOW, 100)

    accepted_file(files, uploads, "GHGAF2")
    assert files.claim_staging("GHGAF2", NOW, 100)
    assert not files.claim_staging("GHGAF2", NOW + 100, 100)
    assert files.claim_staging("GHGAF2", NOW + 101, 100)  # the claim expired
    files.mark_staged("GHGAF2", NOW + 102)
    file = files.get_file("GHGAF2")
    assert file is not None and file.staged_at == NOW + 102 and file.staging_started is None
    assert files.claim_staging("GHGAF2", NOW + 103, 100)
    files.reset_staging("GHGAF2")
    file = files.get_file("GHGAF2")
    assert file is not None and file.staged_at is None and file.staging_started is None

    files.reset_staging("GHGAF9")  # a missing file is fine
    with pytest.raises(ConditionLost):
        files.mark_staged("GHGAF9", NOW)


def test_staging_runs_hold_a_lease_and_checkpoint_their_progress(
    files: PostgresFiles, uploads: PostgresUploads
) -> None:
    accepted_file(files, uploads)
    run = files.claim_staging_run("GHGAF1", "A", NOW, 60.5)
    assert run is not None and run.staging is None and run.staging_started == NOW
    assert run.permanent_etag == '"etag"'
    assert files.claim_staging_run("GHGAF1", "B", NOW + 60, 60) is None

    progress = StagingProgress(copy_id="mp", source_etag='"etag"', copied=64, started=NOW + 0.5)
    assert files.save_staging("GHGAF1", "A", progress, NOW + 10, 60)
    assert not files.save_staging("GHGAF1", "B", progress, NOW + 10, 60)
    assert files.get_file("GHGAF1").staging == progress  # type: ignore[union-attr]
    # no copy id, no start: the copy id goes, the start stays
    assert files.save_staging("GHGAF1", "A", StagingProgress(None, '"etag"', 128), NOW + 20, 60)
    kept = StagingProgress(None, '"etag"', 128, NOW + 0.5)
    assert files.get_file("GHGAF1").staging == kept  # type: ignore[union-attr]

    taken = files.claim_staging_run("GHGAF1", "B", NOW + 81, 60)  # A's lease ended at NOW + 80
    assert taken is not None and taken.staging == kept and taken.staging_started == NOW + 81
    assert not files.finish_staging("GHGAF1", "A", NOW + 82)
    files.release_staging_run("GHGAF1", "A")  # not the holder: nothing happens
    assert files.claim_staging_run("GHGAF1", "A", NOW + 82, 60) is None
    files.release_staging_run("GHGAF1", "B")
    assert files.claim_staging_run("GHGAF1", "A", NOW + 83, 60) is not None

    assert files.finish_staging("GHGAF1", "A", NOW + 90)
    done = files.get_file("GHGAF1")
    assert done is not None and done.staged_at == NOW + 90
    assert done.staging is None and done.staging_started is None
    assert not files.save_staging("GHGAF1", "A", progress, NOW + 91, 60)  # lease gone


# ---- sweeps -------------------------------------------------------------------------------


def test_uploads_in_status_are_the_old_enough_ones_oldest_first(
    files: PostgresFiles, uploads: PostgresUploads, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_uploads, "SWEEP_PAGE", 2)  # several pages
    ages = [5, 1, 4, 2, 3, 0]  # minutes after T0, not in order of creation
    made = {}
    for i, minutes in enumerate(ages):
        fid = f"GHGAF{i}"
        registered(files, fid)
        upload = an_upload(fid, created=T0 + timedelta(minutes=minutes))
        uploads.create_upload(upload, BUDGET)
        made[minutes] = upload
    assert uploads.mark_uploaded(made[2].upload_id, None, [])  # uploaded now: not pending
    cutoff = T0 + timedelta(minutes=5)
    found = list(uploads.uploads_in_status(S.PENDING, cutoff))
    assert [u.upload_id for u in found] == [made[m].upload_id for m in (0, 1, 3, 4)]
    assert list(uploads.uploads_in_status(S.UPLOADED, cutoff)) == []
    assert [u.upload_id for u in uploads.uploads_in_status(S.UPLOADED, utcnow())] == [
        made[2].upload_id
    ]

    # each one is read again when it is its turn: one changed meanwhile is left out
    sweep = uploads.uploads_in_status(S.PENDING, cutoff)
    assert next(sweep).upload_id == made[0].upload_id
    assert uploads.release(made[1], S.CANCELLED)
    assert [u.upload_id for u in sweep] == [made[3].upload_id, made[4].upload_id]


# ---- jobs ---------------------------------------------------------------------------------


def test_jobs_are_sent_received_and_deleted(queue: PostgresJobQueue) -> None:
    queue.send({"job": "validate", "upload_id": "u1"})
    queue.send_many([{"job": "stage", "file_id": f"F{i}"} for i in range(3)])
    queue.send_many([])
    jobs = queue.receive(wait_seconds=0, max_messages=10)
    assert [j.body for j in jobs] == [
        '{"job": "validate", "upload_id": "u1"}',
        *[f'{{"job": "stage", "file_id": "F{i}"}}' for i in range(3)],
    ]
    assert all(j.receive_count == 1 for j in jobs)
    assert len({j.receipt for j in jobs}) == 4
    assert queue.receive(wait_seconds=0) == []  # invisible while received
    for job in jobs:
        queue.delete(job.receipt)
    queue.delete(jobs[0].receipt)  # stale: ignored
    queue.delete("not-a-receipt")
    queue.retry_later("not-a-receipt", 1)
    assert queue.counts() == JobCounts(0, 0, 0)


def test_receive_waits_for_a_job_and_gives_at_most_max_messages(queue: PostgresJobQueue) -> None:
    started_at = time.monotonic()
    assert queue.receive(wait_seconds=1) == []
    assert 0.9 < time.monotonic() - started_at < 2.0

    timer = threading.Timer(0.3, queue.send, args=({"job": "late"},))
    timer.start()
    started_at = time.monotonic()
    jobs = queue.receive(wait_seconds=5)
    assert [j.body for j in jobs] == ['{"job": "late"}']
    assert time.monotonic() - started_at < 1.5

    queue.send_many([{"n": i} for i in range(5)])
    assert len(queue.receive(wait_seconds=0, max_messages=2)) == 2
    assert len(queue.receive(wait_seconds=0, max_messages=10)) == 3


def test_a_received_job_comes_again_after_its_visibility_or_its_retry_delay(
    settings: Settings,
) -> None:
    queue = PostgresJobQueue(replace(settings, job_visibility_seconds=1, job_max_receives=10))
    queue.send({"job": "a"})
    first = queue.receive(wait_seconds=0)
    assert [j.receive_count for j in first] == [1]
    assert queue.receive(wait_seconds=0) == []
    again = queue.receive(wait_seconds=3)  # visible once the second has passed
    assert [(j.job_id, j.receive_count) for j in again] == [(first[0].job_id, 2)]
    assert again[0].receipt != first[0].receipt
    queue.delete(first[0].receipt)  # the old receipt no longer deletes it
    assert sum(vars(queue.counts()).values()) == 1

    queue.retry_later(again[0].receipt, 0)
    third = queue.receive(wait_seconds=0)
    assert [j.receive_count for j in third] == [3]
    queue.retry_later(third[0].receipt, 30)
    assert queue.receive(wait_seconds=1) == []
    sql(settings, "UPDATE jobs SET available_at = now() - interval '1 second'")  # time passes
    assert [j.receive_count for j in queue.receive(wait_seconds=0)] == [4]


def test_jobs_are_dead_lettered_after_the_delivery_limit(
    settings: Settings, queue: PostgresJobQueue, caplog: pytest.LogCaptureFixture
) -> None:
    queue.send({"job": "doomed"})
    for count in (1, 2, 3):  # job_max_receives = 3
        (job,) = queue.receive(wait_seconds=0)
        assert job.receive_count == count
        queue.retry_later(job.receipt, 0)
    queue.send({"job": "fine"})
    with caplog.at_level("WARNING"):
        jobs = queue.receive(wait_seconds=0)
    assert [j.body for j in jobs] == ['{"job": "fine"}']
    assert f"job {job.job_id} dead-lettered" in caplog.text
    (dead,) = queue.dead_jobs()
    assert (dead.job_id, dead.body, dead.receive_count) == (job.job_id, '{"job": "doomed"}', 3)
    assert "dead-lettered" in (dead.last_error or "")
    assert queue.counts() == JobCounts(visible=0, in_flight=1, dead=1)  # "fine" was received
    sql(settings, "UPDATE jobs SET available_at = now() - interval '1 hour'")
    assert [j.body for j in queue.receive(wait_seconds=0)] == ['{"job": "fine"}']


def test_concurrent_receivers_get_every_job_exactly_once(queue: PostgresJobQueue) -> None:
    queue.send_many([{"n": i} for i in range(200)])
    seen: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            idle = 0
            while idle < 3:
                jobs = queue.receive(wait_seconds=0, max_messages=7)
                idle = 0 if jobs else idle + 1
                for job in jobs:
                    with lock:
                        seen.append(job.body)
                    queue.delete(job.receipt)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(seen) == sorted(f'{{"n": {i}}}' for i in range(200))
    assert queue.counts() == JobCounts(0, 0, 0)


def test_database_failures_surface_as_the_adapters_errors(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_db, "POOL_TIMEOUT_SECONDS", 0.3)
    broken = replace(settings, database_url="postgresql://ghga@127.0.0.1:1/none?connect_timeout=1")
    try:
        with pytest.raises(JobQueueError) as failed:
            PostgresJobQueue(broken).send_many([{"n": 1}, {"n": 2}])
        assert failed.value.unsent == [{"n": 1}, {"n": 2}]
        with pytest.raises(PostgresError):
            PostgresFiles(broken).get_file("GHGAF1")
        with pytest.raises(PostgresError):
            PostgresJobQueue(broken).receive(wait_seconds=0)
    finally:
        close_pools()


# ---- schema and connections ---------------------------------------------------------------


def test_migrate_twice_is_a_no_op(settings: Settings) -> None:
    assert migrate(settings) == []
    assert applied_versions(pool_for(settings)) == [v for v, _, _ in MIGRATIONS]


def test_concurrent_migrations_apply_each_migration_once() -> None:
    url = postgres.create_database("ucs_migrate")
    try:
        settings = postgres.settings_for(url, database_pool_size=8)
        results: list[list[str]] = []
        barrier = threading.Barrier(6)

        def run_migrate() -> None:
            barrier.wait()
            results.append(migrate(settings))

        threads = [threading.Thread(target=run_migrate) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(name for r in results for name in r) == [n for _, n, _ in MIGRATIONS]
        assert applied_versions(pool_for(settings)) == [v for v, _, _ in MIGRATIONS]
        state = postgres_state(settings)
        state.files.register_file(a_file())
        assert state.files.get_file("GHGAF1") is not None
    finally:
        close_pools()
        postgres.drop_database(url)


def test_the_status_check_knows_every_upload_status(settings: Settings) -> None:
    (definition,) = sql(
        settings,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'uploads'::regclass AND contype = 'c'",
    )
    assert all(f"'{status.value}'" in definition[0] for status in UploadStatus)


def test_sessions_run_read_committed_in_utc_with_a_statement_timeout(settings: Settings) -> None:
    with pool_for(settings).connection() as conn:
        shown = {
            name: conn.execute(f"SHOW {name}").fetchone()[name]  # type: ignore[index]
            for name in (
                "transaction_isolation",
                "TimeZone",
                "statement_timeout",
                "application_name",
            )
        }
    assert shown == {
        "transaction_isolation": "read committed",
        "TimeZone": "UTC",
        "statement_timeout": "30s",
        "application_name": "ucs",
    }


def test_connection_settings_keep_what_the_url_sets() -> None:
    plain = pg_db._connect_kwargs("postgresql://u@h/db")
    assert plain["application_name"] == "ucs" and plain["autocommit"] is False
    assert plain["options"] == "-c TimeZone=UTC -c statement_timeout=30000"
    own = pg_db._connect_kwargs(
        "postgresql://u@h/db?application_name=mine&options=-c%20statement_timeout%3D5s"
    )
    assert "application_name" not in own  # the URL's wins
    assert own["options"] == "-c TimeZone=UTC -c statement_timeout=5s"


def test_postgres_state_shares_one_adapter_per_table_family(settings: Settings) -> None:
    state = postgres_state(settings)
    assert state.files is state.claims and isinstance(state.files, PostgresFiles)
    assert state.uploads is state.leases and isinstance(state.uploads, PostgresUploads)
