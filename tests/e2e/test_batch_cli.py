"""Many files in one run of the console script against the local stack (``--manifest``).

Every accepted upload is read back from the permanent bucket with boto3, every download from
disk, never through the client under test. The client runs in a child process, as users run it;
where a test needs to see or break requests, it goes through tests/helpers/faultproxy.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.admin import run_admin
from tests.helpers.cli import kill_when, run_cli, summary_of
from tests.helpers.faultproxy import FaultProxy, Rule
from tests.helpers.localstack import E2E_PART_SIZE
from tests.helpers.s3faults import THROTTLE_BPS, s3_records
from tests.helpers.support import call, stored_bytes

pytestmark = pytest.mark.e2e

PART = E2E_PART_SIZE
#: Sizes of the 50-file study: empty, tiny, around one part, several parts.
SIZES = [0, 1, 1000, PART - 1, PART, PART + 1, 2 * PART + 3, 3 * PART, 4 * PART + 17, 77_777]
#: ghga-cli with the time a batch may take (50 files on moto are slow).
run_batch = functools.partial(run_cli, timeout=300)


def make_study(
    stack_env: dict[str, str],
    user: str,
    directory: Path,
    sizes: list[int],
    *,
    names: list[str] | None = None,
    registered_sizes: dict[int, int] | None = None,
) -> list[tuple[str, Path, bytes]]:
    """Files on disk, registered in one ``admin register-files`` call: (file id, path, bytes)."""
    directory.mkdir(parents=True, exist_ok=True)
    prefix = uuid.uuid4().hex[:8]
    files, rows = [], []
    for index, size in enumerate(sizes):
        data = os.urandom(size)
        name = names[index] if names else f"sample{index:03d}.bin"
        path = directory / f"{prefix}-{index:03d}.bin"
        path.write_bytes(data)
        file_id = f"bt-{prefix}-{index:03d}"
        size_there = (registered_sizes or {}).get(index, size)
        md5 = hashlib.md5(data).hexdigest()
        rows.append(f"{file_id}\t{name}\t{size_there}\t{md5}")
        files.append((file_id, path, data))
    table = directory / f"{prefix}-register.tsv"
    table.write_text("\n".join(rows) + "\n")
    run_admin(
        stack_env, "register-files", "--from", str(table), "--submitter", user, "--reader", user
    )
    return files


def write_upload_manifest(path: Path, files: list[tuple[str, Path, bytes]]) -> Path:
    lines = ["# study upload", ""] + [f"{fid}\t{p.name}" for fid, p, _ in files]
    path.write_text("\n".join(lines) + "\n")
    return path


def upload_batch(stack: dict[str, Any], manifest: Path, *extra: str) -> list[str]:
    return ["upload-by-id", "--api-url", stack["ucs_url"], "--manifest", str(manifest), *extra]


def download_batch(stack: dict[str, Any], manifest: Path, out: Path, *extra: str) -> list[str]:
    return [
        "download-by-id",
        "--api-url",
        stack["ucs_url"],
        "--manifest",
        str(manifest),
        "--output-dir",
        str(out),
        "--range-size",
        str(PART),
        *extra,
    ]


def summary(result: subprocess.CompletedProcess) -> dict[str, Any]:
    """The run's ``--json`` summary; a batch never ends in a traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    return summary_of(result)


def current_upload(stack: dict[str, Any], token: str, file_id: str) -> Any:
    status, body = call("GET", f"{stack['ucs_url']}/files/{file_id}", token)
    assert status == 200, body
    return body["current_upload_id"]


# --------------------------------------------------------------------------------------------


def test_fifty_files_upload_then_download_in_one_run_each(
    tmp_path: Path,
    local_stack: dict[str, Any],
    stack_env: dict[str, str],
    user: dict[str, str],
    ghga_cli: list[str],
) -> None:
    files = make_study(stack_env, user["user"], tmp_path / "data", SIZES * 5)
    manifest = write_upload_manifest(tmp_path / "data" / "upload.tsv", files)
    result = run_batch(
        ghga_cli, [*upload_batch(local_stack, manifest), "--json"], token=user["token"]
    )
    report = summary(result)
    assert result.returncode == 0, result.stderr[-3000:]
    assert report["files_total"] == 50 and report["files_ok"] == 50
    assert [f["status"] for f in report["files"]] == ["accepted"] * 50
    assert re.search(r"\[50/50\] bt-", result.stderr)  # one line per finished file
    assert "50 files: 50 succeeded, 0 failed" in result.stderr  # the summary table
    for file_id, _path, data in files:
        assert stored_bytes(local_stack, file_id) == data

    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(fid for fid, _, _ in files) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    result = run_batch(
        ghga_cli, [*download_batch(local_stack, ids, out), "--json"], token=user["token"]
    )
    report = summary(result)
    assert result.returncode == 0, result.stderr[-3000:]
    assert report["files_ok"] == 50
    for index, (_file_id, _path, data) in enumerate(files):
        assert (out / f"sample{index:03d}.bin").read_bytes() == data
    assert sorted(p.name for p in out.iterdir()) == [f"sample{i:03d}.bin" for i in range(50)]

    # The same command again: every file is there and verified, nothing moves.
    result = run_batch(
        ghga_cli, [*download_batch(local_stack, ids, out), "--json"], token=user["token"]
    )
    report = summary(result)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {f.get("status_note") for f in report["files"]} == {"already present"}
    assert report["bytes_transferred"] == 0
    # And the uploads: every file already accepted is skipped.
    result = run_batch(
        ghga_cli, [*upload_batch(local_stack, manifest), "--json"], token=user["token"]
    )
    report = summary(result)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {f.get("status_note") for f in report["files"]} == {"already accepted"}


def test_a_killed_batch_resumes_sending_only_what_is_missing(
    tmp_path: Path,
    local_stack: dict[str, Any],
    stack_env: dict[str, str],
    user: dict[str, str],
    ghga_cli: list[str],
) -> None:
    files = make_study(stack_env, user["user"], tmp_path / "data", [4 * PART] * 6)
    manifest = write_upload_manifest(tmp_path / "data" / "upload.tsv", files)
    args = [*upload_batch(local_stack, manifest), "--json", "--parallel", "2"]
    with FaultProxy(throttle_bps=THROTTLE_BPS) as proxy:
        kill_when(
            ghga_cli,
            user["token"],
            proxy,
            args,
            tmp_path / "killed",
            lambda: len([r for r in s3_records(proxy, local_stack, "PUT") if r.status == 200]) >= 7,
        )
        sent_before = len([r for r in s3_records(proxy, local_stack, "PUT") if r.status == 200])
        proxy.set_throttle(None)
        proxy.reset_log()
        result = run_batch(ghga_cli, args, token=user["token"], proxy=proxy)
        report = summary(result)
        assert result.returncode == 0, result.stderr[-3000:]
        puts = [r for r in s3_records(proxy, local_stack, "PUT") if r.status == 200]
    total_parts = 6 * 4
    assert len(puts) <= total_parts - sent_before + 2  # parts in flight at the kill may repeat
    # What the first run stored is not sent again: skipped parts of resumed files, and whole
    # files the first run finished (accepted: skipped).
    reused = sum(f.get("parts_skipped") or 0 for f in report["files"])
    reused += 4 * sum(1 for f in report["files"] if f.get("status_note") == "already accepted")
    assert reused >= sent_before - 2
    assert report["bytes_transferred"] <= (total_parts - sent_before + 2) * PART
    for file_id, _path, data in files:
        assert stored_bytes(local_stack, file_id) == data


def test_every_bad_line_is_reported_with_its_number_before_anything_moves(
    tmp_path: Path,
    local_stack: dict[str, Any],
    stack_env: dict[str, str],
    user: dict[str, str],
    ghga_cli: list[str],
) -> None:
    files = make_study(
        stack_env,
        user["user"],
        tmp_path / "data",
        [PART, PART, PART],
        registered_sizes={1: PART + 1},
    )
    other = f"other-{uuid.uuid4().hex[:8]}"
    foreign = make_study(stack_env, other, tmp_path / "foreign", [10])
    (good, good_path, _), (wrong, wrong_path, _), (third, third_path, _) = files
    manifest = tmp_path / "data" / "bad.tsv"
    manifest.write_text(
        "\n".join(
            [
                f"{good}\t{good_path.name}",  # line 1: fine
                f"{wrong}\t{wrong_path.name}",  # line 2: registered size differs
                f"{third}\tno-such-file.bin",  # line 3: missing file
                f"{foreign[0][0]}\t{foreign[0][1]}",  # line 4: someone else's file
                f"{good}\t{third_path.name}",  # line 5: duplicate id
                "not-a-tab-separated-line",  # line 6: malformed
            ]
        )
        + "\n"
    )
    result = run_batch(
        ghga_cli, [*upload_batch(local_stack, manifest), "--json"], token=user["token"]
    )
    assert result.returncode == 2, result.stderr
    err = result.stderr
    assert "line 2:" in err and "registered with" in err
    assert "line 3:" in err and "not found" in err
    assert "line 4:" in err and "may not upload" in err
    assert "line 5:" in err and "listed again" in err
    assert "line 6:" in err
    assert "nothing was transferred" in err
    report = summary(result)
    assert report["exit_code"] == 2 and len(report["error"]["problems"]) >= 5
    for file_id in (good, wrong):
        assert current_upload(local_stack, user["token"], file_id) is None  # no upload created


def test_dry_run_checks_and_moves_nothing(
    tmp_path: Path,
    local_stack: dict[str, Any],
    stack_env: dict[str, str],
    user: dict[str, str],
    ghga_cli: list[str],
) -> None:
    files = make_study(stack_env, user["user"], tmp_path / "data", [0, PART + 5])
    manifest = write_upload_manifest(tmp_path / "data" / "upload.tsv", files)
    result = run_batch(
        ghga_cli, [*upload_batch(local_stack, manifest), "--dry-run", "--json"], token=user["token"]
    )
    assert result.returncode == 0, result.stderr
    assert summary(result)["status"] == "dry-run"
    assert result.stderr.count("new upload") == 2 and "nothing was sent" in result.stderr
    for file_id, _, _ in files:
        assert current_upload(local_stack, user["token"], file_id) is None


def test_one_failing_file_does_not_stop_the_others(
    tmp_path: Path,
    local_stack: dict[str, Any],
    stack_env: dict[str, str],
    user: dict[str, str],
    ghga_cli: list[str],
) -> None:
    files = make_study(stack_env, user["user"], tmp_path / "data", [2 * PART] * 4)
    manifest = write_upload_manifest(tmp_path / "data" / "upload.tsv", files)
    doomed = files[1][0]
    with FaultProxy() as proxy:
        # Every PUT of one file's parts answers 500: that file fails, the others go on.
        proxy.add_rule(Rule("status", method="PUT", url=rf"/{doomed}/", status=500))
        result = run_batch(
            ghga_cli,
            [*upload_batch(local_stack, manifest), "--json", "--retries", "1"],
            token=user["token"],
            proxy=proxy,
        )
    report = summary(result)
    assert result.returncode == 6, result.stderr[-3000:]
    by_id = {f["file_id"]: f for f in report["files"]}
    assert by_id[doomed]["status"] == "error" and by_id[doomed]["exit_code"] == 6
    assert report["files_ok"] == 3 and report["files_failed"] == 1
    assert f"{doomed}: failed (exit 6)" in result.stderr
    for file_id, _path, data in files:
        if file_id != doomed:
            assert stored_bytes(local_stack, file_id) == data

    # --fail-fast: the first failure stops the batch, with that failure's exit code.
    more = make_study(stack_env, user["user"], tmp_path / "more", [2 * PART] * 3)
    manifest = write_upload_manifest(tmp_path / "more" / "upload.tsv", more)
    with FaultProxy() as proxy:
        proxy.add_rule(Rule("status", method="PUT", url=rf"/{more[0][0]}/", status=500))
        result = run_batch(
            ghga_cli,
            [
                *upload_batch(local_stack, manifest),
                "--json",
                "--retries",
                "0",
                "--fail-fast",
                "--parallel-files",
                "1",
            ],
            token=user["token"],
            proxy=proxy,
        )
    report = summary(result)
    assert result.returncode == 6, result.stderr[-3000:]
    assert report["files_failed"] >= 1 and "stopped_by" in report


def test_two_files_with_one_name_are_refused_before_anything_is_written(
    tmp_path: Path,
    local_stack: dict[str, Any],
    stack_env: dict[str, str],
    user: dict[str, str],
    ghga_cli: list[str],
) -> None:
    files = make_study(
        stack_env, user["user"], tmp_path / "data", [10, 20], names=["reads.bam", "reads.bam"]
    )
    manifest = write_upload_manifest(tmp_path / "data" / "upload.tsv", files)
    result = run_batch(ghga_cli, upload_batch(local_stack, manifest), token=user["token"])
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    out.mkdir()
    args = ["download-by-id", "--api-url", local_stack["ucs_url"], "--output-dir", str(out)]
    for file_id, _, _ in files:
        args += ["--file-id", file_id]
    result = run_batch(ghga_cli, args, token=user["token"])
    assert result.returncode == 2, result.stderr
    assert "has the same name (reads.bam)" in result.stderr
    assert list(out.iterdir()) == []


def test_a_renewed_token_file_lets_a_long_batch_continue(
    tmp_path: Path,
    local_stack: dict[str, Any],
    stack_env: dict[str, str],
    user: dict[str, str],
    ghga_cli: list[str],
) -> None:
    files = make_study(stack_env, user["user"], tmp_path / "data", [4 * PART] * 4)
    manifest = write_upload_manifest(tmp_path / "data" / "upload.tsv", files)
    token_file = tmp_path / "token"
    token_file.write_text(run_admin(stack_env, "mint-token", "--user", user["user"], "--ttl", "4"))
    fresh = run_admin(stack_env, "mint-token", "--user", user["user"], "--ttl", "3600")
    args = [*upload_batch(local_stack, manifest), "--json", "--parallel", "1"]
    args += ["--token-file", str(token_file)]
    with FaultProxy(throttle_bps=THROTTLE_BPS) as proxy:

        def renew_once_started() -> None:
            deadline = time.monotonic() + 30
            while not proxy.requests and time.monotonic() < deadline:
                time.sleep(0.02)
            token_file.write_text(fresh + "\n")  # the client read the old one at start-up

        writer = threading.Thread(target=renew_once_started)
        writer.start()
        result = run_batch(ghga_cli, args, proxy=proxy)  # token from the file
        writer.join()
        refused = proxy.count(status=401)
    report = summary(result)
    assert result.returncode == 0, result.stderr[-3000:]
    assert refused >= 1  # the old token really expired during the run
    assert report["token_renewals"] == 1
    assert fresh not in result.stdout + result.stderr
    for file_id, _path, data in files:
        assert stored_bytes(local_stack, file_id) == data


def test_the_first_byte_moves_after_a_few_api_calls_not_one_per_file(
    tmp_path: Path,
    local_stack: dict[str, Any],
    stack_env: dict[str, str],
    user: dict[str, str],
    ghga_cli: list[str],
) -> None:
    """40 files: one batch lookup checks them all; transfers start after a handful of calls
    (per file in flight: create, list parts, presign), not after 40+ round trips."""
    files = make_study(stack_env, user["user"], tmp_path / "data", [1000] * 40)
    manifest = write_upload_manifest(tmp_path / "data" / "upload.tsv", files)
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(fid for fid, _, _ in files) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    with FaultProxy() as proxy:
        args = [*upload_batch(local_stack, manifest), "--json"]
        result = run_batch(ghga_cli, args, token=user["token"], proxy=proxy)
        assert result.returncode == 0, result.stderr[-3000:]
        upload_log = list(proxy.requests)
        proxy.reset_log()
        args = [*download_batch(local_stack, ids, out), "--json"]
        result = run_batch(ghga_cli, args, token=user["token"], proxy=proxy)
        assert result.returncode == 0, result.stderr[-3000:]
        download_log = list(proxy.requests)
    s3_port = local_stack["aws_endpoint_url"].rsplit(":", 1)[1]

    def api_calls_before_first(log: list[Any], method: str) -> int:
        first = next(i for i, r in enumerate(log) if r.method == method and f":{s3_port}/" in r.url)
        return sum(1 for r in log[:first] if f":{s3_port}/" not in r.url)

    assert api_calls_before_first(upload_log, "PUT") <= 1 + 4 * 3
    # Downloads: bulk requests only (the first stages all 40 files, later ones ask again for
    # those still being staged), never one GET per file.
    first_get = next(
        i for i, r in enumerate(download_log) if r.method == "GET" and f":{s3_port}/" in r.url
    )
    before = [r for r in download_log[:first_get] if f":{s3_port}/" not in r.url]
    assert before and all(r.method == "POST" and r.url.endswith("/objects") for r in before)
    assert len(before) <= 5
    assert sum(1 for r in upload_log if r.url.endswith("/batch/files")) == 1
    assert sum(1 for r in download_log if r.method == "POST" and r.url.endswith("/objects")) >= 1
