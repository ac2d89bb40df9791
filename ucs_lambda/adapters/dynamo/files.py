"""Files in DynamoDB: registration, readers, and the staging claim and lease of a file.

The staging state lives on the file item (``staging_*`` attributes, docs/CONTRACTS.md): a
DRS request claims the staging of an accepted file (``staging_started``), and each job run
working on the copy holds a lease (``staging_owner``/``staging_lease_until``) and saves its
progress there, every write conditional on that lease.
"""

from __future__ import annotations

from typing import Any

from ...config import Settings
from ...domain.models import FileRecord, StagingProgress, utcnow
from ...ports.state import ConditionLost
from .conditional import conditional
from .records import file_record
from .tables import FileItem, Tables

#: What ending (or forgetting) a staging copy removes from the file item.
_STAGING_CLEARED = [
    FileItem.staging_started.remove(),
    FileItem.staging_copy_id.remove(),
    FileItem.staging_etag.remove(),
    FileItem.staged_bytes.remove(),
    FileItem.staging_copy_started.remove(),
    FileItem.staging_owner.remove(),
    FileItem.staging_lease_until.remove(),
]


class DynamoFiles:
    """:class:`~ucs_lambda.ports.state.FileStore` and
    :class:`~ucs_lambda.ports.state.StagingClaims` on the files table."""

    def __init__(self, settings: Settings) -> None:
        self.items = Tables.bind(settings).files

    # ---- files -------------------------------------------------------------------------

    def get_file(self, file_id: str) -> FileRecord | None:
        try:
            return file_record(self.items.get(file_id, consistent_read=True))
        except self.items.DoesNotExist:
            return None

    def get_files(self, file_ids: list[str]) -> dict[str, FileRecord]:
        """Many files by id with ``BatchGetItem`` (100 keys per call); missing ids are absent.

        Strongly consistent like :meth:`get_file`, so a bulk DRS request sees the same state
        as the single-object route. pynamodb retries keys DynamoDB leaves unprocessed.
        """
        unique = list(dict.fromkeys(file_ids))
        return {
            item.file_id: file_record(item)
            for item in self.items.batch_get(unique, consistent_read=True)
        }

    def register_file(self, record: FileRecord) -> None:
        """Create a file item; raises :class:`ConditionLost` when the id is already taken."""
        item = self.items(
            record.file_id,
            file_name=record.file_name,
            size=record.size,
            md5_checksum=record.md5_checksum.lower(),
            grouping_label=record.grouping_label,
            format=record.format,
            creation_date=record.creation_date,
            update_date=record.update_date,
            submitters=set(record.submitters) or None,
            readers=set(record.readers) or None,
        )
        if not conditional(lambda: item.save(condition=FileItem.file_id.does_not_exist())):
            raise ConditionLost(record.file_id)

    def grant_reader(self, file_id: str, user_id: str) -> bool:
        """Add ``user_id`` to the file's readers; False when the file does not exist."""
        return self._update(
            file_id,
            [FileItem.readers.add({user_id}), FileItem.update_date.set(utcnow())],
            FileItem.file_id.exists(),
        )

    # ---- DRS staging -------------------------------------------------------------------

    def claim_staging(self, file_id: str, now: float, timeout: float) -> bool:
        """Become the one staging job for an accepted file.

        Wins when no staging job is marked, or the marked one started more than ``timeout``
        seconds ago (so a crashed job never blocks the file forever).
        """
        return self._update(
            file_id,
            [FileItem.staging_started.set(now)],
            FileItem.accepted_upload_id.exists()
            & (
                FileItem.staging_started.does_not_exist()
                | (FileItem.staging_started < now - timeout)
            ),
        )

    def mark_staged(self, file_id: str, now: float) -> None:
        """The outbox holds the file: record it and end the staging claim and its progress."""
        self.items(file_id).update(
            actions=[FileItem.staged_at.set(now), *_STAGING_CLEARED],
            condition=FileItem.file_id.exists(),
        )

    def reset_staging(self, file_id: str) -> None:
        """The outbox copy is gone (cleanup): forget staging so a new request stages again
        (nothing to do for a file that does not exist)."""
        self._update(
            file_id, [FileItem.staged_at.remove(), *_STAGING_CLEARED], FileItem.file_id.exists()
        )

    def claim_staging_run(
        self, file_id: str, owner: str, now: float, lease_seconds: float
    ) -> FileRecord | None:
        """Take the lease of the staging job of an accepted file for one job run.

        Wins when no run holds it, its holder let it expire, or ``owner`` holds it. Renews
        the request claim (``staging_started``) too, so that a staging copy that lasts many
        runs is never claimed again by a DRS request. Returns the file with its saved
        staging progress; None when the file is not accepted or a live run holds the lease.
        """
        item = self.items(file_id)
        free = (
            FileItem.staging_lease_until.does_not_exist()
            | (FileItem.staging_lease_until < now)
            | (FileItem.staging_owner == owner)
        )
        claimed = conditional(
            lambda: item.update(
                actions=[
                    FileItem.staging_owner.set(owner),
                    FileItem.staging_lease_until.set(now + lease_seconds),
                    FileItem.staging_started.set(now),
                ],
                condition=FileItem.accepted_upload_id.exists() & free,
            )
        )
        return file_record(item) if claimed else None

    def save_staging(
        self,
        file_id: str,
        owner: str,
        progress: StagingProgress,
        now: float,
        lease_seconds: float,
    ) -> bool:
        """Checkpoint the staging copy and extend the lease; False when the lease was lost."""
        actions = [
            FileItem.staging_etag.set(progress.source_etag),
            FileItem.staged_bytes.set(progress.copied),
            FileItem.staging_lease_until.set(now + lease_seconds),
            FileItem.staging_started.set(now),
        ]
        if progress.copy_id:
            actions.append(FileItem.staging_copy_id.set(progress.copy_id))
        else:
            actions.append(FileItem.staging_copy_id.remove())
        if progress.started is not None:
            actions.append(FileItem.staging_copy_started.set(progress.started))
        return self._update(file_id, actions, FileItem.staging_owner == owner)

    def finish_staging(self, file_id: str, owner: str, now: float) -> bool:
        """The staging run put the copy in the outbox: mark it staged, drop its progress."""
        return self._update(
            file_id,
            [FileItem.staged_at.set(now), *_STAGING_CLEARED],
            FileItem.staging_owner == owner,
        )

    def release_staging_run(self, file_id: str, owner: str) -> None:
        """Let the staging lease go at once (the continuation need not wait for it)."""
        self._update(
            file_id, [FileItem.staging_lease_until.set(0)], FileItem.staging_owner == owner
        )

    def _update(self, file_id: str, actions: list[Any], condition: Any) -> bool:
        return conditional(lambda: self.items(file_id).update(actions=actions, condition=condition))
