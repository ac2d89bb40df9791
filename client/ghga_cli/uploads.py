"""Upload of one file: the UCS conversation (:class:`UploadJob`) and the engine's transfer.

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
  fails with exit code 5. ``--no-part-md5`` turns this off for CPU-starved machines.
- The whole-file MD5 is computed only when the UCS does not read the object back itself (it
  says so with ``server_verifies``) or with ``--local-md5``: one sequential pass on its own
  thread (:class:`WholeFileHasher`), in file order, one buffer.
- The file must not change under the upload: its size and modification time are recorded
  before anything is sent and checked again before the upload is confirmed.

Resume: the pending upload of the file is found through ``GET /files/{id}``
(``current_upload_id``); ``GET /uploads/{id}/parts`` lists what S3 already holds. Each stored
part is hashed from the local file (also with ``--no-part-md5``) and skipped only when its size
and ETag match; the others are sent again. Sending starts at once with the parts S3 lacks, while
the stored ones are being checked.

Presigned URLs are short-lived, so they are fetched in batches just before use (batch size follows
the observed part rate so that a batch is used well within its lifetime), refreshed when older
than half their lifetime, and on a 403 answer.
"""

from __future__ import annotations

import collections
import hashlib
import io
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

from ghga_cli.api import FileLookup, FileMetadata, PartInfo, UcsClient, UploadDetails
from ghga_cli.curl import pycurl_module
from ghga_cli.engine import MAX_PARTS, Part, PartError, Slot, Transfer, part_count, plan_parts
from ghga_cli.errors import (
    EXIT_INTEGRITY,
    ApiError,
    CliError,
    ConflictError,
    IntegrityError,
    NotFoundError,
    ProtocolError,
    RejectedError,
    UsageError,
    WaitTimeout,
)
from ghga_cli.integrity import READ_BLOCK, normalise_etag
from ghga_cli.progress import format_bytes
from ghga_cli.session import ApiAccess, FileJob, TransferSession, WaitEntry, Waiter

UPLOAD_BUFFER = 2 * 1024 * 1024
#: Threads hashing parts (the machine's cores, at most 4: MD5 runs at ~0.7 GB/s per core).
HASH_WORKERS = max(1, min(4, os.cpu_count() or 2))


@dataclass(frozen=True)
class LocalFile:
    """A local file as it was when the upload started (size and modification time)."""

    path: Path
    size: int
    mtime_ns: int

    @classmethod
    def inspect(cls, path: Path) -> LocalFile:
        """The regular, readable file at ``path`` (UsageError otherwise)."""
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
        return cls(path, st.st_size, st.st_mtime_ns)

    def check_unchanged(self) -> None:
        """IntegrityError if the file's size or modification time differ from the recorded."""
        try:
            st = self.path.stat()
        except OSError as exc:
            raise UsageError(
                f"{self.path} cannot be read any more: {exc.strerror or exc}",
                "do not move or delete the file during the upload; rerun to resume",
            ) from None
        if st.st_size != self.size or st.st_mtime_ns != self.mtime_ns:
            raise IntegrityError(
                f"{self.path} changed while it was being uploaded "
                f"(size {self.size} -> {st.st_size} bytes, or modified); the upload was not "
                "confirmed",
                "do not modify the file during the upload; rerun the same command once it is "
                "final: stored parts are checked against the file and only changed ones resent",
            )


def check_local_file(path: Path) -> int:
    """Size of the regular, readable file at ``path`` (UsageError otherwise)."""
    return LocalFile.inspect(path).size


def _read_range(handle: BinaryIO, offset: int, size: int, buffer: bytearray, digest: Any) -> int:
    """Feed ``size`` bytes at ``offset`` of ``handle`` into ``digest``; bytes read."""
    view = memoryview(buffer)
    handle.seek(offset)
    remaining = size
    while remaining > 0:
        n = handle.readinto(view[: min(remaining, len(buffer))])  # type: ignore[attr-defined]
        if not n:
            break
        digest.update(view[:n])
        remaining -= n
    return size - remaining


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
        if _read_range(handle, offset, size, self._local.buffer, digest) != size:
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
            buffer = bytearray(READ_BLOCK)
            view = memoryview(buffer)
            done = 0
            with self.path.open("rb", buffering=0) as handle:
                while not self._stop.is_set():
                    n = handle.readinto(buffer)
                    if not n:
                        break
                    digest.update(view[:n])
                    done += n
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


class UrlProvider:
    """Presigned part URLs, fetched in batches shortly before use and refreshed when old."""

    def __init__(
        self,
        presign: Callable[[str, list[int]], tuple[dict[int, str], float]],
        upload_id: str,
        part_count: int,
        skip_hint: set[int],
        *,
        min_batch: int = 16,
        max_batch: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._presign = presign  # UcsClient.presign_parts of the calling thread
        self.upload_id = upload_id
        self.part_count = part_count
        self.skip_hint = skip_hint
        self.min_batch = max(1, min_batch)
        self.max_batch = max(self.min_batch, max_batch)
        self._clock = clock
        self._urls: dict[int, tuple[str, float]] = {}  # part_no -> (url, stale_at)
        self._started = clock()
        self._parts_done = 0
        self._lock = threading.Lock()
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
        with self._lock:
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
            urls, expires_in = self._presign(self.upload_id, wanted)
            if number not in urls:  # cannot happen with a correct server; fail clearly if it does
                raise CliError(f"the API returned no upload URL for part {number}")
            self.batches += 1
            stale_at = self._clock() + max(1.0, expires_in / 2)
            for part_no, url in urls.items():
                self._urls[part_no] = (url, stale_at)
            return self._urls.pop(number)[0]


class UploadTransfer(Transfer[UploadPart]):
    """The engine's view of an upload: which parts to send, from where, and how to check them.

    Parts S3 lacks are ready at once; parts S3 holds (``existing``) are hashed first and become
    ready only if they do not match. ``on_skipped`` hears of each stored part that matched.
    """

    direction = "upload"

    def __init__(
        self,
        label: str,
        path: Path,
        pieces: list[tuple[int, int]],
        urls: UrlProvider,
        *,
        existing: dict[int, PartInfo] | None = None,
        check_parts: bool = True,
        hasher: PartHasher | None = None,
        on_skipped: Callable[[int], None] | None = None,
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
        self.skipped_bytes = 0
        self._done_bytes = 0
        self._handles: dict[int, BinaryIO] = {}
        self._bodies: dict[int, _SlotBody] = {}
        self._lock = threading.Lock()
        self._ready: collections.deque[UploadPart] = collections.deque()
        self._checking = 0  # stored parts whose hash is not known yet
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

    def _stored_checked(self, part: UploadPart, known: PartInfo, digest: Future[str]) -> None:
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
                self.skipped_bytes += part.size
            else:
                part.digest = digest
                self._ready.appendleft(part)
                return
        self._on_skipped(part.size)

    def next_part(self) -> UploadPart | None:
        with self._lock:
            return self._ready.popleft() if self._ready else None

    def exhausted(self) -> bool:
        with self._lock:
            return not self._ready and self._checking == 0

    def configure(self, slot: Slot, part: UploadPart) -> None:
        pycurl = pycurl_module()
        curl = slot.curl
        url = self.urls.get(part.number, refresh=part.refresh_url)
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
        self.urls.note_part_done()

    def bytes_moved(self) -> int:
        return self._done_bytes

    def describe_http_error(self, slot: Slot, part: UploadPart, status: int) -> PartError:
        body = self._bodies[slot.index].response.getvalue()[:2000]
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


# ---- the conversation with the UCS -------------------------------------------------------

#: Without --wait-timeout, an upload waits for its validation until the server has shown no
#: progress (no bytes verified, no verdict) for this long.
IDLE_WAIT = 3600.0
#: Most uploads asked for their status per round of the validation waiter (a batch of 1,000
#: files must not poll 1,000 uploads every few seconds; validation runs in order anyway).
POLLS_PER_ROUND = 16


@dataclass
class UploadOptions:
    """What to upload and how to check it (the session's options are shared by all files)."""

    file_id: str
    path: Path
    check_parts: bool = True  # each part's MD5 against its ETag (--no-part-md5: off)
    local_md5: bool = False  # the whole-file MD5 even when the server verifies (--local-md5)
    wait_timeout: float | None = None  # None: wait while the server makes progress
    skip_accepted: bool = False  # a batch skips files accepted earlier; one file says so (exit 4)


class UploadJob(FileJob):
    """Upload (or resume) one file, confirm it, and wait for the server's verdict."""

    def __init__(
        self,
        options: UploadOptions,
        session_api: ApiAccess,
        *,
        lookup: FileLookup | None = None,
        local: LocalFile | None = None,
    ) -> None:
        super().__init__(options.file_id)
        self.options = options
        self.api = session_api
        self.lookup = lookup
        self.local = local
        self.summary.update(upload_id=None)

    # -- steps run by the session ----------------------------------------------------------

    def begin(self, session: TransferSession) -> None:
        if session.progress is not None and self.local is not None:
            session.progress.add_total(self.local.size)
        session.run_step(self, lambda: self.send(session))

    def send(self, session: TransferSession) -> str | None:
        """Up to the confirmation; then the validation waiter takes over (returns None)."""
        log = session.log_for(self)
        options = self.options
        ucs = self.api.ucs()
        local = LocalFile.inspect(options.path)
        if self.local is None and session.progress is not None:
            session.progress.add_total(local.size)
        self.local = local
        self.summary["bytes"] = local.size
        meta = self.lookup.metadata if self.lookup and self.lookup.metadata else None
        if meta is None:
            meta = ucs.get_file(options.file_id)
        if meta.size != local.size:
            raise UsageError(
                f"the size of {options.path} ({local.size} bytes) differs from the registered "
                f"size of file {meta.file_id} ({meta.size} bytes)",
                "check that --file-path and --file-id belong together",
            )
        upload = self._find_or_create(ucs, meta, log)
        if upload is None:  # accepted before, and this is a batch: nothing to do
            if session.progress is not None:
                session.progress.add_skipped(local.size)
            self.summary.update(status_note="already accepted", bytes_transferred=0)
            return "accepted"
        self.summary["upload_id"] = upload.upload_id
        self.summary["server_verifies"] = upload.server_verifies or meta.server_verifies
        if upload.upload_status == "pending":
            self._send(session, ucs, upload, meta, local, log)
        elif upload.upload_status == "uploaded":
            log("the file was already uploaded; waiting for its validation")
        return self._await_validation(session, upload.upload_id, local.size)

    def _await_validation(self, session: TransferSession, upload_id: str, size: int) -> str | None:
        if self.options.wait_timeout is not None and self.options.wait_timeout <= 0:
            status = self.api.ucs().get_upload(upload_id).upload_status
            if status == "uploaded":
                return status
            return self.conclude(self.api.ucs().get_upload(upload_id))
        validation_waiter(session).add(self, upload_id, size, self.options.wait_timeout)
        return None

    def conclude(self, upload: UploadDetails) -> str:
        """The final status of a validated upload (raise for rejected, failed, cancelled)."""
        status = upload.upload_status
        reason = f": {upload.status_reason}" if upload.status_reason else ""
        upload_id = upload.upload_id
        if upload.verified_bytes is not None:
            self.summary["verified_bytes"] = upload.verified_bytes
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

    def cancel(self) -> str:
        """Cancel the file's pending (or uploaded, not yet validated) upload."""
        ucs = self.api.ucs()
        meta = ucs.get_file(self.options.file_id)
        if not meta.current_upload_id:
            raise NotFoundError(f"file {meta.file_id} has no upload to cancel", "nothing to do")
        upload = ucs.get_upload(meta.current_upload_id)
        self.summary["upload_id"] = upload.upload_id
        if upload.upload_status not in ("pending", "uploaded"):
            raise ConflictError(
                f"the latest upload of file {meta.file_id} is {upload.upload_status}; "
                "only pending or uploaded uploads can be cancelled",
                "nothing to cancel",
            )
        ucs.cancel(upload.upload_id)
        return "cancelled"

    # -- parts of the send step ------------------------------------------------------------

    def _find_or_create(
        self, ucs: UcsClient, meta: FileMetadata, log: Callable[[str], None]
    ) -> UploadDetails | None:
        """The upload to continue or a new one; None for a batch's already accepted file."""
        current = self.lookup.current_upload if self.lookup else None
        if current is None and meta.current_upload_id:
            current = ucs.get_upload(meta.current_upload_id)
        if current is not None:
            if current.upload_status in ("pending", "uploaded"):
                if current.upload_status == "pending":
                    log(f"resuming upload {current.upload_id}")
                return current
            if current.upload_status == "accepted":
                return self._already_accepted()
        try:
            return ucs.create_upload(self.options.file_id)
        except ApiError as exc:
            if exc.exception_id != "existingActiveUpload":
                raise
            active = exc.data.get("active_upload") or {}
            status = active.get("upload_status")
            if status == "accepted":
                return self._already_accepted()
            if active.get("upload_id") and status in ("pending", "uploaded"):
                return ucs.get_upload(str(active["upload_id"]))
            raise

    def _already_accepted(self) -> None:
        if self.options.skip_accepted:
            return None
        raise ConflictError(
            f"file {self.options.file_id} was already uploaded and accepted",
            "nothing to do; a new upload of an accepted file is not possible",
        )

    def _send(
        self,
        session: TransferSession,
        ucs: UcsClient,
        upload: UploadDetails,
        meta: FileMetadata,
        local: LocalFile,
        log: Callable[[str], None],
    ) -> None:
        """Move the parts S3 lacks, then confirm the upload."""
        options = self.options
        pieces = self._plan(upload, local.size)
        listed = ucs.list_parts(upload.upload_id) or []
        existing = {p.part_no: p for p in listed if 1 <= p.part_no <= len(pieces)}
        if existing:
            log(f"{len(existing)} of {len(pieces)} parts are already in storage; checking them")
        verifies = upload.server_verifies or meta.server_verifies
        whole = (
            WholeFileHasher(local.path, local.size) if options.local_md5 or not verifies else None
        )
        api = self.api
        urls = UrlProvider(
            lambda upload_id, numbers: api.ucs().presign_parts(upload_id, numbers),
            upload.upload_id,
            len(pieces),
            set(existing),
            min_batch=max(4, 2 * session.options.parallel),
        )
        progress = session.progress
        transfer = UploadTransfer(
            options.file_id,
            local.path,
            pieces,
            urls,
            existing=existing,
            check_parts=options.check_parts,
            on_skipped=progress.add_skipped if progress is not None else None,
        )
        self.summary.update(
            parts=len(pieces),
            parallel=session.options.parallel,
            part_md5_check=options.check_parts,
            whole_file_md5=whole is not None,
        )
        self.stats = transfer.stats
        started = time.monotonic()
        if whole is not None:
            whole.start()
        try:
            stats = session.transfer(transfer)
        except BaseException:
            if whole is not None:
                whole.stop()
            raise
        finally:
            self._record_transfer(transfer, time.monotonic() - started)
        self.summary["retries"] = stats.retries
        local.check_unchanged()
        md5 = whole.result() if whole is not None else None
        if md5 is not None:
            self.summary["md5"] = md5
            local.check_unchanged()
        if md5 is not None and meta.md5_checksum and md5 != meta.md5_checksum:
            raise IntegrityError(
                f"the MD5 of {local.path} ({md5}) differs from the registered checksum "
                f"({meta.md5_checksum}); the upload was not confirmed",
                "check you chose the right file; rerun with the right one to resume, or use "
                "--cancel",
            )
        part_md5s = transfer.part_md5s
        complete = [d for d in part_md5s if d] if all(part_md5s) else None
        self._confirm(ucs, upload.upload_id, md5, complete)
        log(f"upload {upload.upload_id} confirmed")

    @staticmethod
    def _plan(upload: UploadDetails, size: int) -> list[tuple[int, int]]:
        """The parts of ``size`` bytes in the UCS's part size (counted before listed)."""
        count = part_count(size, upload.part_size)
        if count > MAX_PARTS:
            raise ProtocolError(
                f"the part size {upload.part_size} of upload {upload.upload_id} gives {count} "
                f"parts, more than S3 allows ({MAX_PARTS})",
            )
        return plan_parts(size, upload.part_size) or [(0, 0)]

    def _record_transfer(self, transfer: UploadTransfer, elapsed: float) -> None:
        sent = transfer.bytes_moved()
        self.summary.update(
            seconds=round(elapsed, 3),
            bytes_transferred=sent,
            mib_per_s=round(sent / (1024 * 1024) / elapsed, 2) if elapsed > 0 else None,
            parts_skipped=transfer.skipped,
            retries=transfer.stats.retries,
        )

    def _confirm(
        self, ucs: UcsClient, upload_id: str, md5: str | None, part_md5s: list[str] | None
    ) -> None:
        try:
            ucs.confirm_uploaded(upload_id, md5, part_md5s)
        except ApiError as exc:
            if exc.exception_id not in ("uploadNotPending", "uploadStatusChange"):
                raise
            # A retried PATCH whose first attempt went through, or a multipart completion the
            # storage refused (status "failed"): the status and its reason tell what happened.
            current = ucs.get_upload(upload_id)
            if current.upload_status not in ("uploaded", "accepted", "rejected", "failed"):
                raise


def validation_waiter(session: TransferSession) -> ValidationWaiter:
    """The session's one validation waiter (created on first use)."""
    with _waiter_lock:
        waiter = getattr(session, "_validation_waiter", None)
        if waiter is None:
            waiter = ValidationWaiter(session)
            session._validation_waiter = waiter  # type: ignore[attr-defined]
            session.add_waiter(waiter)
    return waiter


_waiter_lock = threading.Lock()


class ValidationWaiter(Waiter):
    """Polls the uploads waiting for their verdict: the oldest due first, a few per round.

    Intervals grow from 1 s by 1.5x up to 15 s per upload. Without ``--wait-timeout`` an upload
    waits until the server has shown no progress for :data:`IDLE_WAIT` (in a batch, a verdict
    on any file counts as progress: validation runs in order); with it, at most that long.
    """

    def __init__(self, session: TransferSession, clock: Callable[[], float] = time.monotonic):
        self.session = session
        self._clock = clock
        self._entries: list[WaitEntry] = []
        self._lock = threading.Lock()
        self._last_verdict = clock()

    def add(self, job: UploadJob, upload_id: str, size: int, timeout: float | None) -> None:
        now = self._clock()
        entry = WaitEntry(
            job=job,
            due=now,
            interval=1.0,
            deadline=now + timeout if timeout is not None else None,
            last_progress=now,
            extra={
                "upload_id": upload_id,
                "size": size,
                "verified": -1,
                "said": 0.0,
                "timeout": timeout,
            },
        )
        with self._lock:
            self._entries.append(entry)
        self.session.wake_waiters()

    def poll(self) -> float:
        now = self._clock()
        with self._lock:
            due = sorted((e for e in self._entries if e.due <= now), key=lambda e: e.due)
        for entry in due[:POLLS_PER_ROUND]:
            self._poll_one(entry, now)
        with self._lock:
            if not self._entries:
                return float("inf")
            return max(0.0, min(e.due for e in self._entries) - self._clock())

    def _poll_one(self, entry: WaitEntry, now: float) -> None:
        job: UploadJob = entry.job
        log = self.session.log_for(job)
        upload_id = entry.extra["upload_id"]
        try:
            upload = job.api.ucs().get_upload(upload_id)
            if upload.upload_status != "uploaded":
                self._last_verdict = self._clock()
                self._remove(entry)
                self.session.finish(job, status=job.conclude(upload))
                return
            self._note_progress(entry, upload, log, now)
            self._check_deadline(entry, upload_id, now)
        except CliError as exc:
            self._remove(entry)
            self.session.finish(job, error=exc)
            return
        if entry.extra["said"] == 0.0:
            log("waiting for validation…")
            entry.extra["said"] = now
        entry.due = now + entry.interval
        entry.interval = min(entry.interval * 1.5, 15.0)

    def _note_progress(
        self, entry: WaitEntry, upload: UploadDetails, log: Callable[[str], None], now: float
    ) -> None:
        verified = upload.verified_bytes
        if verified is None or verified <= entry.extra["verified"]:
            return
        entry.extra["verified"] = verified
        entry.last_progress = now
        size = entry.extra["size"]
        if size > 0 and not self.session.batch and now - entry.extra.get("shown", -1e9) >= 5.0:
            entry.extra["shown"] = now
            log(
                f"verifying on the server: {100.0 * verified / size:.0f}% "
                f"({format_bytes(verified)} of {format_bytes(size)})"
            )

    def _check_deadline(self, entry: WaitEntry, upload_id: str, now: float) -> None:
        if entry.deadline is not None:
            if now >= entry.deadline:
                raise WaitTimeout(
                    f"upload {upload_id} was not validated within "
                    f"{entry.extra['timeout']:.0f} s (status: uploaded)"
                )
            return
        idle_since = max(entry.last_progress, self._last_verdict)
        if now - idle_since >= IDLE_WAIT:
            raise WaitTimeout(
                f"upload {upload_id} was not validated: the server showed no progress for "
                f"{IDLE_WAIT:.0f} s (status: uploaded)"
            )

    def _remove(self, entry: WaitEntry) -> None:
        with self._lock:
            if entry in self._entries:
                self._entries.remove(entry)
