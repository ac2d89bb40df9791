"""Malformed paths and URIs are listed problems with exit 2 (issue 19, hostile pass item 5).

``Path.expanduser`` raises RuntimeError for an unknown user, ``os.stat`` and ``open`` raise
ValueError for a NUL byte, ``urlsplit(...).port`` raises ValueError for a port out of range or
not a number and ``urlsplit`` for an unclosed ``[``: none of them may end a run as "unexpected
internal error" (exit 1). In a manifest each is a ``line N:`` problem; as an argument, one
clear error line.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from ghga_cli.cli.run import main
from ghga_cli.errors import EXIT_USAGE
from tests.client.fake_services import FakeServices

TOKEN = "malformed-test-token.abc"
BAD_URIS = ["drs://127.0.0.1:99999/x", "drs://127.0.0.1:abc/x", "drs://[::1/x"]


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHGA_CLI_TOKEN", TOKEN)
    monkeypatch.delenv("GHGA_CLI_API_URL", raising=False)
    monkeypatch.delenv("GHGA_CLI_DEBUG", raising=False)


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI: exit 2, its error as the last line, no internal error; stderr."""
    code = main(list(argv))
    _out, err = capsys.readouterr()
    assert "internal error" not in err and "Traceback" not in err, err
    assert code == EXIT_USAGE, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("ghga-cli: error: ") and "(hint: " in last, err
    assert "\x00" not in err
    return err


def problem_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("ghga-cli: line ")]


# ---- manifests -------------------------------------------------------------------------------


def test_an_unknown_users_home_in_an_upload_manifest_is_a_listed_problem(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    data = os.urandom(10)
    (tmp_path / "ok.bin").write_bytes(data)
    services.register(data, "GHGAF1")
    services.register(data, "GHGAF2")
    manifest = tmp_path / "m.tsv"
    manifest.write_text("GHGAF1\tok.bin\nGHGAF2\t~nosuchuser-ghga-test/x.bin\n")
    err = usage_error(
        capsys, "upload-by-id", "--api-url", services.url, "--manifest", str(manifest)
    )
    (line,) = problem_lines(err)
    assert line.startswith("ghga-cli: line 2: ") and "~nosuchuser-ghga-test" in line, err


def test_a_nul_byte_in_an_upload_manifest_path_is_a_listed_problem(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    data = os.urandom(10)
    (tmp_path / "ok.bin").write_bytes(data)
    services.register(data, "GHGAF1")
    services.register(data, "GHGAF2")
    manifest = tmp_path / "m.tsv"
    manifest.write_bytes(b"GHGAF1\tok.bin\nGHGAF2\tok\x00.bin\n")
    err = usage_error(
        capsys, "upload-by-id", "--api-url", services.url, "--manifest", str(manifest)
    )
    (line,) = problem_lines(err)
    assert line.startswith("ghga-cli: line 2: ") and "NUL" in line, err


def test_a_nul_byte_in_a_csv_upload_manifest_path_is_a_listed_problem(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    data = os.urandom(10)
    services.register(data, "GHGAF1")
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"file_id,path\nGHGAF1,a\x00b\n")
    err = usage_error(
        capsys, "upload-by-id", "--api-url", services.url, "--manifest", str(manifest)
    )
    (line,) = problem_lines(err)
    assert line.startswith("ghga-cli: line 2: "), err


def test_malformed_drs_uris_in_a_download_manifest_are_listed_problems(
    tmp_path: Path, capsys: Any
) -> None:
    manifest = tmp_path / "ids.txt"
    manifest.write_text("GHGAF1\n" + "\n".join(BAD_URIS) + "\n")
    argv = ["download-by-id", "--api-url", "http://127.0.0.1:8080", "--manifest", str(manifest)]
    err = usage_error(capsys, *argv, "--output-dir", str(tmp_path))
    lines = problem_lines(err)
    assert [line.split(":")[1] for line in lines] == [" line 2", " line 3", " line 4"], err


# ---- arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize("uri", BAD_URIS)
@pytest.mark.parametrize("with_api_url", [True, False], ids=["api-url", "no-api-url"])
def test_a_malformed_drs_uri_argument_is_a_usage_error(
    tmp_path: Path, capsys: Any, uri: str, with_api_url: bool
) -> None:
    api = ["--api-url", "http://127.0.0.1:8080"] if with_api_url else []
    err = usage_error(
        capsys, "download-by-id", *api, "--file-id", uri, "--output-dir", str(tmp_path)
    )
    assert "names no valid host" in err


@pytest.mark.parametrize("port", ["99999", "abc", "0"])
def test_a_malformed_api_url_is_a_usage_error(tmp_path: Path, capsys: Any, port: str) -> None:
    argv = ["download-by-id", "--api-url", f"http://127.0.0.1:{port}", "--file-id", "F1"]
    err = usage_error(capsys, *argv, "--output-dir", str(tmp_path))
    assert "invalid --api-url" in err


def test_an_api_url_with_an_unclosed_bracket_is_a_usage_error(tmp_path: Path, capsys: Any) -> None:
    argv = ["download-by-id", "--api-url", "http://[::1", "--file-id", "F1"]
    assert "invalid --api-url" in usage_error(capsys, *argv, "--output-dir", str(tmp_path))


@pytest.mark.parametrize("bad", ["~nosuchuser-ghga-test/x", "a\x00b"], ids=["user", "nul"])
def test_a_malformed_file_path_is_a_usage_error(tmp_path: Path, capsys: Any, bad: str) -> None:
    argv = ["upload-by-id", "--api-url", _closed_port_url(), "--file-id", "F1"]
    usage_error(capsys, *argv, "--file-path", bad)


@pytest.mark.parametrize("bad", ["~nosuchuser-ghga-test/x", "a\x00b"], ids=["user", "nul"])
def test_a_malformed_output_dir_is_a_usage_error(capsys: Any, bad: str) -> None:
    argv = ["download-by-id", "--api-url", _closed_port_url(), "--file-id", "F1"]
    usage_error(capsys, *argv, "--output-dir", bad)


@pytest.mark.parametrize("bad", ["~nosuchuser-ghga-test/x", "a\x00b"], ids=["user", "nul"])
def test_a_malformed_token_file_is_a_usage_error(tmp_path: Path, capsys: Any, bad: str) -> None:
    argv = ["download-by-id", "--api-url", _closed_port_url(), "--file-id", "F1"]
    err = usage_error(capsys, *argv, "--output-dir", str(tmp_path), "--token-file", bad)
    assert "token file" in err


@pytest.mark.parametrize("bad", ["~nosuchuser-ghga-test/x", "a\x00b"], ids=["user", "nul"])
@pytest.mark.parametrize("command", ["upload-by-id", "download-by-id"])
def test_a_malformed_manifest_argument_is_a_usage_error(
    tmp_path: Path, capsys: Any, bad: str, command: str
) -> None:
    argv = [command, "--api-url", _closed_port_url(), "--manifest", bad]
    if command == "download-by-id":
        argv += ["--output-dir", str(tmp_path)]
    err = usage_error(capsys, *argv)
    assert "manifest" in err
