"""The token goes only to the --api-url server (issue 19, hostile pass item 4).

A ``drs://host/id`` URI names a host; before, without ``--api-url`` the client derived the API
from it and sent the token to whatever host the URI named. Now a URI's host is used only if it
is the host of ``--api-url`` / ``GHGA_CLI_API_URL``; without an API URL the run is refused with
exit 2 and a hint to name the server explicitly, and ``--help`` says where the token goes.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ghga_cli.cli.run import main
from ghga_cli.errors import EXIT_USAGE, UsageError
from ghga_cli.jobs.api import resolve_file_id
from tests.client.fake_services import FakeServices

TOKEN = "drs-host-test-token.abc"
PART = 64 * 1024


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHGA_CLI_TOKEN", TOKEN)
    monkeypatch.delenv("GHGA_CLI_API_URL", raising=False)
    monkeypatch.delenv("GHGA_CLI_DEBUG", raising=False)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A host a drs:// URI may name: it records whether anyone connected."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def _connected(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err and TOKEN not in err and TOKEN not in out
    assert "internal error" not in err
    return code, out, err


def test_a_drs_uri_without_api_url_is_refused_before_any_connection(
    tmp_path: Path, listener: socket.socket, capsys: Any
) -> None:
    host = f"127.0.0.1:{listener.getsockname()[1]}"
    argv = ["download-by-id", "--file-id", f"drs://{host}/GHGAF1", "--output-dir", str(tmp_path)]
    code, _, err = cli(capsys, *argv)
    assert code == EXIT_USAGE, err
    assert f"--api-url https://{host}" in err
    assert err.strip().count("\n") == 0  # one line
    assert not _connected(listener)
    assert list(tmp_path.iterdir()) == []


def test_drs_uris_in_a_manifest_without_api_url_are_refused(
    tmp_path: Path, listener: socket.socket, capsys: Any
) -> None:
    host = f"127.0.0.1:{listener.getsockname()[1]}"
    manifest = tmp_path / "ids.txt"
    manifest.write_text(f"drs://{host}/GHGAF1\ndrs://{host}/GHGAF2\n")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = ["download-by-id", "--manifest", str(manifest), "--output-dir", str(out_dir)]
    code, _, err = cli(capsys, *argv, "--json")
    assert code == EXIT_USAGE, err
    assert "--api-url" in err
    assert not _connected(listener)


def test_a_drs_uri_of_the_environments_api_url_is_used(
    tmp_path: Path, services: FakeServices, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(2 * PART)
    services.publish(data, "GHGAF20", name="uri.bin")
    monkeypatch.setenv("GHGA_CLI_API_URL", services.url)
    host = services.url.split("://", 1)[1]
    argv = ["download-by-id", "--file-id", f"drs://{host}/GHGAF20", "--output-dir", str(tmp_path)]
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    assert (tmp_path / "uri.bin").read_bytes() == data


def test_a_drs_uri_of_another_host_than_the_environments_api_url_is_refused(
    tmp_path: Path,
    services: FakeServices,
    listener: socket.socket,
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GHGA_CLI_API_URL", services.url)
    other = f"localhost:{listener.getsockname()[1]}"
    argv = ["download-by-id", "--file-id", f"drs://{other}/GHGAF1", "--output-dir", str(tmp_path)]
    code, _, err = cli(capsys, *argv)
    assert code == EXIT_USAGE, err
    assert f"names host {other}" in err
    assert not _connected(listener)
    assert services.requests == []


def test_resolve_file_id_never_derives_the_api_from_a_uri() -> None:
    with pytest.raises(UsageError) as caught:
        resolve_file_id("drs://drs.example.org/F1", None)
    assert "--api-url https://drs.example.org" in (caught.value.hint or "")
    with pytest.raises(UsageError):
        resolve_file_id("drs://drs.example.org/F1", "")
    assert resolve_file_id("drs://DRS.example.org/F1", "https://drs.example.org") == (
        "F1",
        "https://drs.example.org",
    )


@pytest.mark.parametrize("command", ["upload-by-id", "download-by-id"])
def test_help_says_where_the_token_goes(command: str, capsys: Any) -> None:
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    auth = text.split("authentication:", 1)[1].split("proxies:", 1)[0]
    assert "only to the --api-url server" in auth
    assert "never to the storage URLs" in auth
    assert "never to a host named only by a drs:// URI" in auth
