"""The Chalice app as a WSGI application, for running the controller without AWS Lambda.

Use it next to an S3-compatible store such as Ceph RGW (``AWS_ENDPOINT_URL_S3``), behind a
production WSGI server::

    gunicorn --workers 4 --threads 8 --bind 127.0.0.1:8000 ucs_lambda.wsgi:application

Chalice has no WSGI support of its own. Each request is turned into the same API Gateway proxy
event the Lambda gets and handed to the app through ``chalice.local.LocalGateway`` (what
``chalice local`` uses), so routing, middleware and error shapes are exactly those of the Lambda.
Configuration comes from the process environment only (docs/CONTRACTS.md); the stage variables of
``.chalice/config.json`` are *not* applied. Jobs and the periodic sweeps run in
``python -m ucs_lambda.worker``, which polls the same queue.

This is a deployment: importing the module marks the process as one (``UCS_DEPLOYMENT=wsgi``)
and refuses to start without the settings a deployment must have (``UCS_DRS_HOSTNAME``), so
gunicorn stops at boot with the configuration error instead of serving wrong ``drs://`` URIs.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from chalice.config import Config
from chalice.local import LocalGateway, LocalGatewayException

from .app import app as chalice_app
from .config import check_deployment, get_settings
from .routes.common import error_body

log = logging.getLogger(__name__)

os.environ.setdefault("UCS_DEPLOYMENT", "wsgi")
check_deployment(get_settings())

StartResponse = Callable[..., Any]

_gateway = LocalGateway(
    chalice_app,
    Config.create(chalice_stage="wsgi", app_name="ghga-ucs", lambda_timeout=900),
)


def _status_line(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return f"{code} Unknown"


def _request_path(environ: dict[str, Any]) -> str:
    """The path (percent-encoded, as API Gateway sees it) plus the query string."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw and raw.startswith("/"):
        return str(raw)
    # PATH_INFO is decoded and carried as latin-1 by WSGI (PEP 3333)
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    path = quote(path.encode("latin-1").decode("utf-8", "replace"), safe="/:@!$&'()*+,;=-._~")
    query = environ.get("QUERY_STRING")
    return f"{path}?{query}" if query else path or "/"


def _request_headers(environ: dict[str, Any]) -> dict[str, str]:
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").title()] = value
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").title()] = environ[key]
    return headers


def _json_response(start_response: StartResponse, code: int, body: str, method: str) -> list[bytes]:
    data = body.encode("utf-8")
    start_response(
        _status_line(code),
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [] if method == "HEAD" else [data]


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI entry point."""
    method = environ.get("REQUEST_METHOD", "GET").upper()
    limit = get_settings().max_body_bytes
    length_text = environ.get("CONTENT_LENGTH") or ""
    try:
        length = int(length_text) if length_text else None
    except ValueError:
        return _json_response(
            start_response,
            400,
            error_body("invalidRequest", "Malformed Content-Length.", {}),
            method,
        )
    if length is not None and length > limit:
        return _json_response(
            start_response,
            413,
            error_body(
                "payloadTooLarge", f"The request body exceeds {limit} bytes.", {"limit": limit}
            ),
            method,
        )
    stream = environ.get("wsgi.input")
    body: bytes | None = None
    if stream is not None and (length or length is None):
        # without Content-Length (chunked): read one byte past the limit so the app answers 413
        body = stream.read(length if length is not None else limit + 1) or None
    headers = _request_headers(environ)
    try:
        response = _gateway.handle_request(
            method=method, path=_request_path(environ), headers=headers, body=body
        )
    except LocalGatewayException as exc:
        data = exc.body or b""
        out = [(k, str(v)) for k, v in (exc.headers or {}).items()]
        out += [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        start_response(_status_line(exc.CODE), out)
        return [] if method == "HEAD" else [data]
    status = int(response["statusCode"])
    payload = response.get("body")
    if payload is None:
        data = b""
    elif response.get("isBase64Encoded"):
        data = base64.b64decode(payload)
    else:
        data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    out_headers: list[tuple[str, str]] = []
    for name, value in (response.get("headers") or {}).items():
        if name.lower() not in ("content-length", "connection", "transfer-encoding"):
            out_headers.append((name, str(value)))
    for name, values in (response.get("multiValueHeaders") or {}).items():
        out_headers.extend((name, str(v)) for v in values)
    if not any(n.lower() == "content-type" for n, _ in out_headers):
        out_headers.append(("Content-Type", "application/json"))
    out_headers.append(("Content-Length", str(len(data))))
    start_response(_status_line(status), out_headers)
    return [] if method == "HEAD" else [data]
