"""GA4GH DRS 1.4 routes under ``/ga4gh/drs/v1`` (reference/drs3.yaml plus the DRS 1.4 additions).

Errors follow DRS's ``{msg, status_code}`` shape; they also carry this project's
``exception_id``/``description``/``data`` fields, because drs3.yaml's 404 schema
(``HttpObjectNotFoundError``) requires them and one client can then read every error alike.

The hostname in ``self_uri`` and service-info comes from configuration only
(``Settings.drs_host``), never from the request's ``Host`` header.
"""

from __future__ import annotations

from typing import Any

from chalice import Blueprint, Response
from chalice.app import Request

from ..bootstrap import services
from ..config import get_settings
from ..domain.errors import InvalidRequest
from ..domain.ids import check_ids
from ..services.downloads import BulkAnswer, DownloadService, StagingEstimate
from . import shapes
from .common import (
    JSON_HEADERS,
    ApiError,
    Endpoint,
    body_of,
    json_response,
    read_json_object,
    status_of,
)

URL_PREFIX = "/ga4gh/drs/v1"

bp = Blueprint(__name__)

#: Statuses of the DRS-only exception ids (the shared table in ``common`` has the others).
DRS_STATUSES = {"noSuchAccess": 404, "bulkRequestTooLarge": 413}


def _status(error: ApiError) -> int:
    return status_of(error, DRS_STATUSES)


def drs_error_response(error: ApiError, status: int | None = None) -> Response:
    code = status or _status(error)
    body = {"msg": error.description, "status_code": code, **body_of(error)}
    all_headers = dict(JSON_HEADERS)
    if code == 401:
        all_headers["WWW-Authenticate"] = 'Bearer realm="ghga"'
    return Response(body=body, status_code=code, headers=all_headers)


endpoint = Endpoint(bp, render_error=drs_error_response)


def _service() -> DownloadService:
    """The service behind the DRS routes; refuses to serve anything (ConfigError) in a
    deployment without a usable ``UCS_DRS_HOSTNAME``, before doing any work."""
    built = services()
    _ = built.settings.drs_host
    return built.downloads


def _accepted(staging: StagingEstimate) -> Response:
    """202 while the object is being staged: retry the same request after ``Retry-After``
    seconds (estimated from the copy's measured rate). The body (an extension; drs3.yaml
    defines none) says how far the copy is: ``{"staged_bytes", "size"}``."""
    return Response(
        body={"staged_bytes": staging.staged_bytes, "size": staging.size},
        status_code=202,
        headers={**JSON_HEADERS, "Retry-After": str(staging.retry_after)},
    )


@bp.route("/objects/{object_id}", methods=["GET"])
@endpoint()
def get_object(request: Request, user: str, object_id: str) -> Response:
    answer = _service().get_object(user, object_id)
    if answer.staging is not None or answer.drs_object is None:
        return _accepted(answer.staging)
    return json_response(shapes.drs_object(answer.drs_object, get_settings().drs_host))


@bp.route("/objects/{object_id}", methods=["OPTIONS"])
@endpoint(public=True)
def options_object(request: Request, user: str, object_id: str) -> Response:
    """DRS 1.3 ``Authorizations``: public and the same for every id, so it reveals nothing."""
    return json_response(shapes.AUTHORIZATIONS)


@bp.route("/objects/{object_id}/access/{access_id}", methods=["GET"])
@endpoint()
def get_access_url(request: Request, user: str, object_id: str, access_id: str) -> Response:
    answer = _service().get_access_url(user, object_id, access_id)
    if answer.staging is not None or answer.access_url is None:
        return _accepted(answer.staging)
    return json_response(shapes.access_url(answer.access_url))


@bp.route("/objects", methods=["POST"])
@endpoint()
def get_bulk_objects(request: Request, user: str) -> Response:
    ids = bulk_object_ids(read_json_object(request))
    return json_response(bulk_body(_service().get_objects(user, ids)))


@bp.route("/service-info", methods=["GET"])
@endpoint()
def service_info(request: Request, user: str) -> Response:
    _service()  # refuses a deployment without a usable UCS_DRS_HOSTNAME
    return json_response(shapes.service_info(get_settings()))


def bulk_object_ids(body: dict[str, Any]) -> list[str]:
    """``bulk_object_ids`` of a DRS 1.4 bulk request: a non-empty list of usable ids.

    DRS's optional ``passports`` are not supported (bearer tokens only) and refused rather
    than silently ignored, so a caller relying on them learns it at once.
    """
    if "passports" in body:
        raise InvalidRequest("Passports are not supported; send a bearer token.", {})
    ids = body.get("bulk_object_ids")
    if not isinstance(ids, list) or not ids:
        raise InvalidRequest(
            "'bulk_object_ids' must be a non-empty list of object ids.",
            {"field": "bulk_object_ids"},
        )
    if not all(isinstance(i, str) and i for i in ids):
        raise InvalidRequest(
            "Every entry of 'bulk_object_ids' must be a non-empty string.",
            {"field": "bulk_object_ids"},
        )
    return check_ids(ids, "bulk_object_ids")


def bulk_body(answer: BulkAnswer) -> dict[str, Any]:
    """The DRS 1.4 bulk answer plus ``staging_drs_objects`` (see ucs_lambda/openapi.yaml).

    Objects still being staged are unresolved with ``error_code`` 202, like the 202 the
    single-object route answers; ``staging_drs_objects`` adds when to ask again for each.
    Other unresolved objects carry the status the single-object route would answer.
    """
    groups: dict[int, list[str]] = {}
    if answer.staging:
        groups[202] = list(answer.staging)
    for object_id, error in answer.refused.items():
        groups.setdefault(_status(error), []).append(object_id)
    unresolved = answer.requested - len(answer.resolved)
    host = get_settings().drs_host
    return {
        "summary": {
            "requested": answer.requested,
            "resolved": len(answer.resolved),
            "unresolved": unresolved,
        },
        "resolved_drs_object": [shapes.drs_object(o, host) for o in answer.resolved],
        "unresolved_drs_objects": [
            {"error_code": code, "object_ids": ids} for code, ids in sorted(groups.items())
        ],
        "staging_drs_objects": [
            {
                "object_id": object_id,
                "retry_after": estimate.retry_after,
                "name": answer.staging_files[object_id][0],
                "size": estimate.size,
                "staged_bytes": estimate.staged_bytes,
            }
            for object_id, estimate in answer.staging.items()
        ],
    }
