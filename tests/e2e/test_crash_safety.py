"""Crash safety: the client SIGKILLed at seeded and at exact points, the API server and the job
worker crashed (SIGKILL) and restarted in the middle of uploads and staging.

After every crash a rerun without faults ends verified, the per-file upload invariants hold, and
nothing stays stuck: pending uploads resume (or the stale-upload sweep cancels them and a rerun
starts a new one), uploads left ``uploaded`` by a lost validation job are validated again
(``UCS_REVALIDATE_SECONDS``), staging claims of a crashed job expire
(``UCS_STAGING_TIMEOUT_SECONDS``) and are taken over.

Short version (3 seeded kills each way); the long series is
``python -m tests.reliability.crash_series``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.admin import grant, new_user, register_file
from tests.helpers.cli import download_args, finished, start_cli, upload_args
from tests.helpers.faultproxy import FaultProxy, Rule
from tests.helpers.localstack import E2E_ENV, E2E_PART_SIZE, stacklib
from tests.helpers.s3faults import THROTTLE_BPS, s3_pattern, s3_records
from tests.helpers.support import call, stored_bytes
from tests.helpers.ucs import current_upload_id
from tests.reliability import crash, harness

pytestmark = pytest.mark.e2e

#: Short timeouts for the stack whose services are crashed, so recovery happens within a test.
RESTART_ENV = {
    **E2E_ENV,
    "UCS_STAGING_TIMEOUT_SECONDS": "3",
    "UCS_REVALIDATE_SECONDS": "3",
    "UCS_STALE_UPLOAD_SECONDS": "6",
    "UCS_WORKER_SWEEP_SECONDS": "1",
    # A validation whose worker was killed is taken over once its lease lapses (120 s deployed).
    "UCS_VALIDATE_CHECKPOINT_SECONDS": "0.5",
    "UCS_VALIDATE_LEASE_SECONDS": "3",
}


@pytest.fixture(scope="module")
def archived(ghga_cli, local_stack, stack_env, user) -> tuple[str, bytes]:
    data = os.urandom(7 * E2E_PART_SIZE + 555)
    return harness.archive(ghga_cli, local_stack, stack_env, user, data), data


@pytest.fixture(scope="module")
def restart_stack(tmp_path_factory) -> Iterator[tuple[dict[str, Any], Any, dict[str, str]]]:
    """A stack of its own: its services get crashed, and it runs with short timeouts."""
    state_dir = tmp_path_factory.mktemp("restart-stack")
    with stacklib.launch(state_dir, extra_env=RESTART_ENV) as info:
        yield info, state_dir, {**os.environ, **info["env"]}


@pytest.fixture(scope="module")
def restart_user(restart_stack) -> dict[str, str]:
    return new_user(restart_stack[2], "rst")


# --------------------------------------------------------------------------------------------
# The client killed
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_killed_upload_reruns_to_accepted(
    seed, ghga_cli, local_stack, stack_env, user, tmp_path
) -> None:
    crash.killed_upload(ghga_cli, local_stack, stack_env, user, tmp_path, seed)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_killed_download_reruns_to_verified_file(
    seed, ghga_cli, local_stack, user, archived, tmp_path
) -> None:
    crash.killed_download(ghga_cli, local_stack, user, *archived, tmp_path, seed)


@pytest.mark.parametrize("point", ["patch-before", "patch-after", "wait"])
def test_upload_killed_during_completion(
    point, ghga_cli, local_stack, stack_env, user, tmp_path
) -> None:
    run = crash.killed_upload(ghga_cli, local_stack, stack_env, user, tmp_path, 0, point, parts=3)
    assert run["killed"]


@pytest.mark.parametrize("point", ["rename-before", "rename-after"])
def test_download_killed_during_final_rename(
    point, ghga_cli, local_stack, user, archived, tmp_path
) -> None:
    run = crash.killed_download(ghga_cli, local_stack, user, *archived, tmp_path, 0, point)
    assert run["killed"]
    out = tmp_path / "download-0"
    # Killed around the rename, the rerun left exactly the verified file (checked by the
    # harness) and no resume state behind (at most an empty working directory).
    names = sorted(p.name for p in out.iterdir())
    assert names in ([f"{archived[0]}.bin"], [".ghga-cli", f"{archived[0]}.bin"]), names
    if len(names) == 2:
        assert list((out / ".ghga-cli").iterdir()) == []


# --------------------------------------------------------------------------------------------
# The API server and the worker crashed and restarted
# --------------------------------------------------------------------------------------------


def test_upload_survives_api_server_and_worker_restarts(
    ghga_cli, restart_stack, restart_user, tmp_path
) -> None:
    stack, state_dir, env = restart_stack
    run = crash.upload_with_restarts(ghga_cli, stack, state_dir, env, restart_user, tmp_path, 1)
    assert run["restarts"] == ["ucs", "worker"], run  # both crashed while the upload ran


def _sqs(stack: dict[str, Any]):
    import boto3

    env = stack["env"]
    return boto3.client(
        "sqs",
        endpoint_url=stack["sqs_endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def _steal_job(stack: dict[str, Any], env: dict[str, str], wanted: str) -> bool:
    """Receive the job naming ``wanted`` and never delete it: what a worker that crashed in the
    middle of the job leaves behind (the message stays invisible for the queue's 900 s).

    False if the stopped worker's pending long poll got the message first: the same situation,
    since that worker is then killed without ever running the job.
    """
    sqs = _sqs(stack)
    url = sqs.get_queue_url(QueueName=env.get("UCS_JOB_QUEUE", "ghga-jobs"))["QueueUrl"]
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", []):
            if wanted in message["Body"]:
                return True
    return False


def test_validation_job_lost_with_a_crashed_worker_is_requeued(
    ghga_cli, restart_stack, restart_user, tmp_path
) -> None:
    stack, state_dir, env = restart_stack
    token = restart_user["token"]
    data = os.urandom(2 * E2E_PART_SIZE + 1)
    source = harness.write_source(tmp_path, data)
    file_id = register_file(env, restart_user["user"], data, prefix="lost")
    worker = stack_pid(state_dir, "worker")
    os.kill(worker, signal.SIGSTOP)  # the worker must not take the job before we do
    try:
        with FaultProxy() as proxy:
            process = start_cli(
                [*ghga_cli, *upload_args(stack, file_id, source, "--wait-timeout", "0")],
                token,
                proxy,
                tmp_path / "up",
            )
            crash.run_until(process, None)
        assert process.returncode == 0, (tmp_path / "up" / "stderr").read_text()
        upload_id = current_upload_id(stack, token, file_id)
        _steal_job(stack, env, upload_id)
    finally:
        crash.restart(state_dir, "worker")  # SIGKILL (also ends a stopped process) + start
    url = f"{stack['ucs_url']}/uploads/{upload_id}"
    deadline = time.monotonic() + 60
    while call("GET", url, token)[1]["upload_status"] == "uploaded":
        assert time.monotonic() < deadline, "the lost validation job was never re-queued"
        time.sleep(0.5)
    assert call("GET", url, token)[1]["upload_status"] == "accepted"
    assert stored_bytes(stack, file_id) == data
    assert not harness.invariant_violations(stack, file_id)


def test_staging_job_lost_with_a_crashed_worker_expires_and_is_retried(
    ghga_cli, restart_stack, restart_user, tmp_path
) -> None:
    stack, state_dir, env = restart_stack
    token = restart_user["token"]
    data = os.urandom(3 * E2E_PART_SIZE + 7)
    file_id = register_file(env, restart_user["user"], data, prefix="stg")
    source = harness.write_source(tmp_path, data)
    with FaultProxy() as proxy:
        up = start_cli(
            [*ghga_cli, *upload_args(stack, file_id, source)], token, proxy, tmp_path / "up"
        )
        crash.run_until(up, None)
    assert up.returncode == 0, (tmp_path / "up" / "stderr").read_text()
    grant(env, file_id, restart_user["user"])
    os.kill(stack_pid(state_dir, "worker"), signal.SIGSTOP)
    try:
        status, _ = call("GET", f"{stack['drs_url']}/objects/{file_id}", token)
        assert status == 202  # staging claimed and its job queued
        _steal_job(stack, env, file_id)
    finally:
        crash.restart(state_dir, "worker")
    # The claim of the "crashed" job blocks new jobs until UCS_STAGING_TIMEOUT_SECONDS; the
    # client keeps asking (202 + Retry-After) until a request takes the claim over.
    out = tmp_path / "out"
    out.mkdir()
    with FaultProxy() as proxy:
        process = start_cli(
            [*ghga_cli, *download_args(stack, file_id, out, "--wait-timeout", "120")],
            token,
            proxy,
            tmp_path / "down",
        )
        crash.run_until(process, None, timeout=150)
    result = finished(process, tmp_path / "down")
    assert harness.judge_download(ghga_cli, stack, token, file_id, out, data, result) == "ok"


def test_staging_survives_worker_restart_at_a_random_moment(
    ghga_cli, restart_stack, restart_user, tmp_path
) -> None:
    stack, state_dir, env = restart_stack
    data = os.urandom(5 * E2E_PART_SIZE + 3)
    file_id = register_file(env, restart_user["user"], data, prefix="stg")
    source = harness.write_source(tmp_path, data)
    with FaultProxy() as proxy:
        up = start_cli(
            [*ghga_cli, *upload_args(stack, file_id, source)],
            restart_user["token"],
            proxy,
            tmp_path / "up",
        )
        crash.run_until(up, None)
    assert up.returncode == 0
    grant(env, file_id, restart_user["user"])
    crash.staging_with_worker_crash(
        ghga_cli, stack, state_dir, restart_user, file_id, data, tmp_path, 1
    )


def stack_pid(state_dir, name: str) -> int:
    import json

    return int(json.loads((state_dir / "stack.json").read_text())["pids"][name])


def test_abandoned_upload_is_cancelled_by_the_stale_sweep_and_rerun_succeeds(
    ghga_cli, restart_stack, restart_user, tmp_path
) -> None:
    stack, _, env = restart_stack
    data = os.urandom(8 * E2E_PART_SIZE)
    source = harness.write_source(tmp_path, data)
    file_id = register_file(env, restart_user["user"], data, prefix="stale")
    args = upload_args(stack, file_id, source, "--parallel", "1")
    rules = [Rule("throttle", method="PUT", url=s3_pattern(stack), bps=THROTTLE_BPS)]
    with FaultProxy(rules=rules) as proxy:
        process = start_cli([*ghga_cli, *args], restart_user["token"], proxy, tmp_path / "k")
        crash.run_until(
            process, lambda: sum(r.status == 200 for r in s3_records(proxy, stack, "PUT")) >= 2
        )
    token = restart_user["token"]
    abandoned = current_upload_id(stack, token, file_id)

    def status() -> str:
        return str(
            call("GET", f"{stack['ucs_url']}/uploads/{abandoned}", token)[1]["upload_status"]
        )

    deadline = time.monotonic() + 60
    while status() != "cancelled":
        assert time.monotonic() < deadline, "the stale sweep never cancelled the upload"
        time.sleep(0.5)
    assert not harness.invariant_violations(stack, file_id)
    with FaultProxy() as proxy:
        rerun = start_cli([*ghga_cli, *args], token, proxy, tmp_path / "rerun")
        crash.run_until(rerun, None)
    result = finished(rerun, tmp_path / "rerun")
    assert harness.judge_upload(ghga_cli, stack, token, file_id, source, result) == "ok"
    assert current_upload_id(stack, token, file_id) != abandoned
