"""pycurl loading and the pieces of libcurl set-up shared by the API client and the engine.

pycurl is imported lazily through :func:`pycurl_module` so ``ghga-cli --help`` works and a missing
pycurl produces one clear line instead of an ImportError traceback. Proxies need nothing here:
libcurl reads ``http_proxy``, ``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` by itself.
"""

from __future__ import annotations

import os
import ssl
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ghga_cli import __version__
from ghga_cli.errors import EXIT_FAILURE, CliError

USER_AGENT = f"ghga-cli/{__version__}"

_pycurl: Any = None


def pycurl_module() -> Any:
    """Return the pycurl module, or raise a CliError telling how to install it."""
    global _pycurl
    if _pycurl is None:
        try:
            import pycurl
        except ImportError as exc:
            raise CliError(
                f"pycurl is required but cannot be imported ({exc})",
                "install it with: pip install pycurl",
                exit_code=EXIT_FAILURE,
            ) from None
        _pycurl = pycurl
    return _pycurl


def redact_url(url: str) -> str:
    """``scheme://host/path`` without query string, fragment or user info.

    Presigned URLs carry their signature in the query string; it must never reach a terminal,
    a log or the JSON summary.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


#: Environment variables naming a CA bundle (PEM file), in order of precedence.
CA_BUNDLE_ENV = ("GHGA_CLI_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
#: Where operating systems keep their CA bundle (Debian/Ubuntu, RHEL/Fedora, openSUSE, macOS/BSD).
_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
)
_UNSET = object()
_ca_bundle: Any = _UNSET


def ca_bundle() -> str | None:
    """The CA bundle to verify TLS with, or None to keep libcurl's default.

    Why: the pycurl wheels carry a libcurl built on RHEL whose default bundle path
    (``/etc/pki/tls/certs/ca-bundle.crt``) does not exist on Debian, Ubuntu or macOS, which
    makes every HTTPS request fail. Order: an explicit environment variable, the bundle Python's
    own ``ssl`` module uses, then well-known system locations.
    """
    global _ca_bundle
    if _ca_bundle is not _UNSET:
        return _ca_bundle
    candidates = [os.environ.get(name) for name in CA_BUNDLE_ENV]
    paths = ssl.get_default_verify_paths()
    candidates += [paths.cafile, paths.openssl_cafile, *_SYSTEM_BUNDLES]
    _ca_bundle = next((c for c in candidates if c and os.path.isfile(c)), None)
    return _ca_bundle


def apply_common_options(curl: Any, *, stall_timeout: float, connect_timeout: float = 30.0) -> None:
    """Options every handle gets: no signals (threads), timeouts, stall detection, no redirects."""
    pycurl = pycurl_module()
    bundle = ca_bundle()
    if bundle:
        curl.setopt(pycurl.CAINFO, bundle)
    if sys.platform == "win32" and hasattr(pycurl, "SSLOPT_NATIVE_CA"):
        # Also trust the Windows certificate store (company proxies install their CA there).
        curl.setopt(pycurl.SSL_OPTIONS, pycurl.SSLOPT_NATIVE_CA)
    curl.setopt(pycurl.NOSIGNAL, 1)
    curl.setopt(pycurl.USERAGENT, USER_AGENT)
    curl.setopt(pycurl.CONNECTTIMEOUT, max(1, int(min(connect_timeout, stall_timeout))))
    # Stall detection: abort when less than 1 KiB/s moved for stall_timeout seconds.
    curl.setopt(pycurl.LOW_SPEED_LIMIT, 1024)
    curl.setopt(pycurl.LOW_SPEED_TIME, max(1, int(stall_timeout)))
    curl.setopt(pycurl.FOLLOWLOCATION, 0)
    curl.setopt(pycurl.TCP_KEEPALIVE, 1)
    curl.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)


class HeaderCollector:
    """HEADERFUNCTION target: keeps the status and headers of the *final* response.

    libcurl passes each header line separately; interim ``1xx`` responses and their headers are
    discarded. ``on_complete`` (if given) is called once the final header block ended and may
    return ``False`` to abort the transfer before any body byte is written (used by ranged
    downloads so that a wrong answer never lands in the output file).
    """

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.complete = False
        self.on_complete: Any = None
        self.abort_reason: str | None = None

    def reset(self) -> None:
        self.status = None
        self.headers = {}
        self.complete = False
        self.abort_reason = None

    def __call__(self, line: bytes) -> int | None:
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text.startswith("HTTP/"):
            fields = text.split(" ", 2)
            try:
                self.status = int(fields[1])
            except (IndexError, ValueError):
                self.status = None
            self.headers = {}
            self.complete = False
            return None
        if text == "":
            if self.status is not None and 100 <= self.status < 200:
                return None  # end of an interim response; the real one follows
            self.complete = True
            if self.on_complete is not None and self.on_complete(self) is False:
                return 0  # abort: libcurl reports CURLE_WRITE_ERROR, nothing was written
            return None
        name, sep, value = text.partition(":")
        if sep:
            self.headers[name.strip().lower()] = value.strip()
        return None

    def get(self, name: str) -> str | None:
        return self.headers.get(name.lower())
