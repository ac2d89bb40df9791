"""The local stack's threaded moto server (S3 and SQS), answering ranged GETs in O(range).

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

Usage (what ``build/stack.py`` runs): ``python build/moto_ranged.py -H 127.0.0.1 -p 5050``.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from moto.s3 import models as s3_models
from moto.s3 import responses as s3_responses

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


def patch() -> None:
    """Make moto's S3 read only the requested range of a ranged GET (idempotent)."""
    s3_models.FakeKey.value = property(_value, _VALUE.fset)  # type: ignore[method-assign]
    s3_responses.S3Response.key_response = _key_response  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    patch()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
