"""Validation use case: uploaded -> accepted | rejected, decided by reading every byte back.

The archive never accepts bytes it has not verified. For every upload, whatever its size and
whatever the client sent, the job reads the stored inbox object with parallel ranged GETs,
feeds the bytes in order to MD5 and SHA-256 (one pass, the two hashes on two threads), and
accepts only when the size and the MD5 equal the registered ones; the SHA-256 is then stored
with the file. Client checksums are evidence that can reject early, never proof.

One invocation reads for at most ``UCS_VALIDATE_BUDGET_SECONDS`` (and
``UCS_VALIDATE_BUDGET_BYTES``, for tests); a larger object is continued by the next one. The
progress -- hash states, offset, the ETag of the object they belong to -- is saved in the
upload item every ``UCS_VALIDATE_CHECKPOINT_SECONDS`` and at the end of each invocation, and
the continuation is the same job message sent again. Keeping the state in DynamoDB rather
than in the message makes duplicated, replayed and re-queued (sweep) messages harmless: they
all continue the one saved state.

Only the run holding the upload's lease may advance it (``UCS_VALIDATE_LEASE_SECONDS``,
renewed at every checkpoint; every save and the verdict are conditional on it), so concurrent
runs never both hash or both decide. A run that finds a live lease leaves the work to its
holder. A crashed run's lease expires; its message is redelivered (or the sweep re-queues the
upload) and the next run continues from the last checkpoint. A cancel wins over the job: the
job's conditional writes then fail and it stops without a verdict.

The accept copy inbox -> permanent (server-side) continues across invocations the same way:
the copy's multipart upload id is saved, and S3's own part list says what is done.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from ..adapters.dynamo import Repository
from ..adapters.s3 import ObjectMissing, Part, Storage, StorageError
from ..adapters.sqs import JobQueue
from ..concurrency import bounded_map
from ..config import ConfigError, Settings, get_settings
from ..domain.digests import MD5, SHA256, ResumableHash, StateMismatch, pack, unpack
from ..domain.integrity import Evidence, judge_digest, precheck
from ..domain.models import FileRecord, UploadRecord, UploadStatus, Verification

log = logging.getLogger(__name__)

#: S3 user metadata naming the upload an object in the permanent bucket came from.
UPLOAD_ID_META = "upload-id"

#: Outcomes of one invocation (``None``: nothing to do, or another run has the upload).
ACCEPTED, REJECTED, CONTINUED = "accepted", "rejected", "continued"


class _Budget:
    """Time (and bytes) one invocation may spend; the first piece of work is always allowed,
    so every invocation makes progress however small the budget."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.started = False

    def allows_more(self) -> bool:
        if not self.started:
            self.started = True
            return True
        return time.monotonic() < self.deadline


class ValidationService:
    """Validates uploads; one call of :meth:`validate` is one job invocation's share."""

    def __init__(
        self, settings: Settings, repo: Repository, storage: Storage, queue: JobQueue
    ) -> None:
        _check(settings)
        self.settings = settings
        self.repo = repo
        self.storage = storage
        self.queue = queue

    @classmethod
    def from_env(cls) -> ValidationService:
        settings = get_settings()
        return cls(settings, Repository(settings), Storage(settings), JobQueue(settings))

    def validate(self, upload_id: str) -> str | None:
        """Advance the validation of ``upload_id``: ``accepted``, ``rejected``, ``continued``
        (a continuation message is queued), or None (not ``uploaded``, or a live run holds
        it). Replays are harmless; failures raise (the message is then redelivered)."""
        upload = self.repo.get_upload(upload_id)
        if upload is None:
            log.warning("validate: upload %s does not exist", upload_id)
            return None
        if upload.upload_status is not UploadStatus.UPLOADED:
            log.info(
                "validate: upload %s is %s; nothing to do", upload_id, upload.upload_status.value
            )
            return None
        budget = _Budget(self.settings.validate_budget_seconds)
        owner = uuid.uuid4().hex
        progress = self.repo.claim_verification(
            upload_id, owner, time.time(), self.settings.validate_lease_seconds
        )
        if progress is None:
            log.info("validate: upload %s is being validated by another run", upload_id)
            return None
        try:
            return self._run(upload, progress, budget)
        except ObjectMissing:
            current = self.repo.get_upload(upload_id)
            if current is None or current.upload_status is not UploadStatus.UPLOADED:
                log.info("validate: upload %s changed during validation", upload_id)
                return None  # cancelled meanwhile: its clean-up removed the object
            raise
        finally:
            self._release(upload_id, owner)

    # ---- one invocation ----------------------------------------------------------------

    def _run(self, upload: UploadRecord, progress: Verification, budget: _Budget) -> str | None:
        s = self.settings
        owner = progress.owner
        file = self.repo.get_file(upload.file_id)
        if file is None:
            return self._reject(upload, owner, "the file is no longer registered")
        info = self.storage.head(s.inbox_bucket, upload.object_key)
        if info is None:
            return self._reject(upload, owner, "the uploaded object is missing")
        early = precheck(
            Evidence(
                registered_size=file.size,
                registered_md5=file.md5_checksum,
                object_size=info.size,
                object_etag=info.etag or (upload.object_etag or ""),
                s3_part_etags=upload.s3_part_etags,
                client_part_md5s=upload.client_part_md5s,
                client_md5=upload.client_md5,
            )
        )
        if early is not None:
            return self._reject(upload, owner, early.reason or "rejected")
        etag = info.etag or (upload.object_etag or "")
        md5, sha256, offset = self._resume(upload.upload_id, progress, etag)
        if offset < info.size:
            reached = self._hash(upload, progress, (md5, sha256), offset, info.size, etag, budget)
            if reached is None:
                return None  # the upload changed or another run took over
            if reached < info.size:
                note = f"{reached} of {info.size} bytes verified"
                return self._continue_later(upload.upload_id, owner, note)
        verdict = judge_digest(md5.hexdigest(), file.md5_checksum)
        if not verdict.accepted:
            return self._reject(upload, owner, verdict.reason or "rejected")
        return self._accept(upload, file, progress, info.size, sha256.hexdigest(), budget)

    def _resume(
        self, upload_id: str, progress: Verification, etag: str
    ) -> tuple[ResumableHash, ResumableHash, int]:
        """The saved hash states, if they belong to this object; else a fresh start at 0."""
        if progress.offset and progress.state:
            if progress.etag != etag:
                log.warning(
                    "validate: upload %s: the object changed (ETag %s, was %s); starting over",
                    upload_id,
                    etag,
                    progress.etag,
                )
            else:
                try:
                    md5, sha256 = unpack(progress.state, progress.offset)
                    return md5, sha256, progress.offset
                except StateMismatch as exc:
                    log.warning("validate: upload %s: %s; starting over", upload_id, exc)
        return ResumableHash(MD5), ResumableHash(SHA256), 0

    def _hash(
        self,
        upload: UploadRecord,
        progress: Verification,
        hashes: tuple[ResumableHash, ResumableHash],
        offset: int,
        size: int,
        etag: str,
        budget: _Budget,
    ) -> int | None:
        """Read and hash from ``offset`` until the object, the budget or the lease ends.

        Ranges are fetched ``UCS_VALIDATE_CONCURRENCY`` at a time and hashed in order, so
        memory holds at most that many ranges plus the one being hashed; SHA-256 runs on a
        second thread beside MD5 (both release the GIL). Returns the offset reached (saved),
        or None when a checkpoint was refused.
        """
        s = self.settings
        md5, sha256 = hashes
        end = size if not s.validate_budget_bytes else min(size, offset + s.validate_budget_bytes)
        step = s.validate_range_size
        ranges = ((first, min(first + step, end) - 1) for first in range(offset, end, step))
        saved, last_save = progress.offset, time.monotonic()

        def read(rng: tuple[int, int]) -> bytes:
            return self.storage.read_range(s.inbox_bucket, upload.object_key, *rng, etag)

        owner, upload_id = progress.owner, upload.upload_id
        window = s.validate_concurrency
        with ThreadPoolExecutor(window) as readers, ThreadPoolExecutor(1) as helper:
            chunks = bounded_map(readers, read, ranges, window, budget.allows_more)
            for chunk in chunks:
                sha256_done = helper.submit(sha256.update, chunk)
                md5.update(chunk)
                sha256_done.result()
                offset += len(chunk)
                due = time.monotonic() - last_save >= s.validate_checkpoint_seconds
                if offset < end and due:
                    if not self._checkpoint(upload_id, owner, saved, offset, md5, sha256, etag):
                        chunks.close()  # stop reading; the ranges in flight are dropped
                        return None
                    saved, last_save = offset, time.monotonic()
        if not self._checkpoint(upload_id, owner, saved, offset, md5, sha256, etag):
            return None
        return offset

    def _checkpoint(
        self,
        upload_id: str,
        owner: str,
        saved: int,
        offset: int,
        md5: ResumableHash,
        sha256: ResumableHash,
        etag: str,
    ) -> bool:
        progress = Verification(owner=owner, offset=offset, state=pack(md5, sha256), etag=etag)
        if self.repo.save_verification(
            progress, upload_id, saved, time.time(), self.settings.validate_lease_seconds
        ):
            return True
        log.info("validate: upload %s changed or another run took over; stopping", upload_id)
        return False

    def _continue_later(self, upload_id: str, owner: str, note: str) -> str:
        """Free the lease, then queue the continuation (the same job message)."""
        self._release(upload_id, owner)
        self.queue.send({"job": "validate", "upload_id": upload_id})
        log.info("validate: upload %s continues in the next job (%s)", upload_id, note)
        return CONTINUED

    def _release(self, upload_id: str, owner: str) -> None:
        try:
            self.repo.release_verification(upload_id, owner)
        except Exception:  # it expires anyway; only the next run's start is delayed
            log.warning("validate: could not release the lease of %s", upload_id, exc_info=True)

    # ---- verdicts ----------------------------------------------------------------------

    def _reject(self, upload: UploadRecord, owner: str, reason: str) -> str | None:
        """uploaded -> rejected with the reason, releasing the file's lock; delete the object."""
        if not self.repo.release(upload, UploadStatus.REJECTED, reason=reason, verifier=owner):
            return None
        self._quietly_delete(self.settings.inbox_bucket, upload.object_key)
        log.info("validate: upload %s rejected: %s", upload.upload_id, reason)
        return REJECTED

    def _accept(
        self,
        upload: UploadRecord,
        file: FileRecord,
        progress: Verification,
        size: int,
        sha256: str,
        budget: _Budget,
    ) -> str | None:
        """Copy inbox -> permanent (server-side), then uploaded -> accepted, then clean up."""
        s = self.settings
        owner = progress.owner
        metadata = {UPLOAD_ID_META: upload.upload_id, "md5": file.md5_checksum, "sha256": sha256}
        copied = self._copy(upload, file, progress, size, metadata, budget)
        if copied is None:
            return None
        if not copied:
            return self._continue_later(upload.upload_id, owner, "accept copy in progress")
        if self.repo.accept(upload, sha256=sha256, verifier=owner):
            self._quietly_delete(s.inbox_bucket, upload.object_key)
            log.info("validate: upload %s accepted (sha256 %s)", upload.upload_id, sha256)
            return ACCEPTED
        current = self.repo.get_upload(upload.upload_id)
        if current is not None and current.upload_status is UploadStatus.ACCEPTED:
            self._quietly_delete(s.inbox_bucket, upload.object_key)  # a concurrent run won
            return None
        if current is not None and current.upload_status is UploadStatus.UPLOADED:
            return None  # another run took the lease over; the copy is its copy too
        # Cancelled while this job was copying: remove the copy, but only if it is ours (a later
        # upload of the same file may own the permanent key by now).
        held = self.storage.head(s.permanent_bucket, file.file_id)
        if held is not None and held.metadata.get(UPLOAD_ID_META) == upload.upload_id:
            self.storage.delete(s.permanent_bucket, file.file_id)
        log.info("validate: upload %s changed during validation; copy discarded", upload.upload_id)
        return None

    def _copy(
        self,
        upload: UploadRecord,
        file: FileRecord,
        progress: Verification,
        size: int,
        metadata: dict[str, str],
        budget: _Budget,
    ) -> bool | None:
        """Copy the inbox object to the permanent bucket, continuing a copy begun earlier.

        True: the permanent object is complete; False: time is up, continue later; None: the
        lease was lost (or the upload changed).
        """
        s = self.settings
        src, dst = (s.inbox_bucket, upload.object_key), (s.permanent_bucket, file.file_id)
        plan = self.storage.copy_plan(size)
        if plan is None:
            self.storage.copy_object(*src, *dst, metadata)
            return True
        owner, copy_id = progress.owner, progress.copy_upload_id
        copied: list[Part] = []
        if copy_id is not None:
            try:
                copied = self.storage.list_parts(*dst, copy_id)
            except ObjectMissing:
                # Completed by a run that stopped before accepting -- or aborted.
                held = self.storage.head(*dst)
                ours = held is not None and held.metadata.get(UPLOAD_ID_META) == upload.upload_id
                if ours and held is not None and held.size == size:
                    return True
                copy_id = None
        if copy_id is None:
            copy_id = self.storage.create_multipart_upload(*dst, metadata)
            if not self.repo.save_copy_upload(upload.upload_id, owner, copy_id):
                self.storage.abort_multipart_upload(*dst, copy_id)
                return None
        sizes = {part_no: last - first + 1 for part_no, first, last in plan}
        done = {p.part_no: p for p in copied if sizes.get(p.part_no) == p.size}
        lease = _LeaseKeeper(self, upload.upload_id, owner, budget)
        todo = [r for r in plan if r[0] not in done]
        for part in self.storage.copy_parts(*src, *dst, copy_id, todo, lease.keep_going):
            done[part.part_no] = part
        if lease.lost:
            return None
        if len(done) < len(plan):
            return False
        self.storage.complete_multipart_upload(*dst, copy_id, [done[n] for n in sorted(done)])
        return True

    def _quietly_delete(self, bucket: str, key: str) -> None:
        try:
            self.storage.delete(bucket, key)
        except StorageError:
            log.exception("validate: could not delete %s/%s", bucket, key)


class _LeaseKeeper:
    """``keep_going`` for long work that is not hashing (the accept copy): renews the lease
    every checkpoint interval, says stop when the budget is spent or the lease was lost."""

    def __init__(
        self, service: ValidationService, upload_id: str, owner: str, budget: _Budget
    ) -> None:
        self.service, self.upload_id, self.owner, self.budget = service, upload_id, owner, budget
        self.renewed = time.monotonic()
        self.lost = False

    def keep_going(self) -> bool:
        s = self.service.settings
        if self.lost or not self.budget.allows_more():
            return False
        if time.monotonic() - self.renewed >= s.validate_checkpoint_seconds:
            if not self.service.repo.renew_verification(
                self.upload_id, self.owner, time.time(), s.validate_lease_seconds
            ):
                self.lost = True
                return False
            self.renewed = time.monotonic()
        return True


def _check(s: Settings) -> None:
    """Refuse settings under which validation could not work (operator error)."""
    if s.validate_range_size < 1:
        raise ConfigError("UCS_VALIDATE_RANGE_SIZE must be at least 1 byte")
    if not 1 <= s.validate_concurrency <= 32:
        raise ConfigError("UCS_VALIDATE_CONCURRENCY must be between 1 and 32")
    if s.validate_budget_seconds <= 0 or s.validate_budget_bytes < 0:
        raise ConfigError("UCS_VALIDATE_BUDGET_SECONDS must be > 0, _BYTES >= 0 (0: no limit)")
    if s.validate_lease_seconds <= s.validate_checkpoint_seconds:
        raise ConfigError(
            "UCS_VALIDATE_LEASE_SECONDS must exceed UCS_VALIDATE_CHECKPOINT_SECONDS "
            "(a run renews its lease at every checkpoint)"
        )
