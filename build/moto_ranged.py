"""The local stack's threaded moto server (S3 and SQS), answering ranged GETs in O(range) and
honouring ``x-amz-copy-source-if-match`` on copies.

moto 5 answers ``GET`` with ``Range: bytes=a-b`` by reading the *whole* object out of the
key's spooled buffer (``FakeKey.value``) and slicing the copy: every range costs as much as
the object. Parallel ranged downloads, and the validation job's ranged reads, then crawl on
the local stack (``make demo`` downloaded 256 MiB at ~44 MiB/s with 4 MiB ranges; 10,000
ranges of a 625 MiB object would copy ~6 TB).

This module patches one thing before starting moto's own server: while moto handles a
``GET`` that carries a ``Range`` header, ``FakeKey.value`` is a view that knows the object's
length and, when moto's range code slices it, reads just those bytes from the spooled buffer
(under the key's lock, as moto's own read does). Everything else -- headers, status codes,
416 for unsatisfiable ranges, multi-range and unparsable headers answered with the whole
object -- is moto's unchanged code. ``tests/e2e/test_local_stack_ranges.py`` checks the bytes.

moto 5 also ignores ``x-amz-copy-source-if-match`` on ``CopyObject`` and ``UploadPartCopy``
(S3 and Ceph RGW answer 412 when the source's ETag differs). Every server-side copy of the
service is conditional on the source's ETag, so :func:`patch_copy_conditions` makes moto
check it too: the tests of "a source replaced between plan and copy" would otherwise pass
on moto without proving anything. The server tests apply it to the in-process moto as well.

Usage (what ``build/stack.py`` runs): ``python build/moto_ranged.py -H 127.0.0.1 -p 5050``.
"""

from __future__ import annotations

import sys
import threading
from typing import Any
from urllib.parse import unquote, urlparse

from moto.core.botocore_stubber import BotocoreStubber
from moto.s3 import models as s3_models
from moto.s3 import responses as s3_responses
from moto.s3.exceptions import PreconditionFailed

_request = threading.local()


class RangedValue:
    """Stands in for ``FakeKey.value`` during a ranged GET: ``len()`` and slices read only
    the bytes asked for."""

    def __init__(self, key: Any) -> None:
        self.key = key

    def __len__(self) -> int:
        return int(self.key.size)

    def __bool__(self) -> bool:
        return len(self) > 0

    def __getitem__(self, item: slice) -> bytes:
        if not isinstance(item, slice):
            raise TypeError("only slices of an object's bytes are read")
        start, stop, step = item.indices(len(self))
        if step != 1:
            raise ValueError("only contiguous ranges are read")
        with self.key.lock:
            self.key._value_buffer.seek(start)
            return bytes(self.key._value_buffer.read(max(0, stop - start)))

    def whole(self) -> bytes:
        """The whole object (moto answers some range headers with all of it)."""
        return bytes(_VALUE.fget(self.key))


_VALUE: property = s3_models.FakeKey.value
_KEY_RESPONSE = s3_responses.S3Response.key_response


def _value(key: Any) -> Any:
    if getattr(_request, "ranged", False):
        return RangedValue(key)
    return _VALUE.fget(key)


def _key_response(self: Any, request: Any, full_url: str, headers: Any) -> Any:
    ranged = request.method == "GET" and bool(request.headers.get("range"))
    _request.ranged = ranged
    try:
        status, response_headers, body = _KEY_RESPONSE(self, request, full_url, headers)
    finally:
        _request.ranged = False
    if isinstance(body, RangedValue):  # not sliced by moto: it answers with the whole object
        body = body.whole()
    return status, response_headers, body


_COPY_OBJECT = s3_responses.S3Response.copy_object
_UPLOAD_PART_COPY = s3_responses.S3Response.upload_part_copy


def _check_copy_source(response: Any) -> None:
    """412 ``PreconditionFailed`` when the copy source's ETag is not the one asked for."""
    wanted = response.headers.get("x-amz-copy-source-if-match")
    if not wanted:
        return
    source = response.headers.get("x-amz-copy-source")
    if isinstance(source, bytes):
        source = source.decode("utf-8")
    bucket, key = unquote(urlparse(source).path).lstrip("/").split("/", 1)
    found = response.backend.get_object(bucket, key)
    if found is None or found.etag.strip('"') != str(wanted).strip('"'):
        raise PreconditionFailed(failed_condition="x-amz-copy-source-If-Match")


def _copy_object(self: Any) -> Any:
    _check_copy_source(self)
    return _COPY_OBJECT(self)


def _upload_part_copy(self: Any) -> Any:
    _check_copy_source(self)
    return _UPLOAD_PART_COPY(self)


def patch_copy_conditions() -> None:
    """Make moto's copies honour ``x-amz-copy-source-if-match`` (idempotent)."""
    s3_responses.S3Response.copy_object = _copy_object  # type: ignore[method-assign]
    s3_responses.S3Response.upload_part_copy = _upload_part_copy  # type: ignore[method-assign]


_SERIAL = threading.RLock()
_PROCESS_REQUEST = BotocoreStubber.process_request


def _process_request_serially(self: Any, request: Any) -> Any:
    with _SERIAL:
        return _PROCESS_REQUEST(self, request)


def serialize_in_process_requests() -> None:
    """Let in-process moto (``mock_aws``) handle one request at a time (idempotent).

    Its backends hold plain dicts without locks, while the services call it from several
    threads (segments completed in parallel, the assembly beside the hashing): concurrent
    updates of one DynamoDB item or one multipart upload could interleave inside moto and
    fail in ways no real store does. A real store serialises each item's writes itself.
    """
    BotocoreStubber.process_request = _process_request_serially  # type: ignore[method-assign]


def patch() -> None:
    """Make moto's S3 read only the requested range of a ranged GET and honour copy
    conditions (idempotent)."""
    s3_models.FakeKey.value = property(_value, _VALUE.fset)  # type: ignore[method-assign]
    s3_responses.S3Response.key_response = _key_response  # type: ignore[method-assign]
    patch_copy_conditions()


def main(argv: list[str] | None = None) -> None:
    patch()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
