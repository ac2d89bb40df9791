"""Resumable MD5/SHA-256 (ucs_lambda.domain.digests): equal to hashlib across saved states,
and refusing to work whenever a stored state or the library does not behave as assumed."""

from __future__ import annotations

import ctypes
import hashlib
import os
import random
from dataclasses import replace
from typing import Any

import pytest

from ucs_lambda.domain import digests
from ucs_lambda.domain.digests import (
    MD5,
    SHA256,
    DigestUnavailable,
    ResumableHash,
    StateMismatch,
    pack,
    unpack,
)


def test_the_library_passed_its_self_test_here() -> None:
    digests.require()


@pytest.mark.parametrize("seed", range(5))
def test_digests_resumed_at_random_points_equal_hashlib(seed: int) -> None:
    rng = random.Random(seed)
    data = os.urandom(rng.randrange(1, 3 << 20))
    md5, sha256, offset = ResumableHash(MD5), ResumableHash(SHA256), 0
    while offset < len(data):
        step = rng.choice([1, 63, 64, 65, 4096, rng.randrange(1, 1 << 20)])
        chunk = data[offset : offset + step]
        md5.update(chunk)
        sha256.update(chunk)
        offset += len(chunk)
        # what the next job invocation does: restore from the stored blob
        md5, sha256 = unpack(pack(md5, sha256), offset)
    assert md5.hexdigest() == hashlib.md5(data).hexdigest()
    assert sha256.hexdigest() == hashlib.sha256(data).hexdigest()
    assert md5.length == sha256.length == len(data)


def test_hexdigest_does_not_end_the_hash() -> None:
    h = ResumableHash(MD5)
    h.update(b"abc")
    assert h.hexdigest() == hashlib.md5(b"abc").hexdigest()
    h.update(b"def")
    assert h.hexdigest() == hashlib.md5(b"abcdef").hexdigest()


def test_a_state_covering_other_bytes_than_claimed_is_refused() -> None:
    md5, sha256 = ResumableHash(MD5), ResumableHash(SHA256)
    md5.update(b"x" * 1000)
    sha256.update(b"x" * 1000)
    blob = pack(md5, sha256)
    for claimed in (0, 999, 1001, 1000 + 2**32):
        with pytest.raises(StateMismatch):
            unpack(blob, claimed)
    with pytest.raises(StateMismatch):
        unpack(b"\x02" + blob[1:], 1000)  # unknown format
    with pytest.raises(StateMismatch):
        unpack(blob[:-1], 1000)
    with pytest.raises(StateMismatch):  # the two states of different lengths
        sha256.update(b"y")
        unpack(pack(md5, sha256), 1000)


class _WrongLibrary:
    """A "libcrypto" whose functions do not do what the layout assumes (wrong build)."""

    def __init__(self, real: Any, broken: str) -> None:
        self.real, self.broken = real, broken

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.real, name)
        if name != self.broken:
            return fn

        def wrong(*args: Any) -> int:
            if name.endswith("_Update"):  # hashes one byte less than asked
                ctx, data, size = args
                return int(fn(ctx, data, max(0, size - 1)))
            return int(fn(*args))

        return wrong


@pytest.mark.parametrize("broken", ["MD5_Update", "SHA256_Update"])
def test_the_self_test_refuses_a_library_that_hashes_wrongly(broken: str) -> None:
    with pytest.raises((DigestUnavailable, StateMismatch)):
        digests.self_test(_WrongLibrary(digests._backend(), broken))


def test_a_context_larger_than_assumed_is_detected() -> None:
    """If OpenSSL's struct were larger than the size assumed, Init would write past it."""
    too_small = replace(MD5, ctx_size=MD5.ctx_size - 8)
    with pytest.raises(DigestUnavailable):
        ResumableHash(too_small)


def test_a_misplaced_counter_is_detected() -> None:
    wrong = replace(SHA256, counter_offset=SHA256.counter_offset + 8, num_offset=0)
    h = ResumableHash(SHA256)
    h.update(b"z" * 100)
    with pytest.raises(StateMismatch):
        ResumableHash(wrong, h.state(), 100)


def test_update_releases_the_gil() -> None:
    """ctypes calls (CDLL, not PyDLL) run without the GIL: MD5 and SHA-256 can overlap."""
    lib = digests._backend()
    assert isinstance(lib, ctypes.CDLL) and not isinstance(lib, ctypes.PyDLL)


def test_a_failed_self_test_stops_every_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digests, "_verified", None)
    monkeypatch.setattr(digests, "_failure", DigestUnavailable("self-test failed: test"))
    with pytest.raises(DigestUnavailable):
        digests.require()
    with pytest.raises(DigestUnavailable):
        ResumableHash(MD5)
