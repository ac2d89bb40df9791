"""Validation: the server verifies and stores an upload while the client is still sending it.

The archive never accepts bytes it has not verified. An upload is stored as segments
(domain/segments.py). As soon as a segment is completed, the validation job reads it back
with parallel ranged GETs, feeds the bytes in file order to MD5 and SHA-256 (one pass, the
two hashes on two threads, from saved resumable state), and copies it server-side into the
permanent object's multipart upload (:class:`~ucs_lambda.services.copying.ResumableCopy`),
both pinned to the segment's ETag. After the client's confirmation only the last segment's
share is left: when every byte was hashed, the upload is accepted only if the size and the
MD5 equal the registered ones; then the permanent multipart upload is completed and the
SHA-256 stored with the file. Otherwise it is rejected and the permanent multipart upload
aborted: a rejected or cancelled upload leaves nothing in permanent storage. Client
checksums are evidence that can reject early, never proof. A file of one segment within
one ``CopyObject`` (5 GiB) is copied with that one call after the verdict instead.

One job run works for at most ``UCS_JOB_BUDGET_SECONDS`` (and ``UCS_JOB_BUDGET_BYTES``);
the rest is continued by the next run. Progress -- hash states, offset, the ETag of the
segment they end in, the permanent multipart upload -- is saved in the upload item every
``UCS_VALIDATE_CHECKPOINT_SECONDS`` and at the end of a run, and S3's part list says which
copies are done, so duplicated, replayed and re-queued messages all continue one state.
Only the run holding the upload's lease (``UCS_VALIDATE_LEASE_SECONDS``, renewed at every
checkpoint) may advance it; a run that finds a live lease leaves the work to its holder,
and a holder looks again for new segments after it let the lease go, so a segment completed
meanwhile is never left waiting. A cancel wins over the job: its conditional writes then
fail and it stops without a verdict.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..concurrency import bounded_map
from ..config import ConfigError, Settings
from ..domain.digests import MD5, SHA256, ResumableHash, StateMismatch, pack, unpack
from ..domain.integrity import Evidence, judge_digest, precheck
from ..domain.models import FileRecord, UploadRecord, UploadStatus, Verification
from ..domain.segments import SegmentLayout
from ..ports import (
    CopyItem,
    JobQueue,
    ObjectChanged,
    ObjectMissing,
    ObjectRef,
    ObjectStorage,
    State,
)
from .copying import ResumableCopy
from .inbox import UploadObjects
from .jobrun import Budget, LeaseKeeper

log = logging.getLogger(__name__)

#: S3 user metadata naming the upload an object in the permanent bucket came from.
UPLOAD_ID_META = "upload-id"

#: Outcomes of one job (``None``: nothing to do, or another run has the upload).
ACCEPTED, REJECTED, CONTINUED = "accepted", "rejected", "continued"

#: Budget kind of the hashing (copies are another kind).
_HASH = "hash"


class _Paused(Exception):
    """The run's budget ended with work left: save, release, queue the continuation."""


class _Lost(Exception):
    """The lease was lost or the upload changed: stop without deciding anything."""


@dataclass(frozen=True)
class _Range:
    """A ranged GET of a segment object: bytes ``first..last`` of the segment."""

    key: str
    etag: str
    first: int
    last: int


class ValidationService:
    """Verifies and stores uploads; one call of :meth:`validate` is one job run's share."""

    def __init__(
        self, settings: Settings, state: State, storage: ObjectStorage, queue: JobQueue
    ) -> None:
        _check(settings)
        self.settings = settings
        self.files = state.files
        self.uploads = state.uploads
        self.leases = state.leases
        self.storage = storage
        self.queue = queue
        self.objects = UploadObjects(settings, storage)

    def validate(self, upload_id: str) -> str | None:
        """Advance the upload: ``accepted``, ``rejected``, ``continued`` (a continuation is
        queued), or None (nothing more to do now, or a live run holds it). Replays are
        harmless; failures raise (the message is then redelivered)."""
        budget = Budget(self.settings.job_budget_seconds, self.settings.job_budget_bytes)
        first = True
        while True:
            upload = self.uploads.get_upload(upload_id)
            if upload is None:
                log.warning("validate: upload %s does not exist", upload_id)
                return None
            if upload.upload_status not in (UploadStatus.PENDING, UploadStatus.UPLOADED):
                log.info(
                    "validate: upload %s is %s; nothing to do",
                    upload_id,
                    upload.upload_status.value,
                )
                return None
            if not self._work_left(upload):
                return None
            if not first and not budget.time_left:
                return self._queue_continuation(upload_id, "the run's time is up")
            first = False
            owner = uuid.uuid4().hex
            progress = self.leases.claim_verification(
                upload_id, owner, time.time(), self.settings.validate_lease_seconds
            )
            if progress is None:
                log.info("validate: upload %s is being validated by another run", upload_id)
                return None
            try:
                outcome = self._run(upload, progress, budget)
            except _Paused:
                self._release(upload_id, owner)
                return self._queue_continuation(upload_id, "budget spent")
            except _Lost:
                log.info("validate: upload %s changed or another run took over", upload_id)
                return None
            except ObjectMissing as exc:
                current = self.uploads.get_upload(upload_id)
                if current is None or current.upload_status not in (
                    UploadStatus.PENDING,
                    UploadStatus.UPLOADED,
                ):
                    log.info("validate: upload %s changed during validation", upload_id)
                    return None  # cancelled meanwhile: its clean-up removed the objects
                # Still active, yet a completed segment is gone (S3 is strongly consistent):
                # what it held can never be verified.
                return self._refuse(current, owner, f"a stored segment is missing: {exc}")
            finally:
                self._release(upload_id, owner)
            if outcome is not None:
                return outcome
            # Everything completed so far is verified and stored. A segment completed while
            # this run held the lease found it taken; look again now that it is free.

    def _work_left(self, upload: UploadRecord) -> bool:
        """A confirmed upload awaits its verdict; a pending one has unverified segments."""
        if upload.upload_status is UploadStatus.UPLOADED:
            return True
        file = self.files.get_file(upload.file_id)
        if file is None:
            return False
        layout = upload.layout(file.size, self.settings.copy_part_size)
        return upload.verified_bytes < upload.done_prefix_end(layout)

    # ---- one run -----------------------------------------------------------------------

    def _run(self, upload: UploadRecord, progress: Verification, budget: Budget) -> str | None:
        """Hash and store what is completed; decide once all of a confirmed upload is.

        A segment whose ETag changed since it was completed (only someone with S3
        credentials could do that) ends the upload: every read and copy is pinned to the
        ETag, so its other bytes are never verified nor stored.
        """
        file = self.files.get_file(upload.file_id)
        if file is None:
            return self._refuse(upload, progress.owner, "the file is no longer registered")
        try:
            return self._advance(upload, file, progress, budget)
        except ObjectChanged as exc:
            return self._refuse(upload, progress.owner, _changed(exc))

    def _advance(
        self, upload: UploadRecord, file: FileRecord, progress: Verification, budget: Budget
    ) -> str | None:
        s = self.settings
        owner = progress.owner
        layout = upload.layout(file.size, s.copy_part_size)
        confirmed = upload.upload_status is UploadStatus.UPLOADED
        if confirmed:
            early = precheck(self._evidence(upload, file, layout))
            if early is not None:
                return self._refuse(upload, owner, early.reason or "rejected")
        lease = LeaseKeeper(
            lambda: self.leases.renew_verification(
                upload.upload_id, owner, time.time(), s.validate_lease_seconds
            ),
            s.validate_checkpoint_seconds,
            budget,
        )
        md5, sha256, offset = self._resume(upload, layout, progress)
        end = upload.done_prefix_end(layout)
        if confirmed and end < layout.size:
            # The confirmation completes every segment before the upload leaves pending, so
            # this cannot happen through the API; a verdict on a prefix must never be given.
            missing = layout.segment_at(end)
            raise ObjectMissing(
                "NoSuchKey", f"segment {missing} of the confirmed upload is not stored"
            )
        assembly = _Assembly(self, upload, file, layout, progress, budget, lease)
        try:
            if assembly.needed:
                assembly.start()
            offset = self._hash(upload, layout, progress, (md5, sha256), offset, end, lease)
        finally:
            assembly.join()
        if assembly.changed is not None:
            raise assembly.changed
        if assembly.error is not None:
            raise assembly.error
        if lease.lost or assembly.lost:
            raise _Lost()
        if offset < end or not assembly.complete:
            raise _Paused()
        if not confirmed:
            return None  # verified and stored as far as the client has sent
        verdict = judge_digest(md5.hexdigest(), file.md5_checksum)
        if not verdict.accepted:
            return self._refuse(upload, owner, verdict.reason or "rejected")
        return self._accept(upload, file, assembly, sha256.hexdigest(), owner)

    def _evidence(self, upload: UploadRecord, file: FileRecord, layout: SegmentLayout) -> Evidence:
        done = upload.segments_done
        return Evidence(
            registered_size=file.size,
            registered_md5=file.md5_checksum,
            object_size=sum(layout.span(n)[1] for n in done),
            segments=[(done[n].etag, list(done[n].part_etags)) for n in sorted(done)],
            client_part_md5s=upload.client_part_md5s,
            client_md5=upload.client_md5,
        )

    def _resume(
        self, upload: UploadRecord, layout: SegmentLayout, progress: Verification
    ) -> tuple[ResumableHash, ResumableHash, int]:
        """The saved hash states, if they belong to the stored segments; else byte 0."""
        if progress.offset and progress.state:
            segment = upload.segments_done.get(layout.segment_at(progress.offset - 1))
            if segment is None or segment.etag != progress.etag:
                log.warning(
                    "validate: upload %s: saved state is for another object (ETag %s); "
                    "starting over",
                    upload.upload_id,
                    progress.etag,
                )
            else:
                try:
                    md5, sha256 = unpack(progress.state, progress.offset)
                    return md5, sha256, progress.offset
                except StateMismatch as exc:
                    log.warning("validate: upload %s: %s; starting over", upload.upload_id, exc)
        return ResumableHash(MD5), ResumableHash(SHA256), 0

    def _ranges(
        self, upload: UploadRecord, layout: SegmentLayout, offset: int, end: int
    ) -> Iterator[tuple[int, _Range]]:
        """``(global offset, range)`` of the ranged GETs covering ``offset..end``."""
        step = self.settings.validate_range_size
        while offset < end:
            segment_no = layout.segment_at(offset)
            seg_offset, seg_length = layout.span(segment_no)
            stop = min(end, seg_offset + seg_length, offset + step)
            etag = upload.segments_done[segment_no].etag
            key = upload.segment_key(segment_no)
            yield offset, _Range(key, etag, offset - seg_offset, stop - 1 - seg_offset)
            offset = stop

    def _hash(
        self,
        upload: UploadRecord,
        layout: SegmentLayout,
        progress: Verification,
        hashes: tuple[ResumableHash, ResumableHash],
        offset: int,
        end: int,
        lease: LeaseKeeper,
    ) -> int:
        """Read and hash from ``offset`` until ``end``, the budget or the lease ends.

        Ranges are fetched ``UCS_VALIDATE_CONCURRENCY`` at a time and hashed in order, so
        memory holds at most that many ranges plus the one being hashed; SHA-256 runs on a
        second thread beside MD5 (both release the GIL). Returns the offset reached (saved);
        raises :class:`_Lost` when a checkpoint was refused.
        """
        s = self.settings
        md5, sha256 = hashes
        if offset >= end:
            return offset
        saved, last_save = progress.offset, time.monotonic()
        etag = progress.etag or ""
        budget = lease.budget
        allowed = budget.bytes_left(_HASH)
        if allowed is not None:  # ranges end where the run's bytes do (at least one byte)
            end = min(end, offset + max(1, allowed))
        wanted = budget.limit(
            self._ranges(upload, layout, offset, end), lambda r: r[1].last - r[1].first + 1, _HASH
        )

        def read(item: tuple[int, _Range]) -> tuple[_Range, bytes]:
            rng = item[1]
            data = self.storage.read_range(s.inbox_bucket, rng.key, rng.first, rng.last, rng.etag)
            return rng, data

        window = s.validate_concurrency
        with ThreadPoolExecutor(window) as readers, ThreadPoolExecutor(1) as helper:
            chunks = bounded_map(readers, read, wanted, window, lambda: lease.keep_going(_HASH))
            unsaved = False
            for rng, chunk in chunks:
                sha256_done = helper.submit(sha256.update, chunk)
                md5.update(chunk)
                sha256_done.result()
                offset += len(chunk)
                etag, unsaved = rng.etag, True
                if time.monotonic() - last_save >= s.validate_checkpoint_seconds:
                    self._checkpoint(upload.upload_id, progress.owner, saved, offset, hashes, etag)
                    lease.touch()
                    saved, last_save, unsaved = offset, time.monotonic(), False
        if unsaved:
            self._checkpoint(upload.upload_id, progress.owner, saved, offset, hashes, etag)
            lease.touch()
        return offset

    def _checkpoint(
        self,
        upload_id: str,
        owner: str,
        saved: int,
        offset: int,
        hashes: tuple[ResumableHash, ResumableHash],
        etag: str,
    ) -> None:
        progress = Verification(owner=owner, offset=offset, state=pack(*hashes), etag=etag)
        if not self.leases.save_verification(
            progress, upload_id, saved, time.time(), self.settings.validate_lease_seconds
        ):
            raise _Lost()

    def _queue_continuation(self, upload_id: str, note: str) -> str:
        self.queue.send({"job": "validate", "upload_id": upload_id})
        log.info("validate: upload %s continues in the next job (%s)", upload_id, note)
        return CONTINUED

    def _release(self, upload_id: str, owner: str) -> None:
        try:
            self.leases.release_verification(upload_id, owner)
        except Exception:  # it expires anyway; only the next run's start is delayed
            log.warning("validate: could not release the lease of %s", upload_id, exc_info=True)

    # ---- verdicts ----------------------------------------------------------------------

    def _refuse(self, upload: UploadRecord, owner: str, reason: str) -> str | None:
        """End an upload that cannot be accepted: a confirmed one is rejected, a pending one
        (a segment that changed after it was completed) failed. The file's lock is released
        and nothing is left in the inbox or the permanent bucket."""
        target = UploadStatus.REJECTED
        if upload.upload_status is UploadStatus.PENDING:
            target = UploadStatus.FAILED
        if not self.uploads.release(upload, target, reason=reason, verifier=owner):
            return None
        current = self.uploads.get_upload(upload.upload_id) or upload
        self.objects.discard(current, self.files.get_file(upload.file_id))
        log.info("validate: upload %s %s: %s", upload.upload_id, target.value, reason)
        return REJECTED

    def _accept(
        self,
        upload: UploadRecord,
        file: FileRecord,
        assembly: _Assembly,
        sha256: str,
        owner: str,
    ) -> str | None:
        """Finish the permanent object, then uploaded -> accepted, then clean up."""
        s = self.settings
        etag = assembly.finish() if assembly.needed else self._copy_whole(upload, file)
        if etag is None:
            raise _Lost()
        if self.uploads.accept(upload, sha256=sha256, verifier=owner, permanent_etag=etag):
            self.objects.finish_accepted(upload, self.files.get_file(upload.file_id))
            log.info("validate: upload %s accepted (sha256 %s)", upload.upload_id, sha256)
            return ACCEPTED
        current = self.uploads.get_upload(upload.upload_id)
        if current is not None and current.upload_status is UploadStatus.ACCEPTED:
            self.objects.delete_segments(upload)  # a concurrent run won
            return None
        if current is not None and current.upload_status is UploadStatus.UPLOADED:
            raise _Lost()  # another run took the lease over; the copy is its copy too
        # Cancelled while this job was copying: remove the copy, but only if it is ours (a later
        # upload of the same file may own the permanent key by now).
        held = self.storage.head(s.permanent_bucket, file.file_id)
        if held is not None and held.metadata.get(UPLOAD_ID_META) == upload.upload_id:
            self.storage.delete(s.permanent_bucket, file.file_id)
        log.info("validate: upload %s changed during validation; copy discarded", upload.upload_id)
        return None

    def _copy_whole(self, upload: UploadRecord, file: FileRecord) -> str:
        """The one-segment upload within one ``CopyObject``: copy it after the verdict."""
        s = self.settings
        segment = upload.segments_done[1]
        source = ObjectRef(s.inbox_bucket, upload.segment_key(1), segment.etag)
        self.storage.copy_object(source, s.permanent_bucket, file.file_id, _metadata(upload, file))
        held = self.storage.head(s.permanent_bucket, file.file_id)
        return held.etag if held is not None else ""


class _Assembly:
    """The copy of an upload's completed segments into the permanent multipart upload,
    on a thread of its own beside the hashing (S3 does the copying; the thread waits)."""

    def __init__(
        self,
        service: ValidationService,
        upload: UploadRecord,
        file: FileRecord,
        layout: SegmentLayout,
        progress: Verification,
        budget: Budget,
        lease: LeaseKeeper,
    ) -> None:
        s = service.settings
        self.service, self.upload, self.file, self.layout = service, upload, file, layout
        self.budget, self.lease = budget, lease
        self.owner = progress.owner
        self.copy_id = progress.copy_upload_id
        self.needed = layout.segment_count > 1 or layout.size > s.single_copy_max
        self.copier = ResumableCopy(
            service.storage, s.permanent_bucket, file.file_id, _metadata(upload, file)
        )
        self.complete = not self.needed
        self.lost = False
        self.changed: ObjectChanged | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def plan(self) -> list[CopyItem]:
        """Every copy part of the completed segments."""
        inbox = self.service.settings.inbox_bucket
        items = []
        stored = self.upload.stored_segments()
        for n in sorted(stored):
            source = ObjectRef(inbox, self.upload.segment_key(n), stored[n].etag)
            for r in self.layout.copy_ranges(n):
                items.append(CopyItem(r.part_no, source, r.first, r.last))
        return items

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ucs-assembly", daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self.lease.wait_for(self._thread)
            self._thread = None

    def _run(self) -> None:
        try:
            self.complete = self._copy()
        except ObjectChanged as exc:
            self.changed = exc
        except BaseException as exc:
            self.error = exc

    def _copy(self) -> bool:
        plan = self.plan()
        if not plan:
            return True
        done = self.copier.parts_done(self.copy_id, plan) if self.copy_id else None
        if done is None:
            if self.copy_id and self._completed_earlier():
                return True
            self.copy_id = self.copier.begin(self._save)
            if self.copy_id is None:
                self.lost = True
                return False
            done = {}
        todo = [item for item in plan if item.part_no not in done]
        return self.copier.copy(self.copy_id, todo, self.budget, self.lease)

    def _save(self, copy_id: str) -> bool:
        return self.service.leases.save_copy_upload(self.upload.upload_id, self.owner, copy_id)

    def _completed_earlier(self) -> bool:
        """S3 no longer knows the saved copy: completed by a run that stopped before
        accepting (the object is ours and whole), or aborted (begin a new one)."""
        s = self.service.settings
        held = self.service.storage.head(s.permanent_bucket, self.file.file_id)
        ours = held is not None and held.metadata.get(UPLOAD_ID_META) == self.upload.upload_id
        return ours and held is not None and held.size == self.file.size

    def finish(self) -> str | None:
        """Complete the permanent object from every copy part; its ETag (None: lost)."""
        s = self.service.settings
        storage = self.service.storage
        plan = self.plan()
        done = self.copier.parts_done(self.copy_id, plan) if self.copy_id else None
        if done is None:
            if not self._completed_earlier():
                raise ObjectMissing("NoSuchUpload", "the permanent multipart upload is gone")
        else:
            missing = [item.part_no for item in plan if item.part_no not in done]
            if missing:
                raise _Paused()  # cannot happen after a complete assembly; continue anyway
            if not self._save(self.copy_id or ""):  # still ours, right before completing
                return None
            self.copier.complete(self.copy_id or "", done)
        held = storage.head(s.permanent_bucket, self.file.file_id)
        return held.etag if held is not None else ""


def _metadata(upload: UploadRecord, file: FileRecord) -> dict[str, str]:
    return {UPLOAD_ID_META: upload.upload_id, "md5": file.md5_checksum}


def _changed(exc: ObjectChanged) -> str:
    return (
        "a stored segment changed after it was completed (its ETag no longer matches); "
        f"nothing was kept: {exc}"
    )


def _check(s: Settings) -> None:
    """Refuse settings under which validation could not work (operator error)."""
    if s.validate_range_size < 1:
        raise ConfigError("UCS_VALIDATE_RANGE_SIZE must be at least 1 byte")
    if not 1 <= s.validate_concurrency <= 32:
        raise ConfigError("UCS_VALIDATE_CONCURRENCY must be between 1 and 32")
    if s.job_budget_seconds <= 0 or s.job_budget_bytes < 0:
        raise ConfigError("UCS_JOB_BUDGET_SECONDS must be > 0, _BYTES >= 0 (0: no limit)")
    if s.validate_lease_seconds <= s.validate_checkpoint_seconds:
        raise ConfigError(
            "UCS_VALIDATE_LEASE_SECONDS must exceed UCS_VALIDATE_CHECKPOINT_SECONDS "
            "(a run renews its lease at every checkpoint)"
        )
