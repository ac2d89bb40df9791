"""One request through the proxy: forwarded to its origin and answered, with the fault chosen
for it applied at its step.

The steps of :meth:`Exchange.run`, and the faults that act in each:

1. faults that never reach the origin: ``reset`` in the request phase (after part of the
   body), ``status`` and ``expired`` (an S3-style error of the proxy's own);
2. send the request head to the origin (a cached connection when it is still open);
3. forward the request body (``stall`` in the request phase);
4. read the response head, skipping interim (1xx) answers;
5. faults between the response head and the client: ``reset``/``stall`` in the headers phase;
6. send the response head to the client;
7. relay the response body (``truncate``, ``reset``/``stall`` in the response phase, ``flip``;
   ``throttle`` paces both bodies).
"""

from __future__ import annotations

import dataclasses
import datetime
import random
import socket
import threading
from collections.abc import Iterator

from .connection import Connection, probe
from .pacing import RateLimiter, block_size
from .records import RequestRecord
from .rules import Rule
from .wire import (
    REASONS,
    Abort,
    FaultDone,
    Headers,
    Reader,
    authority_for_host,
    chunk,
    forward_headers,
    framing,
    head_bytes,
    header,
    iter_body,
    plain_response,
    read_headers,
    rst_close,
    tokens,
)

_S3_ERRORS = {
    400: ("BadRequest", "Bad Request"),
    403: ("AccessDenied", "Access Denied"),
    404: ("NoSuchKey", "The specified key does not exist."),
    408: (
        "RequestTimeout",
        "Your socket connection to the server was not read from or written to within "
        "the timeout period. Idle connections will be closed.",
    ),
    429: ("TooManyRequests", "Please reduce your request rate."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    502: ("BadGateway", "Bad Gateway"),
    503: ("SlowDown", "Please reduce your request rate."),
    504: ("GatewayTimeout", "Gateway Timeout"),
}


@dataclasses.dataclass
class Request:
    """A client's request as the proxy forwards it: method, origin, path with query, head."""

    method: str
    host: str
    port: int
    path: str
    version: str
    headers: Headers


@dataclasses.dataclass
class Response:
    """The origin's response head and how its body is framed."""

    status_line: bytes
    status: int
    reason: str
    headers: Headers
    kind: str = "length"  # "length", "chunked" or "close" (see wire.framing)
    length: int = 0


@dataclasses.dataclass
class BodyFaults:
    """Where a response-body fault acts, in bytes of the body (None: nowhere)."""

    cut_at: int | None = None  # the client connection ends after this many bytes
    cut_rst: bool = False  # ... with RST (reset) instead of FIN (truncate)
    stall_at: int | None = None
    flip_at: int | None = None
    flip_mask: int = 0


class Exchange:
    """One request forwarded to its origin and answered, with ``rule``'s fault (None: none)."""

    def __init__(
        self,
        conn: Connection,
        rec: RequestRecord,
        request: Request,
        rule: Rule | None,
        rng: random.Random,
        links: tuple[RateLimiter | None, RateLimiter | None],
        stop: threading.Event,
    ) -> None:
        self.conn = conn
        self.rec = rec
        self.request = request
        self.rule = rule
        self.rng = rng
        self.stop = stop
        self.fault = rule.fault if rule is not None else "pass"
        self.phase = rule.phase if rule is not None else None
        if rule is not None and rule.fault != "pass":
            rec.fault = rule.label()

        headers = request.headers
        self.body_kind, self.body_length = framing(headers)
        if self.body_kind == "close":
            self.body_kind, self.body_length = "length", 0  # a request without framing has none
        self.has_body = self.body_kind == "chunked" or self.body_length > 0
        self.expects_continue = "100-continue" in tokens(headers, "expect")
        self.client_keep = request.version.upper() == "HTTP/1.1" and not (
            "close" in tokens(headers, "connection")
            or "close" in tokens(headers, "proxy-connection")
        )
        up_link, down_link = links
        self.up_limiters = [lim for lim in (up_link,) if lim is not None]
        self.down_limiters = [lim for lim in (down_link,) if lim is not None]
        if self.fault == "throttle":
            assert rule is not None
            self.up_limiters.append(RateLimiter(rule.bps))
            self.down_limiters.append(RateLimiter(rule.bps))

    def _is(self, fault: str, phase: str | None = None) -> bool:
        return self.fault == fault and (phase is None or self.phase == phase)

    def _the_rule(self) -> Rule:
        assert self.rule is not None
        return self.rule

    # -- the steps ---------------------------------------------------------------------------

    def run(self) -> bool:
        """Serve the request; True if the client connection may carry another one."""
        if self._is("reset", "request"):
            self._reset_during_request()
        if self.fault in ("status", "expired"):
            return self._answer_without_origin()
        try:
            origin, status_line = self._send_head()
        except OSError as error:
            return self._origin_unreachable(error)
        send_failed = self._forward_request_body(origin)
        try:
            response = self._read_response_head(origin[1], status_line)
        except (OSError, Abort, ValueError, IndexError) as error:
            return self._no_response(error)
        self.rec.status = response.status
        response.kind, response.length = self._response_framing(response)
        upstream_keep = (
            response.kind != "close"
            and not send_failed
            and "close" not in tokens(response.headers, "connection")
            and response.status_line.startswith(b"HTTP/1.1")
        )
        keep = self.client_keep and response.kind != "close" and not send_failed
        self._fault_before_response_head()
        self._send_response_head(response, keep)
        self._relay_response_body(origin[1], response)
        if not upstream_keep:
            self.conn.close_upstream()
        return keep

    # 1. faults that never reach the origin

    def _reset_during_request(self) -> None:
        """Read ``after_bytes`` of the request body (if any), then reset the connection."""
        rule = self._the_rule()
        if rule.after_bytes > 0:
            self._send_continue()
            got = 0
            for data in self._request_body():
                got += len(data)
                if got >= rule.after_bytes:
                    break
        rst_close(self.conn.sock)
        raise FaultDone("reset")

    def _answer_without_origin(self) -> bool:
        """``status``/``expired``: drain the request body and answer an S3-style error."""
        self._send_continue()
        self._drain_request_body()
        send_s3_error(
            self.conn.sock, self.rec, self.request.method, self._the_rule(), self.client_keep
        )
        return self.client_keep

    # 2. the request head

    def _send_head(self) -> tuple[tuple[socket.socket, Reader], bytes]:
        """Send the request head to the origin: ``((socket, reader), status line)``, the status
        line already read (b"" if not) when a bodiless request had to test a reused connection.
        """
        request = self.request
        out_headers = forward_headers(request.headers, drop=("expect",))
        if header(out_headers, "host") is None:
            out_headers.insert(0, ("Host", authority_for_host(request.host, request.port)))
        head = head_bytes(f"{request.method} {request.path} HTTP/1.1", out_headers)
        sock, reader, reused = self.conn.origin(request.host, request.port)
        if reused and not self.has_body:
            # An idle origin connection may have been closed under us; a request without a
            # body can simply be sent again on a fresh one (what browsers and proxies do).
            status_line = probe(sock, reader, head)
            if status_line is not None:
                return (sock, reader), status_line
            self.conn.close_upstream()
            sock, reader, _ = self.conn.origin(request.host, request.port)
        sock.sendall(head)
        return (sock, reader), b""

    def _origin_unreachable(self, error: OSError) -> bool:
        """The origin could not be reached: 502 (after draining the request body)."""
        rec = self.rec
        rec.error = f"upstream failed: {error}"
        if rec.fault:
            rec.fault += "(not reached)"
        self._send_continue()
        self._drain_request_body()
        rec.status = 502
        plain_response(
            self.conn.sock, 502, f"faultproxy: {error}\n", not self.client_keep, self.request.method
        )
        return self.client_keep

    # 3. the request body

    def _forward_request_body(self, origin: tuple[socket.socket, Reader]) -> bool:
        """Forward the request body (stalling if the rule says so); True if sending failed (the
        origin answered early: its response is read all the same)."""
        sock = origin[0]
        self._send_continue()
        stall_after = self._the_rule().after_bytes if self._is("stall", "request") else None
        send_failed = False
        sent = 0
        for data in self._request_body():
            if stall_after is not None and sent + len(data) >= stall_after:
                self._stall()
                stall_after = None
            if not send_failed:
                try:
                    sock.sendall(chunk(data) if self.body_kind == "chunked" else data)
                except OSError:
                    send_failed = True
            sent += len(data)
        if self.body_kind == "chunked" and not send_failed:
            sock.sendall(b"0\r\n\r\n")
        return send_failed

    # 4. the response head

    def _read_response_head(self, reader: Reader, status_line: bytes) -> Response:
        """The origin's response head, skipping interim (1xx) responses: the client got our own
        100 Continue."""
        while True:
            status_line = status_line or reader.readline()
            if not status_line:
                raise Abort("origin closed without a response")
            parts = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
            status = int(parts[1])
            reason = parts[2] if len(parts) > 2 else REASONS.get(status, "")
            headers = read_headers(reader)
            if not 100 <= status < 200 or status == 101:
                break
            status_line = b""
        return Response(status_line, status, reason, headers)

    def _response_framing(self, response: Response) -> tuple[str, int]:
        if self.request.method.upper() == "HEAD" or response.status in (204, 304):
            return "length", 0
        return framing(response.headers)

    def _no_response(self, error: Exception) -> bool:
        """No usable response from the origin: 502, and the client connection ends."""
        rec = self.rec
        self.conn.close_upstream()
        rec.error = f"bad or no response from origin: {error}"
        if rec.fault and self.fault != "stall":
            rec.fault += "(not reached)"
        rec.status = 502
        plain_response(self.conn.sock, 502, f"faultproxy: {rec.error}\n", True, self.request.method)
        return False

    # 5. faults between the response head and the client

    def _fault_before_response_head(self) -> None:
        if self._is("reset", "headers"):
            self.conn.close_upstream()
            rst_close(self.conn.sock)
            raise FaultDone("reset")
        if self._is("stall", "headers"):
            self._stall()

    # 6. the response head

    def _send_response_head(self, response: Response, keep: bool) -> None:
        client_headers = forward_headers(response.headers)
        if not keep:
            client_headers.append(("Connection", "close"))
        status = f"HTTP/1.1 {response.status} {response.reason}"
        self.conn.sock.sendall(head_bytes(status, client_headers))

    # 7. the response body

    def _body_faults(self, response: Response) -> BodyFaults:
        """Where the rule's response-body fault acts, for this response."""
        rule = self.rule
        if rule is None:
            return BodyFaults()

        def position(default: int) -> int:
            if rule.at_fraction is not None and response.kind == "length":
                return int(rule.at_fraction * response.length)
            return default

        faults = BodyFaults(flip_mask=rule.mask)
        if self._is("truncate"):
            faults.cut_at = position(rule.nbytes)
        elif self._is("reset", "response"):
            faults.cut_at, faults.cut_rst = position(rule.after_bytes), True
        elif self._is("stall", "response"):
            faults.stall_at = position(rule.after_bytes)
        elif self._is("flip"):
            faults.flip_at = rule.offset
            if faults.flip_at is None:
                known = response.kind == "length" and response.length > 0
                faults.flip_at = self.rng.randrange(response.length if known else 65536)
            self.rec.fault = f"flip@{faults.flip_at}"
        return faults

    def _relay_response_body(self, reader: Reader, response: Response) -> None:
        """Stream the response body to the client, applying the body fault block by block."""
        faults = self._body_faults(response)
        if faults.stall_at == 0:
            self._stall()
            faults.stall_at = None
        offset = 0
        try:
            for data in iter_body(
                reader, response.kind, response.length, block_size(self.down_limiters)
            ):
                if faults.cut_at is not None and offset + len(data) >= faults.cut_at:
                    self._send_body(data[: faults.cut_at - offset], response.kind)
                    self._cut(faults.cut_rst)
                if faults.flip_at is not None and offset <= faults.flip_at < offset + len(data):
                    buf = bytearray(data)
                    buf[faults.flip_at - offset] ^= faults.flip_mask
                    data = bytes(buf)
                if faults.stall_at is not None and offset + len(data) >= faults.stall_at:
                    head = data[: faults.stall_at - offset]
                    self._send_body(head, response.kind)
                    offset += len(head)
                    data = data[len(head) :]
                    self._stall()
                    faults.stall_at = None
                self._send_body(data, response.kind)
                offset += len(data)
        except FaultDone:
            raise
        except (OSError, Abort) as error:
            self.rec.error = self.rec.error or f"response body: {error}"
            self.conn.close_upstream()
            raise Abort("response body interrupted") from error
        if faults.cut_at is not None or (faults.flip_at is not None and faults.flip_at >= offset):
            # The body ended before the fault point: say so instead of pretending it applied.
            self.rec.fault = f"{self.rec.fault}(not reached)"
        if response.kind == "chunked":
            self.conn.sock.sendall(b"0\r\n\r\n")

    def _cut(self, rst: bool) -> None:
        """End the client connection in the middle of the body (truncate or reset)."""
        self.conn.close_upstream()
        if rst:
            rst_close(self.conn.sock)
        else:
            self.conn.sock.shutdown(socket.SHUT_WR)
        raise FaultDone(self.fault)

    # -- shared by the steps -----------------------------------------------------------------

    def _request_body(self) -> Iterator[bytes]:
        """The client's request body, paced by the up-link limiters, counted in the record."""
        block = block_size(self.up_limiters)
        for data in iter_body(self.conn.reader, self.body_kind, self.body_length, block):
            self.rec.request_bytes += len(data)
            for lim in self.up_limiters:
                lim.consume(len(data), self.stop)
            yield data

    def _drain_request_body(self) -> None:
        for _ in self._request_body():
            pass

    def _send_continue(self) -> None:
        if self.expects_continue and self.has_body:
            self.conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _send_body(self, data: bytes, kind: str) -> None:
        if not data:
            return
        for lim in self.down_limiters:
            lim.consume(len(data), self.stop)
        self.conn.sock.sendall(chunk(data) if kind == "chunked" else data)
        self.rec.response_bytes += len(data)

    def _stall(self) -> None:
        rule = self._the_rule()
        if self.stop.wait(rule.seconds):
            raise Abort("proxy stopping")
        if rule.then == "close":
            self.conn.close_upstream()
            self.conn.sock.shutdown(socket.SHUT_WR)
            raise FaultDone("stall then close")


def send_s3_error(
    sock: socket.socket, rec: RequestRecord, method: str, rule: Rule, keep: bool
) -> None:
    """An S3-style XML error answered by the proxy itself (``status`` and ``expired``)."""
    request_id = f"FAULTPROXY{rec.id:06d}"
    if rule.fault == "expired":
        status = 403
        now = datetime.datetime.now(datetime.timezone.utc)
        stamp = "%Y-%m-%dT%H:%M:%SZ"
        extra = (
            f"<Expires>{(now - datetime.timedelta(minutes=5)).strftime(stamp)}</Expires>"
            f"<ServerTime>{now.strftime(stamp)}</ServerTime>"
        )
        body = _error_body("AccessDenied", "Request has expired", request_id, extra)
    else:
        status = rule.status
        code, message = _S3_ERRORS.get(status, ("Error", REASONS.get(status, "Error")))
        body = _error_body(code, message, request_id)
    headers = [
        ("Content-Type", "application/xml"),
        ("Content-Length", str(len(body))),
        ("x-amz-request-id", request_id),
    ]
    if rule.fault == "status" and rule.retry_after is not None:
        headers.append(("Retry-After", str(rule.retry_after)))
    if not keep:
        headers.append(("Connection", "close"))
    reason = REASONS.get(status, "Error")
    rec.status = status
    payload = b"" if method.upper() == "HEAD" else body
    sock.sendall(head_bytes(f"HTTP/1.1 {status} {reason}", headers) + payload)
    rec.response_bytes += len(payload)


def _error_body(code: str, message: str, request_id: str, extra: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>{extra}"
        f"<RequestId>{request_id}</RequestId><HostId>faultproxy</HostId></Error>"
    ).encode()
