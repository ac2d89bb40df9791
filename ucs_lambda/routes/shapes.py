"""The JSON shapes of the API: domain records and errors rendered as ucs.yaml, drs3.yaml and
GA4GH service-info say (plus the documented extensions, docs/CONTRACTS.md).

Only the routes render; services return records. The error body of every response is
``{exception_id, description, data}`` (DRS adds ``msg`` and ``status_code``).
"""

from __future__ import annotations

from typing import Any

from ..config import Settings
from ..domain.errors import DomainError, ExistingActiveUpload
from ..domain.models import SERVER_VERIFIES, FileRecord, UploadRecord, iso
from ..domain.parts import MAX_PARTS
from ..services.downloads import ACCESS_ID, ACCESS_URL_HEADERS, DRS_VERSION, DrsObject

#: DRS 1.3 ``Authorizations``: how to authorise requests for any object (the same answer for
#: every id, so that it says nothing about whether an object exists).
AUTHORIZATIONS: dict[str, Any] = {"supported_types": ["BearerAuth"]}


def file_metadata(file: FileRecord) -> dict[str, Any]:
    """ucs.yaml ``FileMetadata`` plus the ``server_verifies`` extension."""
    return {
        "file_id": file.file_id,
        "file_name": file.file_name,
        "md5_checksum": file.md5_checksum,
        "size": file.size,
        "grouping_label": file.grouping_label,
        "creation_date": iso(file.creation_date),
        "update_date": iso(file.update_date),
        "format": file.format,
        "current_upload_id": file.current_upload_id,
        "server_verifies": SERVER_VERIFIES,
    }


def upload_details(upload: UploadRecord) -> dict[str, Any]:
    """ucs.yaml ``UploadDetails`` plus the ``status_reason``, ``server_verifies``,
    ``verified_bytes`` and ``segment_parts`` extensions."""
    return {
        "upload_id": upload.upload_id,
        "file_id": upload.file_id,
        "part_size": upload.part_size,
        "upload_status": upload.upload_status.value,
        "status_reason": upload.status_reason,
        "server_verifies": SERVER_VERIFIES,
        "verified_bytes": upload.verified_bytes,
        "segment_parts": upload.segment_parts or MAX_PARTS,
    }


def error_body(exception_id: str, description: str, data: dict | None = None) -> dict:
    return {"exception_id": exception_id, "description": description, "data": data or {}}


def domain_error_body(error: DomainError) -> dict[str, Any]:
    """The error body of a domain error; ``existingActiveUpload`` carries the details of the
    upload that holds the file (ucs.yaml)."""
    data = dict(error.data)
    if isinstance(error, ExistingActiveUpload):
        active = error.active
        data["active_upload"] = (
            upload_details(active) if active else {"upload_id": error.active_upload_id}
        )
    return error_body(error.exception_id, error.description, data)


def access_url(url: str) -> dict[str, Any]:
    """A DRS ``AccessURL``: the presigned GET and the header a client sends with it."""
    return {"url": url, "headers": list(ACCESS_URL_HEADERS)}


def drs_object(resolved: DrsObject, drs_host: str) -> dict[str, Any]:
    """A DRS ``DrsObject`` with one ``s3`` access method carrying its URL."""
    file = resolved.file
    checksums = [{"type": "md5", "checksum": file.md5_checksum}]
    if file.sha256_checksum:  # recorded by the validation job (not on older files)
        checksums.append({"type": "sha-256", "checksum": file.sha256_checksum})
    return {
        "id": file.file_id,
        "name": file.file_name,
        "self_uri": f"drs://{drs_host}/{file.file_id}",
        "size": file.size,
        "created_time": iso(file.accepted_at or file.creation_date),
        "checksums": checksums,
        "access_methods": [
            {"type": "s3", "access_id": ACCESS_ID, "access_url": access_url(resolved.url)}
        ],
    }


def service_info(settings: Settings) -> dict[str, Any]:
    """GA4GH service-info with DRS 1.4's bulk limit (also in 1.5's ``drs`` block)."""
    limit = settings.drs_max_bulk_objects
    return {
        "id": f"{_reverse(settings.drs_host)}.drs",
        "name": "GHGA DRS3",
        "type": {"group": "org.ga4gh", "artifact": "drs", "version": DRS_VERSION},
        "description": "Download API of the GHGA file services (DRS on S3).",
        "organization": {"name": settings.organization_name, "url": settings.organization_url},
        "version": "1.0.0",
        "maxBulkRequestLength": limit,
        "drs": {"maxBulkRequestLength": limit},
    }


def _reverse(host: str) -> str:
    """``drs.example.org:443`` -> ``org.example.drs`` (service-info ids are reverse-DNS)."""
    name = host.split(":")[0] or "localhost"
    return ".".join(reversed(name.split(".")))
