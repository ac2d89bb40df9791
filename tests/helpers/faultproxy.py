"""A fault-injecting HTTP forward proxy for tests and benchmarks (standard library only).

Why a *forward* proxy: presigned S3 URLs sign the ``Host`` header, so a reverse proxy on another
port would invalidate every signature on real S3 or Ceph RGW. A client pointed at this proxy
(libcurl ``CURLOPT_PROXY`` or the ``http_proxy`` environment variable) sends absolute-URI requests
(``PUT http://host:port/bucket/key?X-Amz-... HTTP/1.1``); the proxy forwards them to the origin with
the path, query and ``Host`` header byte-for-byte unchanged, and can break chosen requests on the
way: connection resets, 5xx/429/408 answers, expired-URL 403s, stalls, bandwidth limits, truncated
and corrupted bodies.

``CONNECT`` (HTTPS) is tunnelled without faults, so a client that happens to use TLS still works.

Usage::

    with FaultProxy(rules=[Rule("reset", method="PUT", url=r"partNumber=2", nth=1)]) as proxy:
        curl.setopt(pycurl.PROXY, proxy.url)
        curl.setopt(pycurl.NOPROXY, "")  # no_proxy often lists 127.0.0.1
        ...
        assert proxy.count(method="PUT", fault="reset") == 1

Command line (for benchmarks; prints the proxy URL as its first stdout line)::

    python tests/faultproxy.py --port 0 --random-rate 0.2 --seed 1
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

__all__ = [
    "DEFAULT_RANDOM_FAULTS",
    "FAULTS",
    "FaultProxy",
    "RequestRecord",
    "Rule",
    "main",
    "redact_url",
    "request_key",
]

#: Fault names a rule may apply. ``pass`` forwards untouched (useful to shield requests from
#: later rules or from random faults).
FAULTS = ("reset", "status", "expired", "stall", "throttle", "truncate", "flip", "pass")

#: Default fault names drawn in random mode: all of them are retryable by a correct client and
#: none corrupts data silently (``flip``) or waits long (``stall``); opt into those explicitly.
DEFAULT_RANDOM_FAULTS = ("reset", "status", "truncate")

_BLOCK = 256 * 1024  # streaming block: large enough for ~1 GB/s on loopback, small in memory
_MAX_LINE = 64 * 1024
_MAX_HEADERS = 200

# Hop-by-hop headers (RFC 9110 7.6.1) are consumed by the proxy, never forwarded. Transfer-Encoding
# is kept on purpose: bodies are forwarded with the framing they arrived with (see _write_body).
_HOP_BY_HOP = frozenset(
    {"connection", "proxy-connection", "keep-alive", "proxy-authorization", "te", "trailer"}
    | {"upgrade", "proxy-authenticate"}
)

# Query parameters that change between runs of the same logical request (signatures, dates,
# random upload ids); left out of the key that random mode and max_faults_per_key use, so a seed
# gives the same faults on every run.
_VOLATILE_PARAMS = re.compile(
    r"^(x-amz-.*|signature|expires|awsaccesskeyid|uploadid|x-id)$", re.IGNORECASE
)

# Query parameters that reveal nothing secret; redact_url() keeps them by default.
_SAFE_PARAMS = ("partNumber", "uploadId", "uploads", "versionId", "x-id")

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

_REASONS = {
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


class _Abort(Exception):
    """Ends a client connection early (peer gone, protocol error, or proxy stopping)."""


class _FaultDone(_Abort):
    """Ends a client connection because a fault says so (reset, truncate, stall-then-close)."""


# --------------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Rule:
    """One fault and the requests it applies to.

    Matching: ``method`` (case-insensitive, None = any) and ``url`` (a regex *searched* in the full
    absolute URL, query included, None = any). Every rule counts the requests it matches, whether
    or not it applied its fault, so "the 2nd PUT of part 3" means the same thing whatever other
    rules do. The rule is *active* for the n-th matching request when ``nth`` is None or n == nth,
    and ``first`` is None or n <= first. The first active rule in list order wins; random mode
    only considers requests that no active rule took.

    Fault parameters (the ones a fault does not use are ignored):

    * ``reset``: read ``after_bytes`` of the request body (``phase="request"``, the default), or
      forward the request, get the origin's answer and send nothing (``phase="headers"``: the
      origin acted but the client cannot know), or forward the response headers and
      ``after_bytes`` of its body (``phase="response"``); then close with RST (SO_LINGER 0).
    * ``status``: answer ``status`` (500, 503, 429, 408, ...) with an S3-style XML error body and
      an optional ``Retry-After`` header, after draining the request body; the origin is never
      contacted.
    * ``expired``: answer 403 ``AccessDenied`` / ``Request has expired`` like S3 does for a
      presigned URL past its expiry; the origin is never contacted.
    * ``stall``: stop for ``seconds``: while reading the request body after ``after_bytes``
      (``phase="request"``), before sending the response headers (``phase="headers"``), or after
      the headers and ``after_bytes`` of the response body (``phase="response"``, the default).
      Then ``then="continue"`` (default) or ``then="close"`` (FIN, so the body ends short).
    * ``throttle``: limit both bodies of this request to ``bps`` bytes per second.
    * ``truncate``: forward the response headers (original Content-Length) and only ``nbytes``
      of the body, then close (FIN).
    * ``flip``: XOR the response body byte at ``offset`` (None = random within Content-Length, or
      the first 64 KiB if unknown) with ``mask``.
    * ``pass``: forward unchanged.

    ``at_fraction`` (0.0-1.0), when set and the response has a Content-Length, places a
    response-side fault (truncate, reset/stall in the response phase) at that fraction of the
    body instead of at ``nbytes``/``after_bytes``; random mode uses it because it must pick a
    cut point before it knows the response size.
    """

    fault: str
    method: str | None = None
    url: str | None = None
    nth: int | None = None
    first: int | None = None
    phase: str | None = None
    after_bytes: int = 0
    status: int = 500
    retry_after: int | str | None = None
    seconds: float = 10.0
    then: str = "continue"
    bps: int = 1_000_000
    nbytes: int = 0
    offset: int | None = None
    mask: int = 0xFF
    at_fraction: float | None = None
    matched: int = dataclasses.field(default=0, init=False, compare=False)

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; expected one of {FAULTS}")
        phases = {
            "reset": ("request", "headers", "response"),
            "stall": ("request", "headers", "response"),
        }
        if self.phase is None:
            self.phase = "request" if self.fault == "reset" else "response"
        elif self.phase not in phases.get(self.fault, (self.phase,)):
            raise ValueError(f"phase {self.phase!r} is not valid for fault {self.fault!r}")
        if self.then not in ("continue", "close"):
            raise ValueError("then must be 'continue' or 'close'")
        if self.bps <= 0:
            raise ValueError("bps must be positive")
        if self.at_fraction is not None and not 0.0 <= self.at_fraction <= 1.0:
            raise ValueError("at_fraction must be between 0 and 1")
        self._url_re = re.compile(self.url) if self.url else None

    @classmethod
    def parse(cls, spec: str) -> Rule:
        """Build a rule from ``key=value`` words, e.g. ``"fault=reset method=PUT nth=2"``.

        Why a text form: benchmarks and the CLI pass rules through argv or environment variables.
        The value is everything after the first ``=``, so ``url=partNumber=2`` works; regexes
        must not contain spaces. A bare first word is the fault: ``"status status=503"``.
        """
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        kwargs: dict[str, Any] = {}
        for i, word in enumerate(spec.split()):
            if "=" not in word:
                if i == 0:
                    kwargs["fault"] = word
                    continue
                raise ValueError(f"rule word {word!r} is not key=value")
            key, value = word.split("=", 1)
            key = key.replace("-", "_")
            if key not in fields:
                raise ValueError(f"unknown rule key {key!r}")
            if key in ("nth", "first", "after_bytes", "status", "bps", "nbytes"):
                kwargs[key] = int(value)
            elif key == "offset":
                kwargs[key] = None if value.lower() == "random" else int(value)
            elif key == "mask":
                kwargs[key] = int(value, 0)
            elif key in ("seconds", "at_fraction"):
                kwargs[key] = float(value)
            elif key == "retry_after":
                kwargs[key] = int(value) if value.isdigit() else value
            else:
                kwargs[key] = value
        if "fault" not in kwargs:
            raise ValueError(f"rule {spec!r} names no fault")
        return cls(**kwargs)

    def matches(self, method: str, url: str) -> bool:
        """True if the request is one this rule counts (ignores nth/first)."""
        if self.method and self.method.upper() != method.upper():
            return False
        return not (self._url_re and not self._url_re.search(url))

    def active_for(self, n: int) -> bool:
        """True if the rule applies to its n-th matching request (1-based)."""
        if self.nth is not None and n != self.nth:
            return False
        return not (self.first is not None and n > self.first)

    def label(self) -> str:
        """Short description stored in the request log, e.g. ``status:503`` or ``reset@request``."""
        if self.fault == "status":
            return f"status:{self.status}"
        if self.fault in ("reset", "stall"):
            return f"{self.fault}@{self.phase}"
        return self.fault


@dataclasses.dataclass
class RequestRecord:
    """What the proxy saw of one request; fields fill in while the request progresses.

    ``url`` is the full absolute URL (query included, so presigned signatures too): use
    :attr:`redacted_url` in anything that gets printed or stored.
    """

    id: int
    connection: int
    method: str
    url: str
    path: str
    range: str | None
    request_content_length: int | None
    started: float
    request_bytes: int = 0
    status: int | None = None
    response_bytes: int = 0
    fault: str | None = None
    error: str | None = None
    duration: float | None = None

    @property
    def redacted_url(self) -> str:
        """The URL with query values that may be secret removed (see :func:`redact_url`)."""
        return redact_url(self.url)

    @property
    def key(self) -> str:
        """Stable identity of the logical request (method, path, stable query, Range)."""
        return request_key(self.method, self.path, self.range)


def redact_url(url: str, keep: Sequence[str] = _SAFE_PARAMS) -> str:
    """Drop query parameters except harmless ones (``partNumber``, ``uploadId``, ...).

    Why: presigned URLs carry credentials and signatures in the query; logs and assertion
    messages should not.
    """
    base, sep, query = url.partition("?")
    if not sep:
        return url
    kept = [p for p in query.split("&") if p.split("=", 1)[0] in keep]
    return base + ("?" + "&".join(kept) if kept else "")


def request_key(method: str, path: str, range_header: str | None) -> str:
    """Identity of a logical request that survives re-signing and new upload ids.

    Used by random mode and ``max_faults_per_key``: a retried request (new signature, same
    part) gets the same key, so a seed gives the same decisions on every run and a retry is
    not faulted forever.
    """
    base, _, query = path.partition("?")
    params = sorted(
        p for p in query.split("&") if p and not _VOLATILE_PARAMS.match(p.split("=")[0])
    )
    return f"{method.upper()} {base}?{'&'.join(params)} range={range_header or ''}"


# --------------------------------------------------------------------------------------------
# Socket plumbing
# --------------------------------------------------------------------------------------------


class _Reader:
    """Buffered reads on a socket whose leftover buffer stays reachable (for CONNECT tunnels)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(_BLOCK)
        if not data:
            return False
        self.buf += data
        return True

    def readline(self) -> bytes:
        """One line including its LF; b"" at EOF; raises _Abort for over-long lines."""
        start = 0
        while True:
            i = self.buf.find(b"\n", start)
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            if len(self.buf) > _MAX_LINE:
                raise _Abort("line too long")
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
        return self.sock.recv(min(n, _BLOCK))

    def read_exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            data = self.read_some(n - len(out))
            if not data:
                raise _Abort("EOF in the middle of a message")
            out += data
        return bytes(out)

    def take_buffer(self) -> bytes:
        data = bytes(self.buf)
        self.buf.clear()
        return data


class _RateLimiter:
    """Paces a byte stream to ``bps``; thread-safe so one instance can be shared as a link."""

    def __init__(self, bps: int) -> None:
        self.bps = bps
        self._lock = threading.Lock()
        self._next = 0.0

    def block_size(self) -> int:
        # ~20 sleeps per second keeps the pacing smooth without many tiny sends.
        return max(1024, min(_BLOCK, self.bps // 20))

    def consume(self, n: int, stop: threading.Event) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now)  # no credit for idle time: no bursts after pauses
            self._next = start + n / self.bps
            delay = self._next - now
        if delay > 0 and stop.wait(delay):
            raise _Abort("proxy stopping")


def _rst_close(sock: socket.socket) -> None:
    """Close with RST instead of FIN, like a crashed server or a middlebox dropping the flow."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _tokens(headers: list[tuple[str, str]], name: str) -> set[str]:
    name = name.lower()
    out: set[str] = set()
    for key, value in headers:
        if key.lower() == name:
            out.update(t.strip().lower() for t in value.split(",") if t.strip())
    return out


def _read_headers(reader: _Reader) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    while True:
        line = reader.readline()
        if not line:
            raise _Abort("EOF in headers")
        if line in (b"\r\n", b"\n"):
            return headers
        if len(headers) >= _MAX_HEADERS:
            raise _Abort("too many headers")
        text = line.decode("latin-1").rstrip("\r\n")
        name, sep, value = text.partition(":")
        if not sep:
            raise _Abort(f"malformed header line {text!r}")
        headers.append((name.strip(), value.strip()))


def _framing(headers: list[tuple[str, str]]) -> tuple[str, int]:
    """("chunked", 0), ("length", n) or ("close", 0) for a message's headers."""
    if "chunked" in _tokens(headers, "transfer-encoding"):
        return "chunked", 0
    length = _header(headers, "content-length")
    if length is not None:
        try:
            return "length", int(length.split(",")[0].strip())
        except ValueError:
            raise _Abort(f"bad Content-Length {length!r}") from None
    return "close", 0


def _iter_body(reader: _Reader, kind: str, length: int, block: int) -> Iterator[bytes]:
    """Decoded body blocks of at most ``block`` bytes, read lazily so nothing is buffered whole."""
    if kind == "length":
        left = length
        while left > 0:
            data = reader.read_some(min(block, left))
            if not data:
                raise _Abort("EOF before Content-Length was reached")
            left -= len(data)
            yield data
    elif kind == "chunked":
        while True:
            line = reader.readline()
            if not line:
                raise _Abort("EOF in chunked body")
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise _Abort(f"bad chunk size line {line!r}") from None
            if size == 0:
                while reader.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers are dropped
                return
            left = size
            while left > 0:
                data = reader.read_some(min(block, left))
                if not data:
                    raise _Abort("EOF in chunk")
                left -= len(data)
                yield data
            reader.read_exact(2)  # CRLF after the chunk data
    else:  # until the peer closes
        while True:
            data = reader.read_some(block)
            if not data:
                return
            yield data


def _head_bytes(first_line: str, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [first_line] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _forward_headers(
    headers: list[tuple[str, str]], drop: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """Headers minus hop-by-hop ones (and those the Connection header lists)."""
    listed = _tokens(headers, "connection") | _tokens(headers, "proxy-connection")
    skip = _HOP_BY_HOP | listed | {d.lower() for d in drop}
    return [(k, v) for k, v in headers if k.lower() not in skip]


def _error_body(status: int, code: str, message: str, request_id: str, extra: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>{extra}"
        f"<RequestId>{request_id}</RequestId><HostId>faultproxy</HostId></Error>"
    ).encode()


# --------------------------------------------------------------------------------------------
# The proxy
# --------------------------------------------------------------------------------------------


class _Connection:
    """State of one client connection: its socket, reader and a cached upstream connection."""

    def __init__(
        self, cid: int, sock: socket.socket, untrack: Callable[[socket.socket], None]
    ) -> None:
        self.id = cid
        self.sock = sock
        self.reader = _Reader(sock)
        self.upstream: tuple[tuple[str, int], socket.socket, _Reader] | None = None
        self._untrack = untrack

    def close_upstream(self) -> None:
        """Drop the origin connection (a plain FIN: faults are for the client, not the origin)."""
        if self.upstream is not None:
            sock = self.upstream[1]
            self.upstream = None
            self._untrack(sock)
            sock.close()


class FaultProxy:
    """Threaded HTTP/1.1 forward proxy that injects faults into chosen or random requests.

    Args:
        host, port: where to listen; port 0 picks a free port (see :attr:`port`, :attr:`url`).
        rules: :class:`Rule` objects or their text form (:meth:`Rule.parse`), in priority order.
        random_rate: probability that a request no rule took gets a random fault.
        seed: makes random mode reproducible. Decisions depend on the seed, the request's stable
            key (:func:`request_key`) and how often that key was seen, not on thread timing, so
            the same requests get the same faults on every run. None draws a seed, kept in
            :attr:`seed` so a failing run can be replayed.
        random_faults: fault names (parameters are then drawn at random) or :class:`Rule`
            templates (their method/url restrict where they apply) for random mode.
        max_faults_per_key: never fault the same logical request (method, path, stable query,
            Range) more than this many times in random mode, so retries eventually succeed.
        throttle_bps: bandwidth of a shared emulated link, per direction, for all traffic.
        upstream_timeout: socket timeout towards the origin.
        client_timeout: idle timeout of client connections.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        rules: Sequence[Rule | str] = (),
        random_rate: float = 0.0,
        seed: int | None = None,
        random_faults: Sequence[str | Rule] = DEFAULT_RANDOM_FAULTS,
        max_faults_per_key: int = 2,
        throttle_bps: int | None = None,
        upstream_timeout: float = 60.0,
        client_timeout: float = 60.0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.random_rate = random_rate
        self.seed: int = seed if seed is not None else random.SystemRandom().randrange(1 << 32)
        self.random_faults: list[str | Rule] = [
            f if isinstance(f, Rule) else _check_fault_name(f) for f in random_faults
        ]
        self.max_faults_per_key = max_faults_per_key
        self.upstream_timeout = upstream_timeout
        self.client_timeout = client_timeout
        self._rules: list[Rule] = [r if isinstance(r, Rule) else Rule.parse(r) for r in rules]
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._key_seen: dict[str, int] = {}
        self._key_faults: dict[str, int] = {}
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._threads: set[threading.Thread] = set()
        self._sockets: set[socket.socket] = set()
        self._next_conn = 0
        self._next_request = 0
        self._upstream_connects = 0
        self._up_link: _RateLimiter | None = None
        self._down_link: _RateLimiter | None = None
        self.set_throttle(throttle_bps)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Bind and start accepting in a background thread; returns self."""
        if self._listener is not None:
            raise RuntimeError("already started")
        self._stop.clear()
        self._listener = socket.create_server((self.host, self._requested_port), backlog=128)
        # Poll so stop() never depends on accept() waking up when its socket is closed.
        self._listener.settimeout(0.2)
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"faultproxy-accept-{self.port}", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, cut every open connection (waking stalls) and join the threads."""
        self._stop.set()
        listener, self._listener = self._listener, None
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
            self._accept_thread = None
        if listener is not None:
            listener.close()
        with self._lock:
            sockets = list(self._sockets)
            threads = list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("proxy not started")
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        """``http://host:port``, for CURLOPT_PROXY or the ``http_proxy`` variable."""
        return f"http://{self.host}:{self.port}"

    # -- configuration at run time ---------------------------------------------------------

    def add_rule(self, rule: Rule | str) -> Rule:
        """Append a rule (lowest priority) while running; returns it (its ``matched`` counts)."""
        rule = rule if isinstance(rule, Rule) else Rule.parse(rule)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[Rule]:
        with self._lock:
            return list(self._rules)

    def set_throttle(self, bps: int | None) -> None:
        """Set or remove (None) the shared link bandwidth, per direction, in bytes per second."""
        if bps is not None and bps <= 0:
            raise ValueError("throttle_bps must be positive")
        self._up_link = _RateLimiter(bps) if bps else None
        self._down_link = _RateLimiter(bps) if bps else None

    # -- inspection --------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Snapshot of the request log, in arrival order (records may still be filling in)."""
        with self._lock:
            return list(self._records)

    def records(
        self,
        method: str | None = None,
        path_contains: str | None = None,
        fault: str | None = None,
        status: int | None = None,
    ) -> list[RequestRecord]:
        """Logged requests filtered by method, substring of path+query, fault prefix, status.

        ``fault="status"`` matches ``status:503``; ``fault="reset"`` matches every reset phase;
        ``fault=""`` matches requests that got no fault.
        """
        out = []
        for rec in self.requests:
            if method is not None and rec.method.upper() != method.upper():
                continue
            if path_contains is not None and path_contains not in rec.path:
                continue
            if status is not None and rec.status != status:
                continue
            if fault is not None:
                if fault == "":
                    if rec.fault is not None:
                        continue
                elif rec.fault is None or not re.match(rf"{re.escape(fault)}(\b|$)", rec.fault):
                    continue
            out.append(rec)
        return out

    def count(
        self,
        method: str | None = None,
        path_contains: str | None = None,
        fault: str | None = None,
        status: int | None = None,
    ) -> int:
        """Number of logged requests matching the filters of :meth:`records`."""
        return len(self.records(method, path_contains, fault, status))

    def faults(self) -> list[tuple[str, str, str]]:
        """(method, redacted URL, fault label) of every faulted request, in arrival order."""
        return [(r.method, r.redacted_url, r.fault) for r in self.requests if r.fault]

    @property
    def connections(self) -> int:
        """Client connections accepted so far (keep-alive reuse keeps this low)."""
        with self._lock:
            return self._next_conn

    @property
    def upstream_connections(self) -> int:
        """Connections opened to origins so far."""
        with self._lock:
            return self._upstream_connects

    def reset_log(self) -> None:
        """Forget logged requests and random-mode history (rule counters are kept)."""
        with self._lock:
            self._records.clear()
            self._key_seen.clear()
            self._key_faults.clear()

    # -- serving -----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stop.is_set():
            try:
                sock, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            sock.settimeout(self.client_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._next_conn += 1
                cid = self._next_conn
                thread = threading.Thread(
                    target=self._serve, args=(cid, sock), name=f"faultproxy-{cid}", daemon=True
                )
                self._threads.add(thread)
                self._sockets.add(sock)
            thread.start()

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._sockets.add(sock)
            else:
                self._sockets.discard(sock)

    def _serve(self, cid: int, sock: socket.socket) -> None:
        conn = _Connection(cid, sock, lambda s: self._track(s, add=False))
        try:
            while not self._stop.is_set():
                line = conn.reader.readline()
                if not line:
                    break
                if line in (b"\r\n", b"\n"):
                    continue  # tolerated between requests (RFC 9112 2.2)
                parts = line.decode("latin-1").split()
                if len(parts) != 3:
                    self._plain_response(conn, 400, "malformed request line\n", close=True)
                    break
                method, target, version = parts
                headers = _read_headers(conn.reader)
                if method.upper() == "CONNECT":
                    self._tunnel(conn, target, headers)
                    break
                if not self._handle(conn, method, target, version, headers):
                    break
        except (_Abort, OSError):
            pass
        finally:
            conn.close_upstream()
            self._track(sock, add=False)
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _plain_response(
        self, conn: _Connection, status: int, text: str, close: bool, method: str = "GET"
    ) -> None:
        body = text.encode()
        headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        if close:
            headers.append(("Connection", "close"))
        head = _head_bytes(f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", headers)
        conn.sock.sendall(head + (b"" if method.upper() == "HEAD" else body))

    def _new_record(
        self,
        conn: _Connection,
        method: str,
        url: str,
        path: str,
        headers: list[tuple[str, str]],
    ) -> RequestRecord:
        length = _header(headers, "content-length")
        with self._lock:
            self._next_request += 1
            rec = RequestRecord(
                id=self._next_request,
                connection=conn.id,
                method=method.upper(),
                url=url,
                path=path,
                range=_header(headers, "range"),
                request_content_length=int(length) if length and length.isdigit() else None,
                started=time.monotonic(),
            )
            self._records.append(rec)
        return rec

    # -- choosing faults ---------------------------------------------------------------------

    def _choose(self, rec: RequestRecord) -> tuple[Rule | None, random.Random]:
        """The rule to apply (or None) and an RNG for its random parameters.

        Rules first; then random mode. The RNG is seeded from (seed, request key, times the key
        was seen) so decisions do not depend on which thread got the lock first.
        """
        with self._lock:
            chosen: Rule | None = None
            for rule in self._rules:
                if rule.matches(rec.method, rec.url):
                    rule.matched += 1
                    if chosen is None and rule.active_for(rule.matched):
                        chosen = rule
            key = rec.key
            seen = self._key_seen.get(key, 0)
            self._key_seen[key] = seen + 1
            rng = random.Random(f"{self.seed}\0{key}\0{seen}")
            if chosen is not None:
                return chosen, rng
            if self.random_rate <= 0 or self._key_faults.get(key, 0) >= self.max_faults_per_key:
                return None, rng
            if rng.random() >= self.random_rate:
                return None, rng
            candidates = [
                f
                for f in self.random_faults
                if not isinstance(f, Rule) or f.matches(rec.method, rec.url)
            ]
            if not candidates:
                return None, rng
            pick = rng.choice(candidates)
            rule = pick if isinstance(pick, Rule) else _random_rule(pick, rng, rec)
            self._key_faults[key] = self._key_faults.get(key, 0) + 1
            return rule, rng

    # -- one request ---------------------------------------------------------------------------

    def _handle(
        self,
        conn: _Connection,
        method: str,
        target: str,
        version: str,
        headers: list[tuple[str, str]],
    ) -> bool:
        """Serve one request; True if the client connection may carry another one."""
        if not target.lower().startswith("http://"):
            # Not a proxy request (origin-form or https:// without CONNECT): refuse clearly.
            self._plain_response(
                conn, 400, "faultproxy: expected an absolute http:// URI\n", True, method
            )
            return False
        rest = target[len("http://") :]
        cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        authority, path = rest[:cut], rest[cut:] or "/"
        if path.startswith("?"):
            path = "/" + path
        authority = authority.rsplit("@", 1)[-1]
        host, port = _split_host_port(authority, 80)
        rec = self._new_record(conn, method, target, path, headers)
        try:
            keep = self._exchange(conn, rec, method, host, port, path, version, headers)
        except _FaultDone:
            raise
        except BaseException as error:
            rec.error = rec.error or f"{type(error).__name__}: {error}"
            raise
        finally:
            rec.duration = time.monotonic() - rec.started
        return keep

    def _exchange(
        self,
        conn: _Connection,
        rec: RequestRecord,
        method: str,
        host: str,
        port: int,
        path: str,
        version: str,
        headers: list[tuple[str, str]],
    ) -> bool:
        rule, rng = self._choose(rec)
        if rule is not None and rule.fault != "pass":
            rec.fault = rule.label()
        fault = rule.fault if rule is not None else "pass"
        phase = rule.phase if rule is not None else None

        req_kind, req_len = _framing(headers)
        if req_kind == "close":
            req_kind, req_len = "length", 0  # a request without framing has no body
        has_body = req_kind == "chunked" or req_len > 0
        expects = "100-continue" in _tokens(headers, "expect")
        client_keep = version.upper() == "HTTP/1.1" and not (
            "close" in _tokens(headers, "connection")
            or "close" in _tokens(headers, "proxy-connection")
        )

        up_limiters = [lim for lim in (self._up_link,) if lim is not None]
        down_limiters = [lim for lim in (self._down_link,) if lim is not None]
        if fault == "throttle":
            assert rule is not None
            up_limiters.append(_RateLimiter(rule.bps))
            down_limiters.append(_RateLimiter(rule.bps))

        def request_body() -> Iterator[bytes]:
            block = min([_BLOCK] + [lim.block_size() for lim in up_limiters])
            for data in _iter_body(conn.reader, req_kind, req_len, block):
                rec.request_bytes += len(data)
                for lim in up_limiters:
                    lim.consume(len(data), self._stop)
                yield data

        def send_continue() -> None:
            if expects and has_body:
                conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

        # Faults that never reach the origin.
        if fault == "reset" and phase == "request":
            assert rule is not None
            if rule.after_bytes > 0:
                send_continue()
                got = 0
                for data in request_body():
                    got += len(data)
                    if got >= rule.after_bytes:
                        break
            _rst_close(conn.sock)
            raise _FaultDone("reset")
        if fault in ("status", "expired"):
            assert rule is not None
            send_continue()
            for _ in request_body():
                pass
            self._s3_error(conn, rec, method, rule, client_keep)
            return client_keep

        # Forward the request.
        out_headers = _forward_headers(headers, drop=("expect",))
        if _header(out_headers, "host") is None:
            out_headers.insert(0, ("Host", authority_for_host(host, port)))
        head = _head_bytes(f"{method} {path} HTTP/1.1", out_headers)
        try:
            up_sock, up_reader, reused = self._upstream(conn, host, port)
            if reused and not has_body:
                # An idle origin connection may have been closed under us; a request without a
                # body can simply be sent again on a fresh one (what browsers and proxies do).
                status_line = self._probe(up_sock, up_reader, head)
                if status_line is None:
                    conn.close_upstream()
                    up_sock, up_reader, reused = self._upstream(conn, host, port)
                    up_sock.sendall(head)
                    status_line = b""
            else:
                up_sock.sendall(head)
                status_line = b""
        except OSError as error:
            rec.error = f"upstream failed: {error}"
            if rec.fault:
                rec.fault += "(not reached)"
            send_continue()
            for _ in request_body():
                pass
            rec.status = 502
            self._plain_response(conn, 502, f"faultproxy: {error}\n", not client_keep, method)
            return client_keep

        send_continue()
        send_failed = False
        sent = 0
        stalled = False
        for data in request_body():
            if fault == "stall" and phase == "request" and not stalled:
                assert rule is not None
                if sent + len(data) >= rule.after_bytes:
                    self._stall(conn, rule)
                    stalled = True
            if not send_failed:
                try:
                    up_sock.sendall(_chunk(data) if req_kind == "chunked" else data)
                except OSError:
                    send_failed = True  # the origin answered early; read its response below
            sent += len(data)
        if req_kind == "chunked" and not send_failed:
            up_sock.sendall(b"0\r\n\r\n")

        # Read the response head, skipping interim (1xx) responses: the client got our own 100.
        try:
            while True:
                status_line = status_line or up_reader.readline()
                if not status_line:
                    raise _Abort("origin closed without a response")
                parts = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
                status = int(parts[1])
                reason = parts[2] if len(parts) > 2 else _REASONS.get(status, "")
                resp_headers = _read_headers(up_reader)
                if not 100 <= status < 200 or status == 101:
                    break
                status_line = b""
        except (OSError, _Abort, ValueError, IndexError) as error:
            conn.close_upstream()
            rec.error = f"bad or no response from origin: {error}"
            if rec.fault and fault != "stall":
                rec.fault += "(not reached)"
            rec.status = 502
            self._plain_response(conn, 502, f"faultproxy: {rec.error}\n", True, method)
            return False
        rec.status = status

        if method.upper() == "HEAD" or status in (204, 304):
            resp_kind, resp_len = "length", 0
        else:
            resp_kind, resp_len = _framing(resp_headers)
        upstream_keep = (
            resp_kind != "close"
            and not send_failed
            and "close" not in _tokens(resp_headers, "connection")
            and status_line.startswith(b"HTTP/1.1")
        )
        keep = client_keep and resp_kind != "close" and not send_failed

        if fault == "reset" and phase == "headers":
            conn.close_upstream()
            _rst_close(conn.sock)
            raise _FaultDone("reset")
        if fault == "stall" and phase == "headers":
            assert rule is not None
            self._stall(conn, rule)

        client_headers = _forward_headers(resp_headers)
        if not keep:
            client_headers.append(("Connection", "close"))
        conn.sock.sendall(_head_bytes(f"HTTP/1.1 {status} {reason}", client_headers))

        # Stream the response body, applying body faults block by block.
        block = min([_BLOCK] + [lim.block_size() for lim in down_limiters])
        cut_at: int | None = None  # bytes after which the client connection ends
        cut_rst = False
        stall_at: int | None = None
        flip_at: int | None = None
        flip_mask = rule.mask if rule is not None else 0
        if rule is not None:

            def position(default: int) -> int:
                if rule.at_fraction is not None and resp_kind == "length":
                    return int(rule.at_fraction * resp_len)
                return default

            if fault == "truncate":
                cut_at = position(rule.nbytes)
            elif fault == "reset" and phase == "response":
                cut_at, cut_rst = position(rule.after_bytes), True
            elif fault == "stall" and phase == "response":
                stall_at = position(rule.after_bytes)
            elif fault == "flip":
                flip_at = rule.offset
                if flip_at is None:
                    span = resp_len if resp_kind == "length" and resp_len > 0 else 65536
                    flip_at = rng.randrange(span)
                rec.fault = f"flip@{flip_at}"
        if stall_at == 0:
            assert rule is not None
            self._stall(conn, rule)
            stall_at = None
        offset = 0
        try:
            for data in _iter_body(up_reader, resp_kind, resp_len, block):
                if cut_at is not None and offset + len(data) >= cut_at:
                    data = data[: cut_at - offset]
                    self._send_body(conn, rec, data, resp_kind, down_limiters)
                    conn.close_upstream()
                    if cut_rst:
                        _rst_close(conn.sock)
                    else:
                        conn.sock.shutdown(socket.SHUT_WR)
                    raise _FaultDone(fault)
                if flip_at is not None and offset <= flip_at < offset + len(data):
                    buf = bytearray(data)
                    buf[flip_at - offset] ^= flip_mask
                    data = bytes(buf)
                if stall_at is not None and offset + len(data) >= stall_at:
                    assert rule is not None
                    head = data[: stall_at - offset]
                    self._send_body(conn, rec, head, resp_kind, down_limiters)
                    offset += len(head)
                    data = data[len(head) :]
                    self._stall(conn, rule)
                    stall_at = None
                self._send_body(conn, rec, data, resp_kind, down_limiters)
                offset += len(data)
        except _FaultDone:
            raise
        except (OSError, _Abort) as error:
            rec.error = rec.error or f"response body: {error}"
            conn.close_upstream()
            raise _Abort("response body interrupted") from error
        if cut_at is not None or (flip_at is not None and flip_at >= offset):
            # The body ended before the fault point: say so instead of pretending it applied.
            rec.fault = f"{rec.fault}(not reached)"
        if resp_kind == "chunked":
            conn.sock.sendall(b"0\r\n\r\n")
        if not upstream_keep:
            conn.close_upstream()
        return keep

    def _send_body(
        self,
        conn: _Connection,
        rec: RequestRecord,
        data: bytes,
        kind: str,
        limiters: list[_RateLimiter],
    ) -> None:
        if not data:
            return
        for lim in limiters:
            lim.consume(len(data), self._stop)
        conn.sock.sendall(_chunk(data) if kind == "chunked" else data)
        rec.response_bytes += len(data)

    def _stall(self, conn: _Connection, rule: Rule) -> None:
        if self._stop.wait(rule.seconds):
            raise _Abort("proxy stopping")
        if rule.then == "close":
            conn.close_upstream()
            conn.sock.shutdown(socket.SHUT_WR)
            raise _FaultDone("stall then close")

    def _s3_error(
        self, conn: _Connection, rec: RequestRecord, method: str, rule: Rule, keep: bool
    ) -> None:
        """An S3-style XML error answered by the proxy itself."""
        request_id = f"FAULTPROXY{rec.id:06d}"
        if rule.fault == "expired":
            status = 403
            now = datetime.datetime.now(datetime.timezone.utc)
            stamp = "%Y-%m-%dT%H:%M:%SZ"
            extra = (
                f"<Expires>{(now - datetime.timedelta(minutes=5)).strftime(stamp)}</Expires>"
                f"<ServerTime>{now.strftime(stamp)}</ServerTime>"
            )
            body = _error_body(status, "AccessDenied", "Request has expired", request_id, extra)
        else:
            status = rule.status
            code, message = _S3_ERRORS.get(status, ("Error", _REASONS.get(status, "Error")))
            body = _error_body(status, code, message, request_id)
        headers = [
            ("Content-Type", "application/xml"),
            ("Content-Length", str(len(body))),
            ("x-amz-request-id", request_id),
        ]
        if rule.fault == "status" and rule.retry_after is not None:
            headers.append(("Retry-After", str(rule.retry_after)))
        if not keep:
            headers.append(("Connection", "close"))
        reason = _REASONS.get(status, "Error")
        rec.status = status
        payload = b"" if method.upper() == "HEAD" else body
        conn.sock.sendall(_head_bytes(f"HTTP/1.1 {status} {reason}", headers) + payload)
        rec.response_bytes += len(payload)

    def _upstream(
        self, conn: _Connection, host: str, port: int
    ) -> tuple[socket.socket, _Reader, bool]:
        """The client connection's cached origin connection (reused=True), or a new one."""
        if conn.upstream is not None:
            key, sock, reader = conn.upstream
            if key == (host, port) and not reader.buf and _still_open(sock):
                return sock, reader, True
            conn.close_upstream()
        sock = socket.create_connection((host, port), timeout=self.upstream_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._track(sock, add=True)
        with self._lock:
            self._upstream_connects += 1
        reader = _Reader(sock)
        conn.upstream = ((host, port), sock, reader)
        return sock, reader, False

    @staticmethod
    def _probe(sock: socket.socket, reader: _Reader, head: bytes) -> bytes | None:
        """Send a bodiless request on a reused connection; its status line, or None if stale."""
        try:
            sock.sendall(head)
            line = reader.readline()
        except OSError:
            return None
        return line or None

    # -- CONNECT -------------------------------------------------------------------------------

    def _tunnel(self, conn: _Connection, target: str, headers: list[tuple[str, str]]) -> None:
        """Blind byte tunnel for CONNECT (HTTPS): logged, never faulted."""
        host, port = _split_host_port(target, 443)
        rec = self._new_record(conn, "CONNECT", target, target, headers)
        try:
            up = socket.create_connection((host, port), timeout=self.upstream_timeout)
        except OSError as error:
            rec.status, rec.error = 502, f"upstream connect failed: {error}"
            self._plain_response(conn, 502, f"faultproxy: {error}\n", True)
            return
        self._track(up, add=True)
        rec.status = 200
        client = conn.sock
        client.settimeout(None)
        up.settimeout(None)
        try:
            client.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            early = conn.reader.take_buffer()
            if early:
                up.sendall(early)
                rec.request_bytes += len(early)

            def pump_up() -> None:
                try:
                    while True:
                        data = client.recv(_BLOCK)
                        if not data:
                            break
                        up.sendall(data)
                        rec.request_bytes += len(data)
                except OSError:
                    pass
                with contextlib.suppress(OSError):
                    up.shutdown(socket.SHUT_WR)

            thread = threading.Thread(target=pump_up, name=f"faultproxy-{conn.id}-up", daemon=True)
            thread.start()
            try:
                while True:
                    data = up.recv(_BLOCK)
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
            self._track(up, add=False)
            up.close()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _still_open(sock: socket.socket) -> bool:
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


def _split_host_port(authority: str, default: int) -> tuple[str, int]:
    if authority.startswith("["):  # [IPv6]:port
        host, _, rest = authority[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default
    host, sep, port = authority.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return authority, default


def _check_fault_name(name: str) -> str:
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; expected one of {FAULTS}")
    return name


def _random_rule(name: str, rng: random.Random, rec: RequestRecord) -> Rule:
    """A rule for fault ``name`` with parameters drawn from ``rng`` (so reproducible)."""
    body = rec.request_content_length or 0
    if name == "reset":
        phase = rng.choice(("request", "headers", "response") if body else ("headers", "response"))
        after = rng.randrange(body) if phase == "request" and body else rng.randrange(65536)
        return Rule("reset", phase=phase, after_bytes=after, at_fraction=rng.random())
    if name == "status":
        status = rng.choice((500, 503, 503, 429, 408))
        retry_after = rng.choice((None, 0, 1)) if status in (503, 429) else None
        return Rule("status", status=status, retry_after=retry_after)
    if name == "stall":
        return Rule(
            "stall",
            seconds=rng.uniform(1.0, 5.0),
            after_bytes=rng.randrange(65536),
            at_fraction=rng.random(),
        )
    if name == "throttle":
        return Rule("throttle", bps=rng.choice((256 * 1024, 1024 * 1024, 4 * 1024 * 1024)))
    if name == "truncate":
        return Rule("truncate", nbytes=rng.randrange(65536), at_fraction=rng.random())
    return Rule(name)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run a proxy until SIGINT/SIGTERM; print its URL first, a fault summary on exit."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="listen address")
    parser.add_argument("--port", type=int, default=0, help="listen port (0: any free port)")
    parser.add_argument(
        "--random-rate", type=float, default=0.0, help="share of requests given a random fault"
    )
    parser.add_argument("--seed", type=int, default=None, help="makes random faults repeatable")
    parser.add_argument(
        "--random-faults",
        default=",".join(DEFAULT_RANDOM_FAULTS),
        help=f"comma-separated subset of {','.join(FAULTS)}",
    )
    parser.add_argument(
        "--max-faults-per-key",
        type=int,
        default=2,
        help="random faults per logical request (method, path, Range) at most",
    )
    parser.add_argument(
        "--throttle-bps", type=int, default=None, help="shared link bandwidth per direction"
    )
    parser.add_argument(
        "--rule",
        action="append",
        default=[],
        help='repeatable, e.g. --rule "fault=reset method=PUT url=partNumber=2 nth=1"',
    )
    parser.add_argument("--log", action="store_true", help="print each request to stderr")
    args = parser.parse_args(argv)

    proxy = FaultProxy(
        args.host,
        args.port,
        rules=args.rule,
        random_rate=args.random_rate,
        seed=args.seed,
        random_faults=[f for f in args.random_faults.split(",") if f],
        max_faults_per_key=args.max_faults_per_key,
        throttle_bps=args.throttle_bps,
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with proxy:
        print(proxy.url, flush=True)
        printed = 0
        while not done.wait(0.5):
            if args.log:
                records = proxy.requests
                for rec in records[printed:]:
                    if rec.duration is None:
                        break
                    print(_log_line(rec), file=sys.stderr, flush=True)
                    printed += 1
    total = len(proxy.requests)
    faulted = proxy.faults()
    print(f"faultproxy: {total} requests, {len(faulted)} faulted", file=sys.stderr)
    print(f"faultproxy: seed {proxy.seed}", file=sys.stderr)
    for method, url, label in faulted:
        print(f"  {label:<20} {method} {url}", file=sys.stderr)
    return 0


def _log_line(rec: RequestRecord) -> str:
    return (
        f"{rec.id} c{rec.connection} {rec.method} {rec.redacted_url} range={rec.range or '-'} "
        f"status={rec.status} up={rec.request_bytes} down={rec.response_bytes} "
        f"fault={rec.fault or '-'}" + (f" error={rec.error}" if rec.error else "")
    )


if __name__ == "__main__":
    sys.exit(main())
