"""``ghga-cli`` on the local stack through a fault-injecting proxy: kills, resumes, broken requests.

The client runs as users run it (the console script, in a child process) with ``http_proxy``
pointing at :class:`tests.helpers.faultproxy.FaultProxy`; libcurl then sends every request
there, the API calls and the presigned S3 requests alike. Fault rules match S3 requests only
(by the S3 endpoint's port), so the API is never broken on purpose; the proxy's log tells what
the client really asked S3 for, which is how "a rerun sends only what is missing" is measured.

Checked on every run: the token and the presigned query strings (signatures, credentials) never
reach the client's stdout or stderr, even when requests fail and are retried.

Stored bytes are always read back with boto3 or from disk, never through the client under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.admin import register_file, run_admin
from tests.helpers.cli import (
    EXIT_INTEGRITY,
    archived_file,
    download_args,
    kill_when,
    run_cli,
    summary_of,
    upload_args,
)
from tests.helpers.faultproxy import FaultProxy, Rule
from tests.helpers.localstack import E2E_PART_SIZE
from tests.helpers.s3faults import (
    SEGMENT_PARTS,
    STALL_SECONDS,
    THROTTLE_BPS,
    part_number,
    part_url,
    range_size,
    s3_pattern,
    s3_records,
)
from tests.helpers.support import call, s3_client, stored_bytes
from tests.helpers.ucs import current_upload_id, staged, wait_for

pytestmark = pytest.mark.e2e

STALL_TIMEOUT = 2  # the client's --stall-timeout in the fault tests, seconds


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def assert_no_secrets(
    result: subprocess.CompletedProcess, token: str, *proxies: FaultProxy
) -> None:
    """Neither the token nor any presigned query string appears in what the client printed."""
    printed = result.stdout + result.stderr
    assert token not in printed
    for marker in ("X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "Signature="):
        assert marker not in printed, f"{marker} printed by the client"
    signatures = {
        match
        for proxy in proxies
        for record in proxy.requests
        for match in re.findall(r"X-Amz-Signature=([0-9a-fA-F]+)", record.url)
    }
    # The proxy saw signed URLs, so their absence from the output means something.
    assert signatures, "no presigned S3 request went through the proxy"
    for signature in signatures:
        assert signature not in printed


def assert_succeeded(result: subprocess.CompletedProcess) -> dict[str, Any]:
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    return summary_of(result)


def parts_in_storage(stack: dict[str, Any], token: str, upload_id: str) -> set[int]:
    """Part numbers S3 holds for the upload, once two listings a moment apart agree.

    A request the proxy had fully forwarded before it was stopped may still be stored by moto
    after the client died; the listing is taken when it no longer changes.
    """
    url = f"{stack['ucs_url']}/uploads/{upload_id}/parts"

    def listing() -> set[int]:
        status, body = call("GET", url, token)
        assert status == 200, body
        assert body is not None
        return {int(p["part_no"]) for p in body["parts"]}

    previous = listing()
    for _ in range(20):
        time.sleep(0.3)
        current = listing()
        if current == previous:
            return current
        previous = current
    raise AssertionError("the part listing kept changing after the client was killed")


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------------------------
# Uploads
# --------------------------------------------------------------------------------------------


def test_token_expiring_during_an_upload_is_exit_3_and_a_new_token_resumes(
    ghga_cli, local_stack, stack_env, user, tmp_path
) -> None:
    """Uploads over slow links outlive tokens: the expiry must be a clear exit 3 (not a network
    failure), and the same command with a fresh token must resume, sending nothing again."""
    parts = 6
    data = os.urandom(parts * E2E_PART_SIZE)
    source = tmp_path / "token-expiry.bin"
    source.write_bytes(data)
    file_id = register_file(stack_env, user["user"], source)
    short_lived = run_admin(stack_env, "mint-token", "--user", user["user"], "--ttl", "3")
    # 6 x 256 KiB at 256 KiB/s, one at a time: the parts take ~6 s, the token lives 3 s.
    slow = Rule("throttle", method="PUT", url=s3_pattern(local_stack), bps=256 * 1024)
    args = upload_args(local_stack, file_id, source, "--parallel", "1")
    with FaultProxy(rules=[slow]) as proxy:
        first = run_cli(ghga_cli, args, token=short_lived, proxy=proxy)
    assert first.returncode == 3, (first.returncode, first.stderr[-3000:])
    assert "expired" in first.stderr and "rerun the same command" in first.stderr
    assert "Traceback" not in first.stderr
    assert short_lived not in first.stdout + first.stderr

    with FaultProxy() as proxy:
        rerun_args = upload_args(local_stack, file_id, source)
        rerun = run_cli(ghga_cli, rerun_args, token=user["token"], proxy=proxy)
    assert rerun.returncode == 0, (rerun.returncode, rerun.stderr[-3000:])
    summary = summary_of(rerun)
    assert summary["status"] == "accepted"
    # The token ran out while parts were going up (the client fetches URLs in batches as it
    # goes): the rerun sends exactly the parts the first run did not store.
    skipped = summary["parts_skipped"]
    assert 1 <= skipped <= parts
    puts = [r for r in s3_records(proxy, local_stack, "PUT") if r.status == 200]
    assert len(puts) == parts - skipped
    assert summary["bytes_transferred"] == (parts - skipped) * E2E_PART_SIZE
    body = s3_client(local_stack).get_object(Bucket=local_stack["permanent_bucket"], Key=file_id)
    assert body["Body"].read() == data


def test_killed_upload_resumes_sending_only_the_missing_parts(
    ghga_cli, local_stack, stack_env, user, tmp_path
) -> None:
    parts, kill_after = 24, 6
    data = os.urandom(parts * E2E_PART_SIZE)
    source = tmp_path / "killed-upload.bin"
    source.write_bytes(data)
    file_id = register_file(stack_env, user["user"], source)
    args = upload_args(local_stack, file_id, source, "--parallel", "2")

    throttle = Rule("throttle", method="PUT", url=s3_pattern(local_stack), bps=THROTTLE_BPS)
    with FaultProxy(rules=[throttle]) as first_proxy:

        def enough_parts_stored() -> bool:
            puts = s3_records(first_proxy, local_stack, "PUT")
            stored = sum(r.status == 200 and r.duration is not None for r in puts)
            # ... and the first segment reported, so the server verifies it meanwhile.
            reported = any(
                r.path.endswith("/segments/1/complete") and r.status == 200
                for r in first_proxy.requests
            )
            return stored >= kill_after and reported

        killed = kill_when(
            ghga_cli, user["token"], first_proxy, args, tmp_path / "killed", enough_parts_stored
        )
    # The proxy is stopped: nothing of the killed run can reach S3 any more.
    assert_no_secrets(killed, user["token"], first_proxy)
    upload_id = current_upload_id(local_stack, user["token"], file_id)
    held = parts_in_storage(local_stack, user["token"], upload_id)
    assert kill_after <= len(held) < parts, held
    # The server verified (and stored) the reported segment while the upload is pending.
    url = f"{local_stack['ucs_url']}/uploads/{upload_id}"
    verified = wait_for(
        lambda: (
            call("GET", url, user["token"])[1]["verified_bytes"] >= SEGMENT_PARTS * E2E_PART_SIZE
        ),
        "the first segment's verification",
        30,
    )
    assert verified

    with FaultProxy() as proxy:
        rerun = run_cli(ghga_cli, args, token=user["token"], proxy=proxy)

    summary = assert_succeeded(rerun)
    assert summary["status"] == "accepted"
    assert summary["upload_id"] == upload_id  # the same upload was resumed, not a new one
    assert summary["parts_skipped"] == len(held)
    sent = sorted(part_number(r) for r in s3_records(proxy, local_stack, "PUT"))
    assert len(sent) == parts - len(held)
    assert sent == sorted(set(range(1, parts + 1)) - held)
    assert stored_bytes(local_stack, file_id) == data
    assert_no_secrets(rerun, user["token"], proxy)
    # The verification continued from what was verified before the kill, never from byte 0.
    log = Path(local_stack["log_dir"], "worker.log").read_text(errors="replace")
    assert f"validate: upload {upload_id}: " not in log  # "...; starting over"


def test_upload_survives_resets_errors_expired_urls_and_stalls(
    ghga_cli, local_stack, stack_env, user, tmp_path
) -> None:
    data = os.urandom(10 * E2E_PART_SIZE + 4321)
    source = tmp_path / "faulty-upload.bin"
    source.write_bytes(data)
    file_id = register_file(stack_env, user["user"], source)
    put, s3 = "PUT", s3_pattern(local_stack)

    def on_part(number: int) -> str:
        return s3 + ".*" + part_url(number)

    # Part 1 is the first S3 request, so its reset hits a fresh connection: libcurl silently
    # resends a request only when a *reused* connection dies before any answer, and such a
    # resend would not count as a retry. The stall outlasts the test: only the client's
    # --stall-timeout can end it (libcurl averages speed over ~5 s, so that takes a few s).
    faults = {
        1: Rule("reset", method=put, url=on_part(1), nth=1, after_bytes=64 * 1024),
        3: Rule("status", method=put, url=on_part(3), nth=1, status=500),
        5: Rule("status", method=put, url=on_part(5), nth=1, status=503, retry_after=1),
        7: Rule("expired", method=put, url=on_part(7), nth=1),
        9: Rule(
            "stall",
            method=put,
            url=on_part(9),
            nth=1,
            phase="request",
            after_bytes=64 * 1024,
            seconds=STALL_SECONDS,
        ),
    }
    args = upload_args(
        local_stack,
        file_id,
        source,
        "--parallel",
        "4",
        "--retries",
        "3",
        "--stall-timeout",
        str(STALL_TIMEOUT),
    )

    with FaultProxy(rules=list(faults.values())) as proxy:
        result = run_cli(ghga_cli, args, token=user["token"], proxy=proxy)

    summary = assert_succeeded(result)
    assert summary["status"] == "accepted"
    assert stored_bytes(local_stack, file_id) == data
    puts = s3_records(proxy, local_stack, "PUT")
    for number, rule in faults.items():
        tries = [r for r in puts if part_number(r) == number]
        assert tries[0].fault == rule.label(), (number, [r.fault for r in tries])
        assert tries[-1].status == 200 and tries[-1].fault is None, (number, tries[-1])
    assert summary["retries"] >= len(faults)
    # The expired URL made the client ask the UCS for a fresh one.
    expired = next(r for r in puts if r.fault == "expired")
    refreshes = [
        r
        for r in proxy.requests
        if r.method == "POST" and r.id > expired.id and "/signed_urls" in r.path
    ]
    assert refreshes, "no presigned URL was requested after the 403"
    assert_no_secrets(result, user["token"], proxy)


# --------------------------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------------------------


def test_killed_download_resumes_fetching_only_the_missing_ranges(
    ghga_cli, local_stack, stack_env, user, tmp_path
) -> None:
    ranges = 24
    data = os.urandom(ranges * E2E_PART_SIZE - 1000)
    file_id = archived_file(ghga_cli, local_stack, stack_env, user, data)
    staged(local_stack, user["token"], file_id)
    out = tmp_path / "out"
    out.mkdir()
    target = out / f"{file_id}.bin"
    part, state_file = (out / ".ghga-cli" / f"{target.name}{s}" for s in (".part", ".part.json"))
    args = download_args(local_stack, file_id, out, "--parallel", "2")

    def saved_ranges() -> set[int]:
        try:
            return set(json.loads(state_file.read_text())["done"])
        except (OSError, ValueError, KeyError, TypeError):
            return set()

    throttle = Rule("throttle", method="GET", url=s3_pattern(local_stack), bps=THROTTLE_BPS)
    with FaultProxy(rules=[throttle]) as first_proxy:
        killed = kill_when(
            ghga_cli,
            user["token"],
            first_proxy,
            args,
            tmp_path / "killed",
            lambda: len(saved_ranges()) >= 4,
        )
    assert_no_secrets(killed, user["token"], first_proxy)
    assert not target.exists()
    assert part.is_file() and state_file.is_file()
    done = saved_ranges()
    assert 4 <= len(done) < ranges, done
    sizes = [min(E2E_PART_SIZE, len(data) - i * E2E_PART_SIZE) for i in range(ranges)]
    missing_bytes = sum(size for i, size in enumerate(sizes) if i not in done)

    with FaultProxy() as proxy:
        rerun = run_cli(ghga_cli, args, token=user["token"], proxy=proxy)

    summary = assert_succeeded(rerun)
    assert summary["parts_skipped"] == len(done)
    requested = sum(range_size(r) for r in s3_records(proxy, local_stack, "GET"))
    assert requested == missing_bytes < len(data)
    assert target.read_bytes() == data
    assert files_in(out) == [target.name]  # the working files and their directory are gone
    assert_no_secrets(rerun, user["token"], proxy)


def test_download_survives_resets_errors_expired_urls_and_stalls(
    ghga_cli, local_stack, stack_env, user, tmp_path
) -> None:
    data = os.urandom(8 * E2E_PART_SIZE + 77)
    file_id = archived_file(ghga_cli, local_stack, stack_env, user, data)
    staged(local_stack, user["token"], file_id)
    get, s3 = "GET", s3_pattern(local_stack)
    # Rules count every S3 GET of the download, so nth picks the n-th ranged request.
    faults = [
        Rule("reset", method=get, url=s3, nth=2, phase="response", after_bytes=64 * 1024),
        Rule("status", method=get, url=s3, nth=3, status=500),
        Rule("expired", method=get, url=s3, nth=4),
        Rule("stall", method=get, url=s3, nth=5, phase="headers", seconds=STALL_SECONDS),
    ]
    out = tmp_path / "out"
    out.mkdir()
    args = download_args(
        local_stack,
        file_id,
        out,
        "--parallel",
        "3",
        "--retries",
        "3",
        "--stall-timeout",
        str(STALL_TIMEOUT),
    )

    with FaultProxy(rules=faults) as proxy:
        result = run_cli(ghga_cli, args, token=user["token"], proxy=proxy)

    summary = assert_succeeded(result)
    assert (out / f"{file_id}.bin").read_bytes() == data
    assert files_in(out) == [f"{file_id}.bin"]
    gets = s3_records(proxy, local_stack, "GET")
    labels = [r.fault for r in gets]
    for rule in faults:
        assert labels.count(rule.label()) == 1, (rule.label(), labels)
    assert summary["retries"] >= len(faults)
    # The expired URL made the client fetch the DRS object again for a fresh one.
    expired = next(r for r in gets if r.fault == "expired")
    drs_after = [
        r
        for r in proxy.requests
        if r.method == "GET" and r.id > expired.id and f"/objects/{file_id}" in r.path
    ]
    assert drs_after, "the DRS object was not fetched again after the 403"
    assert_no_secrets(result, user["token"], proxy)


def test_corrupted_range_fails_with_integrity_error_and_no_output_file(
    ghga_cli, local_stack, stack_env, user, tmp_path
) -> None:
    data = os.urandom(4 * E2E_PART_SIZE)
    file_id = archived_file(ghga_cli, local_stack, stack_env, user, data)
    staged(local_stack, user["token"], file_id)
    out = tmp_path / "out"
    out.mkdir()
    args = download_args(local_stack, file_id, out, "--parallel", "2")
    flip = Rule("flip", method="GET", url=s3_pattern(local_stack), nth=2, offset=1234)

    with FaultProxy(rules=[flip]) as proxy:
        result = run_cli(ghga_cli, args, token=user["token"], proxy=proxy)

    assert result.returncode == EXIT_INTEGRITY, (result.returncode, result.stderr[-3000:])
    assert [r.fault for r in s3_records(proxy, local_stack, "GET")].count("flip@1234") == 1
    assert "Traceback" not in result.stderr
    assert summary_of(result)["status"] == "error"
    assert_no_secrets(result, user["token"], proxy)
    # Nothing at the final name; the client documents that it removes the damaged partial file
    # (and its resume state) too, so a rerun starts clean.
    assert files_in(out) == [], files_in(out)

    with FaultProxy() as clean_proxy:
        again = run_cli(ghga_cli, args, token=user["token"], proxy=clean_proxy)
    assert_succeeded(again)
    assert hashlib.md5((out / f"{file_id}.bin").read_bytes()).digest() == (
        hashlib.md5(data).digest()
    )
