"""The engine's transfer of one download: ranged GETs into a partial file, hashed in order.

How bytes flow: the object is split into ranges; each engine handle owns one file object opened on
the partial file (``DIR/.ghga-cli/<name>.part``, see ``files.WorkingFiles``) and, per range, seeks
it to the range start and gives it to libcurl as ``WRITEDATA`` (libcurl calls the file's C
``write`` method: no Python frame per 16 KiB chunk). A header check runs before any body byte is
written: the answer must be ``206`` with the expected ``Content-Range`` and ``Content-Length`` and
the same ``ETag`` as every other range (the first answer pins it; later requests send ``If-
Match``), otherwise the transfer is aborted, so a wrong answer can never overwrite bytes of another
range. Memory does not depend on the file size or the range size (libcurl's buffers plus the file
objects' 1 MiB buffers).

Checksum: the strongest checksum is not needed, the cheapest strong one the server offers is:
MD5 and SHA-256 are timed on a small buffer once per run (:func:`integrity.choose_checksum`)
and the faster one is used (SHA-256 with the CPU's SHA extensions beats MD5 by ~2.5x). Ranges
finish out of order, so the whole-file digest is computed by re-reading the partial file in
order: a *prefix hasher* thread follows the download and hashes each range as soon as it and
all ranges before it are complete (usually from the page cache). To leave no hashing tail after
the last byte, the last ranges of a large file are planned smaller and smaller
(:func:`plan_ranges`), so they do not finish together and the hasher keeps up to the end.

Resume: ``DIR/.ghga-cli/<name>.part.json`` (written atomically, at most once a second and when
stopping) records the object id, size, checksum (type and value), ETag, the range plan and the
completed ranges. A rerun downloads only missing ranges with the same checksum type; if the object
changed (different size, checksum or ETag, or a 412 answer to ``If-Match``) the partial file is
discarded and the download starts over once. Only when size and checksum match is the partial file
renamed (``os.replace``) to ``DIR/<name>``.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

from ghga_cli.curl import HeaderCollector, pycurl_module
from ghga_cli.errors import EXIT_INTEGRITY, EXIT_NOT_FOUND, CliError, UsageError
from ghga_cli.files import read_json, write_json_atomic
from ghga_cli.integrity import READ_BLOCK, hash_range, new_hash, normalise_etag
from ghga_cli.transfer.engine import Part, PartError, Slot, Transfer, part_count, plan_parts

STATE_VERSION = 2
DEFAULT_RANGE_SIZE = 32 * 1024 * 1024
WRITE_BUFFER = 1024 * 1024
STATE_SAVE_INTERVAL = 1.0
#: Most ranges of one download: larger files get larger ranges (bounded plan and state file).
MAX_RANGES = 50_000
#: Smallest range of the shrinking tail.
MIN_TAIL_RANGE = 256 * 1024

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


class ObjectChanged(CliError):
    """The object in storage is not the one the partial download started from."""

    exit_code = EXIT_INTEGRITY
    default_hint = "rerun the command to download the current version"


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes 0-99/1000`` -> (0, 99, 1000); ``*`` total -> None; malformed -> None."""
    if not value:
        return None
    match = _CONTENT_RANGE.match(value)
    if not match:
        return None
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), int(match.group(2)), total


def range_size_for(size: int, wanted: int) -> int:
    """``wanted``, raised (to whole MiB) when ``size`` would need more than MAX_RANGES ranges."""
    if part_count(size, wanted) <= MAX_RANGES:
        return wanted
    mib = 1024 * 1024
    return -(-size // MAX_RANGES // mib) * mib + mib


def plan_ranges(size: int, range_size: int, tail: int) -> list[tuple[int, int]]:
    """``(offset, size)`` ranges: ``range_size`` ones, then a tail of ``2 * tail`` shrinking ones.

    Why: ranges are started in file order, ``tail`` (the parallelism of the run that planned
    them) at a time. Equal ranges in the last wave finish together, and the in-order hash must
    then catch up with all of them after the last byte arrived. Linearly shrinking sizes in the
    last ``~tail * range_size`` bytes make the last ranges finish one after another and the last
    of them small, so the hash is done moments after the last byte. Files smaller than two
    waves, and ``tail == 0`` (states of older versions), get equal ranges only.
    """
    pieces = 2 * tail
    sizes = [max(MIN_TAIL_RANGE, range_size * (pieces - i) // pieces) for i in range(pieces)]
    tail_bytes = sum(sizes)
    if tail <= 0 or size < 2 * tail_bytes:
        return plan_parts(size, range_size)
    head = size - tail_bytes
    ranges = plan_parts(head, range_size)
    offset = head
    for piece in sizes:
        ranges.append((offset, piece))
        offset += piece
    return ranges


class DownloadState:
    """What a rerun needs to continue a partial download (``<name>.part.json``)."""

    def __init__(
        self,
        path: Path,
        *,
        object_id: str,
        size: int,
        checksum: str,
        range_size: int,
        etag: str | None = None,
        done: set[int] | None = None,
        tail: int = 0,
    ):
        self.path = path
        self.object_id = object_id
        self.size = size
        self.checksum = checksum  # "<drs type>:<hex>"
        self.range_size = range_size
        self.tail = tail
        self.etag = etag
        self.done: set[int] = set(done or ())
        self._saved_at = 0.0
        self._dirty = False

    @property
    def checksum_type(self) -> str:
        return self.checksum.partition(":")[0]

    def pieces(self) -> list[tuple[int, int]]:
        return plan_ranges(self.size, self.range_size, self.tail)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "object_id": self.object_id,
            "size": self.size,
            "checksum": self.checksum,
            "checksum_type": self.checksum_type,
            "range_size": self.range_size,
            "tail": self.tail,
            "etag": self.etag,
            "done": sorted(self.done),
        }

    @classmethod
    def peek_checksum(cls, path: Path) -> str | None:
        """The ``checksum`` a saved state was made with (to keep its type on resume)."""
        data = read_json(path)
        if isinstance(data, dict) and isinstance(data.get("checksum"), str):
            return str(data["checksum"])
        return None

    @classmethod
    def load(cls, path: Path, object_id: str, size: int, checksum: str) -> DownloadState | None:
        """The saved state if it belongs to this very object, else None."""
        data = read_json(path)
        if not isinstance(data, dict) or data.get("version") not in (1, STATE_VERSION):
            return None
        if (
            data.get("object_id") != object_id
            or data.get("size") != size
            or data.get("checksum") != checksum
        ):
            return None
        try:
            range_size = int(data["range_size"])
            tail = int(data.get("tail") or 0)
            done = {int(i) for i in data.get("done") or []}
        except (KeyError, TypeError, ValueError):
            return None
        if range_size <= 0 or part_count(size, range_size) > MAX_RANGES or not 0 <= tail <= 64:
            return None
        state = cls(
            path,
            object_id=object_id,
            size=size,
            checksum=checksum,
            range_size=range_size,
            etag=str(data["etag"]) if data.get("etag") else None,
            tail=tail,
        )
        count = len(state.pieces())
        state.done = {i for i in done if 0 <= i < count}
        return state

    def mark_done(self, index: int) -> None:
        self.done.add(index)
        self._dirty = True

    def save(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (not self._dirty or now - self._saved_at < STATE_SAVE_INTERVAL):
            return
        write_json_atomic(self.path, self.to_json())
        self._saved_at = now
        self._dirty = False

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class PrefixHasher:
    """Hashes the ``.part`` file in order as its ranges complete (see module docstring)."""

    def __init__(self, path: Path, pieces: list[tuple[int, int]], algorithm: str):
        self.path = path
        self.pieces = pieces
        self._hash = new_hash(algorithm)
        self._ready = [False] * len(pieces)
        self._cond = threading.Condition()
        self._stopped = False
        self.error: BaseException | None = None
        self.finished_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="ghga-hasher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def mark(self, index: int) -> None:
        with self._cond:
            self._ready[index] = True
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join()

    def result(self) -> str:
        """Wait until every range is hashed and return the hex digest."""
        self._thread.join()
        if self.error is not None:
            raise UsageError(
                f"cannot read back {self.path}: {self.error}", "check the disk and rerun"
            )
        return self._hash.hexdigest()

    def _run(self) -> None:
        try:
            buffer = bytearray(READ_BLOCK)
            with self.path.open("rb", buffering=0) as handle:
                for index, (offset, size) in enumerate(self.pieces):
                    with self._cond:
                        while not self._ready[index] and not self._stopped:
                            self._cond.wait()
                        if self._stopped:
                            return
                    if hash_range(handle, self._hash, buffer, offset, size) != size:
                        raise OSError("unexpected end of file")
            self.finished_at = time.monotonic()
        except BaseException as exc:  # reported by result()
            self.error = exc


@dataclass(frozen=True)
class RangeSource:
    """Where the ranges come from: a (presigned) URL and the headers the DRS named for it."""

    url: str
    headers: list[str]


@dataclass
class RangePart(Part):
    """A byte range of a download; ``url_generation`` avoids refreshing the URL twice."""

    url_generation: int = 0


class DownloadTransfer(Transfer[RangePart]):
    """The engine's view of a download: missing ranges of one object."""

    direction = "download"

    def __init__(
        self,
        source: RangeSource,
        part_path: Path,
        state: DownloadState,
        pieces: list[tuple[int, int]],
        hasher: PrefixHasher,
        refresh: Callable[[], Future[tuple[str, list[str]]]],
    ):
        super().__init__(state.object_id)
        self.source = source
        self.part_path = part_path
        self.state = state
        self.pieces = pieces
        self.hasher = hasher
        self._refresh = refresh
        self._todo = [i for i in range(len(pieces)) if i not in state.done]
        self._next = 0
        self._done_bytes = 0
        self.generation = 0
        self._files: dict[int, BinaryIO] = {}
        self.last_byte_at: float | None = None
        self._fresh_url: Future[tuple[str, list[str]]] | None = None  # a refresh under way

    @property
    def missing(self) -> int:
        return len(self._todo)

    def next_part(self) -> RangePart | None:
        if self._next >= len(self._todo) or self._fresh_url is not None:
            return None  # all started, or the URL expired and a fresh one is on its way
        index = self._todo[self._next]
        self._next += 1
        offset, size = self.pieces[index]
        return RangePart(self, index, offset, size)

    def exhausted(self) -> bool:
        return self._next >= len(self._todo)

    def ready(self, part: RangePart) -> bool:
        """A range answered 403 waits (parked) until a fresh URL arrived; one refresh for all.

        The refresh runs on the run's API threads; while the object is re-staged (the DRS
        answers 202) only this file waits. Its failure (a timeout, the object changed) is
        raised here and ends this transfer.
        """
        if not part.refresh_url or part.url_generation != self.generation:
            return True
        if self._fresh_url is None:
            self._fresh_url = self._refresh()
        if not self._fresh_url.done():
            return False
        fresh, self._fresh_url = self._fresh_url, None
        self.source = RangeSource(*fresh.result())
        self.generation += 1
        return True

    def configure(self, slot: Slot, part: RangePart) -> None:
        pycurl = pycurl_module()
        part.url_generation = self.generation
        handle = self._files.get(slot.index)
        if handle is None:
            handle = self.part_path.open("r+b", buffering=WRITE_BUFFER)
            self._files[slot.index] = handle
        handle.seek(part.offset)
        headers = [h for h in self.source.headers if "\r" not in h and "\n" not in h]
        headers.append(f"Range: bytes={part.offset}-{part.offset + part.size - 1}")
        if self.state.etag:
            headers.append(f'If-Match: "{self.state.etag}"')
        curl = slot.curl
        curl.setopt(pycurl.URL, self.source.url)
        curl.setopt(pycurl.HTTPGET, 1)
        curl.setopt(pycurl.HTTPHEADER, headers)
        curl.setopt(pycurl.WRITEDATA, handle)
        curl.setopt(pycurl.BUFFERSIZE, WRITE_BUFFER)
        curl.setopt(pycurl.MAXFILESIZE_LARGE, max(1, part.size))
        slot.headers.on_complete = lambda collector: self._headers_ok(collector, part)

    def _headers_ok(self, collector: HeaderCollector, part: RangePart) -> bool:
        """Runs before the body: False aborts the transfer (nothing is written)."""
        status = collector.status
        if status not in (200, 206):
            return False  # the engine classifies the status (retry, refresh URL, fail)
        expected = (part.offset, part.offset + part.size - 1, self.state.size)
        if status == 206:
            got = parse_content_range(collector.get("content-range"))
            if got != expected:
                collector.abort_reason = (
                    f"wrong Content-Range {collector.get('content-range')!r}, "
                    f"expected bytes {expected[0]}-{expected[1]}/{expected[2]}"
                )
                return False
        elif not (part.offset == 0 and part.size == self.state.size):
            collector.abort_reason = "the storage ignored the Range header (HTTP 200)"
            return False
        length = collector.get("content-length")
        if length is not None and length.strip() != str(part.size):
            collector.abort_reason = f"wrong Content-Length {length}, expected {part.size}"
            return False
        etag = normalise_etag(collector.get("etag"))
        if etag:
            if self.state.etag is None:
                self.state.etag = etag
            elif etag != self.state.etag:
                collector.abort_reason = "etag-changed"
                return False
        return True

    def check(self, slot: Slot, part: RangePart) -> None:
        reason = slot.headers.abort_reason
        if reason == "etag-changed":
            raise ObjectChanged("the file changed in storage during the download")
        if reason:
            raise PartError(reason, retryable=True)
        self._files[slot.index].flush()
        pycurl = pycurl_module()
        got = int(slot.curl.getinfo(getattr(pycurl, "SIZE_DOWNLOAD_T", pycurl.SIZE_DOWNLOAD)))
        if got != part.size:
            raise PartError(f"received {got} of {part.size} bytes", retryable=True)

    def part_done(self, slot: Slot, part: RangePart) -> None:
        self._done_bytes += part.size
        self.state.mark_done(part.index)
        self.hasher.mark(part.index)
        self.state.save()
        self.last_byte_at = time.monotonic()

    def bytes_moved(self) -> int:
        return self._done_bytes

    def describe_http_error(self, slot: Slot, part: RangePart, status: int) -> PartError:
        if status == 412:
            raise ObjectChanged("the file changed in storage since the download started")
        if status == 404:
            return PartError(
                "the storage no longer has the file (HTTP 404)",
                retryable=False,
                exit_code=EXIT_NOT_FOUND,
                hint="the staged copy may have expired; rerun the command",
            )
        return PartError(f"the storage answered HTTP {status}", retryable=False)

    def close(self) -> None:
        for handle in self._files.values():
            with contextlib.suppress(OSError):
                handle.close()
        self._files = {}
