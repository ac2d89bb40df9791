"""Bad input and unreachable services: one error line, the documented exit code, no traceback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ghga_cli import __version__
from ghga_cli.cli.run import main
from tests.helpers.report_schema import load_report

TOKEN = "tok.en.value"


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHGA_CLI_TOKEN", TOKEN)
    monkeypatch.delenv("GHGA_CLI_DEBUG", raising=False)


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err and TOKEN not in err and TOKEN not in out
    if code != 0:
        lines = err.strip().splitlines()
        assert lines[-1].startswith("ghga-cli: error: ") and "(hint: " in lines[-1]
    return code, out, err


def up(path: Path | str, *extra: str) -> list[str]:
    return [
        "upload-by-id",
        "--api-url",
        _closed_port_url(),
        "--file-id",
        "F1",
        "--file-path",
        str(path),
        "--retries",
        "0",
        *extra,
    ]


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, *up(tmp_path / "nope.bin"))
    assert code == 2 and "file not found" in err


def test_directory_instead_of_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, *up(tmp_path))
    assert code == 2 and "is a directory" in err


def test_unreadable_file_chmod(tmp_path: Path) -> None:
    """chmod 000; as root, run the CLI without the capabilities that bypass file modes."""
    path = tmp_path / "locked.bin"
    path.write_bytes(b"x")
    path.chmod(0)
    prefix: list[str] = []
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("root without setpriv reads any file")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "ghga_cli", *up(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GHGA_CLI_TOKEN": TOKEN},
    )
    assert proc.returncode == 2, proc.stderr
    assert "cannot read" in proc.stderr and "locked.bin" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_unreadable_file_simulated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root chmod 000 does not stop reads, so the open() failure is simulated."""
    path = tmp_path / "secret.bin"
    path.write_bytes(b"x")
    real_open = Path.open

    def fake_open(self: Path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self == path:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", fake_open)
    code, _, err = cli(capsys, *up(path))
    assert code == 2 and "cannot read" in err and "Permission denied" in err


def test_special_file_refused(capsys: pytest.CaptureFixture[str]) -> None:
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null")
    code, _, err = cli(capsys, *up("/dev/null"))
    assert code == 2 and "not a regular file" in err


def test_unreachable_api(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"data")
    code, out, err = cli(capsys, *up(path, "--json"))
    assert code == 6 and "cannot reach" in err
    summary = load_report(out)
    assert summary["status"] == "error" and summary["exit_code"] == 6
    assert summary["error"]["message"].startswith("cannot reach")


def test_unreachable_drs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(
        capsys,
        "download-by-id",
        "--api-url",
        _closed_port_url(),
        "--file-id",
        "F1",
        "--output-dir",
        str(tmp_path),
        "--retries",
        "1",
    )
    assert code == 6 and "cannot reach" in err


def test_bad_api_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"data")
    code, _, err = cli(
        capsys,
        "upload-by-id",
        "--api-url",
        "ftp://example.org",
        "--file-id",
        "F1",
        "--file-path",
        str(path),
    )
    assert code == 2 and "invalid --api-url" in err


def test_token_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"data")
    code, _, err = cli(capsys, *up(path, "--token-file", str(tmp_path / "missing")))
    assert code == 2 and "token file" in err
    empty = tmp_path / "empty"
    empty.write_text("\n")
    code, _, err = cli(capsys, *up(path, "--token-file", str(empty)))
    assert code == 2 and "is empty" in err
    monkeypatch.delenv("GHGA_CLI_TOKEN")
    code, _, err = cli(capsys, *up(path))
    assert code == 2 and "no access token" in err and "GHGA_CLI_TOKEN" in err


def test_output_dir_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["download-by-id", "--api-url", _closed_port_url(), "--file-id", "F1"]
    code, _, err = cli(capsys, *base, "--output-dir", str(tmp_path / "missing"))
    assert code == 2 and "does not exist" in err
    afile = tmp_path / "file"
    afile.write_text("x")
    code, _, err = cli(capsys, *base, "--output-dir", str(afile))
    assert code == 2 and "not a directory" in err


def test_upload_needs_file_path_unless_cancel(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "upload-by-id", "--api-url", "http://x", "--file-id", "F")
    assert code == 2 and "--file-path is required" in err


def _run_script(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ghga_cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GHGA_CLI_TOKEN": TOKEN, **(env or {})},
    )


def test_process_unreachable_api_one_line(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"data")
    proc = _run_script(*up(path))
    assert proc.returncode == 6
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("ghga-cli: error: ")
    assert "Traceback" not in proc.stderr


def test_process_version_and_help() -> None:
    proc = _run_script("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"ghga-cli {__version__}"
    proc = _run_script("upload-by-id", "--help")
    assert proc.returncode == 0
    for word in (
        "--api_url",
        "--file_path",
        "--token-file",
        "--parallel",
        "--retries",
        "--stall-timeout",
        "--wait-timeout",
        "--cancel",
        "--json",
        "--quiet",
        "exit codes",
        "130",
    ):
        assert word in proc.stdout
    proc = _run_script("download-by-id", "--help")
    for word in ("--output_dir", "--overwrite", "--range-size"):
        assert word in proc.stdout


def test_process_without_pycurl(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"data")
    code = (
        "import sys; sys.modules['pycurl'] = None\n"
        "from ghga_cli.cli.run import main\n"
        f"sys.exit(main({up(path)!r}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GHGA_CLI_TOKEN": TOKEN},
    )
    assert proc.returncode == 1
    assert "pip install pycurl" in proc.stderr and "Traceback" not in proc.stderr
