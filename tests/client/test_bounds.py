"""Properties that must hold whatever the file size: bounded memory, no token to the storage."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ghga_cli.jobs.api import DrsObject
from ghga_cli.jobs.download import DownloadOptions
from tests.client.s3helpers import engine_upload, run_download

MIB = 1024 * 1024


@pytest.mark.parametrize("part_mib", [1, 12])
def test_upload_memory_does_not_depend_on_the_part_size(
    tmp_path: Path, s3: Any, bucket: str, key: str, part_mib: int
) -> None:
    """24 MiB in 1 MiB or 12 MiB parts with 2 handles: parts stream from the file, so the
    Python heap holds libcurl's 2 MiB read blocks and the hashers' 8 MiB buffers, never a part."""
    src = tmp_path / "src.bin"
    data = os.urandom(24 * MIB)
    src.write_bytes(data)
    del data
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        _, stats, _ = engine_upload(
            s3, bucket, key, src, part_mib * MIB, parallel=2, complete=False
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats.parts_done == 24 // part_mib
    # Read blocks (2 x 2 MiB) + hash buffers (up to 4 x 8 MiB + 8 MiB whole-file) + change.
    assert peak < 48 * MIB, f"peak {peak / MIB:.1f} MiB"


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A storage stand-in that records request headers and serves ranges of ``DATA``."""

    protocol_version = "HTTP/1.1"
    DATA = os.urandom(300_000)
    seen: list[dict[str, str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        type(self).seen.append(dict(self.headers))
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        assert match
        start, end = int(match[1]), int(match[2])
        body = self.DATA[start : end + 1]
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(self.DATA)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"fixed-etag"')
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def recorder() -> Iterator[str]:
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/bucket/key?X-Amz-Signature=s"
    finally:
        server.shutdown()
        server.server_close()


def test_download_sends_only_the_drs_headers(tmp_path: Path, recorder: str) -> None:
    data = _Recorder.DATA

    class Drs:
        def request_object(self, object_id: str) -> DrsObject:
            return DrsObject(
                object_id,
                "f.bin",
                len(data),
                {"md5": hashlib.md5(data).hexdigest()},
                recorder,
                ["X-Storage-Hint: 42"],
            )

    options = DownloadOptions("F", tmp_path, range_size=64 * 1024)
    run_download(Drs(), options, parallel=3)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert len(_Recorder.seen) == 5
    for headers in _Recorder.seen:
        names = {name.lower() for name in headers}
        assert "authorization" not in names
        assert headers["X-Storage-Hint"] == "42"
    # The first answer pins the ETag; requests started after it carry If-Match.
    assert any(h.get("If-Match") == '"fixed-etag"' for h in _Recorder.seen)
