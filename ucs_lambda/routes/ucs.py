"""Upload Controller Service routes (reference/ucs.yaml plus the CONTRACTS.md extensions).

Each view validates its input, calls :class:`UploadService` and shapes the response; all rules
live in the service and the domain.
"""

from __future__ import annotations

from typing import Any

from chalice import Blueprint, Response
from chalice.app import Request

from ..bootstrap import services
from ..config import get_settings
from ..domain.errors import FileNotRegistered, InvalidRequest
from ..domain.ids import check_id, check_ids
from ..domain.models import UploadStatus
from ..domain.parts import parse_part_number
from ..services.uploads import Checksums, FileLookup, UploadService
from . import shapes
from .common import Endpoint, body_of, json_response, read_json_object, require_string, status_of

bp = Blueprint(__name__)
endpoint = Endpoint(bp)


def _service() -> UploadService:
    return services().uploads


@bp.route("/files/{file_id}", methods=["GET"])
@endpoint()
def get_file_metadata(request: Request, user: str, file_id: str) -> Response:
    return json_response(shapes.file_metadata(_service().get_file_metadata(user, file_id)))


@bp.route("/uploads", methods=["POST"])
@endpoint(statuses={"fileNotRegistered": 400})
def create_upload(request: Request, user: str) -> Response:
    body = read_json_object(request)
    if body.get("file_id") == "":
        # A string, as ucs.yaml asks, but no file can have it (nor be looked up by it).
        raise FileNotRegistered("")
    file_id = check_id(require_string(body, "file_id"), "file_id")
    return json_response(shapes.upload_details(_service().create_upload(user, file_id)))


@bp.route("/uploads/{upload_id}", methods=["GET"])
@endpoint()
def get_upload_details(request: Request, user: str, upload_id: str) -> Response:
    return json_response(shapes.upload_details(_service().get_upload(user, upload_id)))


@bp.route("/uploads/{upload_id}", methods=["PATCH"])
@endpoint()
def update_upload_status(request: Request, user: str, upload_id: str) -> Response:
    body = read_json_object(request)
    raw_status = require_string(body, "upload_status")
    target = UploadStatus.parse(raw_status)
    if target is None:
        raise InvalidRequest(
            f"'upload_status' must be one of {[s.value for s in UploadStatus]}.",
            {"field": "upload_status"},
        )
    checksums = Checksums.parse(body.get("checksums"))
    _service().update_status(user, upload_id, target, checksums)
    return Response(body="", status_code=204, headers={"Cache-Control": "no-store"})


def _part_no(raw: Any) -> int:
    try:
        return parse_part_number(raw)
    except ValueError as exc:
        raise InvalidRequest(str(exc), {"field": "part_no"}) from None


@bp.route("/uploads/{upload_id}/parts/{part_no}/signed_urls", methods=["POST"])
@endpoint()
def create_presigned_url(request: Request, user: str, upload_id: str, part_no: str) -> Response:
    return json_response({"url": _service().presign_part(user, upload_id, _part_no(part_no)).url})


@bp.route("/uploads/{upload_id}/signed_urls", methods=["POST"])
@endpoint()
def create_presigned_urls(request: Request, user: str, upload_id: str) -> Response:
    """Extension: presign many parts in one call (``{"part_numbers": [...]}``)."""
    body = read_json_object(request)
    numbers = body.get("part_numbers")
    limit = get_settings().max_batch_urls
    if not isinstance(numbers, list) or not numbers:
        raise InvalidRequest(
            "'part_numbers' must be a non-empty list of integers.", {"field": "part_numbers"}
        )
    if len(numbers) > limit:
        raise InvalidRequest(
            f"At most {limit} part numbers per request.",
            {"field": "part_numbers", "limit": limit},
        )
    if any(not isinstance(n, int) or isinstance(n, bool) for n in numbers):
        raise InvalidRequest(
            "'part_numbers' must contain integers only.", {"field": "part_numbers"}
        )
    parsed = [_part_no(n) for n in numbers]
    urls = _service().presign_parts(user, upload_id, parsed)
    return json_response(
        {
            "urls": [{"part_no": u.part_no, "url": u.url} for u in urls],
            "expires_in": get_settings().presign_ttl,
        }
    )


@bp.route("/uploads/{upload_id}/parts", methods=["GET"])
@endpoint()
def list_upload_parts(request: Request, user: str, upload_id: str) -> Response:
    """Extension: the parts S3 already holds, to resume an interrupted upload."""
    parts = _service().list_parts(user, upload_id)
    return json_response(
        {"parts": [{"part_no": p.part_no, "size": p.size, "etag": p.etag} for p in parts]}
    )


@bp.route("/batch/files", methods=["POST"])
@endpoint(statuses={"bulkRequestTooLarge": 413})
def lookup_files(request: Request, user: str) -> Response:
    """Extension: metadata and current upload of many files (``{"file_ids": [...]}``)."""
    body = read_json_object(request)
    ids = body.get("file_ids")
    if (
        not isinstance(ids, list)
        or not ids
        or not all(isinstance(i, str) and i for i in ids)
        or set(body) - {"file_ids"}
    ):
        raise InvalidRequest(
            "'file_ids' must be a non-empty list of non-empty strings (and nothing else).",
            {"field": "file_ids"},
        )
    found = _service().lookup_files(user, check_ids(ids, "file_ids"))
    return json_response({"files": [_lookup_entry(entry) for entry in found]})


def _lookup_entry(entry: FileLookup) -> dict[str, Any]:
    """One file of ``POST /batch/files``: what ``GET /files/{id}`` would answer, with status."""
    if entry.error is not None or entry.file is None:
        error = entry.error or FileNotRegistered(entry.file_id)
        status = status_of(error, {"fileNotRegistered": 404, "noFileAccess": 403})
        return {"file_id": entry.file_id, "status": status, "error": body_of(error)}
    upload = entry.current_upload
    return {
        "file_id": entry.file_id,
        "status": 200,
        "metadata": shapes.file_metadata(entry.file),
        "current_upload": shapes.upload_details(upload) if upload else None,
    }


@bp.route("/uploads/{upload_id}/segments/{segment_no}/complete", methods=["POST"])
@endpoint()
def complete_segment(request: Request, user: str, upload_id: str, segment_no: str) -> Response:
    """Extension: every part of a segment is stored; the server completes the segment and
    verifies and stores it while the client sends the next ones (idempotent)."""
    try:
        number = parse_part_number(segment_no)
    except ValueError:
        raise InvalidRequest(
            f"'segment_no' must be an integer between 1 and 10000, got {segment_no[:20]!r}.",
            {"field": "segment_no"},
        ) from None
    done = _service().complete_segment(user, upload_id, number)
    return json_response(
        {
            "segment_no": done.segment_no,
            "part_numbers": [done.first_part, done.last_part],
            "complete": True,
            "verified_bytes": done.verified_bytes,
        }
    )
