"""The engine's transfer of one upload: parts stream from the file, hashed beside the send.

How bytes and checksums flow (memory independent of the file and of the part size):

- Parts stream from the file: each engine handle reads its part straight from disk through its
  own file object (``READFUNCTION`` of a :class:`PartStream`, 2 MiB per call with
  ``UPLOAD_BUFFERSIZE``), positioned with ``seek`` (no ``pread``: Windows has none), with
  ``INFILESIZE_LARGE`` set (never chunked encoding) and an empty ``Expect:``. Nothing of a part
  is kept: a retried part is read from the file again. Memory is ``parallel`` x libcurl's
  upload buffer plus the hashers' buffers, whatever the part size (5 TiB files get ~525 MiB
  parts), so ``--parallel`` is never lowered for large parts.
- Each part's MD5 is computed while the part is sent, on a small thread pool that reads the same
  range through its own file objects (:class:`PartHasher`; 8 MiB reads, ``hashlib`` releases the
  GIL, so hashing uses the other cores and never blocks the engine's loop). The answer's ``ETag``
  must equal it (S3 semantics for unencrypted and SSE-S3 objects); a mismatch is retried, then
  fails with exit code 5. Off by default against a server that reads every uploaded byte back
  (it finds a damaged part too, at the end instead of at once); ``--part-md5`` turns it on.
- The whole-file MD5, where it is still needed, is one sequential pass on its own thread
  (:class:`WholeFileHasher`), in file order, with one buffer.
- Parts S3 already holds (a resumed upload) are hashed from the local file first and skipped
  only when size and ETag match; sending starts at once with the parts S3 lacks.

Presigned URLs are short-lived and cost an API round trip, so :class:`UrlSupply` fetches them
ahead of need on another thread (the engine's never waits for the API): enough URLs are kept
ready to cover the parts the run sends during a few round trips, in batches sized so that a
batch is used well within its lifetime; URLs older than half their lifetime are fetched again.
A part answered 403 (an expired URL) is parked by the engine until its fresh URL has arrived.
"""

from __future__ import annotations

import collections
import hashlib
import io
import itertools
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Protocol

from ghga_cli.curl import pycurl_module
from ghga_cli.errors import EXIT_INTEGRITY, EXIT_NOT_FOUND, CliError, IntegrityError
from ghga_cli.integrity import READ_BLOCK, hash_range, normalise_etag
from ghga_cli.transfer.engine import Part, PartError, Slot, Transfer

UPLOAD_BUFFER = 2 * 1024 * 1024
#: Threads hashing parts (the machine's cores, at most 4: MD5 runs at ~0.7 GB/s per core).
HASH_WORKERS = max(1, min(4, os.cpu_count() or 2))


class PartHasher:
    """MD5s of file ranges on a thread pool; each thread has its own file object and buffer."""

    def __init__(self, path: Path, workers: int = HASH_WORKERS) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ghga-md5")
        self._local = threading.local()
        self._handles: list[BinaryIO] = []
        self._lock = threading.Lock()

    def submit(self, offset: int, size: int) -> Future[str]:
        return self._pool.submit(self._md5, offset, size)

    def _md5(self, offset: int, size: int) -> str:
        handle = getattr(self._local, "handle", None)
        if handle is None:
            handle = self.path.open("rb", buffering=0)
            self._local.handle = handle
            self._local.buffer = bytearray(READ_BLOCK)
            with self._lock:
                self._handles.append(handle)
        digest = hashlib.md5()
        if hash_range(handle, digest, self._local.buffer, offset, size) != size:
            raise IntegrityError(
                f"{self.path} became shorter while it was read",
                "do not modify the file during the upload",
            )
        return digest.hexdigest()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for handle in self._handles:
                handle.close()
            self._handles = []


class WholeFileHasher:
    """The whole file's MD5 in one sequential pass on its own thread (bounded memory)."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self._result: Future[str] = Future()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ghga-file-md5", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def result(self) -> str:
        return self._result.result()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            digest = hashlib.md5()
            with self.path.open("rb", buffering=0) as handle:
                done = hash_range(handle, digest, bytearray(READ_BLOCK), stop=self._stop)
            if self._stop.is_set():
                raise CliError("stopped")
            if done != self.size:
                raise IntegrityError(
                    f"{self.path} changed size while it was read ({done} of {self.size} bytes)",
                    "do not modify the file during the upload",
                )
            self._result.set_result(digest.hexdigest())
        except BaseException as exc:  # surfaced by result()
            self._result.set_exception(exc)


class PartStream:
    """libcurl's body source for one part: reads ``size`` bytes at ``offset`` of ``handle``.

    ``read`` is called with libcurl's buffer size (2 MiB) and never returns more than the part
    holds; ``seek`` serves libcurl's rewind when it resends a body on a reused connection.
    """

    def __init__(self, handle: BinaryIO, offset: int, size: int) -> None:
        self.handle = handle
        self.offset = offset
        self.size = size
        self.position = 0
        handle.seek(offset)

    def read(self, n: int) -> bytes:
        n = min(n, self.size - self.position)
        if n <= 0:
            return b""
        data = self.handle.read(n)
        self.position += len(data)
        return data

    def seek(self, offset: int, origin: int) -> int:
        if origin == io.SEEK_SET:
            self.position = offset
        elif origin == io.SEEK_CUR:
            self.position += offset
        else:
            self.position = self.size + offset
        self.handle.seek(self.offset + self.position)
        return 0  # CURL_SEEKFUNC_OK


@dataclass
class _SlotBody:
    """What one handle reads (the part) and writes (S3's answer) for its current part."""

    stream: PartStream
    response: io.BytesIO


@dataclass
class UploadPart(Part):
    """A part of an upload: its MD5 (computed while it is sent) belongs to this attempt."""

    digest: Future[str] | None = field(default=None, repr=False)
    url: str | None = field(default=None, repr=False)  # its presigned URL, once it has one


class StoredPart(Protocol):
    """A part the storage already holds (a resumed upload): its size and ETag."""

    size: int
    etag: str


Presign = Callable[[list[int]], "tuple[dict[int, str], float]"]
Submit = Callable[[Callable[[], None]], Any]


class UrlSupply:
    """Presigned part URLs, fetched ahead of need on another thread (never the engine's).

    ``presign(numbers)`` asks the API for URLs (``({part_no: url}, expires_in)``); it runs
    through ``submit`` (the run's URL pool). :meth:`take` never waits: it hands out a fresh URL
    or None, and keeps a fetch going while fewer URLs are ready than the parts the run sends
    during :data:`AHEAD_ROUND_TRIPS` round trips (measured) -- at least ``2 x parallel``.
    """

    AHEAD_ROUND_TRIPS = 4.0

    def __init__(
        self,
        presign: Presign,
        submit: Submit,
        *,
        parallel: int = 8,
        max_batch: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._presign = presign
        self._submit = submit
        self.min_ready = max(4, 2 * parallel)
        self.max_batch = max(self.min_ready, max_batch)
        self._clock = clock
        self._urls: dict[int, tuple[str, float]] = {}  # part_no -> (url, stale_at)
        self._fetching = False
        self._error: BaseException | None = None
        self._round_trip = 0.0  # the slowest presign round trip seen
        self._started = clock()
        self._taken = 0
        self._lock = threading.Lock()

    def prime(self, upcoming: list[int]) -> None:
        """Fetch the first batch now, in the calling thread (before any byte moves)."""
        self._fetch(upcoming[: self._batch_size()])
        if self._error is not None:
            raise self._error

    def take(self, number: int, upcoming: list[int]) -> str | None:
        """A fresh URL for part ``number``, or None (one is being fetched); never waits.

        ``upcoming`` are the part numbers to be sent next, in order: the ones a fetch asks for.
        Raises the error of a fetch that failed (after the HTTP client's retries).
        """
        with self._lock:
            if self._error is not None:
                raise self._error
            now = self._clock()
            entry = self._urls.get(number)
            url = None
            if entry is not None and now < entry[1]:
                url = self._urls.pop(number)[0]
                self._taken += 1
            self._top_up(now, [number, *upcoming] if url is None else upcoming)
            return url

    def _ready_count(self, now: float, upcoming: list[int]) -> int:
        return sum(1 for n in upcoming if n in self._urls and now < self._urls[n][1])

    def _wanted_ahead(self, now: float) -> int:
        elapsed = now - self._started
        rate = self._taken / elapsed if elapsed > 0 and self._taken >= 2 else 0.0
        return int(max(self.min_ready, rate * self._round_trip * self.AHEAD_ROUND_TRIPS))

    def _batch_size(self, lifetime: float = 900.0) -> int:
        """Parts expected to be used within a third of a URL's lifetime (clamped)."""
        elapsed = self._clock() - self._started
        rate = self._taken / elapsed if elapsed > 0 and self._taken >= 2 else 0.0
        wanted = max(self._wanted_ahead(self._clock()) * 2, rate * lifetime / 3)
        return int(max(self.min_ready, min(self.max_batch, wanted)))

    def _top_up(self, now: float, upcoming: list[int]) -> None:
        """Start a fetch when too few of the next parts have a fresh URL (lock held)."""
        if self._fetching or not upcoming:
            return
        horizon = upcoming[: self._wanted_ahead(now)]
        if self._ready_count(now, horizon) >= len(horizon):
            return
        missing = [n for n in upcoming if not (n in self._urls and now < self._urls[n][1])]
        batch = missing[: self._batch_size()]
        self._fetching = True
        self._submit(lambda: self._fetch(batch))

    def _fetch(self, numbers: list[int]) -> None:
        started = self._clock()
        try:
            urls, expires_in = self._presign(numbers) if numbers else ({}, 900.0)
            if numbers and numbers[0] not in urls:  # the API may send fewer than asked for
                raise CliError(f"the API returned no upload URL for part {numbers[0]}")
        except BaseException as exc:
            with self._lock:
                self._error = exc
                self._fetching = False
            return
        done = self._clock()
        with self._lock:
            self._round_trip = max(self._round_trip, done - started)
            stale_at = done + max(1.0, expires_in / 2)
            for part_no, url in urls.items():
                self._urls[part_no] = (url, stale_at)
            self._fetching = False


class UploadTransfer(Transfer[UploadPart]):
    """The engine's view of an upload: which parts to send, from where, and how to check them.

    Parts S3 lacks are ready at once; parts S3 holds (``existing``) are hashed first and become
    ready only if they do not match. ``on_skipped`` hears of each stored part that matched.
    With ``segment_parts`` (the server stores the upload as segments of that many parts),
    ``on_segment`` hears of each segment whose parts are all stored, from the engine's or a
    hasher's thread: it must only hand the news on, never wait.
    """

    direction = "upload"

    def __init__(
        self,
        label: str,
        path: Path,
        pieces: list[tuple[int, int]],
        urls: UrlSupply,
        *,
        existing: dict[int, StoredPart] | None = None,
        check_parts: bool = True,
        hasher: PartHasher | None = None,
        on_skipped: Callable[[int], None] | None = None,
        segment_parts: int | None = None,
        on_segment: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(label)
        self.path = path
        self.pieces = pieces
        self.urls = urls
        self.check_parts = check_parts
        self.hasher = hasher or PartHasher(path)
        self._on_skipped = on_skipped or (lambda _n: None)
        self.part_md5s: list[str | None] = [None] * len(pieces)
        self.skipped = 0
        self._done_bytes = 0
        self._handles: dict[int, BinaryIO] = {}
        self._bodies: dict[int, _SlotBody] = {}
        self._lock = threading.Lock()
        self._ready: collections.deque[UploadPart] = collections.deque()
        self._failure: BaseException | None = None  # fetching URLs failed for good
        self._checking = 0  # stored parts whose hash is not known yet
        self.segment_parts = segment_parts or len(pieces)
        self._on_segment = on_segment if segment_parts else None
        # Parts of each segment not stored yet (segments are numbered from 1).
        self._segment_left = collections.Counter(
            i // self.segment_parts + 1 for i in range(len(pieces))
        )
        existing = existing or {}
        for index, (offset, size) in enumerate(pieces):
            part = UploadPart(self, index, offset, size)
            known = existing.get(index + 1)
            if known is not None and known.size == size:
                self._checking += 1
                future = self.hasher.submit(offset, size)
                future.add_done_callback(lambda f, p=part, k=known: self._stored_checked(p, k, f))
            else:
                self._ready.append(part)

    def _stored_checked(self, part: UploadPart, known: StoredPart, digest: Future[str]) -> None:
        """Skip a stored part whose ETag is the local bytes' MD5; otherwise send it again."""
        with self._lock:
            self._checking -= 1
            if digest.cancelled() or digest.exception() is not None:
                self._ready.appendleft(part)  # its hash is taken again when it is sent
                return
            value = digest.result()
            if value == known.etag:
                self.part_md5s[part.index] = value
                self.skipped += 1
            else:
                part.digest = digest
                self._ready.appendleft(part)
                return
        self._on_skipped(part.size)
        self._part_stored(part)

    def _part_stored(self, part: UploadPart) -> None:
        """Count a stored part; tell ``on_segment`` when its segment is whole."""
        segment_no = part.index // self.segment_parts + 1
        with self._lock:
            self._segment_left[segment_no] -= 1
            whole = self._segment_left[segment_no] == 0
        if whole and self._on_segment is not None:
            self._on_segment(segment_no)

    def upcoming(self, skip: int = 0, limit: int = 2000) -> list[int]:
        """Numbers of the parts to be sent next, in order (those a URL fetch asks for)."""
        with self._lock:
            return [p.number for p in itertools.islice(self._ready, skip, skip + limit)]

    def next_part(self) -> UploadPart | None:
        """The next part whose URL is at hand (None while its URL is being fetched)."""
        with self._lock:
            if not self._ready:
                return None
            part = self._ready[0]
        try:
            url = self.urls.take(part.number, self.upcoming(1))
        except Exception as exc:  # the URLs could not be had: this transfer fails (ready)
            self._failure = exc
            url = None
            if part.url is None:  # hand the part out, so that ready() reports the failure
                with self._lock:
                    self._ready.remove(part)
                return part
        if url is None:
            return None
        with self._lock:
            self._ready.remove(part)
        part.url = url
        return part

    def ready(self, part: UploadPart) -> bool:
        """A part answered 403 waits (parked) for a fresh URL; others go at once."""
        if self._failure is not None:
            raise self._failure
        if part.url is not None and not part.refresh_url:
            return True
        url = self.urls.take(part.number, self.upcoming())
        if url is None:
            return False
        part.url = url
        return True

    def exhausted(self) -> bool:
        with self._lock:
            return not self._ready and self._checking == 0

    def configure(self, slot: Slot, part: UploadPart) -> None:
        pycurl = pycurl_module()
        curl = slot.curl
        assert part.url is not None, "the engine starts only parts that are ready"
        url = part.url
        handle = self._handles.get(slot.index)
        if handle is None:
            handle = self.path.open("rb", buffering=0)
            self._handles[slot.index] = handle
        if part.digest is None or part.attempts > 0:
            # A retry re-reads the part from the file, so its hash is taken again as well.
            part.digest = self.hasher.submit(part.offset, part.size) if self.check_parts else None
        stream = PartStream(handle, part.offset, part.size)
        body = io.BytesIO()  # S3's answer: empty, or an error document
        self._bodies[slot.index] = _SlotBody(stream, body)
        curl.setopt(pycurl.URL, url)
        curl.setopt(pycurl.UPLOAD, 1)
        curl.setopt(pycurl.INFILESIZE_LARGE, part.size)
        curl.setopt(pycurl.READFUNCTION, stream.read)
        curl.setopt(pycurl.SEEKFUNCTION, stream.seek)
        if hasattr(pycurl, "UPLOAD_BUFFERSIZE"):  # pycurl >= 7.44; 2 MiB reads, not 64 KiB
            curl.setopt(pycurl.UPLOAD_BUFFERSIZE, UPLOAD_BUFFER)
        curl.setopt(pycurl.HTTPHEADER, ["Expect:", "Content-Type:"])
        curl.setopt(pycurl.WRITEDATA, body)

    def check(self, slot: Slot, part: UploadPart) -> None:
        sent = self._bodies[slot.index].stream.position
        if sent != part.size:
            raise PartError(f"sent {sent} of {part.size} bytes", retryable=True)
        if part.digest is None:
            return
        try:
            expected = part.digest.result()
        except CliError as exc:
            raise PartError(exc.message, retryable=False, exit_code=exc.exit_code) from None
        got = normalise_etag(slot.headers.get("etag"))
        if got != expected:
            raise PartError(
                f"the storage's ETag {got or '(none)'} differs from the part's MD5 {expected}",
                retryable=True,
                exit_code=EXIT_INTEGRITY,
                hint="the bytes were damaged on the way (check the network or proxy), or the "
                "file changed during the upload",
            )

    def part_done(self, slot: Slot, part: UploadPart) -> None:
        if part.digest is not None:
            self.part_md5s[part.index] = part.digest.result()
        with self._lock:
            self._done_bytes += part.size
        self._part_stored(part)

    def bytes_moved(self) -> int:
        return self._done_bytes

    def describe_http_error(self, slot: Slot, part: UploadPart, status: int) -> PartError:
        body = self._bodies[slot.index].response.getvalue()[:2000]
        code = _s3_error_code(body)
        if status == 404:
            return PartError(
                f"the storage no longer knows this upload (HTTP 404{', ' + code if code else ''})",
                retryable=False,
                exit_code=EXIT_NOT_FOUND,
                hint="the upload was probably cancelled; rerun to start a new one",
            )
        detail = f" ({code})" if code else ""
        return PartError(f"the storage answered HTTP {status}{detail}", retryable=False)

    def close(self) -> None:
        self.hasher.close()
        for handle in self._handles.values():
            handle.close()
        self._handles = {}


def _s3_error_code(body: bytes) -> str:
    start = body.find(b"<Code>")
    end = body.find(b"</Code>")
    if start < 0 or end < start:
        return ""
    return body[start + 6 : end].decode("utf-8", "replace")[:64]
