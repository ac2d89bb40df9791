"""Server text never reaches the terminal raw (issue 19, hostile pass item 3).

A server's ``description`` or ``status_reason`` can hold terminal escape sequences and can
echo the request's ``Authorization`` token. Whatever the client prints -- the error line, a
batch's per-file line and table, the ``--json`` object -- holds neither a control character
nor the token.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ghga_cli.cli.run import main
from tests.client.fake_services import FakeServices, _err
from tests.helpers.report_schema import load_report

TOKEN = "hostile-test-token.abc.def"
# Sets the terminal's title, clears the screen, rings the bell, moves the cursor (C1 CSI too).
ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x1b[1;1H\x9b31m\r\x08"


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def run_clean(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI; neither stream holds a control character (but line ends) or the token."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    for name, text in (("stdout", out), ("stderr", err)):
        assert TOKEN not in text, f"the token was printed on {name}: {text!r}"
        bad = [c for c in text if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) <= 0x9F]
        assert not bad, f"control characters {bad!r} printed on {name}: {text!r}"
    assert "Traceback" not in err
    if "--json" in argv:
        for text in _strings(load_report(out)):
            assert TOKEN not in text
            assert not [c for c in text if ord(c) < 32 or 0x7F <= ord(c) <= 0x9F], text
    return code, out, err


def _reject_hostile(services: FakeServices, file_id: str) -> None:
    """The upload of ``file_id`` is rejected with a status_reason full of escapes that echoes
    the token (the server validates it as usual, then answers "rejected" instead)."""
    route = services.route

    def hostile(method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        status, payload, headers = route(method, path, body)
        if (
            isinstance(payload, dict)
            and payload.get("file_id") == file_id
            and payload.get("upload_status") in ("accepted", "rejected")
        ):
            payload["upload_status"] = "rejected"
            payload["status_reason"] = f"{ESCAPES}bad checksum; you sent Bearer {TOKEN}{ESCAPES}"
        return status, payload, headers

    services.route = hostile  # type: ignore[method-assign]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_hostile_status_reason_of_a_single_upload_is_cleaned(
    tmp_path: Path, services: FakeServices, capsys: Any, as_json: bool
) -> None:
    data = os.urandom(100)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    services.register(data, "GHGAF1")
    _reject_hostile(services, "GHGAF1")
    argv = ["upload-by-id", "--api-url", services.url, "--file-id", "GHGAF1"]
    argv += ["--file-path", str(src), *(["--json"] if as_json else [])]
    code, out, err = run_clean(capsys, *argv)
    assert code == 5
    assert "bad checksum; you sent Bearer ***" in err
    if as_json:
        assert "bad checksum" in load_report(out)["error"]["message"]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_hostile_403_description_is_cleaned(
    tmp_path: Path, services: FakeServices, capsys: Any, as_json: bool
) -> None:
    data = os.urandom(100)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    services.register(data, "GHGAF1")
    route = services.route

    def forbidden(method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        if path.startswith("/files/"):
            description = f"{ESCAPES}no access for {TOKEN}{ESCAPES}"
            return 403, _err("noFileAccess", description), {}
        return route(method, path, body)

    services.route = forbidden  # type: ignore[method-assign]
    argv = ["upload-by-id", "--api-url", services.url, "--file-id", "GHGAF1"]
    argv += ["--file-path", str(src), *(["--json"] if as_json else [])]
    code, out, err = run_clean(capsys, *argv)
    assert code == 3
    assert "no access for ***" in err and "HTTP 403" in err
    if as_json:
        assert load_report(out)["error"]["exit_code"] == 3


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_the_per_file_line_of_a_batch_is_cleaned(
    tmp_path: Path, services: FakeServices, capsys: Any, as_json: bool
) -> None:
    """The ``[i/n] id: failed ...`` line, the table and --json: no escapes, no token."""
    good, bad = os.urandom(100), os.urandom(120)
    (tmp_path / "good.bin").write_bytes(good)
    (tmp_path / "bad.bin").write_bytes(bad)
    services.register(good, "GHGAF1")
    services.register(bad, "GHGAF2")
    _reject_hostile(services, "GHGAF2")
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("GHGAF1\tgood.bin\nGHGAF2\tbad.bin\n")
    argv = ["upload-by-id", "--api-url", services.url, "--manifest", str(manifest)]
    argv += ["--parallel-files", "1", *(["--json"] if as_json else [])]
    code, out, err = run_clean(capsys, *argv)
    assert code == 5, err
    failed = [line for line in err.splitlines() if "GHGAF2: failed" in line]
    assert failed and "you sent Bearer ***" in failed[0], err
    if as_json:
        files = {f["file_id"]: f for f in load_report(out)["files"]}
        assert "you sent Bearer ***" in files["GHGAF2"]["error"]["message"]
