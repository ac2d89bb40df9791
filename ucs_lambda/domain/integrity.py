"""Checksum rules used when confirming an upload and when validating it.

The validation job accepts an object only when its size and the MD5 the server computes by
reading every byte of it equal the registered ones (:func:`judge_digest`). Before reading, it
looks at the cheap evidence (:func:`precheck`): S3's ETag of a part uploaded with a single PUT
is the hex MD5 of the part's bytes, and the ETag of a completed multipart object is
``md5(concat(binary part md5s))-N``, which ties the stored object to the client's per-part
MD5s; the client's whole-file MD5, when sent, must equal the registered one. Such evidence can
reject early; it never accepts.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_MD5_RE = re.compile(r"^[0-9a-f]{32}$")


def is_md5_hex(value: object) -> bool:
    """True for a 32-character lower- or upper-case hex string."""
    return isinstance(value, str) and _MD5_RE.match(value.lower()) is not None


def unquote_etag(etag: str | None) -> str:
    """S3 returns ETags in double quotes; the API and the database hold them bare."""
    return (etag or "").strip().strip('"')


def multipart_etag(part_md5s: list[str]) -> str:
    """The ETag S3 gives an object assembled from parts with these MD5s."""
    digest = hashlib.md5(b"".join(bytes.fromhex(m) for m in part_md5s)).hexdigest()
    return f"{digest}-{len(part_md5s)}"


@dataclass(frozen=True)
class Verdict:
    """Outcome of validation: accept or reject, with a reason (also stored as status_reason)."""

    accepted: bool
    reason: str | None = None


@dataclass(frozen=True)
class Evidence:
    """What the validation job knows about one uploaded file before reading it.

    ``segments`` holds, per stored segment in order, the segment object's ETag and the ETags
    of its parts (an upload is one or more segments, domain/segments.py).
    """

    registered_size: int
    registered_md5: str
    object_size: int
    segments: list[tuple[str, list[str]]]
    client_part_md5s: list[str]
    client_md5: str | None


def precheck(ev: Evidence) -> Verdict | None:
    """A rejection the evidence already proves, or None: then the bytes must be read.

    Checks, in order: the stored size equals the registered size; the client's part MD5s
    (when sent) equal the ETags of the parts S3 stored; the client's whole-file MD5 (when
    sent) equals the registered MD5; each segment's ETag matches its parts (multipart
    objects) or, for a file stored as a single PUT object, equals the registered MD5. Every
    reason names both values.
    """
    registered_md5 = ev.registered_md5.lower()
    if ev.object_size != ev.registered_size:
        return Verdict(
            False,
            f"size mismatch: the stored object has {ev.object_size} bytes, "
            f"the registered size is {ev.registered_size} bytes",
        )
    etags = [e.lower() for _, parts in ev.segments for e in parts]
    client_parts = [m.lower() for m in ev.client_part_md5s]
    if client_parts and client_parts != etags:
        if len(client_parts) != len(etags):
            return Verdict(
                False,
                f"checksum mismatch: the client sent MD5s of {len(client_parts)} parts, "
                f"S3 stored {len(etags)} parts",
            )
        n, theirs, ours = next(
            (i, c, e) for i, (c, e) in enumerate(zip(client_parts, etags), 1) if c != e
        )
        return Verdict(
            False,
            f"checksum mismatch: part {n}: the client's MD5 is {theirs}, "
            f"the part S3 stored has MD5 {ours}",
        )
    if ev.client_md5 is not None and ev.client_md5.lower() != registered_md5:
        return Verdict(
            False,
            f"checksum mismatch: the client's MD5 {ev.client_md5.lower()} differs from the "
            f"registered MD5 {registered_md5}",
        )
    for segment_etag, segment_parts in ev.segments:
        etag = segment_etag.lower()
        parts = [e.lower() for e in segment_parts]
        if "-" in etag and parts and all(is_md5_hex(e) for e in parts):
            expected = multipart_etag(parts)
            if etag != expected:
                return Verdict(
                    False,
                    f"checksum mismatch: the object's ETag {etag} does not match its parts "
                    f"(expected {expected})",
                )
        single_put = len(ev.segments) == 1 and "-" not in etag and is_md5_hex(etag)
        if single_put and etag != registered_md5:  # a single-PUT object's ETag is its MD5
            return Verdict(False, _md5_mismatch(etag, registered_md5))
    return None


def judge_digest(computed_md5: str, registered_md5: str) -> Verdict:
    """The verdict on an object whose every byte the server hashed (size already checked)."""
    if computed_md5.lower() != registered_md5.lower():
        return Verdict(False, _md5_mismatch(computed_md5.lower(), registered_md5.lower()))
    return Verdict(True, None)


def _md5_mismatch(computed: str, registered: str) -> str:
    return (
        f"checksum mismatch: the stored object's MD5 (computed by the server) is {computed}, "
        f"the registered MD5 is {registered}"
    )
