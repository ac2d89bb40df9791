"""Operator commands and the local worker."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.helpers import stored_state
from ucs_lambda import admin, tokens
from ucs_lambda.adapters import aws
from ucs_lambda.bootstrap import services
from ucs_lambda.config import apply_stack_env, get_settings
from ucs_lambda.worker import Worker

from .conftest import Api, payload, queued_jobs, register, state

ROOT = Path(__file__).resolve().parents[2]
MD5 = "0123456789abcdef0123456789abcdef"


def run(*argv: str) -> int:
    return admin.main(list(argv))


def test_create_resources_is_idempotent(env: dict, capsys: pytest.CaptureFixture) -> None:
    assert run("create-resources") == 0  # the fixture already created everything
    out = json.loads(capsys.readouterr().out)
    assert out["buckets"] == []
    if env["UCS_STATE_BACKEND"] == "postgres":
        assert out == {"migrations": [], "buckets": []}
    else:
        assert out["tables"] == []
        table = aws.client("dynamodb", get_settings()).describe_table(TableName="t-uploads")
        assert table["Table"]["GlobalSecondaryIndexes"][0]["IndexName"] == "file_id-index"
    s3 = aws.client("s3", get_settings())
    rules = s3.get_bucket_lifecycle_configuration(Bucket="t-inbox")["Rules"]
    assert rules[0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 14
    # The services' own copies: an accept copy whose run died before saving its upload id.
    for bucket in ("t-permanent", "t-outbox"):
        (rule,) = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        assert rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 2


def test_register_grant_and_token(env: dict, capsys: pytest.CaptureFixture) -> None:
    assert (
        run(
            "register-file",
            "--file-id",
            "F9",
            "--file-name",
            "reads.fastq.gz",
            "--size",
            "123",
            "--md5",
            MD5.upper(),
            "--submitter",
            "alice",
        )
        == 0
    )
    meta = json.loads(capsys.readouterr().out)
    assert meta["format"] == "fastq.gz" and meta["md5_checksum"] == MD5
    f = state().files.get_file("F9")
    assert f is not None and f.submitters == {"alice"} and f.readers == frozenset()
    assert run("grant", "--file-id", "F9", "--user", "bob") == 0
    f = state().files.get_file("F9")
    assert f is not None and f.readers == {"bob"}
    capsys.readouterr()
    assert run("mint-token", "--user", "bob", "--ttl", "60") == 0
    assert tokens.verify(capsys.readouterr().out.strip()) == "bob"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--size", "-1"], "negative"),
        (["--size", str(5 * 1024**4 + 1)], "5 TiB"),
        (["--md5", "xyz"], "32 hexadecimal"),
    ],
)
def test_register_file_validation(
    env: dict, capsys: pytest.CaptureFixture, argv: list, message: str
) -> None:
    base = {"--file-id": "F9", "--file-name": "a.bin", "--size": "1", "--md5": MD5}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    args = [x for kv in base.items() for x in kv] + ["--submitter", "alice"]
    assert run("register-file", *args) == 2
    assert message in capsys.readouterr().err
    assert state().files.get_file("F9") is None


def test_register_twice_and_grant_unknown(env: dict, capsys: pytest.CaptureFixture) -> None:
    args = ["--file-id", "F9", "--file-name", "a", "--size", "0", "--md5", MD5, "--submitter", "a"]
    assert run("register-file", *args) == 0
    assert run("register-file", *args) == 2
    assert run("grant", "--file-id", "nope", "--user", "x") == 2
    assert "not registered" in capsys.readouterr().err


def test_mint_expired_token(env: dict, capsys: pytest.CaptureFixture) -> None:
    assert run("mint-token", "--user", "bob", "--ttl", "-10") == 0
    expired = capsys.readouterr().out.strip()
    with pytest.raises(tokens.NotAuthenticated, match="expired"):
        tokens.verify(expired)


def test_mint_token_without_keys(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.delenv("UCS_TOKEN_KEYS", raising=False)
    monkeypatch.delenv("UCS_TOKEN_KEYS_PARAMETER", raising=False)
    monkeypatch.setenv("UCS_STACK_FILE", "/nonexistent/stack.json")
    assert run("mint-token", "--user", "x") == 3
    assert "UCS_TOKEN_KEYS" in capsys.readouterr().err


def test_bad_input_in_a_subprocess_has_no_traceback(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "ucs_lambda.admin",
        "register-file",
        "--file-id",
        "F",
        "--file-name",
        "f",
        "--size",
        "-5",
        "--md5",
        MD5,
        "--submitter",
        "u",
    ]
    proc = subprocess.run(
        cmd,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --size must not be negative"
    proc = subprocess.run(
        [sys.executable, "-m", "ucs_lambda.admin", "register-file"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_stack_file_fills_unset_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = tmp_path / ".stack" / "stack.json"
    stack.parent.mkdir()
    stack.write_text(
        json.dumps({"env": {"UCS_FILES_TABLE": "from-stack", "UCS_UPLOADS_TABLE": "stack-uploads"}})
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("UCS_STACK_FILE", raising=False)
    monkeypatch.delenv("UCS_FILES_TABLE", raising=False)
    monkeypatch.setenv("UCS_UPLOADS_TABLE", "explicit")
    assert apply_stack_env() == stack
    assert get_settings().files_table == "from-stack"
    assert get_settings().uploads_table == "explicit"  # the environment wins


# ---- worker ---------------------------------------------------------------------------------


def test_worker_processes_and_deletes(api: Api) -> None:
    data = payload(1000)
    register("F1", data)
    uid = api.upload_file(data)["upload_id"]
    q = services().queue
    q.send({"job": "nope"})  # invalid: dropped
    worker = Worker(sweep_seconds=0, wait_seconds=0)
    handled = 0
    for _ in range(5):
        handled += worker.run_once()
    assert handled == 2
    rec = state().uploads.get_upload(uid)
    assert rec is not None and rec.upload_status.value == "accepted"
    assert queued_jobs() == []


def test_worker_leaves_failed_jobs_for_redelivery(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ucs_lambda import jobs

    def boom(body: Any) -> None:
        raise RuntimeError("transient")

    monkeypatch.setattr(jobs, "handle_message", boom)
    services().queue.send({"job": "validate", "upload_id": "x"})
    worker = Worker(sweep_seconds=0, wait_seconds=0, retry_delay=0)
    assert worker.run_once() == 1
    assert queued_jobs() == [{"job": "validate", "upload_id": "x"}]  # still there


def test_worker_stops_on_request(env: dict) -> None:
    worker = Worker(sweep_seconds=3600, wait_seconds=0)
    thread = threading.Thread(target=worker.run)
    thread.start()
    worker.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_worker_process_runs_until_sigterm(tmp_path: Path) -> None:
    """``python -m ucs_lambda.worker`` against a real (moto) SQS endpoint: it drops an invalid
    message, logs without secrets, and exits 0 on SIGTERM."""

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_SQS": endpoint,
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
            "UCS_JOB_QUEUE": "w-jobs",
            "UCS_TOKEN_KEYS": "secret-key-that-must-not-be-logged",
        }
        sqs = boto3.client(
            "sqs",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        url = sqs.create_queue(QueueName="w-jobs")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody='{"job": "unknown"}')
        proc = subprocess.Popen(
            [sys.executable, "-m", "ucs_lambda.worker", "--sweep-seconds", "0"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            attrs = sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            if attrs == {
                "ApproximateNumberOfMessages": "0",
                "ApproximateNumberOfMessagesNotVisible": "0",
            }:
                break
            time.sleep(0.2)
        else:
            proc.kill()
            raise AssertionError("the worker did not consume the message")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, out
        assert "dropping invalid job message" in out and "worker stopped" in out
        assert "secret-key" not in out
    finally:
        server.stop()


def test_jobs_lists_and_requeues_dead_jobs(
    env: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    if env["UCS_STATE_BACKEND"] == "dynamodb":
        assert run("jobs") == 2
        assert "AWS's tools" in capsys.readouterr().err
        return
    monkeypatch.setenv("UCS_JOB_MAX_RECEIVES", "1")
    stored_state.queue_raw('{"job": "validate", "upload_id": "gone"}')
    queue = services().queue
    (job,) = queue.receive(wait_seconds=0)
    queue.retry_later(job.receipt, 0)  # failed once: the limit is reached
    assert queue.receive(wait_seconds=0) == []  # dead-lettered instead of delivered
    assert run("jobs") == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["visible"], report["in_flight"], report["dead"]) == (0, 0, 1)
    assert report["dead_jobs"][0]["body"] == '{"job": "validate", "upload_id": "gone"}'
    assert run("jobs", "--requeue-dead", "x1") == 2
    assert "job ids are numbers" in capsys.readouterr().err
    assert run("jobs", "--requeue-dead") == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["requeued"], report["visible"], report["dead"]) == (1, 1, 0)
    (again,) = queue.receive(wait_seconds=0)
    assert again.receive_count == 1
