"""Rows of the files and uploads tables as the domain's records, and the reads producing them.

Why one module: ``PostgresFiles`` and ``PostgresUploads`` both hand out these records, and
both must read an upload together with its segments in *one* statement (one snapshot), as
DynamoDB's consistent read of one item does.
"""

from __future__ import annotations

from typing import Any

from ...domain.models import FileRecord, StagingProgress, StoredSegment, UploadRecord, UploadStatus

#: An upload with its segments as parallel arrays (one statement, so one snapshot).
SELECT_UPLOADS = """
SELECT u.*, s.nos, s.s3_ids, s.etags, s.parts
FROM uploads AS u
LEFT JOIN LATERAL (
    SELECT array_agg(segment_no ORDER BY segment_no) AS nos,
           array_agg(s3_upload_id ORDER BY segment_no) AS s3_ids,
           array_agg(etag ORDER BY segment_no) AS etags,
           array_agg(part_etags ORDER BY segment_no) AS parts
    FROM upload_segments WHERE upload_segments.upload_id = u.upload_id
) AS s ON true
"""


def pack(hexes: list[str] | tuple[str, ...]) -> bytes | None:
    """Hex MD5s/ETags -> concatenated 16-byte digests (None for an empty list), as DynamoDB."""
    return b"".join(bytes.fromhex(h) for h in hexes) if hexes else None


def unpack(blob: bytes | None) -> list[str]:
    if not blob:
        return []
    data = bytes(blob)
    return [data[i : i + 16].hex() for i in range(0, len(data), 16)]


def file_record(row: dict[str, Any]) -> FileRecord:
    window = row["attempt_window_start"]
    return FileRecord(
        file_id=row["file_id"],
        file_name=row["file_name"],
        size=int(row["size"]),
        md5_checksum=row["md5_checksum"],
        grouping_label=row["grouping_label"] or "",
        format=row["format"] or "",
        creation_date=row["creation_date"],
        update_date=row["update_date"],
        submitters=frozenset(row["submitters"] or ()),
        readers=frozenset(row["readers"] or ()),
        active_upload_id=row["active_upload_id"],
        current_upload_id=row["current_upload_id"],
        accepted_upload_id=row["accepted_upload_id"],
        accepted_at=row["accepted_at"],
        staging_started=row["staging_started"],
        staged_at=row["staged_at"],
        attempt_window_start=int(window) if window is not None else None,
        attempt_count=int(row["attempt_count"] or 0),
        sha256_checksum=row["sha256_checksum"],
        permanent_etag=row["permanent_etag"],
        staging=_staging(row),
    )


def _staging(row: dict[str, Any]) -> StagingProgress | None:
    if row["staging_etag"] is None and row["staged_bytes"] is None:
        return None
    started = row["staging_copy_started"]
    return StagingProgress(
        copy_id=row["staging_copy_id"],
        source_etag=row["staging_etag"],
        copied=int(row["staged_bytes"] or 0),
        started=float(started) if started else None,
    )


def upload_record(row: dict[str, Any]) -> UploadRecord:
    """An ``uploads`` row joined with its segment arrays (:data:`SELECT_UPLOADS`)."""
    opened: dict[int, str] = {}
    done: dict[int, StoredSegment] = {}
    # No segment rows: the aggregates are NULL, not empty arrays.
    columns = [row.get(name) or [] for name in ("nos", "s3_ids", "etags", "parts")]
    for no, s3_id, etag, parts in zip(*columns):
        if s3_id is not None:
            opened[int(no)] = s3_id
        if etag is not None:
            done[int(no)] = StoredSegment(etag, tuple(unpack(parts)))
    return UploadRecord(
        upload_id=row["upload_id"],
        file_id=row["file_id"],
        s3_upload_id=row["s3_upload_id"],
        object_key=row["object_key"],
        upload_status=UploadStatus(row["status"]),
        part_size=int(row["part_size"]),
        created=row["created"],
        updated=row["updated"],
        client_md5=row["client_md5"],
        client_part_md5s=unpack(row["client_part_md5s"]),
        status_reason=row["status_reason"],
        verified_bytes=int(row["verified_bytes"] or 0),
        copy_upload_id=row["copy_upload_id"],
        segment_parts=int(row["segment_parts"]) if row["segment_parts"] is not None else None,
        copy_group=int(row["copy_group"]) if row["copy_group"] is not None else None,
        segment_uploads=opened,
        segments_done=done,
    )
