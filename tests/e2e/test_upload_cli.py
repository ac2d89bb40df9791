"""``ghga-cli upload-by-id`` against the local stack, run as users run it.

Every successful upload is checked by reading the object back from the permanent bucket with
boto3, never through the client under test.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.admin import register_file, run_admin
from tests.helpers.cli import (
    EXIT_AUTH,
    EXIT_CONFLICT,
    EXIT_NETWORK,
    EXIT_USAGE,
    assert_one_line_error,
    summary_of,
    upload,
)
from tests.helpers.localstack import E2E_PART_SIZE
from tests.helpers.support import s3_client

pytestmark = pytest.mark.e2e

SIZES = {
    "empty": 0,
    "one-byte": 1,
    "one-part": E2E_PART_SIZE,
    "one-part-plus-one": E2E_PART_SIZE + 1,
    "many-parts": 7 * E2E_PART_SIZE + 12345,
}


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_upload_with_console_script(
    ghga_cli: list[str],
    local_stack: dict[str, Any],
    stack_env: dict[str, str],
    user: dict[str, str],
    tmp_path: Path,
    size: int,
) -> None:
    source = tmp_path / "sample.bin"
    source.write_bytes(os.urandom(size))
    file_id = register_file(stack_env, user["user"], source)

    result = upload(ghga_cli, local_stack, user["token"], file_id, source, "--json")

    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert summary["status"] == "accepted"
    assert summary["file_id"] == file_id
    assert summary["bytes"] == size
    stored = s3_client(local_stack).get_object(Bucket=local_stack["permanent_bucket"], Key=file_id)
    assert (
        hashlib.md5(stored["Body"].read()).hexdigest()
        == hashlib.md5(source.read_bytes()).hexdigest()
    )


@pytest.mark.parametrize("size", [0, 3 * E2E_PART_SIZE + 7], ids=["empty", "many-parts"])
def test_upload_with_zipapp(
    ghga_pyz: list[str],
    local_stack: dict[str, Any],
    stack_env: dict[str, str],
    user: dict[str, str],
    tmp_path: Path,
    size: int,
) -> None:
    source = tmp_path / "sample.bin"
    source.write_bytes(os.urandom(size))
    file_id = register_file(stack_env, user["user"], source)

    result = upload(ghga_pyz, local_stack, user["token"], file_id, source, "--json", env={})

    assert result.returncode == 0, result.stderr
    assert summary_of(result)["status"] == "accepted"
    stored = s3_client(local_stack).get_object(Bucket=local_stack["permanent_bucket"], Key=file_id)
    assert stored["Body"].read() == source.read_bytes()


def test_json_summary_never_contains_the_token_or_signed_urls(
    ghga_cli: list[str],
    local_stack: dict[str, Any],
    stack_env: dict[str, str],
    user: dict[str, str],
    tmp_path: Path,
) -> None:
    source = tmp_path / "secret.bin"
    source.write_bytes(os.urandom(2 * E2E_PART_SIZE))
    file_id = register_file(stack_env, user["user"], source)
    result = upload(ghga_cli, local_stack, user["token"], file_id, source, "--json")
    assert result.returncode == 0, result.stderr
    everything = result.stdout + result.stderr
    assert user["token"] not in everything
    assert "X-Amz-Signature" not in everything


def test_second_upload_of_an_accepted_file_is_refused(
    ghga_cli: list[str],
    local_stack: dict[str, Any],
    stack_env: dict[str, str],
    user: dict[str, str],
    tmp_path: Path,
) -> None:
    source = tmp_path / "once.bin"
    source.write_bytes(os.urandom(1000))
    file_id = register_file(stack_env, user["user"], source)
    assert upload(ghga_cli, local_stack, user["token"], file_id, source).returncode == 0
    again = upload(ghga_cli, local_stack, user["token"], file_id, source)
    assert_one_line_error(again, EXIT_CONFLICT, "accepted")


class TestBadInput:
    """Each mistake a user can make ends in one clear line and a distinct non-zero exit code."""

    def test_missing_file(self, ghga_cli, local_stack, stack_env, user, tmp_path) -> None:
        file_id = register_file(stack_env, user["user"], tmp_path / "nothing", size=10)
        result = upload(ghga_cli, local_stack, user["token"], file_id, tmp_path / "nothing")
        assert_one_line_error(result, EXIT_USAGE, "nothing")

    def test_directory_instead_of_file(
        self, ghga_cli, local_stack, stack_env, user, tmp_path
    ) -> None:
        file_id = register_file(stack_env, user["user"], tmp_path / "d", size=10)
        result = upload(ghga_cli, local_stack, user["token"], file_id, tmp_path)
        assert_one_line_error(result, EXIT_USAGE, "director")

    def test_size_mismatch(self, ghga_cli, local_stack, stack_env, user, tmp_path) -> None:
        source = tmp_path / "short.bin"
        source.write_bytes(b"x" * 100)
        file_id = register_file(stack_env, user["user"], source, size=101)
        result = upload(ghga_cli, local_stack, user["token"], file_id, source)
        assert_one_line_error(result, EXIT_USAGE, "size", "101")

    def test_unknown_file_id(self, ghga_cli, local_stack, user, tmp_path) -> None:
        source = tmp_path / "a.bin"
        source.write_bytes(b"a")
        result = upload(ghga_cli, local_stack, user["token"], "no-such-file", source)
        assert_one_line_error(result, EXIT_CONFLICT, "no-such-file")

    def test_expired_token(self, ghga_cli, local_stack, stack_env, user, tmp_path) -> None:
        source = tmp_path / "a.bin"
        source.write_bytes(b"a")
        file_id = register_file(stack_env, user["user"], source)
        expired = run_admin(stack_env, "mint-token", "--user", user["user"], "--ttl", "-10")
        result = upload(ghga_cli, local_stack, expired, file_id, source)
        assert_one_line_error(result, EXIT_AUTH, "token")
        assert expired not in result.stderr

    def test_garbage_token(self, ghga_cli, local_stack, stack_env, user, tmp_path) -> None:
        source = tmp_path / "a.bin"
        source.write_bytes(b"a")
        file_id = register_file(stack_env, user["user"], source)
        result = upload(ghga_cli, local_stack, "not-a-jwt", file_id, source)
        assert_one_line_error(result, EXIT_AUTH, "token")

    def test_other_users_file(self, ghga_cli, local_stack, stack_env, user, tmp_path) -> None:
        source = tmp_path / "a.bin"
        source.write_bytes(b"a")
        file_id = register_file(stack_env, "somebody-else", source)
        result = upload(ghga_cli, local_stack, user["token"], file_id, source)
        assert_one_line_error(result, EXIT_AUTH, file_id)

    def test_no_token(self, ghga_cli, local_stack, tmp_path) -> None:
        source = tmp_path / "a.bin"
        source.write_bytes(b"a")
        result = upload(ghga_cli, local_stack, None, "any", source)
        assert_one_line_error(result, EXIT_USAGE, "token")

    def test_unreachable_api(self, ghga_cli, user, tmp_path) -> None:
        source = tmp_path / "a.bin"
        source.write_bytes(b"a")
        nowhere = {"ucs_url": "http://127.0.0.1:9"}
        result = upload(ghga_cli, nowhere, user["token"], "any", source, "--retries", "1")
        assert_one_line_error(result, EXIT_NETWORK, "127.0.0.1:9")

    def test_unreadable_file(self, ghga_cli, local_stack, stack_env, user, tmp_path) -> None:
        source = tmp_path / "locked.bin"
        source.write_bytes(b"a")
        source.chmod(0)
        file_id = register_file(stack_env, user["user"], tmp_path / "x", size=1)
        # Root reads any file whatever its mode; without the two DAC capabilities it cannot.
        as_user = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *ghga_cli]
        command = as_user if os.geteuid() == 0 else ghga_cli
        result = upload(command, local_stack, user["token"], file_id, source)
        assert_one_line_error(result, EXIT_USAGE, "locked.bin")
