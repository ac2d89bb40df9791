"""A small JSON-over-HTTP client built on pycurl, with retries.

Why pycurl and not urllib: the API calls and the S3 transfers then share one HTTP stack, so
proxies (libcurl reads ``http_proxy``/``HTTPS_PROXY``/``NO_PROXY``), TLS and IPv6 behave the same
for both. One easy handle is reused for all calls, which keeps the connection to the API alive.

Retried: connection errors and timeouts, 5xx, 408 and 429 (honouring ``Retry-After``). Every other
answer is returned to the caller, which maps error bodies to exceptions (``api.py``). A 401 is
retried once when the :class:`TokenSource` can renew the token (it re-reads ``--token-file``:
a batch that runs for hours outlives its token). One client serves one thread (a pycurl handle is
not thread-safe); the clients of a run share one token source and one interrupt flag, and an
interrupt ends a request or a retry wait at once.
"""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ghga_cli.curl import HeaderCollector, apply_common_options, pycurl_module, redact_url
from ghga_cli.errors import Interrupted, NetworkError
from ghga_cli.retry import FATAL_CURL_ERRORS, RETRYABLE_STATUSES, RetryPolicy, parse_retry_after

if TYPE_CHECKING:
    from ghga_cli.transfer.engine import InterruptFlag

#: Largest API response accepted (protects against a misconfigured URL serving a huge file).
MAX_BODY = 64 * 1024 * 1024


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        """The body as JSON, or None if it is empty or not JSON."""
        if not self.body:
            return None
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None


class TokenSource:
    """The bearer token of a run, shared by its clients; renewable from ``--token-file``.

    ``read`` turns the file's text into a token (``cli.read_token`` checks its form). Every
    token seen is kept in :attr:`seen`, so output can be scrubbed of all of them.
    """

    def __init__(
        self,
        token: str | None,
        path: Path | None = None,
        read: Callable[[Path], str] | None = None,
    ) -> None:
        self._token = token
        self._path = path
        self._read = read
        self._lock = threading.Lock()
        self.seen: list[str] = [token] if token else []
        self.renewals = 0

    def current(self) -> str | None:
        with self._lock:
            return self._token

    def renew(self, rejected: str | None) -> bool:
        """Re-read the token file after ``rejected`` got a 401; True if the token changed."""
        if self._path is None or self._read is None:
            return False
        with self._lock:
            if self._token != rejected:
                return True  # another thread renewed it meanwhile
            try:
                fresh = self._read(self._path)
            except Exception:  # an unreadable file: keep failing with the 401
                return False
            if not fresh or fresh == rejected:
                return False
            self._token = fresh
            self.seen.append(fresh)
            self.renewals += 1
            return True


class HttpClient:
    """JSON requests with bearer authentication and retries."""

    def __init__(
        self,
        token: str | TokenSource | None,
        policy: RetryPolicy,
        *,
        stall_timeout: float = 60.0,
        request_timeout: float = 300.0,
        log: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] | None = None,
        interrupt: InterruptFlag | None = None,
    ):
        self.tokens = token if isinstance(token, TokenSource) else TokenSource(token)
        self.policy = policy
        self.stall_timeout = stall_timeout
        self.request_timeout = request_timeout
        self._log = log or (lambda _msg: None)
        self._interrupt = interrupt
        if sleep is None:
            sleep = interrupt.sleep if interrupt is not None else time.sleep
        self._sleep = sleep
        self._curl: Any = None
        self.retries = 0  # retries done so far (for the summary)

    def close(self) -> None:
        if self._curl is not None:
            self._curl.close()
            self._curl = None

    def request(self, method: str, url: str, body: Any = None, *, auth: bool = True) -> Response:
        """Send ``method url`` with a JSON ``body``; retry transient failures; return the answer.

        Raises NetworkError when the retries are used up on connection errors; returns the last
        response when they are used up on retryable statuses (the caller maps it).
        """
        attempt = 0
        renewed = False
        while True:
            attempt += 1
            token = self.tokens.current() if auth else None
            try:
                response = self._once(method, url, body, token)
            except _CurlFailure as failure:
                if failure.fatal or not self.policy.can_retry(attempt):
                    raise NetworkError(
                        f"cannot reach {redact_url(url)}: {failure.message}",
                        "check --api-url, the network and proxy settings"
                        if failure.fatal
                        else None,
                    ) from None
                wait = self.policy.delay(attempt)
                self._log(
                    f"{method} {redact_url(url)} failed ({failure.message}); "
                    f"retrying in {wait:.1f} s"
                )
            else:
                if response.status == 401 and auth and not renewed and self.tokens.renew(token):
                    renewed = True
                    self._log("the API refused the token; retrying with the renewed token file")
                    continue
                if response.status not in RETRYABLE_STATUSES or not self.policy.can_retry(attempt):
                    return response
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                wait = self.policy.delay(attempt, retry_after)
                self._log(
                    f"{method} {redact_url(url)} answered HTTP {response.status}; "
                    f"retrying in {wait:.1f} s"
                )
            self.retries += 1
            self._sleep(wait)

    def _once(self, method: str, url: str, body: Any, token: str | None) -> Response:
        if self._interrupt is not None and self._interrupt.is_set:
            raise Interrupted()
        pycurl = pycurl_module()
        if self._curl is None:
            self._curl = pycurl.Curl()
        curl = self._curl
        curl.reset()
        apply_common_options(curl, stall_timeout=self.stall_timeout)
        curl.setopt(pycurl.TIMEOUT, max(1, int(self.request_timeout)))
        curl.setopt(pycurl.URL, url)
        headers = ["Accept: application/json", "Expect:"]
        if token:
            headers.append(f"Authorization: Bearer {token}")
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers.append("Content-Type: application/json")
            curl.setopt(pycurl.POSTFIELDS, payload)
            curl.setopt(pycurl.POSTFIELDSIZE_LARGE, len(payload))
            if method != "POST":
                curl.setopt(pycurl.CUSTOMREQUEST, method)
        elif method == "GET":
            curl.setopt(pycurl.HTTPGET, 1)
        else:
            curl.setopt(pycurl.CUSTOMREQUEST, method)
        curl.setopt(pycurl.HTTPHEADER, headers)
        sink = _LimitedBuffer(MAX_BODY)
        collector = HeaderCollector()
        curl.setopt(pycurl.WRITEFUNCTION, sink.write)
        curl.setopt(pycurl.HEADERFUNCTION, collector)
        interrupt = self._interrupt
        if interrupt is not None:
            # libcurl calls this at least once a second: a Ctrl+C ends a slow request at once.
            curl.setopt(pycurl.NOPROGRESS, 0)
            curl.setopt(pycurl.XFERINFOFUNCTION, lambda *_: 1 if interrupt.is_set else 0)
        try:
            curl.perform()
        except pycurl.error as exc:
            code, message = exc.args[0], str(exc.args[1]) if len(exc.args) > 1 else str(exc)
            if interrupt is not None and interrupt.is_set:
                raise Interrupted() from None
            if sink.overflow:
                raise _CurlFailure(
                    f"response larger than {MAX_BODY} bytes; is --api-url right?", fatal=True
                ) from None
            fatal = code in FATAL_CURL_ERRORS
            raise _CurlFailure(message or f"libcurl error {code}", fatal) from None
        status = int(curl.getinfo(pycurl.RESPONSE_CODE))
        return Response(status=status, headers=collector.headers, body=sink.getvalue())


class _CurlFailure(Exception):
    def __init__(self, message: str, fatal: bool):
        super().__init__(message)
        self.message = message
        self.fatal = fatal


class _LimitedBuffer:
    """WRITEFUNCTION target that refuses more than ``limit`` bytes."""

    def __init__(self, limit: int):
        self._buf = io.BytesIO()
        self._limit = limit
        self.overflow = False

    def write(self, data: bytes) -> int | None:
        if self._buf.tell() + len(data) > self._limit:
            self.overflow = True
            return 0
        self._buf.write(data)
        return None

    def getvalue(self) -> bytes:
        return self._buf.getvalue()
