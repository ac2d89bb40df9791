"""Retries, URL refresh, stalls and integrity checks, with faults injected by the fault proxy
(tests/helpers/faultproxy/) between the engine and moto (libcurl picks the proxy up from
``http_proxy``)."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ghga_cli.errors import EXIT_INTEGRITY, EXIT_NETWORK, CliError, IntegrityError
from ghga_cli.retry import RetryPolicy
from ghga_cli.transfer.engine import Engine, Part, plan_parts
from ghga_cli.transfer.upload import UploadTransfer, UrlSupply
from tests.client.s3helpers import FakeDrs, engine_download, engine_upload, md5
from tests.helpers import faultproxy

PART = 64 * 1024


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with faultproxy.FaultProxy() as p:
        monkeypatch.setenv("http_proxy", p.url)
        yield p


def _src(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / "src.bin"
    path.write_bytes(data)
    return path, data


def test_upload_retries_reset_and_5xx(
    tmp_path: Path, s3: Any, bucket: str, key: str, proxy: Any
) -> None:
    proxy.add_rule(
        faultproxy.Rule("reset", method="PUT", url="partNumber=2", nth=1, after_bytes=1000)
    )
    proxy.add_rule(
        faultproxy.Rule(
            "status", method="PUT", url="partNumber=3", nth=1, status=503, retry_after=0
        )
    )
    proxy.add_rule(faultproxy.Rule("status", method="PUT", url="partNumber=4", nth=1, status=429))
    src, data = _src(tmp_path, 4 * PART + 5)
    reader, stats, _ = engine_upload(s3, bucket, key, src, PART)
    # A reset on a reused connection may be retried by libcurl itself (it rewinds the body
    # through SEEKFUNCTION), so the engine counts 2 or 3 retries; all three faults happened.
    assert stats.retries >= 2
    assert len(proxy.faults()) == 3
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert reader.whole_md5() == md5(data)


def test_upload_refreshes_expired_url(
    tmp_path: Path, s3: Any, bucket: str, key: str, proxy: Any
) -> None:
    proxy.add_rule(faultproxy.Rule("expired", method="PUT", url="partNumber=1", nth=1))
    src, data = _src(tmp_path, 2 * PART)
    _, stats, presigner = engine_upload(s3, bucket, key, src, PART)
    assert stats.url_refreshes == 1
    assert [1] in presigner.calls[1:] or any(1 in c for c in presigner.calls[1:])
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data


def test_upload_gives_up_after_retries(
    tmp_path: Path, s3: Any, bucket: str, key: str, proxy: Any
) -> None:
    proxy.add_rule(faultproxy.Rule("status", method="PUT", url="partNumber=1", status=500))
    src, _ = _src(tmp_path, PART)
    with pytest.raises(CliError) as info:
        engine_upload(s3, bucket, key, src, PART, retries=2, complete=False)
    assert info.value.exit_code == EXIT_NETWORK
    assert "after 3 attempts" in info.value.message
    assert proxy.count(method="PUT") == 3


def test_download_retries_truncated_and_reset_ranges(
    tmp_path: Path, s3: Any, bucket: str, key: str, proxy: Any
) -> None:
    data = os.urandom(4 * PART)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    proxy.add_rule(
        faultproxy.Rule("truncate", method="GET", url=r"/client-tests/", nth=1, nbytes=100)
    )
    proxy.add_rule(
        faultproxy.Rule(
            "reset", method="GET", url=r"/client-tests/", nth=3, phase="response", after_bytes=10
        )
    )
    out = tmp_path / "out"
    out.mkdir()
    downloader = engine_download(FakeDrs(s3, bucket, key), out, range_size=PART)
    assert downloader.retries == 2
    assert (out / "data.bin").read_bytes() == data


def test_download_refreshes_expired_url(
    tmp_path: Path, s3: Any, bucket: str, key: str, proxy: Any
) -> None:
    data = os.urandom(2 * PART)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    proxy.add_rule(faultproxy.Rule("expired", method="GET", url=r"/client-tests/", nth=1))
    out = tmp_path / "out"
    out.mkdir()
    drs = FakeDrs(s3, bucket, key)
    downloader = engine_download(drs, out, range_size=PART)
    assert drs.calls == 2  # the first answer plus one refresh
    assert downloader.url_refreshes == 1
    assert (out / "data.bin").read_bytes() == data


def test_download_detects_corruption(
    tmp_path: Path, s3: Any, bucket: str, key: str, proxy: Any
) -> None:
    data = os.urandom(3 * PART)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    proxy.add_rule(faultproxy.Rule("flip", method="GET", url=r"/client-tests/", nth=2, offset=7))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(IntegrityError) as info:
        engine_download(FakeDrs(s3, bucket, key), out, range_size=PART)
    assert info.value.exit_code == EXIT_INTEGRITY
    assert sorted(p.name for p in out.iterdir()) == []  # no output, no partial file left


def test_download_stall_is_retried(
    tmp_path: Path, s3: Any, bucket: str, key: str, proxy: Any
) -> None:
    data = os.urandom(2 * PART)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    proxy.add_rule(
        faultproxy.Rule(
            "stall", method="GET", url=r"/client-tests/", nth=1, after_bytes=10, seconds=30
        )
    )
    out = tmp_path / "out"
    out.mkdir()
    downloader = engine_download(FakeDrs(s3, bucket, key), out, range_size=PART, stall_timeout=1.0)
    assert downloader.retries == 1
    assert "stalled" in downloader.retry_reasons[0]
    assert (out / "data.bin").read_bytes() == data


class _WrongEtagHandler(http.server.BaseHTTPRequestHandler):
    """Accepts PUTs and answers with an ETag that is never the body's MD5."""

    puts = 0

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        type(self).puts += 1
        self.send_response(200)
        self.send_header("ETag", '"0123456789abcdef0123456789abcdef"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class _StaticUrls:
    def __init__(self, url: str):
        self.url = url

    def presign_parts(self, upload_id: str, numbers: list[int]) -> tuple[dict[int, str], float]:
        return {n: f"{self.url}/part{n}?sig=secret" for n in numbers}, 900.0


def test_upload_etag_mismatch_fails_with_exit_5(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _WrongEtagHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        src, _ = _src(tmp_path, 1000)
        pieces = plan_parts(1000, PART)
        presign = _StaticUrls(f"http://127.0.0.1:{server.server_port}").presign_parts
        engine = Engine(parallel=2, policy=RetryPolicy(retries=1, base=0.01))
        with ThreadPoolExecutor(1) as pool, pytest.raises(CliError) as info:
            urls = UrlSupply(lambda numbers: presign("u", numbers), pool.submit, parallel=2)
            engine.run(UploadTransfer("u", src, pieces, urls))
        assert info.value.exit_code == EXIT_INTEGRITY
        assert "ETag" in info.value.message
        assert _WrongEtagHandler.puts == 2
    finally:
        server.shutdown()
        server.server_close()


def test_part_numbers_are_one_based() -> None:
    assert Part(None, index=0, offset=0, size=1).number == 1  # type: ignore[arg-type]
