"""The project's OpenAPI document, served as YAML and JSON (public: no token needed)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import yaml
from chalice import Blueprint, Response

bp = Blueprint(__name__)

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"
_CACHE = {"Cache-Control": "public, max-age=300"}


@functools.lru_cache(maxsize=1)
def openapi_text() -> str:
    return OPENAPI_PATH.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    return yaml.safe_load(openapi_text())


@bp.route("/openapi.yaml", methods=["GET"])
def openapi_yaml() -> Response:
    return Response(
        body=openapi_text(),
        status_code=200,
        headers={"Content-Type": "application/yaml; charset=utf-8", **_CACHE},
    )


@bp.route("/openapi.json", methods=["GET"])
def openapi_json() -> Response:
    return Response(
        body=json.dumps(openapi_document()),
        status_code=200,
        headers={"Content-Type": "application/json", **_CACHE},
    )
