"""The proxy server: :class:`FaultProxy` listens, serves each client connection in a thread,
logs every request and hands it to an :class:`~.exchange.Exchange` with the fault the
:class:`~.rules.FaultPlan` chose for it."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Sequence

from .connection import Connection, Sockets
from .exchange import Exchange, Request
from .pacing import RateLimiter
from .records import RequestRecord
from .rules import DEFAULT_RANDOM_FAULTS, FaultPlan, Rule
from .wire import (
    Abort,
    FaultDone,
    Headers,
    header,
    plain_response,
    read_headers,
    split_host_port,
    split_target,
)


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

    Subclasses may wrap :meth:`_exchange`, which serves one request (tests/e2e/test_ceph_e2e.py
    tampers with or delays chosen requests there).
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
        self.plan = FaultPlan(rules, random_rate, seed, random_faults, max_faults_per_key)
        self.upstream_timeout = upstream_timeout
        self.client_timeout = client_timeout
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._threads: set[threading.Thread] = set()
        self._sockets = Sockets()
        self._next_conn = 0
        self._next_request = 0
        self._up_link: RateLimiter | None = None
        self._down_link: RateLimiter | None = None
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
            threads = list(self._threads)
        for sock in self._sockets.snapshot():
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

    @property
    def seed(self) -> int:
        """The random mode's seed (drawn when none was given: replay a run with it)."""
        return self.plan.seed

    def add_rule(self, rule: Rule | str) -> Rule:
        """Append a rule (lowest priority) while running; returns it (its ``matched`` counts)."""
        return self.plan.add_rule(rule)

    def clear_rules(self) -> None:
        self.plan.clear_rules()

    @property
    def rules(self) -> list[Rule]:
        return self.plan.rules

    def set_throttle(self, bps: int | None) -> None:
        """Set or remove (None) the shared link bandwidth, per direction, in bytes per second."""
        if bps is not None and bps <= 0:
            raise ValueError("throttle_bps must be positive")
        self._up_link = RateLimiter(bps) if bps else None
        self._down_link = RateLimiter(bps) if bps else None

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
            if fault is not None and not _fault_matches(rec.fault, fault):
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
        return self._sockets.origin_connects

    def reset_log(self) -> None:
        """Forget logged requests and random-mode history (rule counters are kept)."""
        with self._lock:
            self._records.clear()
        self.plan.forget_history()

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

    def _serve(self, cid: int, sock: socket.socket) -> None:
        """Serve the requests of one client connection until it ends."""
        conn = Connection(cid, sock, self._sockets, self.upstream_timeout)
        try:
            while not self._stop.is_set():
                line = conn.reader.readline()
                if not line:
                    break
                if line in (b"\r\n", b"\n"):
                    continue  # tolerated between requests (RFC 9112 2.2)
                parts = line.decode("latin-1").split()
                if len(parts) != 3:
                    plain_response(conn.sock, 400, "malformed request line\n", close=True)
                    break
                method, target, version = parts
                headers = read_headers(conn.reader)
                if method.upper() == "CONNECT":
                    host, port = split_host_port(target, 443)
                    conn.tunnel(
                        self._new_record(conn, "CONNECT", target, target, headers), host, port
                    )
                    break
                if not self._handle(conn, method, target, version, headers):
                    break
        except (Abort, OSError):
            pass
        finally:
            conn.close_upstream()
            self._sockets.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _new_record(
        self, conn: Connection, method: str, url: str, path: str, headers: Headers
    ) -> RequestRecord:
        length = header(headers, "content-length")
        with self._lock:
            self._next_request += 1
            rec = RequestRecord(
                id=self._next_request,
                connection=conn.id,
                method=method.upper(),
                url=url,
                path=path,
                range=header(headers, "range"),
                request_content_length=int(length) if length and length.isdigit() else None,
                started=time.monotonic(),
            )
            self._records.append(rec)
        return rec

    def _handle(
        self, conn: Connection, method: str, target: str, version: str, headers: Headers
    ) -> bool:
        """Serve one request; True if the client connection may carry another one."""
        if not target.lower().startswith("http://"):
            # Not a proxy request (origin-form or https:// without CONNECT): refuse clearly.
            plain_response(
                conn.sock, 400, "faultproxy: expected an absolute http:// URI\n", True, method
            )
            return False
        host, port, path = split_target(target)
        rec = self._new_record(conn, method, target, path, headers)
        try:
            return self._exchange(conn, rec, method, host, port, path, version, headers)
        except FaultDone:
            raise
        except BaseException as error:
            rec.error = rec.error or f"{type(error).__name__}: {error}"
            raise
        finally:
            rec.duration = time.monotonic() - rec.started

    def _exchange(
        self,
        conn: Connection,
        rec: RequestRecord,
        method: str,
        host: str,
        port: int,
        path: str,
        version: str,
        headers: Headers,
    ) -> bool:
        """Forward one request with the fault the plan chooses for it (see :mod:`.exchange`)."""
        rule, rng = self.plan.choose(rec)
        request = Request(method, host, port, path, version, headers)
        links = (self._up_link, self._down_link)
        return Exchange(conn, rec, request, rule, rng, links, self._stop).run()


def _fault_matches(label: str | None, wanted: str) -> bool:
    """Whether a logged fault label is ``wanted`` (a prefix by words; "" means no fault)."""
    if wanted == "":
        return label is None
    return label is not None and bool(re.match(rf"{re.escape(wanted)}(\b|$)", label))
