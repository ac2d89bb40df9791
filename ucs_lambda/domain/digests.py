"""Resumable MD5 and SHA-256: hash states that can be saved, stored and continued elsewhere.

Why this exists: the validation job hashes every uploaded object, up to 5 TiB, but one Lambda
invocation lasts at most 15 minutes. It must stop, store how far it got, and let the next
invocation continue, so the hash state itself has to be stored. ``hashlib`` cannot export or
import a state. Evaluated on this project's machines (docs/CONTRACTS.md, "Validation"):

* ``rehash`` (PyPI) fails at import on OpenSSL 3 ("not yet supported");
* ``rehashes`` 0.3.0 works, but hashes with the GIL held: MD5 0.50 GB/s vs hashlib's 0.59,
  and MD5 + SHA-256 of the same bytes on two threads 0.33 GB/s (no gain over one thread);
* a ctypes binding to libcrypto's own ``MD5_Init/MD5_Update/MD5_Final`` and ``SHA256_*`` on
  a context struct whose bytes *are* the state: MD5 0.56 GB/s, SHA-256 1.31 GB/s (hashlib:
  0.59 / 1.32, the same code underneath), and ctypes releases the GIL, so MD5 and SHA-256 run
  on two threads: 0.61 GB/s for both together. It needs nothing outside the standard library
  and the OpenSSL that Python's ``hashlib`` already loads (the Lambda runtimes ship it; the
  worker next to Ceph uses the same code).

So: ctypes. The library is the one ``_hashlib`` is linked against (found through that
extension's own dependencies), else the system's ``libcrypto``.

A wrong struct layout must never produce a wrong verdict silently, hence three guards:

1. the live context sits in a much larger buffer whose tail is a canary; if OpenSSL wrote
   beyond the size assumed here, the canary is broken and the hash refuses to continue;
2. a self-test (run once, on first use, and by the worker at start-up) hashes known data,
   saves the state at odd offsets, restores it into fresh buffers, continues, and compares
   every digest with ``hashlib``;
3. every restored state must carry, in its own bit counter and buffer fill, exactly the
   number of bytes the caller says it covers.

If any guard fails, :class:`DigestUnavailable` is raised: the validation job fails (and is
retried or dead-lettered) instead of deciding anything.

Plain Python (ctypes, hashlib); no AWS imports.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: Version byte of :func:`pack` (bump when the layout of the packed states changes).
STATE_FORMAT = 1

_CANARY = 0xA5
_BUFFER = 1024  # bytes allocated per live context; the structs are ~100 bytes


class DigestUnavailable(RuntimeError):
    """No trustworthy resumable MD5/SHA-256 here (library missing or self-test failed)."""


class StateMismatch(ValueError):
    """A stored hash state does not describe the bytes it is said to cover."""


@dataclass(frozen=True)
class _Algorithm:
    """Layout of an OpenSSL hash context (``openssl/md5.h``, ``openssl/sha.h``)."""

    name: str
    prefix: str  # C function prefix: MD5_Init, SHA256_Init, ...
    ctx_size: int  # sizeof(MD5_CTX) / sizeof(SHA256_CTX)
    digest_size: int
    counter_offset: int  # Nl (low 32 bits of the bit count), then Nh
    num_offset: int  # bytes waiting in the 64-byte block buffer


# MD5_CTX: MD5_LONG A, B, C, D; MD5_LONG Nl, Nh; MD5_LONG data[16]; unsigned int num;
MD5 = _Algorithm("md5", "MD5", 92, 16, 16, 88)
# SHA256_CTX: SHA_LONG h[8]; SHA_LONG Nl, Nh; SHA_LONG data[16]; unsigned int num, md_len;
SHA256 = _Algorithm("sha256", "SHA256", 112, 32, 32, 104)
ALGORITHMS = (MD5, SHA256)
_FUNCTIONS = ("Init", "Update", "Final")


def _library_candidates() -> Iterator[str]:
    """Where libcrypto may be, best first (lazily: ``find_library`` runs a subprocess)."""
    try:
        import _hashlib  # the extension behind hashlib, linked against libcrypto

        yield str(_hashlib.__file__)
    except (ImportError, AttributeError):
        pass
    import ctypes.util

    name = ctypes.util.find_library("crypto")
    if name:
        yield name
    yield from ("libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so", "libcrypto.3.dylib")


def _load() -> Any:
    """The first library exporting all six functions, with argument types declared."""
    names = [f"{a.prefix}_{f}" for a in ALGORITHMS for f in _FUNCTIONS]
    errors = []
    for candidate in _library_candidates():
        try:
            lib = ctypes.CDLL(candidate)
            for name in names:
                getattr(lib, name)
        except (OSError, AttributeError) as exc:
            errors.append(f"{candidate}: {exc}")
            continue
        for a in ALGORITHMS:
            init, update, final = (getattr(lib, f"{a.prefix}_{f}") for f in _FUNCTIONS)
            init.argtypes = [ctypes.c_void_p]
            update.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
            final.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
            for fn in (init, update, final):
                fn.restype = ctypes.c_int
        return lib
    raise DigestUnavailable("no libcrypto with MD5_* and SHA256_* found: " + "; ".join(errors))


class ResumableHash:
    """One MD5 or SHA-256 computation whose state can be exported and imported.

    ``update`` releases the GIL (a ctypes call), so two of these can run on two threads.
    """

    def __init__(
        self,
        algorithm: _Algorithm,
        state: bytes | None = None,
        length: int = 0,
        library: Any = None,
    ) -> None:
        self.algorithm = algorithm
        lib = library if library is not None else _backend()
        self._fn = {f: getattr(lib, f"{algorithm.prefix}_{f}") for f in _FUNCTIONS}
        self._ctx = ctypes.create_string_buffer(bytes([_CANARY]) * _BUFFER, _BUFFER)
        if state is None:
            if self._fn["Init"](self._ctx) != 1:
                raise DigestUnavailable(f"{algorithm.prefix}_Init failed")
            self._check_canary()
        else:
            if len(state) != algorithm.ctx_size:
                raise StateMismatch(f"{algorithm.name} state has {len(state)} bytes")
            ctypes.memmove(self._ctx, state, len(state))
        if self.length != length:
            raise StateMismatch(
                f"{algorithm.name} state covers {self.length} bytes, expected {length}"
            )

    def _check_canary(self) -> None:
        tail = self._ctx.raw[self.algorithm.ctx_size :]
        if tail.count(_CANARY) != len(tail):
            raise DigestUnavailable(
                f"{self.algorithm.prefix}_CTX is larger than {self.algorithm.ctx_size} bytes "
                "here: resumable hashing disabled"
            )

    @property
    def length(self) -> int:
        """Bytes hashed so far, as the context itself counts them (bit counter / 8)."""
        a = self.algorithm
        low, high = struct.unpack_from("=II", self._ctx, a.counter_offset)
        (num,) = struct.unpack_from("=I", self._ctx, a.num_offset)
        total = ((high << 32) | low) >> 3
        if num != total % 64:
            raise StateMismatch(f"{a.name} state is inconsistent (buffer {num}, length {total})")
        return total

    def update(self, data: bytes) -> None:
        if data:
            self._fn["Update"](self._ctx, data, len(data))

    def state(self) -> bytes:
        """The context's bytes: what :class:`ResumableHash` (state=..., length=...) resumes."""
        self._check_canary()
        return self._ctx.raw[: self.algorithm.ctx_size]

    def hexdigest(self) -> str:
        """The digest of everything so far (finalises a copy; this hash can continue)."""
        self._check_canary()
        copy = ctypes.create_string_buffer(self._ctx.raw, _BUFFER)
        out = ctypes.create_string_buffer(self.algorithm.digest_size)
        if self._fn["Final"](out, copy) != 1:
            raise DigestUnavailable(f"{self.algorithm.prefix}_Final failed")
        return out.raw.hex()


def pack(md5: ResumableHash, sha256: ResumableHash) -> bytes:
    """Both states in one blob for storage (the offset is stored beside it)."""
    return bytes([STATE_FORMAT]) + md5.state() + sha256.state()


def unpack(blob: bytes, length: int) -> tuple[ResumableHash, ResumableHash]:
    """Restore both hashes from :func:`pack`'s blob; each must cover exactly ``length`` bytes.

    Raises :class:`StateMismatch` for a blob of another format or length (the caller then
    starts again from byte 0, which is always safe).
    """
    if not blob or blob[0] != STATE_FORMAT or len(blob) != 1 + MD5.ctx_size + SHA256.ctx_size:
        raise StateMismatch("unknown hash state format")
    md5 = ResumableHash(MD5, blob[1 : 1 + MD5.ctx_size], length)
    sha256 = ResumableHash(SHA256, blob[1 + MD5.ctx_size :], length)
    return md5, sha256


def self_test(library: Any) -> None:
    """Compare resumed digests with hashlib's on known data; raise DigestUnavailable if off."""
    data = b"".join(hashlib.sha512(i.to_bytes(4, "big")).digest() for i in range(1100))
    cuts = [0, 1, 63, 64, 65, 1000, 4096, 65_537, len(data)]
    for algorithm in ALGORITHMS:
        reference = hashlib.new(algorithm.name)
        h = ResumableHash(algorithm, library=library)
        if h.hexdigest() != hashlib.new(algorithm.name).hexdigest():
            raise DigestUnavailable(f"{algorithm.name}: wrong digest of no bytes")
        for start, end in zip(cuts, cuts[1:]):
            h.update(data[start:end])
            reference.update(data[start:end])
            # Continue in a fresh context from the exported state, as the next job would.
            h = ResumableHash(algorithm, h.state(), end, library=library)
            if h.hexdigest() != reference.hexdigest():
                raise DigestUnavailable(
                    f"{algorithm.name}: resumed digest differs from hashlib's after {end} bytes"
                )


_lock = threading.Lock()
_verified: Any = None
_failure: DigestUnavailable | None = None


def _backend() -> Any:
    """The library, once it passed the self-test (loaded and tested once per process)."""
    global _verified, _failure
    if _verified is None and _failure is None:
        with _lock:
            if _verified is None and _failure is None:
                try:
                    lib = _load()
                    self_test(lib)
                    _verified = lib
                except DigestUnavailable as exc:
                    _failure = exc
                except StateMismatch as exc:
                    _failure = DigestUnavailable(f"self-test failed: {exc}")
    if _failure is not None:
        raise _failure
    return _verified


def require() -> None:
    """Raise :class:`DigestUnavailable` unless resumable hashing works here (start-up check)."""
    _backend()


# Verified at import: a broken library shows up when the service starts, not mid-validation.
# A failure is kept (and raised by every later use) rather than raised here, so that the API
# functions, which import this module too but never hash, keep working.
with contextlib.suppress(DigestUnavailable):
    _backend()
