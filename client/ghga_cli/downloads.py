"""Download of one file: the DRS conversation and the engine's ranged-GET transfer.

How bytes flow: the object is split into ranges; each engine handle owns one file object opened
on ``DIR/<name>.part`` and, per range, seeks it to the range start and gives it to libcurl as
``WRITEDATA`` (libcurl calls the file's C ``write`` method: no Python frame per 16 KiB chunk).
A header check runs before any body byte is written: the answer must be ``206`` with the
expected ``Content-Range`` and ``Content-Length`` and the same ``ETag`` as every other range
(the first answer pins it; later requests send ``If-Match``), otherwise the transfer is aborted,
so a wrong answer can never overwrite bytes of another range. Memory does not depend on the file
size (libcurl buffers plus the file objects' buffers).

Checksum: ranges finish out of order, so the whole-file digest is computed by re-reading the
``.part`` file sequentially. To keep that off the critical path a *prefix hasher* thread follows
the download: whenever the next range in file order is complete (and flushed) it reads and hashes
it, usually from the page cache while it is still hot. After the last range only the tail is
left to hash. On resume the hasher re-reads the ranges done by the earlier run.

Resume: ``DIR/<name>.part.json`` (written atomically, at most once a second and when stopping)
records the object id, size, checksum, ETag, range size and the completed ranges. A rerun
downloads only missing ranges; if the object changed (different size, checksum or ETag, or a 412
answer to ``If-Match``) the partial file is discarded and the download starts over once. Only
when size and checksum match is ``.part`` renamed (``os.replace``) to ``DIR/<name>``.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ghga_cli.api import DrsClient, DrsObject
from ghga_cli.curl import HeaderCollector, pycurl_module
from ghga_cli.engine import (
    Engine,
    EngineStats,
    InterruptFlag,
    Part,
    PartError,
    Slot,
    Transfer,
    interrupt_guard,
    plan_parts,
)
from ghga_cli.errors import (
    EXIT_INTEGRITY,
    CliError,
    ConflictError,
    IntegrityError,
    UsageError,
)
from ghga_cli.files import (
    ExclusiveLock,
    allocated_bytes,
    check_free_space,
    check_output_dir,
    inside,
    read_json,
    sanitise_name,
    write_json_atomic,
)
from ghga_cli.integrity import READ_BLOCK, choose_checksum, new_hash, normalise_etag
from ghga_cli.progress import Progress
from ghga_cli.retry import RetryPolicy

STATE_VERSION = 1
DEFAULT_RANGE_SIZE = 32 * 1024 * 1024
WRITE_BUFFER = 1024 * 1024
STATE_SAVE_INTERVAL = 1.0

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
    ):
        self.path = path
        self.object_id = object_id
        self.size = size
        self.checksum = checksum
        self.range_size = range_size
        self.etag = etag
        self.done: set[int] = set(done or ())
        self._saved_at = 0.0
        self._dirty = False

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "object_id": self.object_id,
            "size": self.size,
            "checksum": self.checksum,
            "range_size": self.range_size,
            "etag": self.etag,
            "done": sorted(self.done),
        }

    @classmethod
    def load(cls, path: Path, object_id: str, size: int, checksum: str) -> DownloadState | None:
        """The saved state if it belongs to this very object, else None."""
        data = read_json(path)
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            return None
        if (
            data.get("object_id") != object_id
            or data.get("size") != size
            or data.get("checksum") != checksum
        ):
            return None
        try:
            range_size = int(data["range_size"])
            done = {int(i) for i in data.get("done") or []}
        except (KeyError, TypeError, ValueError):
            return None
        if range_size <= 0:
            return None
        count = len(plan_parts(size, range_size))
        etag = data.get("etag")
        return cls(
            path,
            object_id=object_id,
            size=size,
            checksum=checksum,
            range_size=range_size,
            etag=str(etag) if etag else None,
            done={i for i in done if 0 <= i < count},
        )

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
            view = memoryview(buffer)
            with self.path.open("rb", buffering=0) as handle:
                for index, (offset, size) in enumerate(self.pieces):
                    with self._cond:
                        while not self._ready[index] and not self._stopped:
                            self._cond.wait()
                        if self._stopped:
                            return
                    handle.seek(offset)
                    remaining = size
                    while remaining > 0:
                        n = handle.readinto(view[: min(remaining, READ_BLOCK)])
                        if not n:
                            raise OSError("unexpected end of file")
                        self._hash.update(view[:n])
                        remaining -= n
        except BaseException as exc:  # reported by result()
            self.error = exc


class DownloadTransfer(Transfer):
    """The engine's view of a download: missing ranges of one object."""

    direction = "download"

    def __init__(
        self,
        obj: DrsObject,
        part_path: Path,
        state: DownloadState,
        pieces: list[tuple[int, int]],
        hasher: PrefixHasher,
        refresh: Callable[[], DrsObject],
    ):
        self.obj = obj
        self.part_path = part_path
        self.state = state
        self.pieces = pieces
        self.hasher = hasher
        self._refresh = refresh
        self._todo = [i for i in range(len(pieces)) if i not in state.done]
        self._next = 0
        self._done_bytes = sum(pieces[i][1] for i in state.done)
        self.generation = 0
        self._files: list[Any] = []

    @property
    def missing(self) -> int:
        return len(self._todo)

    def next_part(self, timeout: float) -> Part | None:
        if self._next >= len(self._todo):
            return None
        index = self._todo[self._next]
        self._next += 1
        offset, size = self.pieces[index]
        return Part(index=index, offset=offset, size=size)

    def exhausted(self) -> bool:
        return self._next >= len(self._todo)

    def configure(self, slot: Slot, part: Part) -> None:
        pycurl = pycurl_module()
        if part.refresh_url and part.url_generation == self.generation:
            self._refresh_url()
        part.url_generation = self.generation
        if slot.resource is None:
            slot.resource = self.part_path.open("r+b", buffering=WRITE_BUFFER)
            self._files.append(slot.resource)
        handle = slot.resource
        handle.seek(part.offset)
        headers = [h for h in self.obj.headers if "\r" not in h and "\n" not in h]
        headers.append(f"Range: bytes={part.offset}-{part.offset + part.size - 1}")
        if self.state.etag:
            headers.append(f'If-Match: "{self.state.etag}"')
        curl = slot.curl
        curl.setopt(pycurl.URL, self.obj.url)
        curl.setopt(pycurl.HTTPGET, 1)
        curl.setopt(pycurl.HTTPHEADER, headers)
        curl.setopt(pycurl.WRITEDATA, handle)
        curl.setopt(pycurl.BUFFERSIZE, WRITE_BUFFER)
        curl.setopt(pycurl.MAXFILESIZE_LARGE, max(1, part.size))
        slot.headers.on_complete = lambda collector: self._headers_ok(collector, part)

    def _headers_ok(self, collector: HeaderCollector, part: Part) -> bool:
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

    def check(self, slot: Slot, part: Part) -> None:
        reason = slot.headers.abort_reason
        if reason == "etag-changed":
            raise ObjectChanged("the file changed in storage during the download")
        if reason:
            raise PartError(reason, retryable=True)
        slot.resource.flush()
        pycurl = pycurl_module()
        got = int(slot.curl.getinfo(getattr(pycurl, "SIZE_DOWNLOAD_T", pycurl.SIZE_DOWNLOAD)))
        if got != part.size:
            raise PartError(f"received {got} of {part.size} bytes", retryable=True)

    def part_done(self, slot: Slot, part: Part) -> None:
        self._done_bytes += part.size
        self.state.mark_done(part.index)
        self.hasher.mark(part.index)
        self.state.save()

    def bytes_done(self) -> int:
        return self._done_bytes

    def describe_http_error(self, slot: Slot, part: Part, status: int) -> PartError:
        if status == 412:
            raise ObjectChanged("the file changed in storage since the download started")
        if status == 404:
            return PartError(
                "the storage no longer has the file (HTTP 404)",
                retryable=False,
                exit_code=4,
                hint="the staged copy may have expired; rerun the command",
            )
        return PartError(f"the storage answered HTTP {status}", retryable=False)

    def _refresh_url(self) -> None:
        fresh = self._refresh()
        if fresh.size != self.obj.size or fresh.checksums != self.obj.checksums:
            raise ObjectChanged("the file changed in storage during the download")
        self.obj = fresh
        self.generation += 1

    def close(self) -> None:
        for handle in self._files:
            with contextlib.suppress(OSError):
                handle.close()
        self._files = []


@dataclass
class DownloadOptions:
    file_id: str
    output_dir: Path
    parallel: int = 8
    retries: int = 5
    stall_timeout: float = 60.0
    wait_timeout: float = 3600.0
    overwrite: bool = False
    range_size: int = DEFAULT_RANGE_SIZE


class Downloader:
    """The download conversation with DRS around one engine run."""

    def __init__(
        self,
        drs: DrsClient,
        options: DownloadOptions,
        *,
        progress_factory: Callable[[int], Progress] | None = None,
        log: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.drs = drs
        self.options = options
        self._progress_factory = progress_factory
        self._log = log or (lambda _msg: None)
        self._clock = clock
        self.summary: dict[str, Any] = {"file_id": options.file_id, "output": None}
        self.stats: EngineStats | None = None

    def download(self) -> str:
        """Download (or resume), verify and rename into place; return the output path."""
        check_output_dir(self.options.output_dir)
        try:
            return self._attempt()
        except ObjectChanged as exc:
            self._log(f"{exc.message}; starting over")
            return self._attempt(start_over=True)

    def _attempt(self, start_over: bool = False) -> str:
        options = self.options
        directory = options.output_dir
        obj = self.drs.get_object(options.file_id, options.wait_timeout)
        name = sanitise_name(obj.name, options.file_id)
        target = directory / name
        part_path = directory / (name + ".part")
        state_path = directory / (name + ".part.json")
        if not inside(directory, target):
            raise UsageError(f"refusing to write outside {directory}", "contact the helpdesk")
        lock_path = directory / (name + ".part.lock")
        with ExclusiveLock(lock_path, f"downloading {target}") as lock:
            return self._attempt_locked(obj, target, part_path, state_path, start_over, lock)

    def _attempt_locked(
        self,
        obj: DrsObject,
        target: Path,
        part_path: Path,
        state_path: Path,
        start_over: bool,
        lock: ExclusiveLock,
    ) -> str:
        options = self.options
        directory = options.output_dir
        self.summary.update(output=str(target), bytes=obj.size)
        if target.is_dir():
            raise UsageError(f"{target} is a directory", "choose another --output-dir")
        if target.exists() and not options.overwrite:
            raise ConflictError(
                f"{target} already exists", "use --overwrite or choose another --output-dir"
            )
        chosen = choose_checksum(obj.checksums)
        if chosen is None:
            raise IntegrityError(
                f"file {options.file_id} has no checksum this client can verify "
                f"(got: {', '.join(obj.checksums) or 'none'})",
                "contact the helpdesk",
            )
        drs_type, algorithm, expected = chosen
        checksum_key = f"{drs_type}:{expected}"

        state = None
        if not start_over and part_path.is_file():
            state = DownloadState.load(state_path, options.file_id, obj.size, checksum_key)
            if state is not None and part_path.stat().st_size != obj.size:
                state = None
        if state is None:
            state = DownloadState(
                state_path,
                object_id=options.file_id,
                size=obj.size,
                checksum=checksum_key,
                range_size=max(1, options.range_size),
            )
            with contextlib.suppress(FileNotFoundError):
                part_path.unlink()
        elif state.done:
            self._log(f"resuming: {len(state.done)} ranges already downloaded")
        pieces = plan_parts(obj.size, state.range_size)
        done_bytes = sum(pieces[i][1] for i in state.done)
        check_free_space(directory, obj.size - allocated_bytes(part_path, done_bytes))
        if not part_path.exists():
            with part_path.open("wb") as handle:
                handle.truncate(obj.size)
        state.save(force=True)

        hasher = PrefixHasher(part_path, pieces, algorithm)
        for index in state.done:
            hasher.mark(index)
        transfer = DownloadTransfer(
            obj,
            part_path,
            state,
            pieces,
            hasher,
            refresh=lambda: self.drs.get_object(options.file_id, options.wait_timeout),
        )
        self.summary.update(parts=len(pieces), parts_skipped=len(state.done))
        progress = self._progress_factory(obj.size) if self._progress_factory else None
        if progress is not None:
            progress.set_baseline(done_bytes)
        engine = Engine(
            parallel=options.parallel,
            policy=RetryPolicy(retries=options.retries),
            stall_timeout=options.stall_timeout,
            progress=progress,
            log=self._log,
        )
        interrupt = InterruptFlag()
        engine.interrupt = interrupt
        started = self._clock()
        hasher.start()
        try:
            with interrupt_guard(interrupt):
                self.stats = engine.run(transfer)
        except BaseException:
            transfer.close()
            hasher.stop()
            state.save(force=True)
            raise
        finally:
            if progress is not None:
                progress.finish()
            elapsed = self._clock() - started
            moved = transfer.bytes_done() - done_bytes
            self.summary.update(
                seconds=round(elapsed, 3),
                bytes_transferred=moved,
                mib_per_s=round(moved / (1024 * 1024) / elapsed, 2) if elapsed > 0 else None,
                retries=engine.stats.retries,
            )
        transfer.close()
        state.save(force=True)
        digest = hasher.result()
        actual_size = part_path.stat().st_size
        if actual_size != obj.size or digest != expected:
            state.delete()
            with contextlib.suppress(FileNotFoundError):
                part_path.unlink()
            what = (
                f"size {actual_size} instead of {obj.size}"
                if actual_size != obj.size
                else f"{drs_type} {digest} instead of {expected}"
            )
            raise IntegrityError(
                f"the downloaded file does not match: {what}; the partial file was removed",
                "rerun the command to download again",
            )
        # State first: a crash between the two steps then leaves a .part without state (a rerun
        # starts over) rather than the final file next to a stale .part.json.
        state.delete()
        lock.remove_file()
        os.replace(part_path, target)
        self.summary[drs_type] = digest
        return str(target)
