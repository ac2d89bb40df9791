"""Service rules that need no store: the services on in-memory fakes of the ports.

What the stores guarantee (conditions, races, leases) is tested on DynamoDB and PostgreSQL
through the API (the rest of tests/server); here only the services' own decisions.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.helpers.fakes import (
    FakeStorage,
    InMemoryFiles,
    InMemoryUploads,
    RecordingQueue,
    a_file,
    state,
)
from ucs_lambda.config import get_settings
from ucs_lambda.domain.errors import FileNotRegistered, NoFileAccess, NoSuchObject
from ucs_lambda.ports import JobQueueError
from ucs_lambda.services.downloads import DownloadService
from ucs_lambda.services.uploads import UploadService

ACCEPTED = {"accepted_upload_id": "U1", "readers": frozenset({"bob"})}
OUTBOX = get_settings().outbox_bucket


def downloads(*files, storage: FakeStorage | None = None, queue: RecordingQueue | None = None):  # type: ignore[no-untyped-def]
    settings = replace(get_settings(), drs_hostname="drs.example.org")
    store = InMemoryFiles(*files)
    service = DownloadService(
        settings, state(store), storage or FakeStorage(), queue or RecordingQueue()
    )
    return service, store


def test_a_staged_object_is_answered_with_a_fresh_url() -> None:
    storage = FakeStorage()
    file = a_file("F1", **ACCEPTED)
    storage.objects[(OUTBOX, "F1")] = file.size
    service, _ = downloads(file, storage=storage)
    answer = service.get_object("bob", "F1")
    assert answer.staging is None and answer.drs_object is not None
    assert answer.drs_object.file.file_id == "F1"
    assert answer.drs_object.url.startswith(f"https://storage.invalid/{OUTBOX}/F1?")


def test_an_unstaged_object_is_claimed_and_queued_once() -> None:
    queue = RecordingQueue()
    service, store = downloads(a_file("F1", **ACCEPTED), queue=queue)
    first = service.get_object("bob", "F1")
    assert first.staging is not None and first.staging.size == 1000
    assert queue.sent == [{"job": "stage", "file_id": "F1"}]
    again = service.get_object("bob", "F1")  # the claim is fresh: no second job
    assert again.staging is not None and len(queue.sent) == 1
    assert store.files["F1"].staging_started is not None


def test_a_refused_staging_job_frees_its_claim() -> None:
    queue = RecordingQueue()
    queue.refuse = True
    service, store = downloads(a_file("F1", **ACCEPTED), queue=queue)
    with pytest.raises(JobQueueError):
        service.get_object("bob", "F1")
    assert store.files["F1"].staging_started is None  # the next request tries again


@pytest.mark.parametrize(
    ("user", "fields", "error"),
    [
        ("bob", {"readers": frozenset({"bob"})}, NoSuchObject),  # not accepted yet
        ("eve", ACCEPTED, NoFileAccess),
    ],
)
def test_objects_are_refused_before_any_storage_call(
    user: str, fields: dict, error: type[Exception]
) -> None:
    service, _ = downloads(a_file("F1", **fields))
    with pytest.raises(error):
        service.get_object(user, "F1")


def test_a_bulk_request_answers_each_id_by_the_single_object_rule() -> None:
    storage = FakeStorage()
    ready = a_file("R", **ACCEPTED)
    storage.objects[(OUTBOX, "R")] = ready.size
    service, _ = downloads(ready, a_file("S", **ACCEPTED), a_file("X"), storage=storage)
    answer = service.get_objects("bob", ["R", "S", "X", "missing", "R"])
    assert answer.requested == 4
    assert [o.file.file_id for o in answer.resolved] == ["R"]
    assert list(answer.staging) == ["S"]
    assert {k: type(v) for k, v in answer.refused.items()} == {
        "X": NoFileAccess,
        "missing": NoSuchObject,
    }


def test_a_batch_lookup_says_per_file_what_the_single_route_would() -> None:
    mine = a_file("M", submitters=frozenset({"alice"}))
    other = a_file("O", submitters=frozenset({"carol"}))
    service = UploadService(
        get_settings(),
        state(InMemoryFiles(mine, other), InMemoryUploads()),
        FakeStorage(),  # type: ignore[arg-type]
        RecordingQueue(),
    )
    found = {entry.file_id: entry for entry in service.lookup_files("alice", ["M", "O", "N"])}
    assert found["M"].file == mine and found["M"].error is None
    assert isinstance(found["O"].error, NoFileAccess)
    assert isinstance(found["N"].error, FileNotRegistered)
