"""Tests of the fault-injecting forward proxy (tests/helpers/faultproxy).

Each fault is checked from the client's side (pycurl as the CLI uses it, and http.client), since
what matters is that a client under test really sees the failure it is meant to handle. A tiny
origin server (http.server in a thread) makes the origin's view checkable too; one test goes
through moto with a boto3-presigned URL to show signatures survive the proxy.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pycurl
import pytest

from tests.helpers import PROJECT_DIR
from tests.helpers.faultproxy import FaultProxy, RequestRecord, Rule, redact_url, request_key

pytestmark = pytest.mark.timeout(60)


def blob(n: int) -> bytes:
    """Deterministic, non-repeating-looking content of n bytes (so flips and cuts show)."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:n])


# --------------------------------------------------------------------------------------------
# A tiny origin
# --------------------------------------------------------------------------------------------


class _Origin(BaseHTTPRequestHandler):
    """GET/HEAD /blob/N[?...] (Range aware), /chunked/N, /unframed/N; PUT stores a digest."""

    protocol_version = "HTTP/1.1"  # keep-alive, like S3

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _size(self) -> int:
        match = re.search(r"/(\d+)", self.path)
        return int(match.group(1)) if match else 0

    def _record(self) -> None:
        self.server.hits.append((self.command, self.path, self.headers.get("Host")))  # type: ignore[attr-defined]

    def do_HEAD(self) -> None:
        self._record()
        self.send_response(200)
        self.send_header("Content-Length", str(self._size()))
        self.end_headers()

    def do_GET(self) -> None:
        self._record()
        data = blob(self._size())
        if self.path.startswith("/chunked/"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(data), 1000):
                piece = data[i : i + 1000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path.startswith("/unframed/"):
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True
            return
        status = 200
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(data) - 1
            data, status = data[start : end + 1], 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:
        self._record()
        digest, length = hashlib.sha256(), 0
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                piece = self.rfile.read(size)
                self.rfile.read(2)
                digest.update(piece)
                length += len(piece)
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left:
                piece = self.rfile.read(min(left, 1 << 20))
                digest.update(piece)
                length += len(piece)
                left -= len(piece)
        self.server.puts[self.path] = (length, digest.hexdigest())  # type: ignore[attr-defined]
        body = json.dumps({"length": length, "sha256": digest.hexdigest()}).encode()
        self.send_response(200)
        self.send_header("ETag", f'"{digest.hexdigest()[:32]}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def origin() -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    server.daemon_threads = True
    server.hits = []  # type: ignore[attr-defined]
    server.puts = {}  # type: ignore[attr-defined]
    server.base = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy() as p:
        yield p


# --------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------


class CurlResult:
    def __init__(self, status: int, body: bytes, headers: dict[str, str], connects: int) -> None:
        self.status, self.body, self.headers, self.connects = status, body, headers, connects


def curl(
    url: str,
    proxy: FaultProxy,
    method: str = "GET",
    body: bytes | None = None,
    handle: pycurl.Curl | None = None,
    sink: io.BytesIO | None = None,
    expect: bool = False,
    chunked: bool = False,
    **options: Any,
) -> CurlResult:
    """One request through the proxy, set up the way the CLI sets up pycurl."""
    c = handle or pycurl.Curl()
    out = sink if sink is not None else io.BytesIO()
    headers: dict[str, str] = {}

    def on_header(line: bytes) -> None:
        text = line.decode("latin-1")
        if ":" in text:
            name, value = text.split(":", 1)
            headers[name.strip().lower()] = value.strip()

    c.setopt(pycurl.URL, url)
    c.setopt(pycurl.PROXY, proxy.url)
    c.setopt(pycurl.NOPROXY, "")  # no_proxy commonly lists 127.0.0.1
    c.setopt(pycurl.WRITEDATA, out)
    c.setopt(pycurl.HEADERFUNCTION, on_header)
    c.setopt(pycurl.CONNECTTIMEOUT, 5)
    c.setopt(pycurl.TIMEOUT, 30)
    if method == "PUT":
        assert body is not None
        c.setopt(pycurl.UPLOAD, 1)
        c.setopt(pycurl.READDATA, io.BytesIO(body))
        if not chunked:
            c.setopt(pycurl.INFILESIZE_LARGE, len(body))
        c.setopt(pycurl.HTTPHEADER, [] if expect else ["Expect:"])
    elif method == "HEAD":
        c.setopt(pycurl.NOBODY, 1)
    for key, value in options.items():
        c.setopt(getattr(pycurl, key), value)
    c.perform()
    result = CurlResult(
        c.getinfo(pycurl.RESPONSE_CODE), out.getvalue(), headers, c.getinfo(pycurl.NUM_CONNECTS)
    )
    if handle is None:
        c.close()
    return result


def curl_error(*args: Any, **kwargs: Any) -> int:
    """The libcurl error code of a request that must fail."""
    with pytest.raises(pycurl.error) as info:
        curl(*args, **kwargs)
    return info.value.args[0]


def via_http_client(
    proxy: FaultProxy, method: str, url: str, body: bytes | None = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """One request with http.client, which sends the absolute URI when given one."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.request(method, url, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    """Records fill in on the proxy's threads; wait until the one a test looks at is done."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the proxy"
        time.sleep(0.01)


def settled(proxy: FaultProxy, n: int) -> list[RequestRecord]:
    wait_for(lambda: len(proxy.requests) >= n and all(r.duration for r in proxy.requests))
    return proxy.requests


# --------------------------------------------------------------------------------------------
# Forwarding
# --------------------------------------------------------------------------------------------


def test_forwards_and_logs_with_http_client(origin: Any, proxy: FaultProxy) -> None:
    url = f"{origin.base}/blob/5000?X-Amz-Signature=secret&partNumber=3"
    status, _, body = via_http_client(proxy, "GET", url, Range="bytes=100-199")
    assert (status, body) == (206, blob(5000)[100:200])
    status, _, body = via_http_client(proxy, "PUT", f"{origin.base}/put/a", body=b"x" * 1234)
    assert status == 200 and json.loads(body)["length"] == 1234
    # The origin saw the client's own Host header (the one a presigned URL signs).
    assert origin.hits[-1] == ("PUT", "/put/a", origin.base[len("http://") :])

    get, put = settled(proxy, 2)
    assert (get.method, get.url, get.path) == ("GET", url, url[len(origin.base) :])
    assert (get.range, get.status, get.response_bytes, get.fault) == (
        "bytes=100-199",
        206,
        100,
        None,
    )
    assert (put.request_bytes, put.request_content_length, put.status) == (1234, 1234, 200)
    assert "secret" not in get.redacted_url and "partNumber=3" in get.redacted_url
    assert proxy.count() == 2
    assert proxy.count(method="put") == 1
    assert proxy.count(path_contains="partNumber=3") == 1
    assert proxy.count(status=206) == 1 and proxy.count(fault="") == 2


def test_keep_alive_reuses_one_connection(origin: Any, proxy: FaultProxy) -> None:
    handle = pycurl.Curl()
    try:
        first = curl(f"{origin.base}/blob/1000", proxy, handle=handle)
        second = curl(f"{origin.base}/blob/2000", proxy, handle=handle)
        third = curl(f"{origin.base}/put/k", proxy, "PUT", body=b"y" * 3000, handle=handle)
    finally:
        handle.close()
    assert (first.body, second.body, third.status) == (blob(1000), blob(2000), 200)
    assert (first.connects, second.connects, third.connects) == (1, 0, 0)
    assert proxy.connections == 1
    assert proxy.upstream_connections == 1  # the origin keeps alive too
    assert {r.connection for r in settled(proxy, 3)} == {1}


def test_streams_large_uploads_with_and_without_expect_and_chunked(
    origin: Any, proxy: FaultProxy
) -> None:
    data = blob(8 << 20)
    want = (len(data), hashlib.sha256(data).hexdigest())
    assert curl(f"{origin.base}/put/big", proxy, "PUT", body=data).status == 200
    assert origin.puts["/put/big"] == want
    assert curl(f"{origin.base}/put/expect", proxy, "PUT", body=data, expect=True).status == 200
    assert origin.puts["/put/expect"] == want
    # No INFILESIZE: libcurl sends chunked; the proxy re-frames it chunked to the origin.
    assert curl(f"{origin.base}/put/chunked", proxy, "PUT", body=data, chunked=True).status == 200
    assert origin.puts["/put/chunked"] == want
    assert [r.request_bytes for r in settled(proxy, 3)] == [len(data)] * 3


def test_chunked_and_unframed_responses(origin: Any, proxy: FaultProxy) -> None:
    handle = pycurl.Curl()
    try:
        chunked = curl(f"{origin.base}/chunked/10000", proxy, handle=handle)
        unframed = curl(f"{origin.base}/unframed/7000", proxy, handle=handle)
        after = curl(f"{origin.base}/blob/10", proxy, handle=handle)
    finally:
        handle.close()
    assert chunked.body == blob(10000) and unframed.body == blob(7000)
    # A body delimited by the origin's close forces the client connection to close as well.
    assert (chunked.connects, unframed.connects, after.connects) == (1, 0, 1)
    status, _, body = via_http_client(proxy, "HEAD", f"{origin.base}/blob/123")
    assert (status, body) == (200, b"")


def test_http_proxy_environment_variable(
    origin: Any, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other way to point libcurl at the proxy: no CURLOPT_PROXY, only the environment."""
    monkeypatch.setenv("http_proxy", proxy.url)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    c = pycurl.Curl()
    out = io.BytesIO()
    try:
        c.setopt(pycurl.URL, f"{origin.base}/blob/100")
        c.setopt(pycurl.WRITEDATA, out)
        c.perform()
    finally:
        c.close()
    assert out.getvalue() == blob(100)
    assert proxy.count(path_contains="/blob/100") == 1


def test_parallel_ranged_downloads_with_curl_multi(origin: Any, proxy: FaultProxy) -> None:
    size, parts = 400_000, 8
    step = size // parts
    multi = pycurl.CurlMulti()
    handles = []
    for i in range(parts):
        c = pycurl.Curl()
        sink = io.BytesIO()
        c.setopt(pycurl.URL, f"{origin.base}/blob/{size}")
        c.setopt(pycurl.PROXY, proxy.url)
        c.setopt(pycurl.NOPROXY, "")
        c.setopt(pycurl.RANGE, f"{i * step}-{(i + 1) * step - 1}")
        c.setopt(pycurl.WRITEDATA, sink)
        multi.add_handle(c)
        handles.append((c, sink))
    deadline = time.monotonic() + 20
    while True:
        _, active = multi.perform()
        if not active:
            break
        assert time.monotonic() < deadline
        multi.select(0.5)
    _, _, failed = multi.info_read()
    assert not failed
    assert b"".join(sink.getvalue() for _, sink in handles) == blob(size)
    for c, _ in handles:
        multi.remove_handle(c)
        c.close()
    multi.close()
    records = settled(proxy, parts)
    assert sorted(r.range or "" for r in records) == sorted(
        f"bytes={i * step}-{(i + 1) * step - 1}" for i in range(parts)
    )
    assert proxy.connections >= 2  # really concurrent, one proxy thread per connection


def test_connect_is_tunnelled_without_faults(origin: Any) -> None:
    with FaultProxy(rules=[Rule("status", status=500)]) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        host, port = origin.server_address[:2]
        conn.set_tunnel(host, port)
        try:
            conn.request("GET", "/blob/3000")
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, blob(3000))
        finally:
            conn.close()
        (rec,) = settled(proxy, 1)
        assert (rec.method, rec.status, rec.fault) == ("CONNECT", 200, None)


def test_unreachable_origin_answers_502(proxy: FaultProxy) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nothing listens once closed
    status, _, _ = via_http_client(proxy, "GET", f"http://127.0.0.1:{dead}/x")
    assert status == 502
    assert "upstream failed" in (settled(proxy, 1)[0].error or "")


def test_bodiless_request_is_resent_when_origin_dropped_idle_connection(
    proxy: FaultProxy,
) -> None:
    """An origin closing an idle keep-alive connection as the next request arrives (the race
    every proxy meets) must not surface as a proxy error: GETs go again on a new connection."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                sock, _ = server.accept()
                with sock:
                    sock.settimeout(10)
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += sock.recv(65536)
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    sock.recv(65536)  # the next request: close without answering it

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/x"
    handle = pycurl.Curl()
    try:
        results = [curl(url, proxy, handle=handle) for _ in range(3)]
    finally:
        handle.close()
        server.close()
    assert [(r.status, r.body) for r in results] == [(200, b"ok")] * 3
    assert proxy.connections == 1 and proxy.upstream_connections == 3


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


def test_reset_while_reading_upload(origin: Any) -> None:
    rule = Rule("reset", method="PUT", url=r"/put/reset1", after_bytes=64 * 1024)
    with FaultProxy(rules=[rule]) as proxy:
        hits = len(origin.hits)
        code = curl_error(f"{origin.base}/put/reset1", proxy, "PUT", body=blob(4 << 20))
        assert code in (pycurl.E_SEND_ERROR, pycurl.E_RECV_ERROR, pycurl.E_GOT_NOTHING)
        (rec,) = settled(proxy, 1)
        assert rec.fault == "reset@request" and rec.error is None
        assert 64 * 1024 <= rec.request_bytes < 4 << 20
        assert len(origin.hits) == hits  # never reached the origin


def test_reset_after_origin_acted(origin: Any) -> None:
    """The nastiest case for idempotency: the upload landed, the client saw a reset."""
    with FaultProxy(rules=["fault=reset phase=headers method=PUT"]) as proxy:
        data = blob(100_000)
        code = curl_error(f"{origin.base}/put/landed", proxy, "PUT", body=data)
        assert code in (pycurl.E_RECV_ERROR, pycurl.E_GOT_NOTHING)
        assert origin.puts["/put/landed"][0] == len(data)


def test_reset_during_download(origin: Any) -> None:
    with FaultProxy(rules=[Rule("reset", phase="response", after_bytes=300_000)]) as proxy:
        sink = io.BytesIO()
        code = curl_error(f"{origin.base}/blob/1000000", proxy, sink=sink)
        assert code in (pycurl.E_RECV_ERROR, pycurl.E_PARTIAL_FILE)
        assert len(sink.getvalue()) <= 300_000
        assert settled(proxy, 1)[0].response_bytes == 300_000


def test_status_503_with_retry_after_keeps_connection(origin: Any) -> None:
    rule = Rule("status", status=503, retry_after=3, first=1)
    with FaultProxy(rules=[rule]) as proxy:
        hits = len(origin.hits)
        handle = pycurl.Curl()
        try:
            failed = curl(f"{origin.base}/put/s", proxy, "PUT", body=blob(50_000), handle=handle)
            ok = curl(f"{origin.base}/put/s", proxy, "PUT", body=blob(50_000), handle=handle)
        finally:
            handle.close()
        assert failed.status == 503 and failed.headers["retry-after"] == "3"
        assert b"<Code>SlowDown</Code>" in failed.body
        assert failed.headers["content-type"] == "application/xml"
        assert (ok.status, ok.connects) == (200, 0)  # body drained, so the connection survives
        assert len(origin.hits) == hits + 1  # the faulted request never reached the origin
        assert [r.fault for r in settled(proxy, 2)] == ["status:503", None]
        assert settled(proxy, 2)[0].request_bytes == 50_000
        assert rule.matched == 2


@pytest.mark.parametrize(("code", "s3code"), [(500, "InternalError"), (429, "TooManyRequests")])
def test_status_codes_with_http_client(origin: Any, code: int, s3code: str) -> None:
    with FaultProxy(rules=[Rule("status", status=code)]) as proxy:
        status, headers, body = via_http_client(proxy, "GET", f"{origin.base}/blob/10")
        assert status == code and f"<Code>{s3code}</Code>".encode() in body
        assert "Retry-After" not in headers


def test_status_408_on_head_has_no_body(origin: Any) -> None:
    with FaultProxy(rules=[Rule("status", status=408)]) as proxy:
        result = curl(f"{origin.base}/blob/10", proxy, "HEAD")
        assert (result.status, result.body) == (408, b"")


def test_expired_presigned_url(origin: Any) -> None:
    with FaultProxy(rules=[Rule("expired", method="GET")]) as proxy:
        result = curl(f"{origin.base}/blob/10?X-Amz-Expires=1", proxy)
        assert result.status == 403
        assert b"<Code>AccessDenied</Code><Message>Request has expired</Message>" in result.body
        assert settled(proxy, 1)[0].fault == "expired"


def test_stall_trips_libcurl_low_speed_abort(origin: Any) -> None:
    with FaultProxy(rules=[Rule("stall", seconds=20, after_bytes=1000)]) as proxy:
        started = time.monotonic()
        sink = io.BytesIO()
        code = curl_error(
            f"{origin.base}/blob/1000000",
            proxy,
            sink=sink,
            LOW_SPEED_LIMIT=1000,
            LOW_SPEED_TIME=1,
        )
        assert code == pycurl.E_OPERATION_TIMEDOUT
        assert time.monotonic() - started < 10
        assert len(sink.getvalue()) == 1000
    # Leaving the context manager woke the stalled handler: stop() does not wait 20 s.
    assert time.monotonic() - started < 15


def test_stall_then_continue_and_then_close(origin: Any) -> None:
    rules = [
        Rule("stall", url="/blob/2000$", seconds=0.5, phase="headers"),
        Rule("stall", url="/blob/3000$", seconds=0.2, after_bytes=100, then="close"),
    ]
    with FaultProxy(rules=rules) as proxy:
        started = time.monotonic()
        assert curl(f"{origin.base}/blob/2000", proxy).body == blob(2000)
        assert time.monotonic() - started >= 0.45
        sink = io.BytesIO()
        assert curl_error(f"{origin.base}/blob/3000", proxy, sink=sink) == pycurl.E_PARTIAL_FILE
        assert sink.getvalue() == blob(100)


def test_truncate(origin: Any) -> None:
    with FaultProxy(rules=[Rule("truncate", nbytes=12345)]) as proxy:
        sink = io.BytesIO()
        assert curl_error(f"{origin.base}/blob/100000", proxy, sink=sink) == pycurl.E_PARTIAL_FILE
        assert sink.getvalue() == blob(12345)
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        conn.request("GET", f"{origin.base}/blob/100000")
        with pytest.raises(http.client.IncompleteRead):
            conn.getresponse().read()
        conn.close()
        assert [r.fault for r in settled(proxy, 2)] == ["truncate", "truncate"]


def test_flip_changes_exactly_one_byte(origin: Any) -> None:
    rules = [Rule("flip", url="chunked", offset=5000), Rule("flip", mask=0x01)]
    with FaultProxy(rules=rules, seed=7) as proxy:
        fixed = curl(f"{origin.base}/chunked/8000", proxy).body
        randomized = curl(f"{origin.base}/blob/300000", proxy).body
        diff = [i for i in range(8000) if fixed[i] != blob(8000)[i]]
        assert diff == [5000] and fixed[5000] == blob(8000)[5000] ^ 0xFF
        expected = blob(300_000)
        diff = [i for i in range(len(expected)) if randomized[i] != expected[i]]
        assert len(diff) == 1 and randomized[diff[0]] == expected[diff[0]] ^ 0x01
        assert settled(proxy, 2)[1].fault == f"flip@{diff[0]}"


def test_throttle_rule_and_global_throttle(origin: Any) -> None:
    with FaultProxy(rules=[Rule("throttle", bps=512 * 1024)]) as proxy:
        started = time.monotonic()
        assert curl(f"{origin.base}/blob/262144", proxy).body == blob(262144)
        assert time.monotonic() - started >= 0.3  # ~0.5 s nominal; loose on purpose
        started = time.monotonic()
        assert curl(f"{origin.base}/put/t", proxy, "PUT", body=blob(262144)).status == 200
        assert time.monotonic() - started >= 0.3
    with FaultProxy(throttle_bps=1 << 20) as proxy:
        started = time.monotonic()
        assert curl(f"{origin.base}/blob/524288", proxy).body == blob(524288)
        assert time.monotonic() - started >= 0.3
        assert settled(proxy, 1)[0].fault is None


def test_rule_counters_nth_and_first(origin: Any) -> None:
    rules = [
        Rule.parse("status status=500 method=GET url=/blob/1$ nth=2"),
        Rule.parse("fault=status status=503 retry-after=1 url=/blob/2$ first=2"),
    ]
    with FaultProxy(rules=rules) as proxy:
        got = [curl(f"{origin.base}/blob/1", proxy).status for _ in range(3)]
        got += [curl(f"{origin.base}/blob/2", proxy).status for _ in range(3)]
        assert got == [200, 500, 200, 503, 503, 200]
        assert [r.matched for r in rules] == [3, 3]
        assert proxy.count(fault="status") == 3 and proxy.count(fault="status:503") == 2
        late = proxy.add_rule("truncate nbytes=1")
        with pytest.raises(pycurl.error):
            curl(f"{origin.base}/blob/10", proxy)
        assert late.matched == 1


def test_rule_validation() -> None:
    with pytest.raises(ValueError):
        Rule("explode")
    with pytest.raises(ValueError):
        Rule("stall", phase="sideways")
    with pytest.raises(ValueError):
        Rule.parse("reset bogus=1")
    rule = Rule.parse("fault=flip offset=random mask=0x10 url=a=b")
    assert (rule.offset, rule.mask, rule.url) == (None, 0x10, "a=b")
    assert redact_url("http://h/p?X-Amz-Credential=a%2Fb&uploadId=u&partNumber=2") == (
        "http://h/p?uploadId=u&partNumber=2"
    )
    # Re-signed retries of the same part share a key; other parts and ranges do not.
    assert request_key("PUT", "/b/k?partNumber=2&uploadId=A&X-Amz-Signature=1", None) == (
        request_key("put", "/b/k?X-Amz-Signature=2&uploadId=B&partNumber=2", None)
    )
    assert request_key("GET", "/b/k", "bytes=0-9") != request_key("GET", "/b/k", "bytes=10-19")


# --------------------------------------------------------------------------------------------
# Random mode
# --------------------------------------------------------------------------------------------


def _random_run(origin: Any, seed: int) -> list[str | None]:
    with FaultProxy(random_rate=0.3, seed=seed, random_faults=["status", "truncate"]) as proxy:
        for i in range(30):
            # A new signature each time, as a real client would have: must not change decisions.
            url = f"{origin.base}/blob/2000?partNumber={i}&X-Amz-Signature={time.monotonic_ns()}"
            with contextlib.suppress(pycurl.error):
                curl(url, proxy)
        return [r.fault for r in settled(proxy, 30)]


def test_random_mode_is_deterministic_per_seed(origin: Any) -> None:
    first, again, other = _random_run(origin, 1), _random_run(origin, 1), _random_run(origin, 2)
    assert first == again
    assert first != other
    assert 2 <= sum(f is not None for f in first) <= 20
    assert not any("not reached" in (f or "") for f in first)


def test_random_default_faults_are_survivable_by_retrying(origin: Any) -> None:
    """A client that retries each request up to max_faults_per_key + 1 times always succeeds."""
    with FaultProxy(random_rate=0.5, seed=17, max_faults_per_key=2) as proxy:
        data = blob(300_000)
        for part in range(8):
            url = f"{origin.base}/put/rand?partNumber={part}&uploadId=u"
            for _attempt in range(3):
                try:
                    if curl(url, proxy, "PUT", body=data, TIMEOUT=10).status == 200:
                        break
                except pycurl.error:
                    pass
            else:
                pytest.fail(f"part {part} failed 3 times")
            assert origin.puts[f"/put/rand?partNumber={part}&uploadId=u"][0] == len(data)
            for _attempt in range(3):
                try:
                    got = curl(f"{origin.base}/blob/300000", proxy, RANGE=f"{part}-99999")
                    if got.status == 206:
                        assert got.body == blob(300_000)[part:100_000]
                        break
                except pycurl.error:
                    pass
            else:
                pytest.fail(f"range {part} failed 3 times")
        records = settled(proxy, 16)
        kinds = {r.fault.split("@")[0].split(":")[0] for r in records if r.fault}
        assert kinds == {"reset", "status", "truncate"}  # what seed 17 draws; all survived
        assert not any("not reached" in (r.fault or "") for r in records)


def test_random_mode_gives_up_on_a_key_after_max_faults(origin: Any) -> None:
    with FaultProxy(
        random_rate=1.0, seed=3, random_faults=["status"], max_faults_per_key=2
    ) as proxy:
        statuses = [curl(f"{origin.base}/blob/10", proxy).status for _ in range(3)]
        assert statuses[2] == 200 and all(s >= 400 for s in statuses[:2])
        # A different range of the same object is a different key: it may be faulted again.
        ranged = curl(f"{origin.base}/blob/10", proxy, RANGE="0-4")
        assert ranged.status >= 400


# --------------------------------------------------------------------------------------------
# Through moto with a presigned URL, and the command line
# --------------------------------------------------------------------------------------------


def test_presigned_put_through_proxy_to_moto() -> None:
    boto3 = pytest.importorskip("boto3")
    botocore_config = pytest.importorskip("botocore.config")
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://{host}:{port}",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=botocore_config.Config(signature_version="s3v4"),
        )
        s3.create_bucket(Bucket="faultproxy-test")
        put_url = s3.generate_presigned_url(
            "put_object", Params={"Bucket": "faultproxy-test", "Key": "obj"}, ExpiresIn=600
        )
        data = blob(3 << 20)
        with FaultProxy(rules=[Rule("reset", method="PUT", after_bytes=1 << 20, first=1)]) as proxy:
            with pytest.raises(pycurl.error):
                curl(put_url, proxy, "PUT", body=data)
            assert curl(put_url, proxy, "PUT", body=data).status == 200
            get_url = s3.generate_presigned_url(
                "get_object", Params={"Bucket": "faultproxy-test", "Key": "obj"}, ExpiresIn=600
            )
            ranged = curl(get_url, proxy, RANGE="1000-1999")
            assert (ranged.status, ranged.body) == (206, data[1000:2000])
            records = settled(proxy, 3)
        assert [r.url for r in records] == [put_url, put_url, get_url]  # forwarded unchanged
        assert [r.fault for r in records] == ["reset@request", None, None]
        assert records[2].range == "bytes=1000-1999"
        assert "X-Amz-Signature=" in put_url
        assert "X-Amz-Signature" not in records[0].redacted_url
        stored = s3.get_object(Bucket="faultproxy-test", Key="obj")["Body"].read()
        assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
    finally:
        server.stop()


def test_command_line(origin: Any) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.helpers.faultproxy",
            "--port",
            "0",
            "--seed",
            "1",
            "--rule",
            "fault=status status=503 url=/blob/7$",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=PROJECT_DIR,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)

        target = types.SimpleNamespace(url=url)  # curl() only needs .url
        assert curl(f"{origin.base}/blob/7", target).status == 503  # type: ignore[arg-type]
        assert curl(f"{origin.base}/blob/8", target).status == 200  # type: ignore[arg-type]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "2 requests, 1 faulted" in err and "status:503" in err
