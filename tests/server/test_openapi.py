"""The project's OpenAPI document: valid, served, and in step with the app's routes."""

from __future__ import annotations

import json

import yaml
from chalice.test import Client
from openapi_spec_validator import validate

from ucs_lambda.app import FALLBACK_VIEWS, app
from ucs_lambda.routes.docs import OPENAPI_PATH

METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}


def document() -> dict:
    return yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))


def test_document_is_valid_openapi_3() -> None:
    doc = document()
    assert doc["openapi"] == "3.0.3"
    validate(doc)


def test_routes_and_document_agree() -> None:
    """Every route the app serves is documented, and every documented operation exists.

    The generated fallback routes (JSON 404 for unknown paths, 405 for wrong methods) are not
    API operations and are left out.
    """
    registered = {
        (path, method.lower())
        for path, methods in app.routes.items()
        for method, entry in methods.items()
        if entry.view_name not in FALLBACK_VIEWS
    }
    documented = {
        (path, method)
        for path, item in document()["paths"].items()
        for method in item
        if method in METHODS
    }
    assert registered == documented


def test_reference_ucs_operations_are_kept() -> None:
    ops = {
        (p, m): op.get("operationId")
        for p, item in document()["paths"].items()
        for m, op in item.items()
        if m in METHODS
    }
    assert ops[("/files/{file_id}", "get")] == "getFileMetadata"
    assert ops[("/uploads", "post")] == "createUpload"
    assert ops[("/uploads/{upload_id}", "get")] == "getUploadDetails"
    assert ops[("/uploads/{upload_id}", "patch")] == "updateUploadStatus"
    assert ops[("/uploads/{upload_id}/parts/{part_no}/signed_urls", "post")] == (
        "createPreSignedURL"
    )


def test_served_as_yaml_and_json(client: Client) -> None:
    r = client.http.get("/openapi.yaml")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/yaml")
    assert yaml.safe_load(r.body) == document()
    r = client.http.get("/openapi.json")
    assert r.status_code == 200
    assert json.loads(r.body) == document()
