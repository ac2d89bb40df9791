"""The HTTP layer and API clients: retries, Retry-After, error mapping, TLS trust, fallbacks."""

from __future__ import annotations

import http.server
import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ghga_cli import curl as curlmod
from ghga_cli.errors import ApiError, NetworkError, WaitTimeout
from ghga_cli.jobs.api import DrsClient, UcsClient
from ghga_cli.jobs.http import HttpClient
from ghga_cli.jobs.staging import StagingWait
from ghga_cli.retry import RetryPolicy


class Script:
    """A scripted server: each request pops the next (status, headers, body) answer."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str], Any]] = []
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []


@pytest.fixture
def scripted() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            script.seen.append((self.command, self.path, dict(self.headers), body))
            status, headers, payload = script.answers.pop(0) if script.answers else (500, {}, None)
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _any

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", script
    finally:
        server.shutdown()
        server.server_close()


def client(retries: int = 3, sleeps: list[float] | None = None) -> HttpClient:
    return HttpClient(
        "secret-token",
        RetryPolicy(retries=retries, base=0.01, cap=0.02),
        sleep=(sleeps.append if sleeps is not None else (lambda _s: None)),
    )


def test_retries_5xx_and_honours_retry_after(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.answers = [(503, {"Retry-After": "2"}, None), (429, {}, None), (200, {}, {"ok": 1})]
    sleeps: list[float] = []
    http = client(sleeps=sleeps)
    response = http.request("GET", url + "/x")
    assert response.status == 200 and response.json() == {"ok": 1}
    assert http.retries == 2 and sleeps[0] >= 2
    assert script.seen[0][2]["Authorization"] == "Bearer secret-token"


def test_gives_up_and_returns_last_5xx(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.answers = [(500, {}, None)] * 3
    ucs = UcsClient(client(retries=2), url)
    with pytest.raises(ApiError) as info:
        ucs.get_file("F1")
    assert info.value.exit_code == 6 and "getting file F1" in info.value.message


def test_error_body_maps_to_exit_code(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    body = {"exception_id": "noFileAccess", "description": "no access", "data": {"file_id": "F"}}
    script.answers = [(403, {}, body)]
    with pytest.raises(ApiError) as info:
        UcsClient(client(), url).get_file("F")
    assert info.value.exit_code == 3 and info.value.exception_id == "noFileAccess"
    assert info.value.message == "getting file F: no access (noFileAccess, HTTP 403)"


def test_unexpected_body_is_a_clear_error(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.answers = [(200, {}, {"something": "else"})]
    with pytest.raises(NetworkError):
        UcsClient(client(), url).get_file("F")


def test_batch_presign_falls_back_to_per_part_route(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.answers = [
        (404, {}, {"exception_id": "notFound", "description": "no route", "data": {}}),
        (200, {}, {"url": "http://s3/p1?sig"}),
        (200, {}, {"url": "http://s3/p2?sig"}),
    ]
    ucs = UcsClient(client(), url)
    urls, expires = ucs.presign_parts("U1", [1, 2])
    assert urls == {1: "http://s3/p1?sig", 2: "http://s3/p2?sig"} and expires == 900
    assert [s[1] for s in script.seen] == [
        "/uploads/U1/signed_urls",
        "/uploads/U1/parts/1/signed_urls",
        "/uploads/U1/parts/2/signed_urls",
    ]
    assert json.loads(script.seen[0][3]) == {"part_numbers": [1, 2]}


def test_confirm_sends_checksums(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.answers = [(204, {}, None)]
    UcsClient(client(), url).confirm_uploaded("U1", "abc", ["a", "b"])
    method, path, _, body = script.seen[0]
    assert (method, path) == ("PATCH", "/uploads/U1")
    assert json.loads(body) == {
        "upload_status": "uploaded",
        "checksums": {"md5": "abc", "part_md5s": ["a", "b"]},
    }


def test_drs_waits_for_staging_then_times_out(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.answers = [(202, {"Retry-After": "5"}, None)] * 5
    now = [0.0]
    waits: list[float] = []
    logs: list[str] = []
    drs = DrsClient(client(), url)
    wait: StagingWait[object] = StagingWait("F1", 12, logs.append, clock=lambda: now[0])
    with pytest.raises(WaitTimeout) as info:
        while True:  # the poller asks again when each wait is due
            assert wait.judge(drs.request_object("F1")) is None
            waits.append(wait.due - now[0])
            now[0] = wait.due
    assert info.value.exit_code == 7
    assert waits == [5, 5, 2]
    assert logs[0] == "waiting for the file to be staged, retry in 5 s"
    assert script.seen[0][1] == "/ga4gh/drs/v1/objects/F1"


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if not shutil.which("openssl"):
        pytest.skip("openssl command not available to make a test certificate")
    cert, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(keyfile),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, keyfile)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"https://127.0.0.1:{server.server_port}", cert
    finally:
        server.shutdown()
        server.server_close()


def test_tls_trusts_the_configured_bundle(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = tls_server
    monkeypatch.setattr(curlmod, "_ca_bundle", curlmod._UNSET)
    monkeypatch.setenv("GHGA_CLI_CA_BUNDLE", str(cert))
    assert client().request("GET", url + "/").status == 200


def test_tls_refuses_an_unknown_certificate_without_retrying(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = tls_server
    monkeypatch.setattr(curlmod, "_ca_bundle", curlmod._UNSET)
    for name in curlmod.CA_BUNDLE_ENV:
        monkeypatch.delenv(name, raising=False)
    http = client()
    with pytest.raises(NetworkError):
        http.request("GET", url + "/")
    assert http.retries == 0


def test_system_bundle_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(curlmod, "_ca_bundle", curlmod._UNSET)
    for name in curlmod.CA_BUNDLE_ENV:
        monkeypatch.delenv(name, raising=False)
    found = curlmod.ca_bundle()
    assert found is None or Path(found).is_file()


def test_batch_presign_shrinks_when_the_server_allows_fewer(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    too_many = {"exception_id": "invalidRequest", "description": "at most 2", "data": {}}
    script.answers = [
        (400, {}, too_many),
        (
            200,
            {},
            {"urls": [{"part_no": 1, "url": "u1"}, {"part_no": 2, "url": "u2"}], "expires_in": 60},
        ),
    ]
    ucs = UcsClient(client(), url)
    urls, expires = ucs.presign_parts("U1", [1, 2, 3, 4, 5])
    assert urls == {1: "u1", 2: "u2"} and expires == 60 and ucs.max_batch == 2
    assert [len(json.loads(s[3])["part_numbers"]) for s in script.seen] == [5, 2]


def test_a_202_may_say_how_far_staging_is() -> None:
    """DRS 202 bodies (an extension) carry ``staged_bytes`` of ``size``; an empty or foreign
    body, or values out of range, leave the progress unknown and never fail the download."""
    from ghga_cli.jobs.api import _staging
    from ghga_cli.jobs.http import Response

    def answer(body: bytes) -> Any:
        return _staging(Response(202, {"retry-after": "3"}, body))

    staging = answer(b'{"staged_bytes": 1073741824, "size": 4294967296}')
    assert (staging.retry_after, staging.staged_bytes, staging.size) == (3.0, 2**30, 2**32)
    assert staging.describe(3) == (
        "waiting for the file to be staged: 25% (1.0 GiB of 4.0 GiB), retry in 3 s"
    )
    for body in (b"", b"not json", b"[]", b'{"staged_bytes": 5, "size": 4}', b'{"size": 9}'):
        staging = answer(body)
        assert staging.staged_bytes is None
        assert staging.describe(3) == "waiting for the file to be staged, retry in 3 s"
