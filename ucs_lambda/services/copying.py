"""One resumable server-side copy for everything the server copies.

The assembly of an upload's segments into the permanent object and the staging copy
permanent -> outbox are both a :class:`ResumableCopy`: a multipart upload on the destination
that ``UploadPartCopy`` calls fill, continued across job runs. The destination upload's id is
saved by the caller (a write conditional on the caller's lease, so two runs never own two
copies), S3's own part list says which parts are done, and every part is conditional on the
ETag of the source it was planned from (``CopySourceIfMatch``): a source that changed ends
the copy with :class:`~ucs_lambda.adapters.s3.ObjectChanged`, never with a wrong object.
The bytes never pass through the job; only the budget and the lease bound a run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from ..ports import CopyItem, ObjectMissing, ObjectStorage, Part
from .jobrun import Budget, LeaseKeeper

log = logging.getLogger(__name__)

#: Budget kind of copy work (hashing is another kind: each gets its first piece).
COPY = "copy"


class ResumableCopy:
    """Server-side copies into the multipart upload of one destination object."""

    def __init__(
        self,
        storage: ObjectStorage,
        bucket: str,
        key: str,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.storage = storage
        self.bucket = bucket
        self.key = key
        self.metadata = metadata

    def begin(self, save: Callable[[str], bool]) -> str | None:
        """Create the destination's multipart upload and save its id with ``save``; None
        (and nothing left behind) when the save was refused: the run lost its lease."""
        upload_id = self.storage.create_multipart_upload(self.bucket, self.key, self.metadata)
        if save(upload_id):
            return upload_id
        self.storage.abort_multipart_upload(self.bucket, self.key, upload_id)
        return None

    def parts_done(self, upload_id: str, plan: Iterable[CopyItem]) -> dict[int, Part] | None:
        """The planned parts S3 already holds with the planned size; None when S3 no longer
        knows the multipart upload (completed by an earlier run, or aborted)."""
        sizes = {item.part_no: item.size for item in plan}
        try:
            listed = self.storage.list_parts(self.bucket, self.key, upload_id)
        except ObjectMissing:
            return None
        return {p.part_no: p for p in listed if sizes.get(p.part_no) == p.size}

    def copy(
        self,
        upload_id: str,
        items: Iterable[CopyItem],
        budget: Budget,
        lease: LeaseKeeper,
        on_part: Callable[[Part], None] = lambda part: None,
    ) -> bool:
        """Copy ``items`` while the budget and the lease allow; True when all were copied."""
        todo = list(items)
        copied = 0
        limited = budget.limit(todo, lambda item: item.size, COPY)
        for part in self.storage.copy_parts(
            self.bucket, self.key, upload_id, limited, lambda: lease.keep_going(COPY)
        ):
            copied += 1
            on_part(part)
        return copied == len(todo) and not lease.lost

    def complete(self, upload_id: str, parts: dict[int, Part]) -> None:
        """Assemble the destination object from its parts, in part order."""
        ordered = [parts[n] for n in sorted(parts)]
        self.storage.complete_multipart_upload(self.bucket, self.key, upload_id, ordered)

    def abort(self, upload_id: str | None) -> None:
        if upload_id:
            self.storage.abort_multipart_upload(self.bucket, self.key, upload_id)
