"""GA4GH DRS 1.1 routes under ``/ga4gh/drs/v1`` (reference/drs3.yaml).

Errors follow DRS's ``{msg, status_code}`` shape; they also carry this project's
``exception_id``/``description``/``data`` fields, because drs3.yaml's 404 schema
(``HttpObjectNotFoundError``) requires them and one client can then read every error alike.
"""

from __future__ import annotations

from chalice import Blueprint, Response
from chalice.app import Request

from ..domain.errors import DomainError
from ..services.downloads import DownloadService
from .common import JSON_HEADERS, STATUS_BY_ID, Endpoint, json_response

URL_PREFIX = "/ga4gh/drs/v1"

bp = Blueprint(__name__)


def drs_error_response(
    error: DomainError, status: int | None = None, headers: dict | None = None
) -> Response:
    code = status or getattr(error, "status", None) or STATUS_BY_ID.get(error.exception_id, 400)
    body = {"msg": error.description, "status_code": code, **error.to_body()}
    all_headers = dict(JSON_HEADERS)
    if code == 401:
        all_headers["WWW-Authenticate"] = 'Bearer realm="ghga"'
    all_headers.update(headers or {})
    return Response(body=body, status_code=code, headers=all_headers)


endpoint = Endpoint(bp, render_error=drs_error_response)


def _host(request: Request) -> str:
    return str(request.headers.get("host") or "localhost")


@bp.route("/objects/{object_id}", methods=["GET"])
@endpoint()
def get_object(request: Request, user: str, object_id: str) -> Response:
    answer = DownloadService.from_env().get_object(user, object_id, _host(request))
    if answer.drs_object is None:
        return Response(
            body="",
            status_code=202,
            headers={"Retry-After": str(answer.retry_after), "Cache-Control": "no-store"},
        )
    return json_response(answer.drs_object)


@bp.route("/service-info", methods=["GET"])
@endpoint()
def service_info(request: Request, user: str) -> Response:
    return json_response(DownloadService.from_env().service_info(_host(request)))
