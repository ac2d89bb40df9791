"""UCS routes through the Chalice test client against in-process moto."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import jwt
import pytest
import requests

from ucs_lambda.adapters import aws
from ucs_lambda.config import get_settings

from .conftest import KEY, OLD_KEY, PART, Api, md5, payload, queued_jobs, register, state, token


def error_of(resp: Any) -> dict[str, Any]:
    body = json.loads(resp.body)
    assert set(body) == {"exception_id", "description", "data"}, body
    assert resp.headers["Content-Type"].startswith("application/json")
    return body


# ---- GET /files/{file_id} -------------------------------------------------------------------


def test_get_file_metadata(api: Api) -> None:
    rec = register("F1")
    r = api.call("GET", "/files/F1")
    assert r.status_code == 200
    body = r.json_body
    assert body == {
        "file_id": "F1",
        "file_name": "F1.bin",
        "md5_checksum": rec.md5_checksum,
        "size": rec.size,
        "grouping_label": "group",
        "creation_date": body["creation_date"],
        "update_date": body["update_date"],
        "format": "bin",
        "current_upload_id": None,
        "server_verifies": True,
    }
    assert body["creation_date"].endswith("Z")
    up = api.create_upload("F1")
    assert api.call("GET", "/files/F1").json_body["current_upload_id"] == up["upload_id"]


def test_get_file_unknown_and_forbidden(api: Api) -> None:
    register("F1", submitters=("bob",))
    r = api.call("GET", "/files/NOPE")
    assert r.status_code == 404
    assert error_of(r) == {
        "exception_id": "fileNotRegistered",
        "description": error_of(r)["description"],
        "data": {"file_id": "NOPE"},
    }
    r = api.call("GET", "/files/F1", user="alice")
    assert r.status_code == 403
    assert error_of(r)["exception_id"] == "noFileAccess"
    assert error_of(r)["data"] == {"file_id": "F1"}


# ---- POST /uploads --------------------------------------------------------------------------


def test_create_upload(api: Api) -> None:
    register("F1")
    up = api.create_upload("F1")
    assert up["file_id"] == "F1"
    assert up["upload_status"] == "pending"
    assert up["part_size"] == PART
    assert up["status_reason"] is None
    assert up["server_verifies"] is True and up["verified_bytes"] == 0
    stored = state().uploads.get_upload(up["upload_id"])
    assert stored is not None and stored.object_key == f"F1/{up['upload_id']}"


def test_create_upload_errors(api: Api) -> None:
    register("F1")
    register("F2", submitters=("bob",))
    r = api.call("POST", "/uploads", {"file_id": "NOPE"})
    assert r.status_code == 400 and error_of(r)["exception_id"] == "fileNotRegistered"
    assert error_of(r)["data"] == {"file_id": "NOPE"}
    r = api.call("POST", "/uploads", {"file_id": "F2"})
    assert r.status_code == 403 and error_of(r)["exception_id"] == "noFileAccess"
    first = api.create_upload("F1")
    r = api.call("POST", "/uploads", {"file_id": "F1"})
    assert r.status_code == 400
    err = error_of(r)
    assert err["exception_id"] == "existingActiveUpload"
    assert err["data"] == {"file_id": "F1", "active_upload": first}


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"[]", b'"F1"', b"{}", b'{"file_id": 5}', b"\xff\xfe"],
)
def test_create_upload_bad_bodies(api: Api, raw: bytes) -> None:
    register("F1")
    r = api.call("POST", "/uploads", raw=raw)
    assert r.status_code == 400
    assert error_of(r)["exception_id"] == "invalidRequest"


def test_create_upload_empty_file_id_is_not_registered(api: Api) -> None:
    """ucs.yaml allows any string: "" is well-formed, it just names no file (found by fuzzing)."""
    register("F1")
    r = api.call("POST", "/uploads", {"file_id": ""})
    assert r.status_code == 400
    assert error_of(r) == {
        "exception_id": "fileNotRegistered",
        "description": error_of(r)["description"],
        "data": {"file_id": ""},
    }


def test_body_too_large(api: Api) -> None:
    raw = json.dumps({"file_id": "F1", "pad": "x" * (1024 * 1024)}).encode()
    r = api.call("POST", "/uploads", raw=raw)
    assert r.status_code == 413 and error_of(r)["exception_id"] == "payloadTooLarge"


def test_wrong_content_type(api: Api) -> None:
    r = api.call("POST", "/uploads", {"file_id": "F1"}, headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and error_of(r)["exception_id"] == "unsupportedMediaType"


def test_lost_race_cleans_up(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The transaction decides: a create whose pre-check passed but whose write lost answers
    existingActiveUpload and aborts its S3 multipart upload."""
    register("F1")
    first = api.create_upload("F1")
    files = type(state().files)
    real_get = files.get_file
    calls = {"n": 0}

    def stale_first_read(self: Any, file_id: str) -> Any:
        rec = real_get(self, file_id)
        calls["n"] += 1
        if calls["n"] == 1 and rec is not None:
            rec.active_upload_id = None  # as if read before the other request's write
        return rec

    monkeypatch.setattr(files, "get_file", stale_first_read)
    r = api.call("POST", "/uploads", {"file_id": "F1"})
    assert r.status_code == 400
    assert error_of(r)["data"]["active_upload"]["upload_id"] == first["upload_id"]
    s3 = aws.client("s3", get_settings())
    uploads = s3.list_multipart_uploads(Bucket="t-inbox").get("Uploads", [])
    assert [u["Key"] for u in uploads] == [f"F1/{first['upload_id']}"]


# ---- GET /uploads/{upload_id} ---------------------------------------------------------------


def test_get_upload(api: Api) -> None:
    register("F1")
    up = api.create_upload("F1")
    r = api.call("GET", f"/uploads/{up['upload_id']}")
    assert r.status_code == 200 and r.json_body == up
    r = api.call("GET", "/uploads/nope")
    assert r.status_code == 404
    assert error_of(r)["exception_id"] == "noSuchUpload"
    assert error_of(r)["data"] == {"upload_id": "nope"}
    r = api.call("GET", f"/uploads/{up['upload_id']}", user="mallory")
    # ucs.yaml's 403, but another user's upload does not name its file (issue 11, item 8)
    assert r.status_code == 403
    assert error_of(r)["data"] == {"file_id": "", "upload_id": up["upload_id"]}


# ---- presigning ---------------------------------------------------------------------------


def test_presign_single_part(api: Api) -> None:
    register("F1", size=7 * PART)
    up = api.create_upload("F1")
    r = api.call("POST", f"/uploads/{up['upload_id']}/parts/7/signed_urls")
    assert r.status_code == 200
    url = r.json_body["url"]
    q = parse_qs(urlparse(url).query)
    assert q["partNumber"] == ["7"]
    assert q["X-Amz-SignedHeaders"] == ["content-length;host"]
    assert q["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert q["X-Amz-Expires"] == ["900"]
    assert urlparse(url).path.endswith(f"/F1/{up['upload_id']}")


@pytest.mark.parametrize("part", ["0", "10001", "-1", "abc", "1.5", "99999999999999999999"])
def test_presign_bad_part_numbers(api: Api, part: str) -> None:
    register("F1")
    up = api.create_upload("F1")
    r = api.call("POST", f"/uploads/{up['upload_id']}/parts/{part}/signed_urls")
    assert r.status_code == 400 and error_of(r)["exception_id"] == "invalidRequest"


def test_presign_errors(api: Api) -> None:
    register("F1")
    up = api.create_upload("F1")
    r = api.call("POST", "/uploads/nope/parts/1/signed_urls")
    assert r.status_code == 404 and error_of(r)["exception_id"] == "noSuchUpload"
    r = api.call("POST", f"/uploads/{up['upload_id']}/parts/1/signed_urls", user="bob")
    assert r.status_code == 403
    api.call("PATCH", f"/uploads/{up['upload_id']}", {"upload_status": "cancelled"})
    r = api.call("POST", f"/uploads/{up['upload_id']}/parts/1/signed_urls")
    assert r.status_code == 400
    assert error_of(r)["data"] == {
        "upload_id": up["upload_id"],
        "current_upload_status": "cancelled",
    }


def test_presign_batch(api: Api) -> None:
    register("F1")
    up = api.create_upload("F1")
    r = api.call("POST", f"/uploads/{up['upload_id']}/signed_urls", {"part_numbers": [3, 1, 2]})
    assert r.status_code == 200
    assert r.json_body["expires_in"] == 900
    assert [u["part_no"] for u in r.json_body["urls"]] == [3, 1, 2]
    for u in r.json_body["urls"]:
        assert parse_qs(urlparse(u["url"]).query)["partNumber"] == [str(u["part_no"])]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"part_numbers": []},
        {"part_numbers": "1"},
        {"part_numbers": [1, "2"]},
        {"part_numbers": [1.0]},
        {"part_numbers": [True]},
        {"part_numbers": [0]},
        {"part_numbers": [10001]},
        {"part_numbers": list(range(1, 52))},  # limit is 50 in the tests
    ],
)
def test_presign_batch_limits(api: Api, body: dict) -> None:
    register("F1")
    up = api.create_upload("F1")
    r = api.call("POST", f"/uploads/{up['upload_id']}/signed_urls", body)
    assert r.status_code == 400 and error_of(r)["exception_id"] == "invalidRequest"


def test_presign_batch_at_limit(api: Api) -> None:
    register("F1", size=50 * PART)
    up = api.create_upload("F1")
    r = api.call(
        "POST", f"/uploads/{up['upload_id']}/signed_urls", {"part_numbers": list(range(1, 51))}
    )
    assert r.status_code == 200 and len(r.json_body["urls"]) == 50


# ---- list parts -----------------------------------------------------------------------------


def test_list_parts(api: Api) -> None:
    data = payload(2 * PART + 10)
    register("F1", data)
    up = api.create_upload("F1")
    uid = up["upload_id"]
    assert api.call("GET", f"/uploads/{uid}/parts").json_body == {"parts": []}
    md5s = api.put_parts(uid, data, PART)
    r = api.call("GET", f"/uploads/{uid}/parts")
    assert r.status_code == 200
    assert r.json_body == {
        "parts": [
            {"part_no": 1, "size": PART, "etag": md5s[0]},
            {"part_no": 2, "size": PART, "etag": md5s[1]},
            {"part_no": 3, "size": 10, "etag": md5s[2]},
        ]
    }
    assert api.call("GET", f"/uploads/{uid}/parts", user="bob").status_code == 403
    assert api.call("GET", "/uploads/nope/parts").status_code == 404
    assert api.confirm(uid).status_code == 204
    r = api.call("GET", f"/uploads/{uid}/parts")
    assert r.status_code == 400 and error_of(r)["exception_id"] == "uploadNotPending"


def test_list_parts_paginates(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """More parts than one ListParts page (moto pages by MaxParts)."""
    from ucs_lambda.adapters import s3 as s3_adapter

    data = payload(5 * PART)
    register("F1", data)
    up = api.create_upload("F1")
    uid = up["upload_id"]
    rec = state().uploads.get_upload(uid)
    assert rec is not None
    client = s3_adapter.aws.client("s3", get_settings())
    for n in range(1, 6):
        client.upload_part(
            Bucket="t-inbox",
            Key=rec.object_key,
            UploadId=rec.s3_upload_id,
            PartNumber=n,
            Body=data[(n - 1) * PART : n * PART],
        )
    real = client.get_paginator

    class SmallPages:
        def __init__(self, name: str) -> None:
            self.inner = real(name)

        def paginate(self, **kw: Any) -> Any:
            return self.inner.paginate(PaginationConfig={"PageSize": 2}, **kw)

    monkeypatch.setattr(client, "get_paginator", SmallPages)
    r = api.call("GET", f"/uploads/{uid}/parts")
    assert [p["part_no"] for p in r.json_body["parts"]] == [1, 2, 3, 4, 5]


# ---- authentication -------------------------------------------------------------------------


def _with_auth(api: Api, value: str | None) -> Any:
    headers = {"Content-Type": "application/json"}
    if value is not None:
        headers["Authorization"] = value
    return api.client.http.request("GET", "/files/F1", headers=headers, body=b"")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-jwt",
        "Bearer a.b.c",
    ],
)
def test_missing_or_malformed_token(api: Api, header: str | None) -> None:
    register("F1")
    r = _with_auth(api, header)
    assert r.status_code == 401
    assert error_of(r)["exception_id"] == "notAuthenticated"
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")


def test_expired_forged_and_alg_none_tokens(api: Api) -> None:
    register("F1")
    now = int(time.time())
    expired = jwt.encode({"sub": "alice", "exp": now - 120}, KEY, algorithm="HS256")
    forged = jwt.encode({"sub": "alice", "exp": now + 60}, "wrong-key-" * 4, algorithm="HS256")
    none = jwt.encode({"sub": "alice", "exp": now + 60}, None, algorithm="none")
    no_exp = jwt.encode({"sub": "alice"}, KEY, algorithm="HS256")
    no_sub = jwt.encode({"exp": now + 60}, KEY, algorithm="HS256")
    hs512 = jwt.encode({"sub": "alice", "exp": now + 60}, KEY, algorithm="HS512")
    for bad in (expired, forged, none, no_exp, no_sub, hs512):
        r = _with_auth(api, f"Bearer {bad}")
        assert r.status_code == 401, bad
        assert error_of(r)["exception_id"] == "notAuthenticated"
        assert bad not in r.body.decode()


def test_rotated_key_still_verifies(api: Api) -> None:
    register("F1")
    # minted on a clock running a little ahead: within UCS_TOKEN_LEEWAY_SECONDS (60)
    ahead = token("alice", iat=int(time.time()) + 30)
    assert _with_auth(api, f"Bearer {ahead}").status_code == 200
    assert _with_auth(api, f"Bearer {token('alice', key=OLD_KEY)}").status_code == 200
    assert _with_auth(api, f"bearer {token('alice')}").status_code == 200


def test_every_api_route_needs_a_token(api: Api) -> None:
    register("F1")
    up = api.create_upload("F1")
    uid = up["upload_id"]
    for method, path in [
        ("GET", "/files/F1"),
        ("POST", "/uploads"),
        ("GET", f"/uploads/{uid}"),
        ("PATCH", f"/uploads/{uid}"),
        ("POST", f"/uploads/{uid}/parts/1/signed_urls"),
        ("POST", f"/uploads/{uid}/signed_urls"),
        ("GET", f"/uploads/{uid}/parts"),
        ("GET", "/ga4gh/drs/v1/objects/F1"),
        ("GET", "/ga4gh/drs/v1/objects/F1/access/s3"),
        ("POST", "/ga4gh/drs/v1/objects"),
        ("GET", "/ga4gh/drs/v1/service-info"),
    ]:
        r = api.call(method, path, {"file_id": "F1"}, user=None)
        assert r.status_code == 401, (method, path)
    for path in ("/openapi.yaml", "/openapi.json"):
        assert api.call("GET", path, user=None).status_code == 200


def test_missing_token_keys_is_a_json_500(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    register("F1")
    headers = {"Authorization": f"Bearer {token('alice')}"}
    monkeypatch.setenv("UCS_TOKEN_KEYS", "")
    r = api.client.http.request("GET", "/files/F1", headers=headers)
    assert r.status_code == 500 and error_of(r)["exception_id"] == "internalError"


# ---- unknown routes, methods, internal errors ----------------------------------------------


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/"),
        ("GET", "/nope"),
        ("POST", "/files"),
        ("GET", "/uploads/x/y"),
        ("GET", "/uploads/x/parts/1"),
        ("DELETE", "/a/b/c/d/e/f/g"),
        ("GET", "/ga4gh/drs/v1/objects/x/access"),
        ("GET", "/ga4gh/drs/v1/objects/x/access/y/z"),
    ],
)
def test_unknown_routes_are_json_404(api: Api, method: str, path: str) -> None:
    r = api.call(method, path)
    assert r.status_code == 404
    err = error_of(r)
    assert err["exception_id"] == "notFound"
    assert err["data"]["path"] == path.rstrip("/") or path == "/"


@pytest.mark.parametrize(
    "method,path",
    [
        ("DELETE", "/uploads/x"),
        ("PUT", "/uploads/x"),
        ("GET", "/uploads"),
        ("POST", "/files/F1"),
        ("GET", "/uploads/x/parts/1/signed_urls"),
        ("PATCH", "/openapi.yaml"),
        ("POST", "/ga4gh/drs/v1/objects/x"),
        ("GET", "/ga4gh/drs/v1/objects"),
        ("POST", "/ga4gh/drs/v1/objects/x/access/s3"),
    ],
)
def test_wrong_methods_are_json_405(api: Api, method: str, path: str) -> None:
    r = api.call(method, path)
    assert r.status_code == 405
    assert error_of(r)["exception_id"] == "methodNotAllowed"


def test_unexpected_failure_is_json_500(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from ucs_lambda.services import uploads

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(uploads.UploadService, "get_file_metadata", boom)
    r = api.call("GET", "/files/F1")
    assert r.status_code == 500
    err = error_of(r)
    assert err["exception_id"] == "internalError" and "secret" not in err["description"]


def test_presigned_part_urls_work(api: Api) -> None:
    """The URL a client gets really accepts the part (moto does not check signatures)."""
    data = payload(PART + 1)
    register("F1", data)
    up = api.create_upload("F1")
    url = api.call("POST", f"/uploads/{up['upload_id']}/parts/1/signed_urls").json_body["url"]
    resp = requests.put(url, data=data[:PART], timeout=10)
    assert resp.status_code == 200 and resp.headers["ETag"].strip('"') == md5(data[:PART])
    assert queued_jobs() == []


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/uploads", "POST"),
        ("DELETE", "/uploads/u1", "GET, PATCH"),
        ("POST", "/ga4gh/drs/v1/objects/x", "GET, OPTIONS"),
        ("GET", "/ga4gh/drs/v1/objects", "POST"),
    ],
)
def test_405_names_the_allowed_methods(api: Api, method: str, path: str, allow: str) -> None:
    """RFC 9110 requires ``Allow`` on a 405 (found by schemathesis' unsupported_method check)."""
    r = api.call(method, path)
    assert r.status_code == 405
    assert r.headers["Allow"] == allow
