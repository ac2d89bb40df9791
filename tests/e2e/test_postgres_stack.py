"""The local stack with state and jobs in PostgreSQL (``--db postgres``, issue 20): the races,
the crash and the second worker that the DynamoDB/SQS stack is tested with, on PostgreSQL.

- 50 ``POST /uploads`` of one file at once: one upload, 49 ``existingActiveUpload`` (ucs.yaml's
  400), no S3 multipart upload of a loser left behind;
- 50 confirmations of one upload at once: one 204, 49 ``uploadNotPending``, one verdict;
- the worker SIGKILLed in the middle of a validation and restarted: its lease lapses, the sweep
  queues the validation again and it continues from the last checkpoint to ``accepted``;
- a second worker (``--concurrency 4``) beside the stack's own (4 slots) on the one jobs table:
  every queued job runs to its end exactly once (no job is delivered to two workers, none is
  lost), duplicates of a validation are no-ops, each upload gets one verdict;
- ghga-cli uploads a file to ``accepted`` and downloads it again, byte for byte.

After each scenario :func:`tests.helpers.invariants.check_files` reads the ``files`` and
``uploads`` tables (plain psycopg, one snapshot) and checks the per-file upload rules.
Without a PostgreSQL (``build/pg-up.sh``) the module is skipped, or fails with ``PG_REQUIRED=1``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers.admin import grant, new_user, register_file
from tests.helpers.cli import download, summary_of, upload
from tests.helpers.invariants import check_files, read_file_state
from tests.helpers.jobs import send_jobs
from tests.helpers.localstack import E2E_ENV, E2E_PART_SIZE, launch_on_postgres
from tests.helpers.support import PROJECT_DIR, call, s3_client, stored_bytes
from tests.helpers.ucs import (
    confirm_body,
    race,
    settled,
    start_upload,
    upload_status,
    wait_for,
)
from tests.reliability import crash

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
#: The stack whose worker is crashed: validation in small ranges, one at a time, so that it
#: lasts long enough to be caught midway; checkpoints every 0.2 s; a killed run's lease lapses
#: after 3 s and the sweep (every second) queues uploads left ``uploaded`` for 3 s again.
CRASH_ENV = {
    **E2E_ENV,
    "UCS_VALIDATE_RANGE_SIZE": str(32 * 1024),
    "UCS_VALIDATE_CONCURRENCY": "1",
    "UCS_VALIDATE_CHECKPOINT_SECONDS": "0.2",
    "UCS_VALIDATE_LEASE_SECONDS": "3",
    "UCS_REVALIDATE_SECONDS": "3",
    "UCS_WORKER_SWEEP_SECONDS": "1",
}


@pytest.fixture(scope="module")
def pg_user(pg_stack_env: dict[str, str]) -> dict[str, str]:
    return new_user(pg_stack_env, "pg")


@pytest.fixture(scope="module")
def crash_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A PostgreSQL stack of its own, whose worker gets crashed (short leases, see CRASH_ENV)."""
    state_dir = tmp_path_factory.mktemp("pg-crash-stack")
    with launch_on_postgres(state_dir, extra_env=CRASH_ENV) as info:
        yield {**info, "state_dir": state_dir, "full_env": {**os.environ, **info["env"]}}


#: What the stack writes into a child's log when it crashes and restarts it.
RESTARTED = "--- stack: killed (SIGKILL) and restarted ---"


def stack_pid(stack: dict[str, Any], name: str) -> int:
    """The current pid of the stack's child ``name`` (its process group: the stack starts each
    child in a session of its own)."""
    return int(json.loads(Path(stack["state_dir"], "stack.json").read_text())["pids"][name])


def worker_log(stack: dict[str, Any]) -> str:
    return Path(stack["log_dir"], "worker.log").read_text(errors="replace")


def verdicts(log: str, upload_id: str) -> int:
    """How often ``upload_id`` was accepted according to ``log``."""
    return log.count(f"validate: upload {upload_id} accepted")


def jobs_left(stack: dict[str, Any], like: str = "%") -> list[tuple[Any, ...]]:
    """The rows of the stack's jobs table whose body is LIKE ``like``."""
    with psycopg.connect(stack["database_url"], autocommit=True) as conn:
        return conn.execute(
            "SELECT job_id, body, state, receive_count FROM jobs WHERE body LIKE %s"
            " ORDER BY job_id",
            (like,),
        ).fetchall()


# --------------------------------------------------------------------------------------------
# Races through the API
# --------------------------------------------------------------------------------------------


def test_fifty_concurrent_create_upload_requests_have_one_winner(
    pg_stack: dict[str, Any], pg_stack_env: dict[str, str], pg_user: dict[str, str]
) -> None:
    file_id = register_file(pg_stack_env, pg_user["user"], size=1000, md5="0" * 32, prefix="pg")
    url = f"{pg_stack['ucs_url']}/uploads"
    results = race(50, lambda: call("POST", url, pg_user["token"], {"file_id": file_id}))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [400] * 49, results
    winner = next(body for status, body in results if status == 200)
    refusals = {body["exception_id"] for status, body in results if status == 400}
    assert refusals == {"existingActiveUpload"}, results
    file, uploads = read_file_state(pg_stack, file_id)
    assert [u["upload_id"] for u in uploads] == [winner["upload_id"]]
    assert uploads[0]["upload_status"] == "pending"
    assert file is not None and file["active_upload_id"] == winner["upload_id"]
    check_files(pg_stack, [file_id])
    # The 49 losers may have created S3 multipart uploads before losing: none may linger.
    s3 = s3_client(pg_stack)
    pending = s3.list_multipart_uploads(Bucket=pg_stack["inbox_bucket"], Prefix=f"{file_id}/")
    assert [u["Key"] for u in pending.get("Uploads", [])] == [f"{file_id}/{winner['upload_id']}"]


def test_fifty_concurrent_confirmations_give_one_verdict(
    pg_stack: dict[str, Any], pg_stack_env: dict[str, str], pg_user: dict[str, str]
) -> None:
    token = pg_user["token"]
    data = os.urandom(2 * E2E_PART_SIZE + 1000)
    file_id = register_file(pg_stack_env, pg_user["user"], data, prefix="pg")
    upload_id = start_upload(pg_stack, token, file_id, data)
    part_size = upload_status(pg_stack, token, upload_id)["part_size"]
    url = f"{pg_stack['ucs_url']}/uploads/{upload_id}"
    body = confirm_body(data, part_size)
    results = race(50, lambda: call("PATCH", url, token, body))
    statuses = sorted(status for status, _ in results)
    assert statuses == [204] + [400] * 49, results
    refusals = {answer["exception_id"] for status, answer in results if status == 400}
    assert refusals == {"uploadNotPending"}, results
    assert settled(pg_stack, token, upload_id)["upload_status"] == "accepted"
    # The one queued validation job has ended (its verdict is logged before "job done") and
    # no other job for the upload is left that could give a second verdict.
    job = f'"job": "validate", "upload_id": "{upload_id}"'
    wait_for(lambda: f"job done: {{{job}}}" in worker_log(pg_stack), "the validation job")
    wait_for(lambda: not jobs_left(pg_stack, f"%{upload_id}%"), "the job to be deleted")
    assert verdicts(worker_log(pg_stack), upload_id) == 1
    assert stored_bytes(pg_stack, file_id) == data
    s3 = s3_client(pg_stack)
    inbox = pg_stack["inbox_bucket"]
    assert s3.list_objects_v2(Bucket=inbox, Prefix=f"{file_id}/").get("KeyCount", 0) == 0
    assert not s3.list_multipart_uploads(Bucket=inbox, Prefix=f"{file_id}/").get("Uploads")
    check_files(pg_stack, [file_id])


# --------------------------------------------------------------------------------------------
# The worker crashed in the middle of a validation
# --------------------------------------------------------------------------------------------


def test_a_worker_killed_mid_validation_and_restarted_ends_accepted(
    crash_stack: dict[str, Any],
) -> None:
    env = crash_stack["full_env"]
    user = new_user(env, "pg-crash")
    token = user["token"]
    data = os.urandom(6 * MiB)
    file_id = register_file(env, user["user"], data, prefix="pg")
    upload_id = start_upload(crash_stack, token, file_id, data)
    url = f"{crash_stack['ucs_url']}/uploads/{upload_id}"
    part_size = upload_status(crash_stack, token, upload_id)["part_size"]
    status, answer = call("PATCH", url, token, confirm_body(data, part_size))
    assert status == 204, answer

    seen: list[int] = []

    def under_way() -> bool:
        body = upload_status(crash_stack, token, upload_id)
        assert body["upload_status"] == "uploaded", f"decided before the crash: {body}"
        seen.append(body["verified_bytes"])
        return 0 < seen[-1] < len(data) // 2

    deadline = time.monotonic() + 60
    while not under_way():
        assert time.monotonic() < deadline, f"the validation never got under way: {seen}"
        time.sleep(0.02)
    # Frozen where it is (SIGSTOP), so that the SIGKILL certainly hits the run in the middle:
    # still ``uploaded``, part of the bytes verified.
    os.killpg(stack_pid(crash_stack, "worker"), signal.SIGSTOP)
    frozen = upload_status(crash_stack, token, upload_id)
    assert frozen["upload_status"] == "uploaded", frozen
    assert 0 < frozen["verified_bytes"] < len(data), frozen
    seen.append(frozen["verified_bytes"])
    crash.restart(crash_stack["state_dir"], "worker")  # SIGKILL (ends a stopped one too), start
    killed = worker_log(crash_stack).rsplit(RESTARTED, 1)[0]
    assert verdicts(killed, upload_id) == 0

    # The killed run's job stays invisible (UCS_JOB_VISIBILITY_SECONDS, 900 s); its lease
    # lapses after 3 s and the sweep queues the upload's validation again, which continues from
    # the last checkpoint.
    after: list[int] = []

    def decided() -> bool:
        body = upload_status(crash_stack, token, upload_id)
        after.append(body["verified_bytes"])
        return body["upload_status"] != "uploaded"

    wait_for(decided, "the validation to end after the worker crash", 90)
    body = upload_status(crash_stack, token, upload_id)
    assert (body["upload_status"], body["verified_bytes"]) == ("accepted", len(data)), body
    progress = seen + after
    assert progress == sorted(progress), progress  # continued, never started over from 0
    restarted = worker_log(crash_stack).rsplit(RESTARTED, 1)[1]
    assert f"validate: upload {upload_id}: " not in restarted  # no "starting over" warning
    assert stored_bytes(crash_stack, file_id) == data
    wait_for(lambda: verdicts(worker_log(crash_stack), upload_id), "the verdict in the log")
    assert verdicts(worker_log(crash_stack), upload_id) == 1
    check_files(crash_stack, [file_id])


# --------------------------------------------------------------------------------------------
# Two workers on one jobs table
# --------------------------------------------------------------------------------------------

#: A ``job done`` line of a worker's log; the group is the job's body (JSON, keys sorted).
DONE = re.compile(r"^\S+ \S+ ucs_lambda\.worker INFO \[[^\]]*\] job done: (.*)$", re.M)


def _done_bodies(log: str) -> list[str]:
    return DONE.findall(log)


class RedeliveryWatch:
    """Samples the jobs table while the workers run: every job seen delivered more than once
    (``receive_count`` > 1), which no job may be within its 900 s visibility."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.redelivered: set[tuple[int, str]] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RedeliveryWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                rows = conn.execute(
                    "SELECT job_id, body FROM jobs WHERE receive_count > 1 OR state <> 'ready'"
                ).fetchall()
                self.redelivered.update((int(r[0]), str(r[1])) for r in rows)
                self.samples += 1
                self._stop.wait(0.02)


def test_two_workers_with_four_slots_run_every_job_once(
    pg_stack: dict[str, Any],
    pg_stack_env: dict[str, str],
    pg_user: dict[str, str],
    tmp_path: Path,
) -> None:
    """The stack's worker and a second one, 4 job slots each, on one jobs table: 8 confirmed
    uploads, their validation jobs and 6 copies of each, all ready at the same instant.

    Every job runs to its end exactly once (``job done`` once in the two logs together, no
    failure, no job ever delivered a second time); the duplicates of an upload's validation
    find it validated by another run, or decided, and do nothing: one verdict per upload.
    """
    token = pg_user["token"]
    assert "worker started: 4 job slot(s)" in worker_log(pg_stack)
    count, duplicates = 8, 6
    datas = [os.urandom(2 * E2E_PART_SIZE + n) for n in range(count)]
    with ThreadPoolExecutor(4) as pool:
        file_ids = list(
            pool.map(lambda d: register_file(pg_stack_env, pg_user["user"], d, prefix="pg"), datas)
        )
        upload_ids = list(
            pool.map(lambda fd: start_upload(pg_stack, token, *fd), zip(file_ids, datas))
        )
    part_size = upload_status(pg_stack, token, upload_ids[0])["part_size"]
    run = uuid.uuid4().hex[:8]
    # Each copy is told apart by a field the job ignores, so that its "job done" line names it.
    copies = [
        {"job": "validate", "upload_id": upload_id, "copy": f"{run}-{n}"}
        for upload_id in upload_ids
        for n in range(duplicates)
    ]
    wait_for(lambda: not jobs_left(pg_stack), "the jobs of earlier tests to end")

    second_log = tmp_path / "second-worker.log"
    with second_log.open("wb") as out:
        second = subprocess.Popen(
            [sys.executable, "-m", "ucs_lambda.worker", "--concurrency", "4"],
            cwd=PROJECT_DIR,
            env={**pg_stack_env, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    own_pid = stack_pid(pg_stack, "worker")
    try:
        wait_for(
            lambda: "worker started: 4 job slot(s)" in second_log.read_text(errors="replace"),
            "the second worker to start",
            60,
        )
        own_before = len(worker_log(pg_stack))
        with RedeliveryWatch(pg_stack["database_url"]) as watch:
            # Both workers paused while the jobs are queued, so that all are ready at once:
            # the copies first, upload by upload (the workers take jobs in queue order, so the
            # first ones taken are 8 runs of 2 uploads' validations, on both workers), then
            # the job each confirmation queues.
            os.killpg(own_pid, signal.SIGSTOP)
            os.kill(second.pid, signal.SIGSTOP)
            try:
                send_jobs(pg_stack, copies)
                for upload_id, data in zip(upload_ids, datas):
                    url = f"{pg_stack['ucs_url']}/uploads/{upload_id}"
                    status, answer = call("PATCH", url, token, confirm_body(data, part_size))
                    assert status == 204, answer
                assert len(jobs_left(pg_stack)) == count * (duplicates + 1)
            finally:
                os.kill(second.pid, signal.SIGCONT)
                os.killpg(own_pid, signal.SIGCONT)
            for upload_id in upload_ids:
                assert settled(pg_stack, token, upload_id)["upload_status"] == "accepted"
            wait_for(lambda: not jobs_left(pg_stack), "the jobs table to be empty", 60)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    assert second.returncode == 0

    own = worker_log(pg_stack)[own_before:]
    other = second_log.read_text(errors="replace")
    logs = own + other
    for problem in ("failed", "dead-lettered", "could not", "Traceback"):
        assert problem not in logs, logs
    assert watch.samples > 0 and not watch.redelivered, watch.redelivered

    done_own, done_other = _done_bodies(own), _done_bodies(other)
    for label, done in (("the stack's worker", done_own), ("the second worker", done_other)):
        assert sum(run in body for body in done) >= 2, f"{label} ran hardly any jobs: {done}"
    done_all = done_own + done_other
    for body in copies:
        line = json.dumps(body, sort_keys=True)
        assert done_all.count(line) == 1, (body, [b for b in done_all if run in b])
    # The job each confirmation queued ran once too; one verdict per upload, in either worker.
    for upload_id in upload_ids:
        assert done_all.count(f'{{"job": "validate", "upload_id": "{upload_id}"}}') == 1
        assert verdicts(logs, upload_id) == 1, upload_id
    for file_id, data in zip(file_ids, datas):
        assert stored_bytes(pg_stack, file_id) == data
    check_files(pg_stack, file_ids)


# --------------------------------------------------------------------------------------------
# The real client
# --------------------------------------------------------------------------------------------


def test_ghga_cli_round_trip(
    ghga_cli: list[str],
    pg_stack: dict[str, Any],
    pg_stack_env: dict[str, str],
    pg_user: dict[str, str],
    tmp_path: Path,
) -> None:
    data = os.urandom(5 * E2E_PART_SIZE + 4321)
    source = tmp_path / "sample.bin"
    source.write_bytes(data)
    file_id = register_file(pg_stack_env, pg_user["user"], source, prefix="pg")
    result = upload(ghga_cli, pg_stack, pg_user["token"], file_id, source, "--json")
    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert (summary["status"], summary["file_id"], summary["bytes"]) == (
        "accepted",
        file_id,
        len(data),
    )
    assert stored_bytes(pg_stack, file_id) == data
    check_files(pg_stack, [file_id])
    grant(pg_stack_env, file_id, pg_user["user"])
    out = tmp_path / "out"
    out.mkdir()
    result = download(ghga_cli, pg_stack, pg_user["token"], file_id, out, "--json")
    assert result.returncode == 0, result.stderr
    assert (out / source.name).read_bytes() == data


def test_rules_hold_for_every_file_on_the_stacks(
    pg_stack: dict[str, Any], crash_stack: dict[str, Any]
) -> None:
    """Whatever the tests before this one did, no file on either stack breaks the rules."""
    check_files(pg_stack)
    check_files(crash_stack)
