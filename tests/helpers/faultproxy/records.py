"""The proxy's request log: what it saw of each request, and the stable identity of a request."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

# Query parameters that change between runs of the same logical request (signatures, dates,
# random upload ids); left out of the key that random mode and max_faults_per_key use, so a seed
# gives the same faults on every run.
_VOLATILE_PARAMS = re.compile(
    r"^(x-amz-.*|signature|expires|awsaccesskeyid|uploadid|x-id)$", re.IGNORECASE
)

# Query parameters that reveal nothing secret; redact_url() keeps them by default.
_SAFE_PARAMS = ("partNumber", "uploadId", "uploads", "versionId", "x-id")


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


def log_line(rec: RequestRecord) -> str:
    """One line about a finished request, for ``--log`` (URL redacted)."""
    return (
        f"{rec.id} c{rec.connection} {rec.method} {rec.redacted_url} range={rec.range or '-'} "
        f"status={rec.status} up={rec.request_bytes} down={rec.response_bytes} "
        f"fault={rec.fault or '-'}" + (f" error={rec.error}" if rec.error else "")
    )
