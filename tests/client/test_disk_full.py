"""A full disk during a download: a clear exit 2, the resume state intact, no traceback.

Found on 2026-11-29 by filling a 40 MiB tmpfs while ghga-cli downloaded into it: the state
write's ENOSPC ended as "unexpected internal error" (exit 1) and left ``.part.json.tmp``.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from ghga_cli.cli import run as cli
from ghga_cli.errors import EXIT_USAGE, CliError, LocalIOError
from ghga_cli.files import allocated_bytes, write_json_atomic
from ghga_cli.transfer.download import DownloadTransfer
from tests.client.s3helpers import FakeDrs, engine_download
from tests.helpers.report_schema import load_report

PART = 64 * 1024
DEV_FULL = Path("/dev/full")  # every write fails with ENOSPC


@pytest.mark.skipif(not DEV_FULL.exists(), reason="needs Linux's /dev/full")
def test_libcurl_write_failure_is_a_local_error_not_a_network_one(
    tmp_path: Path, s3: Any, bucket: str, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=os.urandom(3 * PART))
    configure = DownloadTransfer.configure

    def onto_a_full_disk(self: DownloadTransfer, slot: Any, part: Any) -> None:
        if slot.index not in self._files:
            self._files[slot.index] = DEV_FULL.open("wb", buffering=0)
        configure(self, slot, part)

    monkeypatch.setattr(DownloadTransfer, "configure", onto_a_full_disk)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CliError) as info:
        engine_download(FakeDrs(s3, bucket, key), out, range_size=PART, retries=3)
    assert info.value.exit_code == EXIT_USAGE
    assert "writing the received data to the local file failed" in info.value.message
    assert "rerun the same command" in (info.value.hint or "")
    assert not (out / "data.bin").exists()


def test_state_write_failure_leaves_the_old_state_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "x.part.json"
    write_json_atomic(state, {"done": [0]})

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError) as info:
        write_json_atomic(state, {"done": [0, 1]})
    assert info.value.filename == str(state)
    assert json.loads(state.read_text()) == {"done": [0]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.part.json"]


def test_os_errors_end_in_one_clear_line_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def disk_full(*args: Any) -> str:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "f.part.json"))

    monkeypatch.setattr(cli, "_run", disk_full)
    monkeypatch.setenv("GHGA_CLI_TOKEN", "t")
    argv = ["download-by-id", "--api-url", "http://127.0.0.1:9", "--file-id", "F"]
    code = cli.main([*argv, "--output-dir", str(tmp_path), "--json"])
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"no space left writing {tmp_path / 'f.part.json'}" in err
    assert "rerun the same command" in err
    assert load_report(out)["exit_code"] == EXIT_USAGE


def test_other_os_errors_name_the_file() -> None:
    error = LocalIOError.from_os_error(OSError(errno.EIO, "Input/output error", "/data/f.part"))
    assert error.exit_code == EXIT_USAGE
    assert error.message == "file system error on /data/f.part: Input/output error"


def test_allocated_bytes_counts_written_blocks_of_a_sparse_file(tmp_path: Path) -> None:
    part = tmp_path / "f.part"
    with part.open("wb") as handle:
        handle.truncate(64 * PART)
        handle.seek(10 * PART)
        handle.write(os.urandom(4 * PART))
        handle.flush()
        os.fsync(handle.fileno())
    found = allocated_bytes(part, 0)
    if hasattr(os.stat_result, "st_blocks"):
        assert 4 * PART <= found < 64 * PART  # the written blocks, not the holes
    assert allocated_bytes(part, 20 * PART) >= 20 * PART
    assert allocated_bytes(tmp_path / "missing", 7) == 7


def test_exclusive_lock_refuses_a_second_holder_and_cleans_up(tmp_path: Path) -> None:
    from ghga_cli.errors import EXIT_NOT_FOUND, ConflictError
    from ghga_cli.files import ExclusiveLock

    lock = tmp_path / "f.part.lock"
    with ExclusiveLock(lock, "downloading f"):
        with pytest.raises(ConflictError) as info, ExclusiveLock(lock, "downloading f"):
            pass
        assert info.value.exit_code == EXIT_NOT_FOUND
        assert lock.exists()
    assert not lock.exists()
    with ExclusiveLock(lock, "downloading f"):  # free again
        pass
