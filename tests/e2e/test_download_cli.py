"""The DRS3 API and ``ghga-cli download-by-id`` on the local stack.

Files are put into the archive the way production does it: uploaded with the client, accepted
by the validation job, then staged into the outbox on the first download request.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.admin import run_admin
from tests.helpers.cli import EXIT_AUTH, EXIT_CONFLICT, EXIT_USAGE, archived_file, download
from tests.helpers.localstack import E2E_PART_SIZE
from tests.helpers.report_schema import load_report
from tests.helpers.support import call
from tests.helpers.ucs import race

pytestmark = pytest.mark.e2e


def test_drs_answers_202_with_retry_after_then_200(ghga_cli, local_stack, stack_env, user) -> None:
    data = os.urandom(3 * E2E_PART_SIZE)
    file_id = archived_file(ghga_cli, local_stack, stack_env, user, data)
    url = f"{local_stack['drs_url']}/objects/{file_id}"

    status, _ = call("GET", url, user["token"])
    assert status == 202
    deadline = time.monotonic() + 30
    while status == 202 and time.monotonic() < deadline:
        time.sleep(0.3)
        status, body = call("GET", url, user["token"])
    assert status == 200, body
    assert body["id"] == file_id
    assert body["size"] == len(data)
    assert {"type": "md5", "checksum": hashlib.md5(data).hexdigest()} in body["checksums"]
    assert body["access_methods"][0]["type"] == "s3"
    assert body["access_methods"][0]["access_url"]["url"].startswith("http")


SIZES = {
    "empty": 0,
    "one-byte": 1,
    "one-range": E2E_PART_SIZE,
    "many-ranges": 5 * E2E_PART_SIZE + 321,
}


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_download_with_console_script(
    ghga_cli, local_stack, stack_env, user, tmp_path, size
) -> None:
    data = os.urandom(size)
    file_id = archived_file(ghga_cli, local_stack, stack_env, user, data)

    result = download(ghga_cli, local_stack, user["token"], file_id, tmp_path, "--json")

    assert result.returncode == 0, result.stderr
    summary = load_report(result.stdout)
    assert summary["status"] in ("downloaded", "verified", "ok", "complete", "completed")
    assert (tmp_path / f"{file_id}.bin").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{file_id}.bin"]
    assert user["token"] not in result.stdout + result.stderr
    assert "X-Amz-Signature" not in result.stdout + result.stderr


@pytest.mark.parametrize("size", [0, 4 * E2E_PART_SIZE + 5], ids=["empty", "many-ranges"])
def test_download_with_zipapp(
    ghga_cli, ghga_pyz, local_stack, stack_env, user, tmp_path, size
) -> None:
    data = os.urandom(size)
    file_id = archived_file(ghga_cli, local_stack, stack_env, user, data)
    result = download(ghga_pyz, local_stack, user["token"], file_id, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / f"{file_id}.bin").read_bytes() == data


def test_twenty_first_requests_start_one_staging_job(
    ghga_cli, local_stack, stack_env, user
) -> None:
    """20 simultaneous first GETs of an unstaged object start exactly one staging job.

    The job for a small file can finish while the burst is still being served, so the last
    requests may already get 200; what matters is that one job, not twenty, was started.

    DynamoDB is the single-threaded moto server here, so the conditional write that elects
    the one request allowed to enqueue the job is honoured as on AWS (see test_ucs_http).
    """
    file_id = archived_file(ghga_cli, local_stack, stack_env, user, os.urandom(1000))
    url = f"{local_stack['drs_url']}/objects/{file_id}"
    results = race(20, lambda: call("GET", url, user["token"]))
    statuses = [status for status, _ in results]
    assert set(statuses) <= {200, 202} and 202 in statuses, statuses
    deadline = time.monotonic() + 30
    while call("GET", url, user["token"])[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.3)

    def stage_jobs_done() -> list[str]:
        worker_log = Path(local_stack["log_dir"], "worker.log").read_text()
        return [
            line for line in worker_log.splitlines() if '"job": "stage"' in line and file_id in line
        ]

    # The worker logs "job done" just after the copy is visible: wait for the line, then
    # give a duplicate job (if one had been enqueued) time to show up too.
    while not stage_jobs_done():
        assert time.monotonic() < deadline, "the worker never logged the staging job"
        time.sleep(0.1)
    time.sleep(1.0)
    assert len(stage_jobs_done()) == 1, stage_jobs_done()


class TestBadInput:
    def test_unknown_file(self, ghga_cli, local_stack, user, tmp_path) -> None:
        result = download(ghga_cli, local_stack, user["token"], "no-such-file", tmp_path)
        assert result.returncode == EXIT_CONFLICT, result.stderr
        assert "no-such-file" in result.stderr and "Traceback" not in result.stderr

    def test_no_access(self, ghga_cli, local_stack, stack_env, user, tmp_path) -> None:
        file_id = archived_file(ghga_cli, local_stack, stack_env, user, b"abc")
        stranger = run_admin(stack_env, "mint-token", "--user", "stranger")
        result = download(ghga_cli, local_stack, stranger, file_id, tmp_path)
        assert result.returncode == EXIT_AUTH, result.stderr
        assert "Traceback" not in result.stderr
        assert list(tmp_path.iterdir()) == []

    def test_output_dir_missing(self, ghga_cli, local_stack, user, tmp_path) -> None:
        result = download(ghga_cli, local_stack, user["token"], "x", tmp_path / "missing")
        assert result.returncode == EXIT_USAGE, result.stderr
        assert "missing" in result.stderr and "Traceback" not in result.stderr

    def test_output_dir_not_writable(self, ghga_cli, local_stack, user, tmp_path) -> None:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        as_user = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *ghga_cli]
        command = as_user if os.geteuid() == 0 else ghga_cli
        result = download(command, local_stack, user["token"], "x", locked)
        assert result.returncode == EXIT_USAGE, result.stderr
        assert "writable" in result.stderr.lower() and "Traceback" not in result.stderr

    def test_existing_file_without_overwrite(
        self, ghga_cli, local_stack, stack_env, user, tmp_path
    ) -> None:
        data = os.urandom(100)
        file_id = archived_file(ghga_cli, local_stack, stack_env, user, data)
        target = tmp_path / f"{file_id}.bin"
        target.write_bytes(b"precious")
        result = download(ghga_cli, local_stack, user["token"], file_id, tmp_path)
        assert result.returncode == EXIT_CONFLICT, result.stderr
        assert "overwrite" in result.stderr and "Traceback" not in result.stderr
        assert target.read_bytes() == b"precious"
        assert (
            download(
                ghga_cli, local_stack, user["token"], file_id, tmp_path, "--overwrite"
            ).returncode
            == 0
        )
        assert target.read_bytes() == data

    def test_not_enough_disk_space(self, ghga_cli, local_stack, stack_env, user, tmp_path) -> None:
        file_id = archived_file(
            ghga_cli, local_stack, stack_env, user, os.urandom(2 * E2E_PART_SIZE)
        )
        small = tmp_path / "small"
        small.mkdir()
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(small)], check=False
        )
        if mounted.returncode != 0:
            pytest.skip("cannot mount a small tmpfs here (needs root)")
        try:
            result = download(ghga_cli, local_stack, user["token"], file_id, small)
            assert result.returncode == EXIT_USAGE, result.stderr
            assert "space" in result.stderr.lower() and "Traceback" not in result.stderr
        finally:
            subprocess.run(["umount", str(small)], check=False)

    def test_api_unreachable(self, ghga_cli, user, tmp_path) -> None:
        result = download(
            ghga_cli,
            {"ucs_url": "http://127.0.0.1:9"},
            user["token"],
            "x",
            tmp_path,
            "--retries",
            "1",
        )
        assert result.returncode == 6, result.stderr
        assert "Traceback" not in result.stderr
