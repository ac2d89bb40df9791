"""bench/delayrelay.py: every round trip, also on a kept-alive connection, waits the delay."""

from __future__ import annotations

import http.client
import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from bench.delayrelay import DelayRelay  # bench/ is importable from the checkout's root

DELAY = 0.3


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


def test_each_request_on_one_connection_waits_the_delay(echo_url: str) -> None:
    with DelayRelay(echo_url, delay=DELAY) as relay:
        assert relay.url == f"http://127.0.0.1:{relay.port}/api"
        connection = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=5)
        for n in range(2):
            body = f"request {n} ".encode() * 5000  # several relay chunks each way
            started = time.monotonic()
            connection.request("POST", "/api", body=body)
            response = connection.getresponse()
            assert response.read() == body
            assert time.monotonic() - started >= DELAY
        connection.close()
        assert (relay.connections, relay.round_trips) == (1, 2)
