"""Items <-> domain records: how files and uploads are laid out in their DynamoDB items."""

from __future__ import annotations

from typing import Any

from ...domain.models import FileRecord, StagingProgress, StoredSegment, UploadRecord, UploadStatus
from .tables import FileItem, UploadItem


def pack(hexes: list[str]) -> bytes | None:
    """Hex MD5s -> concatenated binary digests (None for an empty list)."""
    return b"".join(bytes.fromhex(h) for h in hexes) if hexes else None


def unpack(blob: bytes | None) -> list[str]:
    if not blob:
        return []
    return [blob[i : i + 16].hex() for i in range(0, len(blob), 16)]


def file_record(item: FileItem) -> FileRecord:
    return FileRecord(
        file_id=item.file_id,
        file_name=item.file_name,
        size=int(item.size),
        md5_checksum=item.md5_checksum,
        grouping_label=item.grouping_label or "",
        format=item.format or "",
        creation_date=item.creation_date,
        update_date=item.update_date,
        submitters=frozenset(item.submitters or ()),
        readers=frozenset(item.readers or ()),
        active_upload_id=item.active_upload_id,
        current_upload_id=item.current_upload_id,
        accepted_upload_id=item.accepted_upload_id,
        accepted_at=item.accepted_at,
        staging_started=item.staging_started,
        staged_at=item.staged_at,
        attempt_window_start=(
            int(item.attempt_window_start) if item.attempt_window_start is not None else None
        ),
        attempt_count=int(item.attempt_count or 0),
        sha256_checksum=item.sha256_checksum,
        permanent_etag=item.permanent_etag,
        staging=_staging(item),
    )


def _staging(item: FileItem) -> StagingProgress | None:
    if item.staging_etag is None and item.staged_bytes is None:
        return None
    return StagingProgress(
        copy_id=item.staging_copy_id,
        source_etag=item.staging_etag,
        copied=int(item.staged_bytes or 0),
        started=float(item.staging_copy_started) if item.staging_copy_started else None,
    )


def _raw_map(attr: Any) -> dict[str, Any]:
    """A raw ``MapAttribute``'s content as a plain dict (pynamodb hands out the attribute)."""
    if attr is None:
        return {}
    return dict(attr.as_dict()) if hasattr(attr, "as_dict") else dict(attr)


def _segments_done(item: UploadItem) -> dict[int, StoredSegment]:
    if item.segments_done is None:  # completed by the version before segments: segment 1
        if item.object_etag and item.upload_status != UploadStatus.PENDING.value:
            return {1: StoredSegment(item.object_etag, tuple(unpack(item.s3_part_etags)))}
        return {}
    done = {}
    for key, value in _raw_map(item.segments_done).items():
        value = _raw_map(value)
        parts = value.get("parts")
        done[int(key)] = StoredSegment(
            str(value.get("etag") or ""), tuple(unpack(bytes(parts) if parts else None))
        )
    return done


def upload_record(item: UploadItem) -> UploadRecord:
    return UploadRecord(
        upload_id=item.upload_id,
        file_id=item.file_id,
        s3_upload_id=item.s3_upload_id,
        object_key=item.object_key,
        upload_status=UploadStatus(item.upload_status),
        part_size=int(item.part_size),
        created=item.created,
        updated=item.updated,
        client_md5=item.client_md5,
        client_part_md5s=unpack(item.client_part_md5s),
        status_reason=item.status_reason,
        verified_bytes=int(item.verified_bytes or 0),
        copy_upload_id=item.copy_upload_id,
        segment_parts=int(item.segment_parts) if item.segment_parts is not None else None,
        copy_group=int(item.copy_group) if item.copy_group is not None else None,
        segment_uploads={int(k): str(v) for k, v in _raw_map(item.segments).items()},
        segments_done=_segments_done(item),
    )
