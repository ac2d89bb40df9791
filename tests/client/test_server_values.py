"""Numbers from a hostile or broken server are checked before anything is planned from them.

Each case answers with one absurd value (a size of 10**18, a part size of 1 byte, ...); the
client must end with exit 8 (protocol error) and a message naming the server's value, within
seconds and without allocating for it (measured with tracemalloc in this process).
"""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from ghga_cli.cli.run import main
from ghga_cli.errors import EXIT_PROTOCOL
from ghga_cli.jobs.api import MAX_RETRY_AFTER, DrsClient, DrsObject, Staging
from ghga_cli.jobs.http import HttpClient
from ghga_cli.retry import RetryPolicy
from tests.client.fake_services import FakeServices

TOKEN = "hostile-token"
PART = 64 * 1024
MIB = 1024 * 1024


def _run_measured(capsys: Any, argv: list[str]) -> tuple[int, str, float, int]:
    tracemalloc.start()
    started = time.monotonic()
    try:
        code = main(argv)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err, time.monotonic() - started, peak


def _upload_argv(services: FakeServices, tmp_path: Path, size: int = 6 * PART) -> list[str]:
    data = os.urandom(size)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    services.register(data, "GHGAH1")
    return [
        "upload-by-id",
        "--api-url",
        services.url,
        "--file-id",
        "GHGAH1",
        "--file-path",
        str(src),
    ]


@pytest.mark.parametrize(
    ("value", "shown"),
    [(10**18, "1000000000000000000"), (-1, "-1"), ("12abc", "12abc"), (True, "True")],
)
def test_an_absurd_object_size_is_refused_before_any_allocation(
    tmp_path: Path, services: FakeServices, capsys: Any, value: Any, shown: str
) -> None:
    services.publish(os.urandom(PART), "GHGAH2", name="x.bin")
    services.bad_object_fields = {"size": value}
    out = tmp_path / "out"
    out.mkdir()
    argv = ["download-by-id", "--api-url", services.url, "--file-id", "GHGAH2"]
    code, err, seconds, peak = _run_measured(capsys, [*argv, "--output-dir", str(out)])
    assert code == EXIT_PROTOCOL, err
    assert "invalid object size" in err and shown in err
    assert seconds < 10 and peak < 16 * MIB, (seconds, peak)
    assert list(out.iterdir()) == []  # nothing created, not even a .part


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("part_size", 1, "gives 393216 parts, more than S3 allows (10000)"),
        ("part_size", 0, "invalid part size: 0"),
        ("part_size", 10**30, "invalid part size: 1000000000000000000000000000000"),
        ("part_size", "lots", "invalid part size: lots"),
        ("verified_bytes", -5, "invalid verified byte count: -5"),
    ],
)
def test_an_absurd_upload_answer_is_refused(
    tmp_path: Path, services: FakeServices, capsys: Any, field: str, value: Any, message: str
) -> None:
    argv = _upload_argv(services, tmp_path, size=6 * PART)
    services.bad_upload_fields = {field: value}
    code, err, seconds, peak = _run_measured(capsys, argv)
    assert code == EXIT_PROTOCOL, err
    assert message in err
    assert seconds < 10 and peak < 16 * MIB, (seconds, peak)


def test_a_part_listing_longer_than_s3_allows_is_refused(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    argv = _upload_argv(services, tmp_path)
    assert services._create("GHGAH1")[0] == 200  # a pending upload: the client asks for its parts
    services.bad_parts = [{"part_no": 1, "size": PART, "etag": "0" * 32}] * 10_001
    code, err, _, _ = _run_measured(capsys, argv)
    assert code == EXIT_PROTOCOL, err
    assert "listed 10001 parts (at most 10000)" in err


def test_urls_for_parts_nobody_asked_for_are_ignored(
    tmp_path: Path, services: FakeServices, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server answering a presign batch with extra URLs: they are dropped, not used."""
    argv = _upload_argv(services, tmp_path)
    real = services.route

    def route(method: str, path: str, body: Any) -> Any:
        status, payload, headers = real(method, path, body)
        if path.endswith("/signed_urls") and status == 200:
            payload["urls"] += [{"part_no": 9999, "url": "http://127.0.0.1:9/evil"}] * 3
        return status, payload, headers

    monkeypatch.setattr(services, "route", route)
    code, err, _, _ = _run_measured(capsys, argv)
    assert code == 0, err


def test_retry_after_from_the_server_is_capped(services: FakeServices) -> None:
    services.publish(os.urandom(10), "GHGAH3", staging_polls=1)
    services.retry_after = str(10**12)
    drs = DrsClient(HttpClient(TOKEN, RetryPolicy(retries=0)), services.url)
    answer = drs.request_object("GHGAH3")
    assert isinstance(answer, Staging) and answer.retry_after == MAX_RETRY_AFTER
    obj = drs.request_object("GHGAH3")
    assert isinstance(obj, DrsObject) and obj.size == 10
