"""HTTP/1.1 on the wire, as much of it as a forward proxy needs: buffered socket reads, header
blocks, message framing and bodies, and writing heads and small answers of the proxy's own."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterable, Iterator

BLOCK = 256 * 1024  # streaming block: large enough for ~1 GB/s on loopback, small in memory
MAX_LINE = 64 * 1024
MAX_HEADERS = 200

# Hop-by-hop headers (RFC 9110 7.6.1) are consumed by the proxy, never forwarded. Transfer-Encoding
# is kept on purpose: bodies are forwarded with the framing they arrived with.
HOP_BY_HOP = frozenset(
    {"connection", "proxy-connection", "keep-alive", "proxy-authorization", "te", "trailer"}
    | {"upgrade", "proxy-authenticate"}
)

REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

Headers = list[tuple[str, str]]


class Abort(Exception):
    """Ends a client connection early (peer gone, protocol error, or proxy stopping)."""


class FaultDone(Abort):
    """Ends a client connection because a fault says so (reset, truncate, stall-then-close)."""


class Reader:
    """Buffered reads on a socket whose leftover buffer stays reachable (for CONNECT tunnels)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(BLOCK)
        if not data:
            return False
        self.buf += data
        return True

    def readline(self) -> bytes:
        """One line including its LF; b"" at EOF; raises Abort for over-long lines."""
        start = 0
        while True:
            i = self.buf.find(b"\n", start)
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            if len(self.buf) > MAX_LINE:
                raise Abort("line too long")
            start = len(self.buf)
            if not self._fill():
                line = bytes(self.buf)
                self.buf.clear()
                return line

    def read_some(self, n: int) -> bytes:
        """Up to n bytes, at least one unless at EOF."""
        if self.buf:
            data = bytes(self.buf[:n])
            del self.buf[:n]
            return data
        return self.sock.recv(min(n, BLOCK))

    def read_exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            data = self.read_some(n - len(out))
            if not data:
                raise Abort("EOF in the middle of a message")
            out += data
        return bytes(out)

    def take_buffer(self) -> bytes:
        data = bytes(self.buf)
        self.buf.clear()
        return data


# -- header blocks --------------------------------------------------------------------------


def header(headers: Headers, name: str) -> str | None:
    """The first value of header ``name`` (case-insensitive), or None."""
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def tokens(headers: Headers, name: str) -> set[str]:
    """The comma-separated tokens of every ``name`` header, lowercased."""
    name = name.lower()
    out: set[str] = set()
    for key, value in headers:
        if key.lower() == name:
            out.update(t.strip().lower() for t in value.split(",") if t.strip())
    return out


def read_headers(reader: Reader) -> Headers:
    headers: Headers = []
    while True:
        line = reader.readline()
        if not line:
            raise Abort("EOF in headers")
        if line in (b"\r\n", b"\n"):
            return headers
        if len(headers) >= MAX_HEADERS:
            raise Abort("too many headers")
        text = line.decode("latin-1").rstrip("\r\n")
        name, sep, value = text.partition(":")
        if not sep:
            raise Abort(f"malformed header line {text!r}")
        headers.append((name.strip(), value.strip()))


def forward_headers(headers: Headers, drop: Iterable[str] = ()) -> Headers:
    """Headers minus hop-by-hop ones (and those the Connection header lists)."""
    listed = tokens(headers, "connection") | tokens(headers, "proxy-connection")
    skip = HOP_BY_HOP | listed | {d.lower() for d in drop}
    return [(k, v) for k, v in headers if k.lower() not in skip]


def head_bytes(first_line: str, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [first_line] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# -- bodies ---------------------------------------------------------------------------------


def framing(headers: Headers) -> tuple[str, int]:
    """("chunked", 0), ("length", n) or ("close", 0) for a message's headers."""
    if "chunked" in tokens(headers, "transfer-encoding"):
        return "chunked", 0
    length = header(headers, "content-length")
    if length is not None:
        try:
            return "length", int(length.split(",")[0].strip())
        except ValueError:
            raise Abort(f"bad Content-Length {length!r}") from None
    return "close", 0


def iter_body(reader: Reader, kind: str, length: int, block: int) -> Iterator[bytes]:
    """Decoded body blocks of at most ``block`` bytes, read lazily so nothing is buffered whole."""
    if kind == "length":
        yield from _fixed(reader, length, block, "EOF before Content-Length was reached")
    elif kind == "chunked":
        while True:
            line = reader.readline()
            if not line:
                raise Abort("EOF in chunked body")
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise Abort(f"bad chunk size line {line!r}") from None
            if size == 0:
                while reader.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers are dropped
                return
            yield from _fixed(reader, size, block, "EOF in chunk")
            reader.read_exact(2)  # CRLF after the chunk data
    else:  # until the peer closes
        while True:
            data = reader.read_some(block)
            if not data:
                return
            yield data


def _fixed(reader: Reader, length: int, block: int, short: str) -> Iterator[bytes]:
    left = length
    while left > 0:
        data = reader.read_some(min(block, left))
        if not data:
            raise Abort(short)
        left -= len(data)
        yield data


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


# -- answers of the proxy's own -------------------------------------------------------------


def plain_response(
    sock: socket.socket, status: int, text: str, close: bool, method: str = "GET"
) -> None:
    """A short text/plain answer (the proxy's own errors: 400, 502)."""
    body = text.encode()
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    if close:
        headers.append(("Connection", "close"))
    head = head_bytes(f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", headers)
    sock.sendall(head + (b"" if method.upper() == "HEAD" else body))


# -- sockets and addresses ------------------------------------------------------------------


def rst_close(sock: socket.socket) -> None:
    """Close with RST instead of FIN, like a crashed server or a middlebox dropping the flow."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def still_open(sock: socket.socket) -> bool:
    """False if an idle origin connection was closed by the origin (avoid reusing it)."""
    timeout = sock.gettimeout()
    try:
        sock.setblocking(False)
        try:
            return sock.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            return True
        finally:
            sock.settimeout(timeout)
    except OSError:
        return False


def authority_for_host(host: str, port: int) -> str:
    """``host:port`` for a Host header (brackets for IPv6, no port when it is 80)."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port == 80 else f"{shown}:{port}"


def split_host_port(authority: str, default: int) -> tuple[str, int]:
    if authority.startswith("["):  # [IPv6]:port
        host, _, rest = authority[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default
    host, sep, port = authority.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return authority, default


def split_target(target: str) -> tuple[str, int, str]:
    """(host, port, path with query) of an absolute ``http://`` request target."""
    rest = target[len("http://") :]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:] or "/"
    if path.startswith("?"):
        path = "/" + path
    authority = authority.rsplit("@", 1)[-1]
    host, port = split_host_port(authority, 80)
    return host, port, path
