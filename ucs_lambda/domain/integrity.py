"""Checksum rules used when confirming an upload and when validating it.

S3's ETag of a part uploaded with a single PUT is the hex MD5 of the part's bytes; the ETag of a
completed multipart object is ``md5(concat(binary part md5s))-N``. The validation job uses these
facts to tie the stored object to the client's own per-part MD5s and its whole-file MD5, and,
for objects small enough to read, computes the real MD5.
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
    """What the validation job knows about one uploaded object."""

    registered_size: int
    registered_md5: str
    object_size: int
    object_etag: str
    s3_part_etags: list[str]
    client_part_md5s: list[str]
    client_md5: str | None
    computed_md5: str | None


def assess(ev: Evidence) -> Verdict:
    """Decide accepted/rejected from the evidence; the first failed check gives the reason.

    Checks: object size equals the registered size; S3's part ETags equal the client's part
    MD5s (when the client sent them); the client's whole-file MD5 equals the registered MD5
    (when sent); the object's ETag matches its parts (multipart objects); the MD5 computed by
    reading the object equals the registered MD5 (when the object was small enough to read).
    """
    registered_md5 = ev.registered_md5.lower()
    if ev.object_size != ev.registered_size:
        return Verdict(
            False,
            f"size mismatch: object has {ev.object_size} bytes, "
            f"registered size is {ev.registered_size}",
        )
    etags = [e.lower() for e in ev.s3_part_etags]
    if ev.client_part_md5s and [m.lower() for m in ev.client_part_md5s] != etags:
        return Verdict(False, "checksum mismatch: part MD5s differ from the parts S3 stored")
    if ev.client_md5 is not None and ev.client_md5.lower() != registered_md5:
        return Verdict(False, "checksum mismatch: client MD5 differs from the registered MD5")
    etag = ev.object_etag.lower()
    if "-" in etag and etags and all(is_md5_hex(e) for e in etags):
        if etag != multipart_etag(etags):
            return Verdict(False, "checksum mismatch: object ETag does not match its parts")
    elif "-" not in etag and is_md5_hex(etag) and etag != registered_md5:
        # A single-part (non-multipart) object's ETag is its MD5.
        return Verdict(False, "checksum mismatch: object MD5 differs from the registered MD5")
    if ev.computed_md5 is not None and ev.computed_md5.lower() != registered_md5:
        return Verdict(False, "checksum mismatch: object MD5 differs from the registered MD5")
    if ev.computed_md5 is None and ev.client_md5 is None:
        return Verdict(
            True,
            "accepted on size and part checksums only: the object was too large to re-read "
            "and the client sent no whole-file MD5",
        )
    return Verdict(True, None)
