"""Races on the local stack: the seed's rules hold whatever arrives at the same time.

Why the local stack and not ``mock_aws``: every rule here is carried by DynamoDB conditional
writes (``TransactWriteItems`` and conditional ``UpdateItem``). moto evaluates those conditions
correctly but not *atomically* when requests arrive in parallel: in-process or in its threaded
server, several of 20 racing writers could all see the condition hold and all win (PITFALLS.md).
A pass there would prove nothing and a failure would not be ours. ``build/stack.py`` runs
DynamoDB on a **single-threaded** moto server, which serialises requests the way DynamoDB
serialises writes to one item, so the conditions are honoured and only our code is on trial.
Chalice itself is threaded, so the HTTP requests do race each other up to the database.

After every scenario :func:`tests.helpers.invariants.check_files` reads the tables and checks,
per file: at most one upload pending/uploaded/accepted, none created after acceptance, and
``active_upload_id``/``accepted_upload_id`` agreeing with the uploads' statuses.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

from tests.helpers.admin import register_file, run_admin
from tests.helpers.invariants import check_files, read_file_state
from tests.helpers.jobs import jobs_done, run_jobs_in_parallel, send_jobs
from tests.helpers.support import call, s3_client
from tests.helpers.ucs import (
    accepted_file,
    confirm_body,
    race,
    settled,
    start_upload,
    upload_status,
    wait_for,
)

pytestmark = pytest.mark.e2e


def test_fifty_concurrent_create_upload_requests_have_one_winner(
    local_stack: dict[str, Any], stack_env: dict[str, str], user: dict[str, str]
) -> None:
    file_id = register_file(stack_env, user["user"], size=1000, md5="0" * 32)
    url = f"{local_stack['ucs_url']}/uploads"
    results = race(50, lambda: call("POST", url, user["token"], {"file_id": file_id}))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [400] * 49, statuses
    winner = next(body for status, body in results if status == 200)
    assert {body["exception_id"] for status, body in results if status == 400} == {
        "existingActiveUpload"
    }
    file, uploads = read_file_state(local_stack, file_id)
    assert [u["upload_id"] for u in uploads] == [winner["upload_id"]]
    assert file["active_upload_id"] == winner["upload_id"]
    check_files(local_stack, [file_id])
    # The 49 losers created S3 multipart uploads before losing the transaction: none may linger.
    s3 = s3_client(local_stack)
    pending = s3.list_multipart_uploads(Bucket=local_stack["inbox_bucket"], Prefix=f"{file_id}/")
    assert [u["Key"] for u in pending.get("Uploads", [])] == [f"{file_id}/{winner['upload_id']}"]


def test_cancel_racing_confirm_leaves_one_consistent_outcome(
    local_stack: dict[str, Any], stack_env: dict[str, str], user: dict[str, str]
) -> None:
    """Four cancels and four confirms of one upload at once, in several rounds.

    Any winner is fine (pending -> cancelled; or pending -> uploaded -> accepted, possibly
    cancelled while uploaded); what must hold is the rules, no 5xx, no object left in the
    inbox, and a permanent copy exactly when the upload ended accepted.
    """
    s3 = s3_client(local_stack)
    outcomes = set()
    for _round in range(6):
        data = os.urandom(1000)
        file_id = register_file(stack_env, user["user"], data)
        upload_id = start_upload(local_stack, user["token"], file_id, data)
        url = f"{local_stack['ucs_url']}/uploads/{upload_id}"
        bodies = [{"upload_status": "cancelled"}, confirm_body(data)] * 4
        queue = iter(bodies)
        results = race(len(bodies), lambda u=url, q=queue: call("PATCH", u, user["token"], next(q)))
        statuses = [status for status, _ in results]
        assert set(statuses) <= {204, 400}, results
        assert 204 in statuses, results
        for status, body in results:
            if status == 400:
                assert body["exception_id"] == "uploadNotPending", body
        final = settled(local_stack, user["token"], upload_id)["upload_status"]
        outcomes.add(final)
        assert final in {"accepted", "cancelled"}, final
        check_files(local_stack, [file_id])
        inbox = s3.list_objects_v2(Bucket=local_stack["inbox_bucket"], Prefix=f"{file_id}/")
        assert inbox.get("KeyCount", 0) == 0, inbox.get("Contents")
        multipart = s3.list_multipart_uploads(
            Bucket=local_stack["inbox_bucket"], Prefix=f"{file_id}/"
        )
        assert not multipart.get("Uploads"), multipart["Uploads"]
        permanent = s3.list_objects_v2(Bucket=local_stack["permanent_bucket"], Prefix=file_id)
        assert (permanent.get("KeyCount", 0) == 1) == (final == "accepted")
        if final == "cancelled":
            # The lock is free again: a new attempt may start.
            status, _ = call(
                "POST", f"{local_stack['ucs_url']}/uploads", user["token"], {"file_id": file_id}
            )
            assert status == 200
            check_files(local_stack, [file_id])
    print("outcomes seen:", sorted(outcomes))


def test_duplicate_confirmations_do_not_fail_the_upload(
    local_stack: dict[str, Any], stack_env: dict[str, str], user: dict[str, str]
) -> None:
    """A client retrying its confirmation while the first is still running (lost response).

    Eight identical PATCH ``uploaded`` at once: one completes the multipart upload, the others
    must be told the upload is no longer pending, and the upload must end accepted.
    """
    for _round in range(4):
        data = os.urandom(1000)
        file_id = register_file(stack_env, user["user"], data)
        upload_id = start_upload(local_stack, user["token"], file_id, data)
        url = f"{local_stack['ucs_url']}/uploads/{upload_id}"
        body = confirm_body(data)
        results = race(8, lambda u=url, b=body: call("PATCH", u, user["token"], b))
        statuses = sorted(status for status, _ in results)
        assert statuses == [204] + [400] * 7, results
        details = settled(local_stack, user["token"], upload_id)
        assert details["upload_status"] == "accepted", details["status_reason"]
        check_files(local_stack, [file_id])


def test_concurrent_staging_requests_for_several_files_start_one_job_each(
    local_stack: dict[str, Any], stack_env: dict[str, str], user: dict[str, str]
) -> None:
    files = []
    for _ in range(3):
        data = os.urandom(3000)
        file_id, _upload = accepted_file(local_stack, stack_env, user, data)
        run_admin(stack_env, "grant", "--file-id", file_id, "--user", user["user"])
        files.append((file_id, data))
    drs = local_stack["drs_url"]
    order = iter([file_id for file_id, _ in files] * 10)
    results = race(30, lambda: call("GET", f"{drs}/objects/{next(order)}", user["token"])[0])
    assert set(results) <= {200, 202} and 202 in results, results
    s3 = s3_client(local_stack)
    for file_id, data in files:
        wait_for(
            lambda file_id=file_id: (
                call("GET", f"{drs}/objects/{file_id}", user["token"])[0] == 200
            ),
            f"{file_id} staged",
        )
        # The outbox copy may answer 200 a moment before the job has finished and logged.
        stage = {"job": "stage", "file_id": file_id}
        wait_for(lambda stage=stage: jobs_done(local_stack, stage), f"stage job of {file_id}")
        assert jobs_done(local_stack, stage) == 1
        stored = s3.get_object(Bucket=local_stack["outbox_bucket"], Key=file_id)["Body"].read()
        assert stored == data
        file, _ = read_file_state(local_stack, file_id)
        assert "staged_at" in file and "staging_started" not in file, file
    check_files(local_stack, [file_id for file_id, _ in files])


def test_duplicate_and_out_of_order_job_messages_change_nothing_twice(
    local_stack: dict[str, Any], stack_env: dict[str, str], user: dict[str, str]
) -> None:
    ucs = local_stack["ucs_url"]
    token = user["token"]
    s3 = s3_client(local_stack)

    # 1. A validation message that overtakes the confirmation: the upload stays pending.
    data = os.urandom(2000)
    file_id = register_file(stack_env, user["user"], data)
    early_stage = {"job": "stage", "file_id": file_id}
    first_id = start_upload(local_stack, token, file_id, data)
    early = {"job": "validate", "upload_id": first_id}
    send_jobs(local_stack, [early] * 3 + [early_stage] * 2)
    run_jobs_in_parallel(stack_env, [early] * 4 + [early_stage] * 2)
    wait_for(lambda: jobs_done(local_stack, early) >= 3, "early validation jobs")
    wait_for(lambda: jobs_done(local_stack, early_stage) >= 2, "early staging jobs")
    assert upload_status(local_stack, token, first_id)["upload_status"] == "pending"
    outbox = s3.list_objects_v2(Bucket=local_stack["outbox_bucket"], Prefix=file_id)
    assert outbox.get("KeyCount", 0) == 0
    check_files(local_stack, [file_id])

    # 2. A wrong upload is rejected; its validation message replayed later changes nothing.
    call("PATCH", f"{ucs}/uploads/{first_id}", token, {"upload_status": "cancelled"})
    wrong = os.urandom(2000)
    rejected_id = start_upload(local_stack, token, file_id, wrong)
    status, _ = call("PATCH", f"{ucs}/uploads/{rejected_id}", token, confirm_body(wrong))
    assert status == 204
    assert settled(local_stack, token, rejected_id)["upload_status"] == "rejected"

    # 3. The right upload, validated by the worker and by eight parallel duplicates at once.
    good_id = start_upload(local_stack, token, file_id, data)
    status, _ = call("PATCH", f"{ucs}/uploads/{good_id}", token, confirm_body(data))
    assert status == 204
    validate = {"job": "validate", "upload_id": good_id}
    run_jobs_in_parallel(stack_env, [validate] * 8)
    send_jobs(local_stack, [validate] * 3)
    wait_for(lambda: jobs_done(local_stack, validate) >= 4, "duplicate validation jobs")
    assert settled(local_stack, token, good_id)["upload_status"] == "accepted"

    # 4. Stale messages after acceptance: the old uploads' validations, the cancelled one's too.
    stale = [{"job": "validate", "upload_id": rejected_id}, early]
    send_jobs(local_stack, stale * 2)
    run_jobs_in_parallel(stack_env, stale * 3)
    for body in stale:
        wait_for(lambda body=body: jobs_done(local_stack, body) >= 2, f"stale job {body}")
    assert upload_status(local_stack, token, rejected_id)["upload_status"] == "rejected"
    assert upload_status(local_stack, token, first_id)["upload_status"] == "cancelled"
    held = s3.head_object(Bucket=local_stack["permanent_bucket"], Key=file_id)
    assert held["Metadata"].get("upload-id") == good_id
    stored = s3.get_object(Bucket=local_stack["permanent_bucket"], Key=file_id)["Body"].read()
    assert stored == data

    # 5. Staging duplicated (worker and parallel runs): one correct outbox copy, claim ended.
    stage = {"job": "stage", "file_id": file_id}
    run_jobs_in_parallel(stack_env, [stage] * 6)
    send_jobs(local_stack, [stage] * 3)
    wait_for(lambda: jobs_done(local_stack, stage) >= 5, "duplicate staging jobs")
    outbox = s3.get_object(Bucket=local_stack["outbox_bucket"], Key=file_id)["Body"].read()
    assert outbox == data
    file, _ = read_file_state(local_stack, file_id)
    assert "staged_at" in file and "staging_started" not in file

    # 6. Garbage on the queue is dropped; the worker goes on with the next message.
    marker = {"job": "validate", "upload_id": f"no-such-{uuid.uuid4().hex}"}
    send_jobs(local_stack, ["not json", {"job": "explode"}, {"job": "validate"}, marker])
    wait_for(lambda: jobs_done(local_stack, marker) == 1, "the worker to go past garbage")

    check_files(local_stack, [file_id])
    # A new upload of the accepted file is refused; the rules still hold.
    status, body = call("POST", f"{ucs}/uploads", token, {"file_id": file_id})
    assert status == 400 and body["exception_id"] == "existingActiveUpload", body
    check_files(local_stack, [file_id])


def test_rules_hold_for_every_file_on_the_stack(local_stack: dict[str, Any]) -> None:
    """Whatever the tests before this one did, no file on the stack breaks the rules."""
    check_files(local_stack)
