"""Upload of one file: the UCS conversation and the engine's upload transfer.

How bytes and checksums flow (one pass over the file, bounded memory):

- A single *reader thread* reads the file strictly in order, one part at a time, with one file
  object (``f.read(part_size)``: large reads, no seeking). It feeds the whole-file MD5 itself, so
  that hash sees the bytes in file order no matter in which order the parts are sent or how often
  one is retried. Each part's own MD5 is computed on a small thread pool (hashlib releases the
  GIL, so both hashes use separate cores; MD5 runs at ~0.7 GB/s per core).
- The part's bytes stay in memory until S3 confirmed the part; retries resend that buffer, so
  the file is never read twice. libcurl pulls the body from an ``io.BytesIO`` over the buffer
  (``READDATA``: a C ``read`` method, 2 MiB per call with ``UPLOAD_BUFFERSIZE``, no Python frame),
  with ``INFILESIZE_LARGE`` set (never chunked encoding) and an empty ``Expect:``.
- The reader hands parts over through a queue of size 1, so at most ``parallel`` parts are in
  flight, one waits in the queue and one is being read: memory is at most
  ``(parallel + 2) * part_size`` plus small constants, whatever the file size. The CLI lowers
  ``parallel`` when that would exceed ``--max-memory``.
- Every answer's ``ETag`` must equal the part's MD5 (S3 semantics for unencrypted and SSE-S3
  objects); a mismatch is retried and then fails with exit code 5.

Resume: the pending upload of the file is found through ``GET /files/{id}``
(``current_upload_id``); ``GET /uploads/{id}/parts`` lists what S3 already holds. The reader still
reads (and hashes) those parts, since the whole-file MD5 needs them, and skips sending each one
whose size and ETag match the local bytes; mismatching parts are sent again.

Presigned URLs are short-lived, so they are fetched in batches just before use (batch size follows
the observed part rate so that a batch is used well within its lifetime), refreshed when older
than half their lifetime, and on a 403 answer.
"""

from __future__ import annotations

import hashlib
import io
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ghga_cli.api import PartInfo, UcsClient, UploadDetails
from ghga_cli.curl import pycurl_module
from ghga_cli.engine import (
    MAX_PARTS,
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
    ApiError,
    CliError,
    ConflictError,
    IntegrityError,
    NotFoundError,
    RejectedError,
    UsageError,
    WaitTimeout,
)
from ghga_cli.integrity import normalise_etag
from ghga_cli.progress import Progress, format_bytes
from ghga_cli.retry import RetryPolicy

UPLOAD_BUFFER = 2 * 1024 * 1024
#: Part buffers that exist besides the ones in flight (queued + being read).
EXTRA_BUFFERS = 2


def effective_parallel(parallel: int, part_size: int, max_memory: int) -> int:
    """Largest parallelism ≤ ``parallel`` whose part buffers fit in ``max_memory`` (min 1)."""
    fits = max_memory // max(1, part_size) - EXTRA_BUFFERS
    return max(1, min(parallel, fits))


def check_local_file(path: Path) -> int:
    """Size of the regular, readable file at ``path`` (UsageError otherwise)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UsageError(f"file not found: {path}", "check --file-path") from None
    except OSError as exc:
        raise UsageError(f"cannot access {path}: {exc.strerror}", "check --file-path") from None
    if path.is_dir():
        raise UsageError(f"{path} is a directory, not a file", "give the path of a file")
    if not path.is_file():
        raise UsageError(f"{path} is not a regular file", "give the path of a regular file")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise UsageError(
            f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions"
        ) from None
    return st.st_size


class PartReader:
    """Reads parts in file order on a background thread (see module docstring)."""

    _END = object()

    def __init__(
        self,
        path: Path,
        pieces: list[tuple[int, int]],
        existing: dict[int, PartInfo],
        hash_workers: int = 2,
    ):
        self.path = path
        self.pieces = pieces
        self.existing = existing
        self.whole = hashlib.md5()
        self.part_md5s: list[str | None] = [None] * len(pieces)
        self.skipped = 0
        self.skipped_bytes = 0
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max(1, hash_workers))
        self._thread = threading.Thread(target=self._run, name="ghga-reader", daemon=True)
        self._ended = False
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        # Unblock a reader waiting on a full queue.
        while self._thread.is_alive():
            try:
                self.queue.get_nowait()
            except queue.Empty:
                self._thread.join(0.05)
        self._pool.shutdown(wait=True)

    def next_part(self, timeout: float) -> Part | None:
        if self._ended:
            return None
        try:
            item = self.queue.get(timeout=timeout) if timeout > 0 else self.queue.get_nowait()
        except queue.Empty:
            return None
        if item is self._END:
            self._ended = True
            if self.error is not None:
                raise self.error
            return None
        return item

    @property
    def ended(self) -> bool:
        return self._ended

    def whole_md5(self) -> str:
        return self.whole.hexdigest()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            with self.path.open("rb", buffering=0) as handle:
                for index, (offset, size) in enumerate(self.pieces):
                    if self._stop.is_set():
                        return
                    data = _read_exactly(handle, size)
                    if len(data) != size:
                        raise IntegrityError(
                            f"{self.path} became shorter while it was read",
                            "do not modify the file during the upload",
                        )
                    self.whole.update(data)
                    digest: Future[str] = self._pool.submit(_md5_hex, data)
                    known = self.existing.get(index + 1)
                    if known is not None and known.size == size and known.etag == digest.result():
                        self.part_md5s[index] = digest.result()
                        self.skipped += 1
                        self.skipped_bytes += size
                        continue
                    part = Part(index=index, offset=offset, size=size, payload=data, digest=digest)
                    del data
                    if not self._put(part):
                        return
                if handle.read(1):
                    raise IntegrityError(
                        f"{self.path} grew while it was read",
                        "do not modify the file during the upload",
                    )
        except CliError as exc:
            self.error = exc
        except OSError as exc:
            self.error = UsageError(
                f"cannot read {self.path}: {exc.strerror or exc}", "check the file and rerun"
            )
        except BaseException as exc:  # surfaced in the main thread
            self.error = exc
        finally:
            self._put(self._END)


def _read_exactly(handle: Any, size: int) -> bytes:
    """Read ``size`` bytes (fewer only at end of file); unbuffered reads may return short."""
    chunks = []
    remaining = size
    while remaining > 0:
        chunk = handle.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class UrlProvider:
    """Presigned part URLs, fetched in batches shortly before use and refreshed when old."""

    def __init__(
        self,
        ucs: UcsClient,
        upload_id: str,
        part_count: int,
        skip_hint: set[int],
        *,
        min_batch: int = 16,
        max_batch: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.ucs = ucs
        self.upload_id = upload_id
        self.part_count = part_count
        self.skip_hint = skip_hint
        self.min_batch = max(1, min_batch)
        self.max_batch = max(self.min_batch, max_batch)
        self._clock = clock
        self._urls: dict[int, tuple[str, float]] = {}  # part_no -> (url, stale_at)
        self._started = clock()
        self._parts_done = 0
        self.batches = 0

    def note_part_done(self) -> None:
        self._parts_done += 1

    def batch_size(self, lifetime: float = 900.0) -> int:
        """Parts expected to be used within a third of a URL's lifetime (clamped)."""
        elapsed = self._clock() - self._started
        if self._parts_done < 2 or elapsed <= 0:
            return self.min_batch
        rate = self._parts_done / elapsed
        return int(max(self.min_batch, min(self.max_batch, rate * lifetime / 3)))

    def get(self, number: int, refresh: bool = False) -> str:
        now = self._clock()
        cached = self._urls.get(number)
        if cached is not None and not refresh and now < cached[1]:
            return self._urls.pop(number)[0]
        wanted = [number]
        candidate = number + 1
        limit = self.batch_size()
        while len(wanted) < limit and candidate <= self.part_count:
            entry = self._urls.get(candidate)
            if candidate not in self.skip_hint and (entry is None or now >= entry[1]):
                wanted.append(candidate)
            candidate += 1
        urls, expires_in = self.ucs.presign_parts(self.upload_id, wanted)
        if number not in urls:  # cannot happen with a correct server; fail clearly if it does
            raise CliError(f"the API returned no upload URL for part {number}")
        self.batches += 1
        stale_at = self._clock() + max(1.0, expires_in / 2)
        for part_no, url in urls.items():
            self._urls[part_no] = (url, stale_at)
        return self._urls.pop(number)[0]


class UploadTransfer(Transfer):
    """The engine's view of an upload: parts come from the reader, URLs from the UCS."""

    direction = "upload"

    def __init__(self, reader: PartReader, urls: UrlProvider):
        self.reader = reader
        self.urls = urls
        self._done_bytes = 0

    def next_part(self, timeout: float) -> Part | None:
        return self.reader.next_part(timeout)

    def exhausted(self) -> bool:
        return self.reader.ended

    def configure(self, slot: Slot, part: Part) -> None:
        pycurl = pycurl_module()
        curl = slot.curl
        url = self.urls.get(part.number, refresh=part.refresh_url)
        body = io.BytesIO(part.payload)
        slot.upload_body = body
        slot.resource = io.BytesIO()
        curl.setopt(pycurl.URL, url)
        curl.setopt(pycurl.UPLOAD, 1)
        curl.setopt(pycurl.INFILESIZE_LARGE, part.size)
        curl.setopt(pycurl.READDATA, body)
        curl.setopt(pycurl.SEEKFUNCTION, lambda offset, origin: _seek(body, offset, origin))
        if hasattr(pycurl, "UPLOAD_BUFFERSIZE"):  # pycurl >= 7.44; 2 MiB reads, not 64 KiB
            curl.setopt(pycurl.UPLOAD_BUFFERSIZE, UPLOAD_BUFFER)
        curl.setopt(pycurl.HTTPHEADER, ["Expect:", "Content-Type:"])
        curl.setopt(pycurl.WRITEDATA, slot.resource)

    def check(self, slot: Slot, part: Part) -> None:
        expected = part.digest.result() if isinstance(part.digest, Future) else part.digest
        got = normalise_etag(slot.headers.get("etag"))
        if got != expected:
            raise PartError(
                f"the storage's ETag {got or '(none)'} differs from the part's MD5 {expected}",
                retryable=True,
                exit_code=EXIT_INTEGRITY,
                hint="the bytes were damaged on the way; check the network or proxy",
            )

    def part_done(self, slot: Slot, part: Part) -> None:
        digest = part.digest.result() if isinstance(part.digest, Future) else part.digest
        self.reader.part_md5s[part.index] = digest
        # Release the buffer now (the handle keeps its READDATA object until it is reused).
        part.payload = None
        slot.upload_body.close()
        self._done_bytes += part.size
        self.urls.note_part_done()

    def bytes_done(self) -> int:
        return self._done_bytes + self.reader.skipped_bytes

    def describe_http_error(self, slot: Slot, part: Part, status: int) -> PartError:
        body = slot.resource.getvalue()[:2000] if slot.resource is not None else b""
        code = _s3_error_code(body)
        if status == 404:
            return PartError(
                f"the storage no longer knows this upload (HTTP 404{', ' + code if code else ''})",
                retryable=False,
                exit_code=4,
                hint="the upload was probably cancelled; rerun to start a new one",
            )
        detail = f" ({code})" if code else ""
        return PartError(f"the storage answered HTTP {status}{detail}", retryable=False)


def _seek(body: io.BytesIO, offset: int, origin: int) -> int:
    body.seek(offset, origin)
    return 0


def _s3_error_code(body: bytes) -> str:
    start = body.find(b"<Code>")
    end = body.find(b"</Code>")
    if start < 0 or end < start:
        return ""
    return body[start + 6 : end].decode("utf-8", "replace")[:64]


@dataclass
class UploadOptions:
    file_id: str
    path: Path
    parallel: int = 8
    retries: int = 5
    stall_timeout: float = 60.0
    wait_timeout: float = 3600.0
    max_memory: int = 1024 * 1024 * 1024


class Uploader:
    """The upload conversation with the UCS around one engine run."""

    def __init__(
        self,
        ucs: UcsClient,
        options: UploadOptions,
        *,
        progress_factory: Callable[[int], Progress] | None = None,
        log: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.ucs = ucs
        self.options = options
        self._progress_factory = progress_factory
        self._log = log or (lambda _msg: None)
        self._sleep = sleep
        self._clock = clock
        self.summary: dict[str, Any] = {"file_id": options.file_id, "upload_id": None}
        self.stats: EngineStats | None = None

    # -- public -------------------------------------------------------------------------

    def upload(self) -> str:
        """Upload (or resume) and wait for validation; return the final status."""
        size = check_local_file(self.options.path)
        self.summary["bytes"] = size
        meta = self.ucs.get_file(self.options.file_id)
        if meta.size != size:
            raise UsageError(
                f"the size of {self.options.path} ({size} bytes) differs from the registered "
                f"size of file {meta.file_id} ({meta.size} bytes)",
                "check that --file-path and --file-id belong together",
            )
        upload = self._find_or_create(meta.current_upload_id)
        self.summary["upload_id"] = upload.upload_id
        if upload.upload_status == "pending":
            self._send(upload, size, meta.md5_checksum)
        elif upload.upload_status == "uploaded":
            self._log("the file was already uploaded; waiting for its validation")
        return self._wait_for_validation(upload.upload_id)

    def cancel(self) -> str:
        """Cancel the file's pending (or uploaded, not yet validated) upload."""
        meta = self.ucs.get_file(self.options.file_id)
        if not meta.current_upload_id:
            raise NotFoundError(f"file {meta.file_id} has no upload to cancel", "nothing to do")
        upload = self.ucs.get_upload(meta.current_upload_id)
        self.summary["upload_id"] = upload.upload_id
        if upload.upload_status not in ("pending", "uploaded"):
            raise ConflictError(
                f"the latest upload of file {meta.file_id} is {upload.upload_status}; "
                "only pending or uploaded uploads can be cancelled",
                "nothing to cancel",
            )
        self.ucs.cancel(upload.upload_id)
        self._log(f"cancelled upload {upload.upload_id} of file {meta.file_id}")
        return "cancelled"

    # -- steps --------------------------------------------------------------------------

    def _find_or_create(self, current_upload_id: str | None) -> UploadDetails:
        if current_upload_id:
            current = self.ucs.get_upload(current_upload_id)
            if current.upload_status in ("pending", "uploaded"):
                if current.upload_status == "pending":
                    self._log(f"resuming upload {current.upload_id}")
                return current
            if current.upload_status == "accepted":
                raise self._already_accepted()
        try:
            return self.ucs.create_upload(self.options.file_id)
        except ApiError as exc:
            if exc.exception_id != "existingActiveUpload":
                raise
            active = exc.data.get("active_upload") or {}
            status = active.get("upload_status")
            if status == "accepted":
                raise self._already_accepted() from None
            if active.get("upload_id") and status in ("pending", "uploaded"):
                return self.ucs.get_upload(str(active["upload_id"]))
            raise

    def _already_accepted(self) -> ConflictError:
        return ConflictError(
            f"file {self.options.file_id} was already uploaded and accepted",
            "nothing to do; a new upload of an accepted file is not possible",
        )

    def _send(self, upload: UploadDetails, size: int, registered_md5: str | None) -> None:
        options = self.options
        part_size = upload.part_size
        pieces = plan_parts(size, part_size) or [(0, 0)]
        if len(pieces) > MAX_PARTS:
            raise CliError(
                f"the part size {part_size} of upload {upload.upload_id} gives {len(pieces)} "
                f"parts, more than S3 allows ({MAX_PARTS})",
                "contact the helpdesk",
            )
        listed = self.ucs.list_parts(upload.upload_id) or []
        existing = {p.part_no: p for p in listed if 1 <= p.part_no <= len(pieces)}
        if existing:
            self._log(f"{len(existing)} of {len(pieces)} parts are already in storage")
        parallel = effective_parallel(options.parallel, part_size, options.max_memory)
        floor = (1 + EXTRA_BUFFERS) * part_size
        if floor > options.max_memory:
            # The UCS sets the part size (up to ~525 MiB near 5 TiB); one transfer needs its
            # buffers whatever the limit says, so say so rather than pretend to honour it.
            self._log(
                f"--max-memory is below what one transfer of this upload needs "
                f"({format_bytes(floor)}: {1 + EXTRA_BUFFERS} buffers of "
                f"{format_bytes(part_size)} parts); using 1 parallel transfer"
            )
        elif parallel < options.parallel:
            self._log(
                f"using {parallel} parallel transfers instead of {options.parallel} to keep "
                f"memory under --max-memory ({format_bytes(part_size)} parts)"
            )
        reader = PartReader(options.path, pieces, existing, hash_workers=min(4, parallel))
        urls = UrlProvider(
            self.ucs,
            upload.upload_id,
            len(pieces),
            set(existing),
            min_batch=max(4, 2 * parallel),
        )
        transfer = UploadTransfer(reader, urls)
        progress = self._progress_factory(size) if self._progress_factory else None
        engine = Engine(
            parallel=parallel,
            policy=RetryPolicy(retries=options.retries),
            stall_timeout=options.stall_timeout,
            progress=progress,
            log=self._log,
        )
        self.summary["parts"] = len(pieces)
        self.summary["parallel"] = parallel
        started = self._clock()
        interrupt = InterruptFlag()
        engine.interrupt = interrupt
        reader.start()
        try:
            with interrupt_guard(interrupt):
                self.stats = engine.run(transfer)
        finally:
            reader.stop()
            if progress is not None:
                progress.finish()
            elapsed = self._clock() - started
            sent = transfer.bytes_done() - reader.skipped_bytes
            self.summary.update(
                seconds=round(elapsed, 3),
                bytes_transferred=sent,
                mib_per_s=round(sent / (1024 * 1024) / elapsed, 2) if elapsed > 0 else None,
                parts_skipped=reader.skipped,
                retries=engine.stats.retries,
            )
        md5 = reader.whole_md5()
        part_md5s = [d or "" for d in reader.part_md5s]
        self.summary["md5"] = md5
        if registered_md5 and md5 != registered_md5:
            raise IntegrityError(
                f"the MD5 of {options.path} ({md5}) differs from the registered checksum "
                f"({registered_md5}); the upload was not confirmed",
                "check you chose the right file; rerun with the right one to resume, or use "
                "--cancel",
            )
        try:
            self.ucs.confirm_uploaded(upload.upload_id, md5, part_md5s)
        except ApiError as exc:
            if exc.exception_id not in ("uploadNotPending", "uploadStatusChange"):
                raise
            # A retried PATCH whose first attempt went through, or a multipart completion the
            # storage refused (status "failed"): the status and its reason tell what happened.
            current = self.ucs.get_upload(upload.upload_id)
            if current.upload_status not in ("uploaded", "accepted", "rejected", "failed"):
                raise
        self._log(f"upload {upload.upload_id} confirmed")

    def _wait_for_validation(self, upload_id: str) -> str:
        timeout = self.options.wait_timeout
        upload = self.ucs.get_upload(upload_id)
        if upload.upload_status == "uploaded" and timeout <= 0:
            return "uploaded"
        deadline = self._clock() + timeout
        interval = 1.0
        announced = False
        while upload.upload_status == "uploaded":
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise WaitTimeout(
                    f"upload {upload_id} was not validated within {timeout:.0f} s "
                    "(status: uploaded)"
                )
            if not announced:
                self._log("waiting for validation…")
                announced = True
            self._sleep(min(interval, remaining))
            interval = min(interval * 1.5, 15.0)
            upload = self.ucs.get_upload(upload_id)
        status = upload.upload_status
        reason = f": {upload.status_reason}" if upload.status_reason else ""
        if status == "accepted":
            return status
        if status == "rejected":
            raise RejectedError(
                f"upload {upload_id} was rejected by validation{reason}",
                "check the file; contact the helpdesk if it is right",
            )
        if status == "failed":
            raise RejectedError(
                f"upload {upload_id} failed{reason}", "rerun the command to start a new upload"
            )
        if status == "cancelled":
            raise ConflictError(
                f"upload {upload_id} was cancelled", "rerun the command to start a new upload"
            )
        raise CliError(f"upload {upload_id} has the unexpected status {status}")
