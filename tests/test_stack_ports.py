"""The local stack's port check agrees with the servers it starts (build/stack.py)."""

from __future__ import annotations

import socket
import socketserver
import threading

from tests.helpers.localstack import stacklib


class _Server(socketserver.TCPServer):
    allow_reuse_address = True  # as http.server.HTTPServer and werkzeug, which the stack runs


class _CloseFirst(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(1)  # the server closes first, so its side enters TIME_WAIT


def test_port_in_time_wait_after_a_stop_is_free() -> None:
    """Restarting `make stack` right after Ctrl+C must not say "port in use"."""
    server = _Server(("127.0.0.1", 0), _CloseFirst)
    port = server.server_address[1]
    thread = threading.Thread(target=server.handle_request)
    thread.start()
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"x")
        thread.join(5)
        client.recv(1)  # EOF: the server side has closed
    server.server_close()
    assert stacklib.port_is_free(port)


def test_port_with_a_listener_is_not_free() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not stacklib.port_is_free(listener.getsockname()[1])
