"""Uploads with large parts stream from the file: a part broken mid-body is read again from the
file, and a killed upload resumes sending only the parts S3 lacks.

A stack of its own with 8 MiB parts (the session's stack uses 256 KiB ones): a 40 MiB file has
5 parts, each far larger than libcurl's 2 MiB read block, so a part really is streamed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.admin import new_user, register_file
from tests.helpers.cli import kill_when, run_cli, upload_args
from tests.helpers.faultproxy import FaultProxy, Rule
from tests.helpers.localstack import stacklib
from tests.helpers.report_schema import load_report
from tests.helpers.s3faults import part_number, s3_records
from tests.helpers.support import stored_bytes

pytestmark = pytest.mark.e2e

PART = 8 * 1024 * 1024
SIZE = 5 * PART - 12345  # 5 parts, the last one shorter


@pytest.fixture(scope="module")
def big_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    env = {
        "S3_UPLOAD_PART_MIN_SIZE": str(PART),
        "UCS_PART_SIZE": str(PART),
        "UCS_MIN_PART_SIZE": str(PART),
        "UCS_COPY_PART_SIZE": str(2 * PART),
    }
    with stacklib.launch(tmp_path_factory.mktemp("big-stack"), extra_env=env) as info:
        yield info


@pytest.fixture(scope="module")
def big_env(big_stack: dict[str, Any]) -> dict[str, str]:
    return {**os.environ, **big_stack["env"]}


def _registered_file(big_env: dict[str, str], tmp_path: Path, user: str) -> tuple[str, Path, bytes]:
    data = os.urandom(SIZE)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    return register_file(big_env, user, path, prefix="big"), path, data


def test_a_part_reset_mid_body_is_sent_again_from_the_file(
    tmp_path: Path, big_stack: dict[str, Any], big_env: dict[str, str], ghga_cli: list[str]
) -> None:
    user = new_user(big_env, "big")
    token = user["token"]
    file_id, path, data = _registered_file(big_env, tmp_path, user["user"])
    with FaultProxy() as proxy:
        # Part 2 is cut after 3 MiB of its body: more than one read block went out already.
        proxy.add_rule(
            Rule("reset", method="PUT", url=r"partNumber=2(&|$)", nth=1, after_bytes=3 << 20)
        )
        result = run_cli(ghga_cli, upload_args(big_stack, file_id, path), token=token, proxy=proxy)
        part2 = [r for r in s3_records(proxy, big_stack, "PUT") if part_number(r) == 2]
    summary = load_report(result.stdout)
    assert result.returncode == 0, result.stderr[-2000:]
    assert summary["status"] == "accepted" and summary["retries"] >= 1
    assert len(part2) >= 2  # the reset attempt and the retry, read again from the file
    assert stored_bytes(big_stack, file_id) == data


def test_a_killed_upload_with_large_parts_sends_only_the_missing_ones(
    tmp_path: Path, big_stack: dict[str, Any], big_env: dict[str, str], ghga_cli: list[str]
) -> None:
    user = new_user(big_env, "big")
    token = user["token"]
    file_id, path, data = _registered_file(big_env, tmp_path, user["user"])
    args = upload_args(big_stack, file_id, path, "--parallel", "1")
    with FaultProxy(throttle_bps=16 * 1024 * 1024) as proxy:
        kill_when(
            ghga_cli,
            token,
            proxy,
            args,
            tmp_path / "killed",
            lambda: len([r for r in s3_records(proxy, big_stack, "PUT") if r.status == 200]) >= 2,
        )
        stored_before = {
            part_number(r) for r in s3_records(proxy, big_stack, "PUT") if r.status == 200
        }
        proxy.set_throttle(None)
        proxy.reset_log()
        result = run_cli(ghga_cli, args, token=token, proxy=proxy)
        sent_after = [part_number(r) for r in s3_records(proxy, big_stack, "PUT")]
    summary = load_report(result.stdout)
    assert result.returncode == 0, result.stderr[-2000:]
    assert summary["parts_skipped"] >= len(stored_before) >= 2
    assert not stored_before & set(sent_after)  # no stored part was sent again
    assert sorted(set(sent_after) | stored_before) == [1, 2, 3, 4, 5]
    assert summary["bytes_transferred"] <= SIZE - len(stored_before) * PART + PART
    assert stored_bytes(big_stack, file_id) == data
