"""What every route shares: authentication, JSON body parsing and the error body.

Routes stay thin: ``@endpoint`` authenticates the caller, turns domain errors into HTTP
responses with the status chosen per route, and turns unexpected failures into a JSON 500
without leaking details. Error bodies are always ``{exception_id, description, data}``.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any, Callable, Union

from chalice import Blueprint, Response
from chalice.app import Request

from .. import tokens
from ..config import ConfigError, get_settings
from ..domain.errors import DomainError, InvalidRequest, TooManyUploadAttempts
from ..domain.ids import check_id
from .shapes import domain_error_body, error_body

log = logging.getLogger(__name__)

#: Default HTTP status per exception id (a route may override, see ucs.yaml).
STATUS_BY_ID: dict[str, int] = {
    "notAuthenticated": 401,
    "invalidRequest": 400,
    "noFileAccess": 403,
    "fileNotRegistered": 404,
    "existingActiveUpload": 400,
    "noSuchUpload": 404,
    "uploadNotPending": 400,
    "uploadStatusChange": 400,
    "segmentIncomplete": 400,
    "noSuchObject": 404,
    "notFound": 404,
    "methodNotAllowed": 405,
    "payloadTooLarge": 413,
    "unsupportedMediaType": 415,
    "tooManyUploadAttempts": 429,
    "internalError": 500,
}

JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}

#: Path parameters that are store keys: ``@endpoint`` refuses unusable values (over 2048
#: bytes of UTF-8, not encodable) with 400 ``invalidRequest`` before the view runs.
KEY_PARAMS = ("file_id", "upload_id", "object_id")


class HttpError(Exception):
    """An error that exists only at the HTTP level (body too large, ...), with its status.

    Not a domain error: no service raises it; the routes render it like one."""

    def __init__(
        self, status: int, exception_id: str, description: str, data: dict | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.exception_id = exception_id
        self.description = description
        self.data: dict[str, Any] = data or {}


#: What a route answers with: a domain error, or an error of the HTTP layer itself.
ApiError = Union[DomainError, HttpError]


def status_of(error: ApiError, statuses: dict[str, int] | None = None) -> int:
    """The HTTP status of an error: the route's own choice, else the default per id."""
    if isinstance(error, HttpError):
        return error.status
    chosen = (statuses or {}).get(error.exception_id)
    return chosen or STATUS_BY_ID.get(error.exception_id, 400)


def body_of(error: ApiError) -> dict[str, Any]:
    if isinstance(error, HttpError):
        return error_body(error.exception_id, error.description, error.data)
    return domain_error_body(error)


def error_response(error: ApiError, status: int | None = None) -> Response:
    code = status or status_of(error)
    all_headers = dict(JSON_HEADERS)
    if code == 401:
        all_headers["WWW-Authenticate"] = 'Bearer realm="ghga"'
    if isinstance(error, TooManyUploadAttempts):
        all_headers["Retry-After"] = str(error.retry_after)
    return Response(body=body_of(error), status_code=code, headers=all_headers)


def internal_error_response() -> Response:
    return Response(
        body=error_body("internalError", "An internal error occurred; please retry later."),
        status_code=500,
        headers=dict(JSON_HEADERS),
    )


def json_response(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    all_headers = dict(JSON_HEADERS)
    all_headers.update(headers or {})
    return Response(body=body, status_code=status, headers=all_headers)


def read_json_object(request: Request, required: bool = True) -> dict[str, Any]:
    """The request body as a JSON object, with our own errors for every way it can be wrong.

    Chalice's ``json_body`` would answer malformed JSON in its own error shape, so the raw body
    is parsed here. Bodies larger than ``UCS_MAX_BODY_BYTES`` are refused unread.
    """
    raw = request.raw_body or b""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    limit = get_settings().max_body_bytes
    if len(raw) > limit:
        raise HttpError(
            413, "payloadTooLarge", f"The request body exceeds {limit} bytes.", {"limit": limit}
        )
    if not raw.strip():
        if required:
            raise InvalidRequest("A JSON object is required as request body.", {})
        return {}
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}", {}) from None
    except RecursionError:
        # json's C scanner gives up after about 1,000 levels (the interpreter's recursion
        # limit), quickly and without harm; no body of this API nests more than three.
        raise InvalidRequest("The request body is nested too deeply.", {}) from None
    if not isinstance(value, dict):
        raise InvalidRequest("The request body must be a JSON object.", {})
    return value


def require_string(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"'{field}' must be a non-empty string.", {"field": field})
    return value


def authorization_header(request: Request) -> str | None:
    """The request's one ``Authorization`` header; ``invalidRequest`` when it has several.

    With two headers, a proxy that checks one and a server that reads the other would disagree
    about who is calling, so such requests are refused (400, as RFC 6750 asks for a repeated
    parameter). How repeats reach the app: API Gateway's REST proxy event lists every value in
    ``multiValueHeaders`` (``headers`` keeps the last); WSGI servers (gunicorn, wsgiref) join
    repeats with commas, and ``build/serve_local.py`` does the same for ``chalice local``, whose
    own handler would keep only the first. A bearer token never contains a comma.
    """
    event = request.to_original_event()
    repeated = [
        value
        for name, values in (event.get("multiValueHeaders") or {}).items()
        if name.lower() == "authorization"
        for value in values or ()
    ]
    value = request.headers.get("authorization")
    if len(repeated) > 1 or (value is not None and "," in value):
        raise InvalidRequest(
            "The request carries more than one Authorization header; send exactly one.",
            {"header": "Authorization"},
        )
    return value


def authenticate(request: Request) -> str:
    """The user id of the request's bearer token (raises notAuthenticated)."""
    return tokens.from_header(authorization_header(request))


Handler = Callable[..., Any]


class Endpoint:
    """Decorator factory binding views to a blueprint's current request.

    ``@endpoint(statuses={...}, public=False)`` wraps a view ``f(request, user, **path)``; the
    wrapper takes only the path parameters, as Chalice calls it, and checks those in
    ``KEY_PARAMS`` (public views read no store and take any id).
    """

    def __init__(self, blueprint: Blueprint, render_error: Callable | None = None) -> None:
        self.blueprint = blueprint
        self.render_error = render_error or error_response

    def __call__(
        self, statuses: dict[str, int] | None = None, public: bool = False
    ) -> Callable[[Handler], Handler]:
        overrides = statuses or {}

        def decorate(view: Handler) -> Handler:
            @functools.wraps(view)
            def wrapper(**path: str) -> Any:
                request = self.blueprint.current_request
                try:
                    user = "" if public else authenticate(request)
                    if not public:
                        for name in KEY_PARAMS:
                            if name in path:
                                check_id(path[name], name)
                    return view(request, user, **path)
                except (DomainError, HttpError) as exc:
                    return self.render_error(exc, overrides.get(exc.exception_id))
                except ConfigError:
                    log.exception("configuration error")
                    return internal_error_response()

            return wrapper

        return decorate
