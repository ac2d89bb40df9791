"""The client's S3 requests as the fault proxy sees them: which requests go to the stack's S3
(by its port), which part or range each one carries, and the fault settings the tests share."""

from __future__ import annotations

import re
from typing import Any

from tests.helpers.faultproxy import FaultProxy, RequestRecord
from tests.helpers.localstack import E2E_ENV, E2E_PART_SIZE

#: Per-request bandwidth of throttled S3 requests: a 256 KiB part or range takes ~0.25 s.
THROTTLE_BPS = 1024 * 1024
#: How long the proxy stalls a request: longer than any test, so only the client's stall
#: detection can end it (the proxy cuts it short when it stops).
STALL_SECONDS = 120

#: Parts per segment of the stack's uploads: segment n > 1 is the key ``<file>/<upload>/<n>``
#: and its URLs carry local part numbers (docs/CONTRACTS.md, "Segments").
SEGMENT_PARTS = int(E2E_ENV["UCS_SEGMENT_SIZE"]) // E2E_PART_SIZE
_UPLOAD_KEY = r"/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def s3_pattern(stack: dict[str, Any]) -> str:
    """Regex matching absolute URLs of the stack's S3 endpoint (any host name, its port)."""
    port = re.search(r":(\d+)/?$", stack["aws_endpoint_url"])
    assert port, stack["aws_endpoint_url"]
    return rf"^https?://[^/?]+:{port[1]}/"


def s3_records(proxy: FaultProxy, stack: dict[str, Any], method: str) -> list[RequestRecord]:
    """The ``method`` requests to the stack's S3 the proxy logged, in arrival order."""
    pattern = re.compile(s3_pattern(stack))
    return [r for r in proxy.requests if r.method == method and pattern.search(r.url)]


def part_number(record: RequestRecord) -> int:
    """The global part number of a part PUT: its segment's local number and the segment."""
    match = re.search(rf"{_UPLOAD_KEY}(?:/(\d+))?\?(?:.*&)?partNumber=(\d+)(?:&|$)", record.url)
    assert match, record.redacted_url
    return (int(match[1] or 1) - 1) * SEGMENT_PARTS + int(match[2])


def range_size(record: RequestRecord) -> int:
    """The size of a ranged GET's single closed byte range."""
    match = re.fullmatch(r"\s*bytes=(\d+)-(\d+)\s*", record.range or "")
    assert match, f"not a single closed byte range: {record.range!r}"
    return int(match[2]) - int(match[1]) + 1


def part_url(number: int) -> str:
    """Regex for the presigned URL of one (global) upload part: its segment's key and the
    local ``partNumber`` query parameter."""
    segment, local = divmod(number - 1, SEGMENT_PARTS)
    suffix = "" if segment == 0 else f"/{segment + 1}"
    return rf"{_UPLOAD_KEY}{suffix}\?(.*&)?partNumber={local + 1}(&|$)"
