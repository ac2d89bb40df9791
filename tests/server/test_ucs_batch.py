"""``POST /batch/files``: what the single file and upload routes say about many files, at once."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Api, register


def lookup(api: Api, ids: Any, user: str | None = "alice") -> Any:
    return api.call("POST", "/batch/files", {"file_ids": ids}, user=user)


def test_each_file_gets_the_single_routes_answer(api: Api) -> None:
    register("B1")
    register("B2")
    register("B3", submitters=("mallory",))
    created = api.create_upload("B2")
    r = lookup(api, ["B2", "NOPE", "B3", "B1", "B2"])
    assert r.status_code == 200, r.body
    files = r.json_body["files"]
    assert [f["file_id"] for f in files] == ["B2", "NOPE", "B3", "B1"]  # distinct, in order
    b2, nope, b3, b1 = files
    assert b2["status"] == 200 and b2["metadata"] == api.call("GET", "/files/B2").json_body
    single = api.call("GET", f"/uploads/{created['upload_id']}").json_body
    assert b2["current_upload"] == single
    assert b1["status"] == 200 and b1["current_upload"] is None
    assert nope["status"] == 404 and nope["error"]["exception_id"] == "fileNotRegistered"
    assert b3["status"] == 403 and b3["error"]["exception_id"] == "noFileAccess"
    assert "metadata" not in b3 and "mallory" not in r.body.decode()


def test_the_batch_is_limited_and_validated(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UCS_MAX_BATCH_FILES", "3")
    r = lookup(api, ["a", "b", "c", "d"])
    assert r.status_code == 413, r.body
    assert r.json_body["exception_id"] == "bulkRequestTooLarge"
    assert r.json_body["data"] == {"limit": 3, "requested": 4}
    for bad in ([], [""], [1], "B1", None):
        r = lookup(api, bad)
        assert r.status_code == 400 and r.json_body["exception_id"] == "invalidRequest", bad
    r = api.call("POST", "/batch/files", {"file_ids": ["a"], "x": 1})
    assert r.status_code == 400


def test_a_token_is_required(api: Api) -> None:
    assert lookup(api, ["B1"], user=None).status_code == 401
