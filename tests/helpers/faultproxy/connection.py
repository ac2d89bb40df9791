"""One client connection of the proxy: its socket, the origin connection it reuses, and the
blind tunnel of a ``CONNECT``."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from .records import RequestRecord
from .wire import BLOCK, Reader, plain_response, still_open


class Sockets:
    """Every socket the proxy has open (:meth:`FaultProxy.stop` shuts them all down), and how
    many connections to origins it opened."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.origin_connects = 0

    def add(self, sock: socket.socket, origin: bool = False) -> None:
        with self._lock:
            self._open.add(sock)
            if origin:
                self.origin_connects += 1

    def discard(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)

    def snapshot(self) -> list[socket.socket]:
        with self._lock:
            return list(self._open)


class Connection:
    """State of one client connection: its socket, reader and a cached origin connection."""

    def __init__(
        self, cid: int, sock: socket.socket, sockets: Sockets, origin_timeout: float
    ) -> None:
        self.id = cid
        self.sock = sock
        self.reader = Reader(sock)
        self.upstream: tuple[tuple[str, int], socket.socket, Reader] | None = None
        self._sockets = sockets
        self._origin_timeout = origin_timeout

    def origin(self, host: str, port: int) -> tuple[socket.socket, Reader, bool]:
        """The cached connection to ``host:port`` (reused=True) or a new one, as
        ``(socket, reader, reused)``."""
        if self.upstream is not None:
            key, sock, reader = self.upstream
            if key == (host, port) and not reader.buf and still_open(sock):
                return sock, reader, True
            self.close_upstream()
        sock = socket.create_connection((host, port), timeout=self._origin_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sockets.add(sock, origin=True)
        reader = Reader(sock)
        self.upstream = ((host, port), sock, reader)
        return sock, reader, False

    def close_upstream(self) -> None:
        """Drop the origin connection (a plain FIN: faults are for the client, not the origin)."""
        if self.upstream is not None:
            sock = self.upstream[1]
            self.upstream = None
            self._sockets.discard(sock)
            sock.close()

    def tunnel(self, rec: RequestRecord, host: str, port: int) -> None:
        """Blind byte tunnel for CONNECT (HTTPS): logged in ``rec``, never faulted."""
        try:
            up = socket.create_connection((host, port), timeout=self._origin_timeout)
        except OSError as error:
            rec.status, rec.error = 502, f"upstream connect failed: {error}"
            plain_response(self.sock, 502, f"faultproxy: {error}\n", True)
            return
        self._sockets.add(up)
        rec.status = 200
        client = self.sock
        client.settimeout(None)
        up.settimeout(None)
        try:
            client.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            early = self.reader.take_buffer()
            if early:
                up.sendall(early)
                rec.request_bytes += len(early)
            thread = threading.Thread(
                target=_pump_up,
                args=(client, up, rec),
                name=f"faultproxy-{self.id}-up",
                daemon=True,
            )
            thread.start()
            try:
                while True:
                    data = up.recv(BLOCK)
                    if not data:
                        break
                    client.sendall(data)
                    rec.response_bytes += len(data)
                client.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            thread.join()
        finally:
            rec.duration = time.monotonic() - rec.started
            self._sockets.discard(up)
            up.close()


def _pump_up(client: socket.socket, up: socket.socket, rec: RequestRecord) -> None:
    """The client-to-origin half of a tunnel."""
    try:
        while True:
            data = client.recv(BLOCK)
            if not data:
                break
            up.sendall(data)
            rec.request_bytes += len(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        up.shutdown(socket.SHUT_WR)


def probe(sock: socket.socket, reader: Reader, head: bytes) -> bytes | None:
    """Send a bodiless request on a reused connection; its status line, or None if stale."""
    try:
        sock.sendall(head)
        line = reader.readline()
    except OSError:
        return None
    return line or None
