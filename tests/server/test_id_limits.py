"""Ids the store cannot use as keys are refused with 400 ``invalidRequest``, never a 500.

DynamoDB refuses a key over 2048 bytes of UTF-8 (on reads too) and text that is not valid
Unicode; moto checks neither on reads, so the ``dynamodb_rules`` fixture makes moto's
``GetItem``/``BatchGetItem`` refuse such keys the way DynamoDB does. Without the checks in
``domain/ids.py`` every route below answered 500 ``internalError`` under that fixture.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from moto.dynamodb.exceptions import HashKeyTooLong, MockValidationException
from moto.dynamodb.models import DynamoDBBackend

from ucs_lambda import admin
from ucs_lambda.app import FALLBACK_VIEWS, app
from ucs_lambda.domain.errors import InvalidRequest
from ucs_lambda.domain.ids import MAX_ID_BYTES, check_id, check_ids, id_problem
from ucs_lambda.routes.common import KEY_PARAMS

from .conftest import Api, register, state

ROOT = Path(__file__).resolve().parents[2]
MD5 = "0123456789abcdef0123456789abcdef"

LONG = "a" * 3000  # 3000 bytes
MULTIBYTE = "\u00e9" * 1025  # 1025 characters, 2050 bytes of UTF-8
SURROGATE = "F\ud800"  # a lone surrogate: no UTF-8 encoding exists
BAD_IDS = {"long": LONG, "multibyte": MULTIBYTE, "surrogate": SURROGATE}
AT_LIMIT = {"ascii": "a" * 2048, "multibyte": "\u00e9" * 1024}  # exactly 2048 bytes


@pytest.fixture(autouse=True)
def dynamodb_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's key reads refuse what DynamoDB refuses (ValidationException)."""
    original = DynamoDBBackend.get_item

    def get_item(self: Any, table_name: str, keys: dict, *args: Any, **kw: Any) -> Any:
        for typed in keys.values():
            value = next(iter(typed.values()))
            try:
                size = len(value.encode("utf-8"))
            except UnicodeEncodeError:
                raise MockValidationException("Invalid UTF-8 in a key value") from None
            if size > MAX_ID_BYTES:
                raise HashKeyTooLong
        return original(self, table_name, keys, *args, **kw)

    monkeypatch.setattr(DynamoDBBackend, "get_item", get_item)


@pytest.fixture
def errors(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.ERROR)
    return caplog


def assert_invalid(r: Any, field: str, index: int | None = None, drs: bool = False) -> None:
    assert r.status_code == 400, r.body
    body = r.json_body
    data = {"field": field, "limit": MAX_ID_BYTES}
    if index is not None:
        data["index"] = index
    assert body["exception_id"] == "invalidRequest"
    assert body["data"] == data
    assert "2048 bytes" in body["description"]
    if drs:  # the DRS error shape: {msg, status_code} plus the project's three fields
        assert body["msg"] == body["description"] and body["status_code"] == 400
        assert set(body) == {"msg", "status_code", "exception_id", "description", "data"}
    else:
        assert set(body) == {"exception_id", "description", "data"}


# ---- the helper ---------------------------------------------------------------------------


def test_id_problem() -> None:
    assert id_problem("F1") is None
    assert id_problem(AT_LIMIT["ascii"]) is None and id_problem(AT_LIMIT["multibyte"]) is None
    assert id_problem(LONG) == "is 3000 bytes long in UTF-8"
    assert id_problem(MULTIBYTE) == "is 2050 bytes long in UTF-8"
    assert "lone surrogate" in (id_problem(SURROGATE) or "")
    assert id_problem("") == "must not be empty"
    assert id_problem(7) == "must be a string"


def test_check_id_and_ids() -> None:
    assert check_id("F1", "file_id") == "F1"
    assert check_ids(["F1", "F2"], "file_ids") == ["F1", "F2"]
    with pytest.raises(InvalidRequest) as exc:
        check_id(MULTIBYTE, "file_id")
    assert exc.value.data == {"field": "file_id", "limit": 2048}
    assert exc.value.description == (
        "'file_id' is 2050 bytes long in UTF-8; an id must be 1 to 2048 bytes of UTF-8 text."
    )
    with pytest.raises(InvalidRequest) as exc:
        check_ids(["F1", "F2", SURROGATE], "file_ids")
    assert exc.value.data == {"field": "file_ids", "index": 2, "limit": 2048}
    assert exc.value.description.startswith("'file_ids[2]' cannot be encoded as UTF-8")


@pytest.mark.parametrize("backend", ["dynamodb"], indirect=True)
def test_the_fixture_refuses_what_dynamodb_refuses(env: dict) -> None:
    """Without the route checks these reads fail in the store (the 500s seen before)."""
    repo = state()
    for bad in BAD_IDS.values():
        with pytest.raises(Exception, match="ValidationException"):
            repo.files.get_file(bad)
    assert repo.files.get_file(AT_LIMIT["multibyte"]) is None


# ---- every route with an id in its path ---------------------------------------------------


def key_routes() -> list[tuple[str, str, str]]:
    """(method, path template, key parameter) of every authenticated route naming a key."""
    found = []
    for path, methods in app.routes.items():
        params = [p for p in KEY_PARAMS if "{" + p + "}" in path]
        for method, entry in methods.items():
            if entry.view_name in FALLBACK_VIEWS or method == "OPTIONS" or not params:
                continue  # OPTIONS /objects/{id} is public and reads nothing
            found.append((method, path, params[0]))
    return sorted(found)


def test_key_routes_cover_the_brief() -> None:
    routes = {(m, p) for m, p, _ in key_routes()}
    assert {
        ("GET", "/files/{file_id}"),
        ("GET", "/uploads/{upload_id}"),
        ("PATCH", "/uploads/{upload_id}"),
        ("POST", "/uploads/{upload_id}/parts/{part_no}/signed_urls"),
        ("POST", "/uploads/{upload_id}/signed_urls"),
        ("GET", "/uploads/{upload_id}/parts"),
        ("GET", "/ga4gh/drs/v1/objects/{object_id}"),
        ("GET", "/ga4gh/drs/v1/objects/{object_id}/access/{access_id}"),
    } <= routes


@pytest.mark.parametrize("kind", sorted(BAD_IDS))
@pytest.mark.parametrize("method,template,param", key_routes())
def test_unusable_path_id_is_400(
    api: Api, errors: pytest.LogCaptureFixture, method: str, template: str, param: str, kind: str
) -> None:
    path = (
        template.replace("{" + param + "}", BAD_IDS[kind])
        .replace("{part_no}", "1")
        .replace("{access_id}", "s3")
    )
    body = {"upload_status": "cancelled", "part_numbers": [1]} if method != "GET" else None
    r = api.call(method, path, body)
    assert_invalid(r, param, drs=template.startswith("/ga4gh/"))
    assert not errors.records  # nothing was logged as a crash


def test_unusable_id_needs_a_token_first(api: Api) -> None:
    assert api.call("GET", f"/files/{LONG}", user=None).status_code == 401


def test_public_options_takes_any_id(api: Api) -> None:
    r = api.call("OPTIONS", f"/ga4gh/drs/v1/objects/{LONG}", user=None)
    assert r.status_code == 200, r.body


@pytest.mark.parametrize("kind", sorted(AT_LIMIT))
def test_ids_at_the_limit_are_looked_up(api: Api, kind: str) -> None:
    """2048 bytes is still an id: unknown ones stay 404 (and the batch answers per file)."""
    unknown = AT_LIMIT[kind]
    r = api.call("GET", f"/files/{unknown}")
    assert r.status_code == 404 and r.json_body["exception_id"] == "fileNotRegistered"
    r = api.call("GET", f"/uploads/{unknown}")
    assert r.status_code == 404 and r.json_body["exception_id"] == "noSuchUpload"
    r = api.call("GET", f"/ga4gh/drs/v1/objects/{unknown}")
    assert r.status_code == 404 and r.json_body["exception_id"] == "noSuchObject"
    r = api.call("POST", "/uploads", {"file_id": unknown})
    assert r.status_code == 400 and r.json_body["exception_id"] == "fileNotRegistered"
    r = api.call("POST", "/batch/files", {"file_ids": [unknown]})
    assert r.status_code == 200 and r.json_body["files"][0]["status"] == 404
    r = api.call("POST", "/ga4gh/drs/v1/objects", {"bulk_object_ids": [unknown]})
    assert r.status_code == 200
    assert r.json_body["unresolved_drs_objects"] == [{"error_code": 404, "object_ids": [unknown]}]


def test_ordinary_ids_still_work(api: Api) -> None:
    register("F1", readers=("alice",))
    assert api.call("GET", "/files/F1").status_code == 200
    assert api.call("GET", "/files/F2").status_code == 404
    up = api.create_upload("F1")
    assert api.call("GET", f"/uploads/{up['upload_id']}").status_code == 200
    r = api.call("POST", "/batch/files", {"file_ids": ["F1", "F2"]})
    assert [f["status"] for f in r.json_body["files"]] == [200, 404]
    assert api.call("GET", "/ga4gh/drs/v1/objects/F2").status_code == 404


# ---- ids in request bodies ----------------------------------------------------------------


def raw(body: dict) -> bytes:
    """JSON with ``\\u`` escapes, so a lone surrogate arrives as JSON can carry it."""
    return json.dumps(body).encode("ascii")


@pytest.mark.parametrize("kind", sorted(BAD_IDS))
def test_create_upload_refuses_unusable_file_id(
    api: Api, errors: pytest.LogCaptureFixture, kind: str
) -> None:
    r = api.call("POST", "/uploads", raw=raw({"file_id": BAD_IDS[kind]}))
    assert_invalid(r, "file_id")
    assert not errors.records


def test_create_upload_with_empty_file_id_stays_400(api: Api) -> None:
    """Documented before this check (CONTRACTS.md): 400 ``fileNotRegistered``."""
    r = api.call("POST", "/uploads", {"file_id": ""})
    assert r.status_code == 400 and r.json_body["exception_id"] == "fileNotRegistered"


@pytest.mark.parametrize("kind", sorted(BAD_IDS))
def test_batch_lookup_refuses_the_whole_request(
    api: Api, errors: pytest.LogCaptureFixture, kind: str
) -> None:
    register("F1")
    r = api.call("POST", "/batch/files", raw=raw({"file_ids": ["F1", "F2", BAD_IDS[kind]]}))
    assert_invalid(r, "file_ids", index=2)
    assert r.json_body["description"].startswith("'file_ids[2]' ")
    assert not errors.records


def test_batch_lookup_with_an_empty_id_is_400(api: Api) -> None:
    r = api.call("POST", "/batch/files", {"file_ids": ["F1", ""]})
    assert r.status_code == 400 and r.json_body["data"]["field"] == "file_ids"


@pytest.mark.parametrize("kind", sorted(BAD_IDS))
def test_drs_bulk_refuses_the_whole_request(
    api: Api, errors: pytest.LogCaptureFixture, kind: str
) -> None:
    r = api.call(
        "POST", "/ga4gh/drs/v1/objects", raw=raw({"bulk_object_ids": [BAD_IDS[kind], "F1"]})
    )
    assert_invalid(r, "bulk_object_ids", index=0, drs=True)
    assert not errors.records


def test_drs_bulk_with_an_empty_id_is_400(api: Api) -> None:
    r = api.call("POST", "/ga4gh/drs/v1/objects", {"bulk_object_ids": [""]})
    assert r.status_code == 400 and r.json_body["status_code"] == 400


# ---- operator commands --------------------------------------------------------------------


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("file_id", [LONG, "r\u00e9sum\u00e9", "\u00e9" * 1025, "F\udcff"])
def test_register_file_refuses_the_id(
    env: dict, capsys: pytest.CaptureFixture, file_id: str
) -> None:
    argv = ["--file-name", "a.bin", "--size", "1", "--md5", MD5, "--submitter", "alice"]
    assert admin.main(["register-file", "--file-id", file_id, *argv]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error: --file-id may hold only letters, digits")
    assert file_id not in line  # the id is not echoed (3000 characters, or unprintable)


@pytest.mark.parametrize("file_id", [LONG, "\u00e9" * 1025, "F\udcff"])
def test_grant_refuses_unusable_id(env: dict, capsys: pytest.CaptureFixture, file_id: str) -> None:
    assert admin.main(["grant", "--file-id", file_id, "--user", "bob"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error: --file-id ") and "2048 bytes of UTF-8" in line


def test_grant_of_a_non_ascii_id_is_not_registered(
    env: dict, capsys: pytest.CaptureFixture
) -> None:
    """Usable as a key, but register-file never makes such a file: a clear 'not registered'."""
    assert admin.main(["grant", "--file-id", "r\u00e9sum\u00e9", "--user", "bob"]) == 2
    assert (
        one_error_line(capsys.readouterr().err)
        == "error: file 'r\u00e9sum\u00e9' is not registered"
    )


@pytest.mark.parametrize("command", ["register-file", "grant"])
def test_admin_in_a_subprocess(tmp_path: Path, command: str) -> None:
    """Before any AWS call: exit 2, one line, no traceback; argv bytes that are not UTF-8
    arrive as lone surrogates (surrogateescape)."""
    extra = {
        "register-file": [b"--file-name", b"a", b"--size", b"1", b"--md5", MD5.encode()],
        "grant": [],
    }[command]
    user = [b"--submitter", b"u"] if command == "register-file" else [b"--user", b"u"]
    for file_id in (LONG.encode(), b"F\xff"):
        proc = subprocess.run(
            [
                sys.executable.encode(),
                *(b"-m", b"ucs_lambda.admin", command.encode()),
                *(b"--file-id", file_id, *extra, *user),
            ],
            cwd=tmp_path,
            capture_output=True,
            timeout=60,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
        )
        assert proc.returncode == 2, proc.stderr
        one_error_line(proc.stderr.decode("utf-8"))
