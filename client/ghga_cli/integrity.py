"""Checksum helpers: ETag normalisation, streaming file hashes, DRS checksum choice."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

#: DRS checksum types we can verify, in order of preference -> hashlib name.
SUPPORTED_CHECKSUMS = (("md5", "md5"), ("sha-256", "sha256"), ("sha256", "sha256"))

READ_BLOCK = 8 * 1024 * 1024


def normalise_etag(value: str | None) -> str:
    """``"abc"``, ``W/"abc"``, ``ABC`` -> ``abc`` (S3 quotes ETags; compare without case)."""
    if not value:
        return ""
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"').strip().lower()


def choose_checksum(checksums: dict[str, str]) -> tuple[str, str, str] | None:
    """(DRS type, hashlib name, expected hex) of the best checksum we can verify, or None."""
    for drs_type, hashlib_name in SUPPORTED_CHECKSUMS:
        if checksums.get(drs_type):
            return drs_type, hashlib_name, checksums[drs_type].lower()
    return None


def new_hash(name: str) -> Any:
    if name == "md5":
        return hashlib.md5()
    return hashlib.new(name)


def file_digest(path: Path, name: str = "md5", block: int = READ_BLOCK) -> str:
    """Hex digest of a file, read sequentially in large blocks (bounded memory)."""
    digest = new_hash(name)
    buffer = bytearray(block)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as handle:
        while True:
            n = handle.readinto(buffer)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest()
