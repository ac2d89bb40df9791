"""Serve the Chalice app locally, like ``chalice local --no-autoreload``, but with a deep backlog.

``chalice local`` listens with Python's default backlog of 5: a burst of 20 clients gets
connection resets. We build the same server through Chalice's own factory and raise
``request_queue_size`` before it binds. The stack's environment is applied again after the app
is loaded, because Chalice copies the stage's ``environment_variables`` over ``os.environ``.
Repeated request headers reach the app joined with commas (as under WSGI servers), so that a
request with two ``Authorization`` headers can be refused.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from chalice import local
from chalice.cli import factory as chalice_factory

PROJECT_DIR = Path(__file__).resolve().parent.parent


def _any_method(handler: local.ChaliceRequestHandler, name: str) -> object:
    if name.startswith("do_"):
        return handler._generic_handle
    raise AttributeError(name)


_chalice_parse_payload = local.ChaliceRequestHandler._parse_payload


def _parse_payload_keeping_repeats(
    handler: local.ChaliceRequestHandler,
) -> tuple[dict[str, str], bytes | None]:
    """Chalice's ``dict(self.headers)`` keeps only the first of repeated headers, so the app
    could not see a second ``Authorization``; join repeats with commas as WSGI servers do."""
    _, body = _chalice_parse_payload(handler)
    headers: dict[str, str] = {}
    for name in handler.headers:
        if name.lower() not in headers:
            headers[name.lower()] = ", ".join(handler.headers.get_all(name) or [])
    return headers, body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--stage", default="dev")
    args = parser.parse_args()

    environment = dict(os.environ)
    local.ThreadedHTTPServer.request_queue_size = 256
    # http.server answers a method without a do_<METHOD> (TRACE, QUERY, ...) with its own HTML
    # 501; let the app answer every method (405 methodNotAllowed where a route lacks it).
    local.ChaliceRequestHandler.__getattr__ = _any_method
    local.ChaliceRequestHandler._parse_payload = _parse_payload_keeping_repeats
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")

    factory = chalice_factory.CLIFactory(str(PROJECT_DIR), environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=args.stage)
    app = config.chalice_app
    os.environ.update(environment)
    server = factory.create_local_server(app, config, args.host, args.port)
    server.serve_forever()


if __name__ == "__main__":
    main()
