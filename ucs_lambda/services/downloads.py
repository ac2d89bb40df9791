"""DRS3 use cases: resolve objects (one or many), hand out access URLs, stage, clean up.

Staging is asynchronous: a request for an object that is not in the outbox makes sure exactly
one staging job exists (a conditional write on the file item decides which request enqueues
it) and tells the client when to retry. The staging marker expires, so a crashed job does not
block the file forever. The single-object, access and bulk routes share one rule for who may
read what (``domain.access.require_downloadable``) and one staging step (:meth:`_ensure_staged`),
so they cannot drift apart.
"""

from __future__ import annotations

import enum
import logging
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from ..config import Settings
from ..domain import access
from ..domain.errors import BulkRequestTooLarge, DomainError, NoSuchAccess
from ..domain.models import FileRecord, StagingProgress
from ..domain.parts import part_ranges, part_size_for
from ..ports import (
    CopyItem,
    JobQueue,
    JobQueueError,
    ObjectChanged,
    ObjectRef,
    ObjectStorage,
    Part,
    State,
)
from .copying import ResumableCopy
from .jobrun import Budget, LeaseKeeper

log = logging.getLogger(__name__)

MIN_RETRY_AFTER = 1
MAX_RETRY_AFTER = 300
#: Longest Retry-After while no rate has been measured for the copy yet (the job has not
#: started, or one CopyObject runs): a guess must not keep a client waiting long.
UNMEASURED_RETRY_AFTER = 3

#: Outcomes of one staging job run.
STAGED, CONTINUED = "staged", "continued"

#: The DRS version whose routes this service implements (bulk objects, access, OPTIONS).
DRS_VERSION = "1.4.0"

#: The one access method of every object: a presigned GET URL on the outbox bucket. Opaque to
#: clients; unique within an object, as DRS requires.
ACCESS_ID = "s3"

#: ``headers`` of every ``AccessURL``: a harmless header a client sends with the presigned GET.
#: Never empty, because a client may take an empty list as "send my DRS credentials instead":
#: ga4gh-drs-client 0.1.7 then sends the caller's bearer token to the storage, which leaks
#: the token and makes S3 and Ceph RGW refuse the request (a presigned URL and an
#: Authorization header are two auth mechanisms). ``*/*`` is what clients send by default.
ACCESS_URL_HEADERS = ("Accept: */*",)

#: Objects of one bulk request probed in parallel (outbox HEAD + staging claim each).
BULK_PROBE_WORKERS = 16


@dataclass(frozen=True)
class StagingEstimate:
    """Where a staging copy stands, for a 202 answer: wait ``retry_after`` seconds;
    ``staged_bytes`` of ``size`` are copied."""

    retry_after: int
    staged_bytes: int
    size: int


@dataclass(frozen=True)
class DrsObject:
    """A readable object the outbox holds, with a freshly presigned GET URL."""

    file: FileRecord
    url: str


@dataclass(frozen=True)
class ObjectAnswer:
    """Either a ready object or how long to wait while it is staged."""

    drs_object: DrsObject | None = None
    staging: StagingEstimate | None = None


@dataclass(frozen=True)
class AccessAnswer:
    """Either a fresh presigned GET URL or how long to wait while it is staged."""

    access_url: str | None = None
    staging: StagingEstimate | None = None


@dataclass
class BulkAnswer:
    """Per-object results of one bulk request, each distinct id in exactly one of the three.

    ``resolved`` holds ready ``DrsObject``s and ``staging`` the seconds to wait per object,
    both in request order; ``refused`` the domain error the single-object route would have
    answered for that id (not found, no access).
    """

    requested: int
    resolved: list[DrsObject] = field(default_factory=list)
    staging: dict[str, StagingEstimate] = field(default_factory=dict)
    refused: dict[str, DomainError] = field(default_factory=dict)
    #: Name and size of each staging object (the caller may read it; a batch checks names).
    staging_files: dict[str, tuple[str, int]] = field(default_factory=dict)


class _Outbox(enum.Enum):
    """Where a file stands after :meth:`DownloadService._probe`."""

    HOLDS = "holds"  # the outbox has the copy: hand out URLs
    STAGING = "staging"  # another request's staging job is running
    CLAIMED = "claimed"  # this request won the claim and must enqueue the job


def estimate_staging(file: FileRecord, bytes_per_second: int, now: float) -> StagingEstimate:
    """Seconds until the staging copy of ``file`` is done, from its measured rate.

    While the copy runs, its saved progress gives the rate (bytes copied since it began);
    before anything was measured (the job has not started yet, or one ``CopyObject`` copies
    the whole file) the configured ``UCS_STAGING_BYTES_PER_SECOND`` is a guess, and the
    answer is kept short (:data:`UNMEASURED_RETRY_AFTER`) so that a fast copy is not waited
    for long. Within 1..300 s.
    """
    progress = file.staging or StagingProgress()
    copied = min(progress.copied, file.size)
    elapsed = now - progress.started if progress.started else 0.0
    remaining = file.size - copied
    if copied > 0 and elapsed > 0:
        estimate = math.ceil(remaining / (copied / elapsed))
        cap = MAX_RETRY_AFTER
    else:
        estimate = math.ceil(remaining / max(bytes_per_second, 1))
        cap = UNMEASURED_RETRY_AFTER
    return StagingEstimate(max(MIN_RETRY_AFTER, min(cap, estimate)), copied, file.size)


class DownloadService:
    """GA4GH DRS over the permanent and outbox buckets."""

    def __init__(
        self, settings: Settings, state: State, storage: ObjectStorage, queue: JobQueue
    ) -> None:
        self.settings = settings
        self.files = state.files
        self.claims = state.claims
        self.storage = storage
        self.queue = queue

    def _readable_file(self, user_id: str, object_id: str) -> FileRecord:
        file = self.files.get_file(object_id)
        return access.require_downloadable(file, object_id, user_id)

    def get_object(self, user_id: str, object_id: str) -> ObjectAnswer:
        """200 data when the outbox holds the object; else ensure staging and say when to retry."""
        file = self._readable_file(user_id, object_id)
        waiting = self._ensure_staged([file])
        if file.file_id in waiting:
            return ObjectAnswer(staging=waiting[file.file_id])
        return ObjectAnswer(drs_object=self._drs_object(file))

    def get_access_url(self, user_id: str, object_id: str, access_id: str) -> AccessAnswer:
        """A freshly presigned URL for an access method (``access_id``) of a readable object.

        The same rules as :meth:`get_object`: while the outbox copy is missing (never staged,
        or expired and removed), staging is requested and the caller is told when to retry.
        """
        file = self._readable_file(user_id, object_id)
        if access_id != ACCESS_ID:
            raise NoSuchAccess(object_id, access_id)
        waiting = self._ensure_staged([file])
        if file.file_id in waiting:
            return AccessAnswer(staging=waiting[file.file_id])
        return AccessAnswer(access_url=self._access_url(file))

    def get_objects(self, user_id: str, object_ids: list[str]) -> BulkAnswer:
        """Resolve many objects at once; staging of every readable one missing is requested.

        One ``BatchGetItem`` reads the files, the outbox checks and staging claims run in
        parallel, and the staging jobs go out in ``SendMessageBatch`` calls, so N objects do
        not cost N sequential round trips. Each distinct id is resolved once.
        """
        limit = self.settings.drs_max_bulk_objects
        if len(object_ids) > limit:
            raise BulkRequestTooLarge(len(object_ids), limit)
        ids = list(dict.fromkeys(object_ids))
        found = self.files.get_files(ids)
        answer = BulkAnswer(requested=len(ids))
        readable: list[FileRecord] = []
        for object_id in ids:
            try:
                readable.append(
                    access.require_downloadable(found.get(object_id), object_id, user_id)
                )
            except DomainError as exc:
                answer.refused[object_id] = exc
        waiting = self._ensure_staged(readable)
        for file in readable:
            if file.file_id in waiting:
                answer.staging[file.file_id] = waiting[file.file_id]
                answer.staging_files[file.file_id] = (file.file_name, file.size)
            else:
                answer.resolved.append(self._drs_object(file))
        return answer

    def _ensure_staged(self, files: list[FileRecord]) -> dict[str, StagingEstimate]:
        """How long to wait per file the outbox lacks, after requesting staging for each.

        Files the outbox holds are absent from the result.
        """
        now = time.time()
        if len(files) <= 1:
            states = [self._probe(f, now) for f in files]
        else:
            with ThreadPoolExecutor(max_workers=min(BULK_PROBE_WORKERS, len(files))) as pool:
                states = list(pool.map(lambda f: self._probe(f, now), files))
        self._enqueue([f for f, state in zip(files, states) if state is _Outbox.CLAIMED])
        bps = self.settings.staging_bytes_per_second
        return {
            f.file_id: estimate_staging(f, bps, now)
            for f, state in zip(files, states)
            if state is not _Outbox.HOLDS
        }

    def _in_outbox(self, file: FileRecord) -> bool:
        info = self.storage.head(self.settings.outbox_bucket, file.file_id)
        return info is not None and info.size == file.size

    def _probe(self, file: FileRecord, now: float) -> _Outbox:
        """Check the outbox and, when the copy is missing, try to claim its staging."""
        if self._in_outbox(file):
            return _Outbox.HOLDS
        if not self.claims.claim_staging(file.file_id, now, self.settings.staging_timeout_seconds):
            return _Outbox.STAGING
        # The claim is free again once a job has *finished* staging (it copies, then ends
        # its claim): a request that looked at the outbox just before the copy landed then
        # wins a claim it does not need. Look again before starting a redundant job.
        if self._in_outbox(file):
            self.claims.mark_staged(file.file_id, now)
            return _Outbox.HOLDS
        return _Outbox.CLAIMED

    def _enqueue(self, files: list[FileRecord]) -> None:
        """Queue one staging job per claimed file; a job that could not be queued frees its
        claim again, so the next request retries instead of waiting for the claim to expire."""
        if not files:
            return
        try:
            self.queue.send_many([{"job": "stage", "file_id": f.file_id} for f in files])
        except JobQueueError as exc:
            for body in exc.unsent:
                self.claims.reset_staging(body["file_id"])
            raise
        for f in files:
            log.info("drs: staging of %s requested", f.file_id)

    def _access_url(self, file: FileRecord) -> str:
        return self.storage.presign_get(self.settings.outbox_bucket, file.file_id)

    def _drs_object(self, file: FileRecord) -> DrsObject:
        return DrsObject(file, self._access_url(file))

    def stage(self, file_id: str) -> str | None:
        """Job: one run of the staging copy permanent -> outbox (server-side).

        Up to ``UCS_SINGLE_COPY_MAX`` (5 GiB) one ``CopyObject`` does it; larger files are a
        :class:`ResumableCopy` in parts that continues across runs within the job budget,
        its progress saved on the file (bytes copied: the 202 answers' estimate). Every copy
        is conditional on the permanent object's ETag as accepted. Only the run holding the
        file's staging lease works on it. Returns ``staged``, ``continued`` (the next run
        is queued) or None (nothing to do, another run holds it, or the copy was dropped).
        Failures raise, so the message is redelivered.
        """
        s = self.settings
        owner = uuid.uuid4().hex
        file = self.claims.claim_staging_run(file_id, owner, time.time(), s.validate_lease_seconds)
        if file is None:
            log.info("stage: %s is not accepted or another run stages it", file_id)
            return None
        budget = Budget(s.job_budget_seconds, s.job_budget_bytes)
        try:
            outcome = self._stage_run(file, owner, budget)
        except ObjectChanged as exc:
            # The permanent object is not the one the copy was planned for: drop the copy
            # (never a mixed object in the outbox); the next request stages it anew.
            log.error("stage: %s: the permanent object changed (%s); copy dropped", file_id, exc)
            self._drop_copy(self.files.get_file(file_id) or file)
            self.claims.reset_staging(file_id)
            return None
        finally:
            self.claims.release_staging_run(file_id, owner)
        if outcome == CONTINUED:
            self.queue.send({"job": "stage", "file_id": file_id})
            log.info("stage: %s continues in the next job", file_id)
        return outcome

    def _stage_run(self, file: FileRecord, owner: str, budget: Budget) -> str | None:
        s = self.settings
        file_id = file.file_id
        held = self.storage.head(s.outbox_bucket, file_id)
        if held is not None and held.size == file.size:
            self.claims.finish_staging(file_id, owner, time.time())
            return STAGED
        progress = file.staging or StagingProgress()
        etag = progress.source_etag or file.permanent_etag
        if not etag:
            source = self.storage.head(s.permanent_bucket, file_id)
            if source is None:
                log.error("stage: %s has no permanent object", file_id)
                return None
            etag = source.etag
        source_ref = ObjectRef(s.permanent_bucket, file_id, etag)
        started = progress.started or time.time()
        if file.size <= s.single_copy_max:
            if not self.claims.save_staging(
                file_id,
                owner,
                StagingProgress(None, etag, 0, started),
                time.time(),
                s.validate_lease_seconds,
            ):
                return None
            self.storage.copy_object(source_ref, s.outbox_bucket, file_id)
            return self._staged(file_id, owner, started)
        return self._stage_in_parts(file, owner, budget, source_ref, progress, started)

    def _stage_in_parts(
        self,
        file: FileRecord,
        owner: str,
        budget: Budget,
        source: ObjectRef,
        progress: StagingProgress,
        started: float,
    ) -> str | None:
        s = self.settings
        file_id = file.file_id
        part_size = part_size_for(file.size, default=s.copy_part_size, minimum=s.min_part_size)
        plan = [
            CopyItem(n, source, first, last) for n, first, last in part_ranges(file.size, part_size)
        ]
        copier = ResumableCopy(self.storage, s.outbox_bucket, file_id)
        state = StagingProgress(progress.copy_id, source.etag, 0, started)

        def save(copy_id: str | None = None) -> bool:
            nonlocal state
            if copy_id is not None:
                state = replace(state, copy_id=copy_id)
            return self.claims.save_staging(
                file_id, owner, state, time.time(), s.validate_lease_seconds
            )

        done = copier.parts_done(state.copy_id, plan) if state.copy_id else None
        if done is None:
            if copier.begin(save) is None:
                return None
            done = {}
        state = replace(state, copied=sum(p.size for p in done.values()))
        lease = LeaseKeeper(save, s.validate_checkpoint_seconds, budget)

        def on_part(part: Part) -> None:
            nonlocal state
            done[part.part_no] = part
            state = replace(state, copied=state.copied + part.size)

        todo = [item for item in plan if item.part_no not in done]
        finished = copier.copy(str(state.copy_id), todo, budget, lease, on_part)
        if lease.lost:
            return None
        if not finished:
            return CONTINUED if save() else None
        copier.complete(str(state.copy_id), done)
        return self._staged(file_id, owner, started)

    def _staged(self, file_id: str, owner: str, started: float) -> str:
        self.claims.finish_staging(file_id, owner, time.time())
        log.info("stage: %s copied to the outbox in %.1f s", file_id, time.time() - started)
        return STAGED

    def _drop_copy(self, file: FileRecord) -> None:
        if file.staging and file.staging.copy_id:
            ResumableCopy(self.storage, self.settings.outbox_bucket, file.file_id).abort(
                file.staging.copy_id
            )

    def cleanup_outbox(self, now: float) -> int:
        """Delete outbox objects older than ``UCS_OUTBOX_MAX_AGE_SECONDS``; reset their staging."""
        s = self.settings
        removed = 0
        for obj in self.storage.list_objects(s.outbox_bucket):
            if now - obj.last_modified.timestamp() <= s.outbox_max_age_seconds:
                continue
            self.storage.delete(s.outbox_bucket, obj.key)
            self.claims.reset_staging(obj.key)
            removed += 1
        return removed
