"""The Chalice application: blueprints, JSON errors for everything, job and schedule handlers.

Chalice answers some requests itself, in its own shapes: unknown routes (API Gateway and
``chalice local`` say 403 "Missing Authentication Token"), wrong methods (405
``MethodNotAllowedError``), unsupported content types (415), unhandled exceptions (500). This
module makes all of them JSON ``{exception_id, description, data}``:

* catch-all routes ``/{p1}``, ``/{p1}/{p2}``, ... answer 404 ``notFound`` for unknown paths
  (concrete routes are matched before them);
* every method a real route lacks is registered to answer 405 ``methodNotAllowed``;
* an HTTP middleware rewrites whatever Chalice-shaped error is left.

The SQS handler's queue name and maximum concurrency are read from ``UCS_JOB_QUEUE`` and
``UCS_JOB_MAX_CONCURRENCY`` when this module is imported, because Chalice's decorator needs
them at packaging time (``chalice package`` writes them into the template); everything else
is read lazily at run time.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from chalice import Chalice, Rate, Response

from . import jobs
from .routes import docs, drs, ucs
from .routes.common import JSON_HEADERS, error_body

app = Chalice(app_name="ghga-ucs")
app.log.setLevel(logging.INFO)
logging.getLogger("ucs_lambda").setLevel(logging.INFO)

app.register_blueprint(docs.bp)
app.register_blueprint(ucs.bp)
app.register_blueprint(drs.bp, url_prefix=drs.URL_PREFIX)

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
#: Deepest unknown path answered with a JSON 404 (deeper ones: see the gateway responses
#: merged in by build/package_lambda.sh; chalice local answers those with its own 403).
FALLBACK_DEPTH = 10

#: View names of the generated fallback routes (not API operations; the OpenAPI coverage
#: test leaves them out).
FALLBACK_VIEWS = frozenset({"route_not_found", "method_not_allowed"})


def route_not_found(**params: str) -> Response:
    path = "/" + "/".join(params[f"p{i}"] for i in range(1, len(params) + 1))
    return Response(
        body=error_body("notFound", "No such route.", {"path": path}),
        status_code=404,
        headers=dict(JSON_HEADERS),
    )


def method_not_allowed(**params: str) -> Response:
    request = app.current_request
    method = request.method if request else ""
    return Response(
        body=error_body(
            "methodNotAllowed",
            f"Method {method} is not allowed on this route.",
            {"method": method},
        ),
        status_code=405,
        headers={**JSON_HEADERS, "Allow": ", ".join(_ALLOWED.get(_route_of(request), ()))},
    )


#: Route path -> the methods it serves (for the ``Allow`` header a 405 must carry).
_ALLOWED: dict[str, tuple[str, ...]] = {}


def _route_of(request: Any) -> str:
    context = getattr(request, "context", None) or {}
    return str(context.get("resourcePath") or "")


def _register_fallbacks() -> None:
    for path in list(app.routes):
        missing = [m for m in HTTP_METHODS if m not in app.routes[path]]
        # OPTIONS is answered by a view only where one exists (DRS objects): list it there.
        _ALLOWED[path] = tuple(m for m in (*HTTP_METHODS, "OPTIONS") if m in app.routes[path])
        if missing:
            app.route(path, methods=missing)(method_not_allowed)
    for depth in range(1, FALLBACK_DEPTH + 1):
        path = "/" + "/".join(f"{{p{i}}}" for i in range(1, depth + 1))
        app.route(path, methods=list(HTTP_METHODS))(route_not_found)


_register_fallbacks()

_CHALICE_ERROR_IDS = {
    "MethodNotAllowedError": "methodNotAllowed",
    "UnsupportedMediaType": "unsupportedMediaType",
    "BadRequestError": "invalidRequest",
    "BadRequest": "invalidRequest",
    "NotFoundError": "notFound",
    "RequestTimeoutError": "internalError",
    "TooManyRequestsError": "internalError",
    "InternalServerError": "internalError",
}


@app.middleware("http")
def json_errors(event: Any, get_response: Any) -> Response:
    """Rewrite Chalice's own ``{"Code", "Message"}`` errors into our error body."""
    response = get_response(event)
    body = response.body
    if response.status_code >= 400 and isinstance(body, dict) and set(body) == {"Code", "Message"}:
        exception_id = _CHALICE_ERROR_IDS.get(str(body["Code"]), "internalError")
        description = str(body["Message"])
        if exception_id == "internalError":
            description = "An internal error occurred; please retry later."
        response.body = error_body(exception_id, description, {})
        response.headers["Content-Type"] = "application/json"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


# ---- jobs ---------------------------------------------------------------------------------

JOB_QUEUE = os.environ.get("UCS_JOB_QUEUE") or "ghga-jobs"


def _packaging_count(name: str) -> int | None:
    raw = (os.environ.get(name) or "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


#: Most job functions the SQS event source runs at once (its ``ScalingConfig``
#: ``MaximumConcurrency``). Fixed at packaging time like the queue name:
#: build/package_lambda.sh sets it to the stage's ``reserved_concurrency`` of
#: ``on_job_message`` in .chalice/config.json, so Lambda's SQS pollers never start more
#: invocations than are reserved. Above the reservation an invocation is throttled and its
#: message returns to the queue only after the whole visibility timeout, counting as a receive
#: toward the dead-letter queue. Unset (None) outside packaging: it changes nothing at run time.
JOB_MAX_CONCURRENCY = _packaging_count("UCS_JOB_MAX_CONCURRENCY")


# batch_size=1 on purpose: one message is one job run, and a job run is built to use one
# invocation's whole time (UCS_VALIDATE_BUDGET_SECONDS, 600 of the function's 900 s). The
# messages of a batch would share those 900 s, so every run in it would have to stop early
# or be killed mid-job, and one failing message would send the whole batch back for
# redelivery. Lambda runs jobs side by side instead, one message per invocation, up to
# JOB_MAX_CONCURRENCY.
@app.on_sqs_message(queue=JOB_QUEUE, batch_size=1, maximum_concurrency=JOB_MAX_CONCURRENCY)
def on_job_message(event: Any) -> None:
    """Lambda entry for queued jobs; raising leaves the message for redelivery."""
    for record in event:
        try:
            body = json.loads(record.body)
        except ValueError:
            app.log.error("dropping a job message that is not JSON")
            continue
        try:
            jobs.handle_message(body)
        except jobs.InvalidJobMessage as exc:
            app.log.error("dropping an invalid job message: %s", exc)


@app.schedule(Rate(1, unit=Rate.HOURS))
def sweep_stale_uploads(event: Any) -> None:
    """Cancel stale pending uploads; re-queue validation of long-uploaded ones."""
    counts = jobs.sweep_stale_uploads()
    app.log.info("stale-upload sweep: %s", counts)


@app.schedule(Rate(6, unit=Rate.HOURS))
def cleanup_outbox(event: Any) -> None:
    """Delete expired outbox copies and reset their staging state."""
    removed = jobs.cleanup_outbox()
    app.log.info("outbox cleanup: removed %d objects", removed)
