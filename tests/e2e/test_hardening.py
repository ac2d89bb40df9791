"""Issue 11: hostile input that used to get through, over HTTP on the local stack.

Each test names the item of issue 11 it covers. The services are reached the ways they are
deployed: ``chalice local`` (the stack's UCS), and gunicorn serving ``ucs_lambda.wsgi`` on the
same tables and buckets (the "next to Ceph" deployment), because headers and bodies reach the
app differently through each; the Lambda event path is in tests/server/test_hardening_lambda.py.
Presigned URLs are checked on Ceph RGW, which (unlike moto) verifies signatures.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.helpers.admin import new_user, register_file, run_admin
from tests.helpers.invariants import check_files, read_file_state
from tests.helpers.localstack import E2E_UPLOAD_ATTEMPTS
from tests.helpers.support import GUNICORN, PROJECT_DIR, call, gunicorn, s3_client, stack_client
from tests.helpers.ucs import race, settled, upload_status

pytestmark = pytest.mark.e2e

AUDIENCE = "ghga-ucs-hardening"
ISSUER = "https://issuer.hardening.test"
MiB = 1024 * 1024


# ---- helpers ------------------------------------------------------------------------------


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign(claims: dict[str, Any], key: str) -> str:
    """An HS256 JWT with exactly these claims (no library normalising them on the way)."""
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    mac = hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def send(
    base_url: str,
    method: str,
    path: str,
    authorizations: list[str] = (),  # type: ignore[assignment]
    body: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request with exactly these ``Authorization`` headers (repeats allowed)."""
    url = urlparse(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        conn.putrequest(method, (url.path.rstrip("/") + path) or "/")
        for value in authorizations:
            conn.putheader("Authorization", value)
        if body is not None:
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        raw = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()
    return response.status, headers, json.loads(raw) if raw else None


def token_cap(stack: dict[str, Any]) -> int:
    """The stack's UCS_TOKEN_MAX_TTL (the E2E stack keeps the default)."""
    from ucs_lambda.config import DEFAULT_TOKEN_MAX_TTL

    return int(stack["env"].get("UCS_TOKEN_MAX_TTL") or DEFAULT_TOKEN_MAX_TTL)


def key_of(stack_env: dict[str, str]) -> str:
    return stack_env["UCS_TOKEN_KEYS"].split(",")[0]


class LogTail:
    """What a log file gained since this object was made."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size

    def new_text(self) -> str:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            return f.read().decode(errors="replace")


@pytest.fixture(scope="module")
def wsgi(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """gunicorn serving ucs_lambda.wsgi on the stack's tables and buckets, with an audience and
    an issuer configured (tokens for it come from ``admin mint-token`` with the same settings).
    """
    if not GUNICORN.exists():
        pytest.skip("gunicorn is not installed")
    env = {**stack_env, "UCS_TOKEN_AUDIENCE": AUDIENCE, "UCS_TOKEN_ISSUER": ISSUER}
    log = tmp_path_factory.mktemp("wsgi") / "gunicorn.log"
    with gunicorn(env, log) as url:
        yield {"url": url, "env": env, "log": log}


def pending_upload(
    base_url: str, stack_env: dict[str, str], user: str, token: str, size: int = 10, md5: str = ""
) -> tuple[str, dict[str, Any]]:
    """Register a file for ``user`` and open an upload for it: (file_id, upload details)."""
    file_id = register_file(stack_env, user, size=size, md5=md5 or "0" * 32)
    status, upload = call("POST", f"{base_url}/uploads", token, {"file_id": file_id})
    assert status == 200, upload
    return file_id, upload


# ---- item 2: token claims -------------------------------------------------------------------


def test_tokens_outside_the_profile_are_refused(
    local_stack: dict[str, Any], stack_env: dict[str, str], user: dict[str, str]
) -> None:
    """Item 2: integer exp/iat of bounded size, iat not in the future, lifetime capped."""
    file_id = register_file(stack_env, user["user"], size=10, md5="0" * 32)
    key, sub, now = key_of(stack_env), user["user"], int(time.time())
    cap = token_cap(local_stack)
    bad = {
        "exp 10**12": {"sub": sub, "iat": now, "exp": 10**12},
        "exp a numeric string": {"sub": sub, "iat": now, "exp": str(now + 600)},
        "exp with 401 digits": {"sub": sub, "iat": now, "exp": int("9" * 401)},
        "exp true": {"sub": sub, "iat": now, "exp": True},
        "exp a float": {"sub": sub, "iat": now, "exp": now + 600.5},
        "no iat": {"sub": sub, "exp": now + 600},
        "iat a numeric string": {"sub": sub, "iat": str(now), "exp": now + 600},
        "iat in the future": {"sub": sub, "iat": now + 3600, "exp": now + 7200},
        "lifetime above the cap": {"sub": sub, "iat": now, "exp": now + cap + 60},
        "exp before iat": {"sub": sub, "iat": now + 30, "exp": now + 10},
    }
    url = f"{local_stack['ucs_url']}/files/{file_id}"
    for case, claims in bad.items():
        status, body = call("GET", url, sign(claims, key))
        assert status == 401, (case, status, body)
        assert body["exception_id"] == "notAuthenticated", (case, body)
    good = {
        "issued a little ahead (leeway)": {"sub": sub, "iat": now + 30, "exp": now + 600},
        "lifetime exactly the cap": {"sub": sub, "iat": now, "exp": now + cap},
    }
    for case, claims in good.items():
        status, body = call("GET", url, sign(claims, key))
        assert status == 200, (case, status, body)


def test_mint_token_refuses_a_lifetime_above_the_cap(
    local_stack: dict[str, Any], stack_env: dict[str, str]
) -> None:
    """Item 2: ``mint-token --ttl`` is bounded by UCS_TOKEN_MAX_TTL; ``--ttl max`` is the cap."""
    cap = token_cap(local_stack)
    command = [sys.executable, "-m", "ucs_lambda.admin", "mint-token", "--user", "u"]
    result = subprocess.run(
        [*command, "--ttl", str(cap + 1)],
        cwd=PROJECT_DIR,
        env=stack_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and not result.stdout, result
    assert "UCS_TOKEN_MAX_TTL" in result.stderr and str(cap) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    token = run_admin(stack_env, "mint-token", "--user", "u", "--ttl", "max")
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["exp"] - claims["iat"] == cap and "aud" not in claims and "iss" not in claims
    status, _ = call("GET", f"{local_stack['ucs_url']}/files/nothing-{uuid.uuid4().hex}", token)
    assert status == 404  # authenticated; the file just does not exist


def test_audience_and_issuer_are_checked_when_configured(
    wsgi: dict[str, Any], stack_env: dict[str, str], user: dict[str, str]
) -> None:
    """Item 2: with UCS_TOKEN_AUDIENCE/ISSUER set, mint-token sets them, the service wants them."""
    file_id = register_file(stack_env, user["user"], size=10, md5="0" * 32)
    minted = run_admin(wsgi["env"], "mint-token", "--user", user["user"])
    claims = json.loads(base64.urlsafe_b64decode(minted.split(".")[1] + "=="))
    assert (claims["aud"], claims["iss"]) == (AUDIENCE, ISSUER)
    url = f"{wsgi['url']}/files/{file_id}"
    assert call("GET", url, minted)[0] == 200
    key, now = key_of(stack_env), int(time.time())
    base = {"sub": user["user"], "iat": now, "exp": now + 600}
    for case, extra in {
        "no aud or iss": {},
        "no aud": {"iss": ISSUER},
        "no iss": {"aud": AUDIENCE},
        "other aud": {"aud": "another-service", "iss": ISSUER},
        "other iss": {"aud": AUDIENCE, "iss": "https://elsewhere.test"},
    }.items():
        status, body = call("GET", url, sign({**base, **extra}, key))
        assert (status, body["exception_id"]) == (401, "notAuthenticated"), (case, body)
    assert call("GET", url, sign({**base, "aud": [AUDIENCE, "x"], "iss": ISSUER}, key))[0] == 200


# ---- item 3: deeply nested JSON ------------------------------------------------------------


DEPTH = 100_000
NESTED = {"arrays": b"[" * DEPTH, "objects": b'{"a":' * DEPTH}


def nested_body_answers(base_url: str, token: str, upload_id: str) -> list[Any]:
    answers = []
    for shape, body in NESTED.items():
        for method, path in [
            ("POST", "/uploads"),
            ("PATCH", f"/uploads/{upload_id}"),
            ("POST", f"/uploads/{upload_id}/signed_urls"),
        ]:
            status, _, answer = send(base_url, method, path, [f"Bearer {token}"], body)
            answers.append((shape, method, path, status, answer))
    return answers


def test_deeply_nested_json_is_a_400_without_traceback(
    local_stack: dict[str, Any], stack_env: dict[str, str], user: dict[str, str]
) -> None:
    """Item 3 (chalice local): 100,000 nested arrays or objects in every JSON body."""
    _, upload = pending_upload(local_stack["ucs_url"], stack_env, user["user"], user["token"])
    log = LogTail(Path(local_stack["log_dir"]) / "ucs.log")
    for shape, method, path, status, answer in nested_body_answers(
        local_stack["ucs_url"], user["token"], upload["upload_id"]
    ):
        assert status == 400, (shape, method, path, status, answer)
        assert answer["exception_id"] == "invalidRequest", answer
        assert "nested too deeply" in answer["description"], answer
    text = log.new_text()
    assert "Traceback" not in text and "RecursionError" not in text, text[-2000:]
    details = upload_status(local_stack, user["token"], upload["upload_id"])
    assert details["upload_status"] == "pending"


def test_deeply_nested_json_is_a_400_under_wsgi(
    wsgi: dict[str, Any], stack_env: dict[str, str], user: dict[str, str]
) -> None:
    """Item 3 (gunicorn + ucs_lambda.wsgi): the same bodies, the same answer, no traceback."""
    token = run_admin(wsgi["env"], "mint-token", "--user", user["user"])
    _, upload = pending_upload(wsgi["url"], stack_env, user["user"], token)
    log = LogTail(wsgi["log"])
    for shape, method, path, status, answer in nested_body_answers(
        wsgi["url"], token, upload["upload_id"]
    ):
        assert (status, answer["exception_id"]) == (400, "invalidRequest"), (shape, method, path)
    text = log.new_text()
    assert "Traceback" not in text and "RecursionError" not in text, text[-2000:]


# ---- item 5: upload churn -------------------------------------------------------------------


def create(stack: dict[str, Any], token: str, file_id: str) -> tuple[int, dict[str, str], Any]:
    body = json.dumps({"file_id": file_id}).encode()
    return send(stack["ucs_url"], "POST", "/uploads", [f"Bearer {token}"], body)


def cancel(stack: dict[str, Any], token: str, upload_id: str) -> None:
    url = f"{stack['ucs_url']}/uploads/{upload_id}"
    status, body = call("PATCH", url, token, {"upload_status": "cancelled"})
    assert status == 204, body


def test_upload_churn_on_one_file_is_limited_with_429_and_retry_after(
    local_stack: dict[str, Any], stack_env: dict[str, str], user: dict[str, str]
) -> None:
    """Item 5: create-and-cancel in a loop stops at UCS_UPLOAD_ATTEMPTS_PER_WINDOW per file.

    The last allowed attempt is raced by eight requests at once: exactly one gets it, the
    others find its upload (existingActiveUpload, which uses up nothing).
    """
    limit = int(local_stack["env"]["UCS_UPLOAD_ATTEMPTS_PER_WINDOW"])
    assert limit == E2E_UPLOAD_ATTEMPTS
    window = int(local_stack["env"].get("UCS_UPLOAD_ATTEMPT_WINDOW_SECONDS") or 3600)
    file_id = register_file(stack_env, user["user"], size=10, md5="0" * 32)
    for _ in range(limit - 1):
        status, _, upload = create(local_stack, user["token"], file_id)
        assert status == 200, upload
        cancel(local_stack, user["token"], upload["upload_id"])
    results = race(8, lambda: create(local_stack, user["token"], file_id))
    assert sorted(status for status, _, _ in results) == [200] + [400] * 7, results
    winners = [answer for status, _, answer in results if status == 200]
    assert {a["exception_id"] for status, _, a in results if status == 400} == {
        "existingActiveUpload"
    }
    cancel(local_stack, user["token"], winners[0]["upload_id"])

    status, headers, answer = create(local_stack, user["token"], file_id)
    assert status == 429, answer
    assert answer["exception_id"] == "tooManyUploadAttempts", answer
    retry_after = headers["retry-after"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= window, headers
    assert answer["data"] == {
        "file_id": file_id,
        "limit": limit,
        "window_seconds": window,
        "retry_after": int(retry_after),
    }
    # Refused without a trace: exactly `limit` uploads (and counted), nothing in the inbox.
    file, uploads = read_file_state(local_stack, file_id)
    assert len(uploads) == limit and {u["upload_status"] for u in uploads} == {"cancelled"}
    assert int(file["attempt_count"]) == limit
    inbox = local_stack["inbox_bucket"]
    listing = s3_client(local_stack).list_multipart_uploads(Bucket=inbox, Prefix=f"{file_id}/")
    assert not listing.get("Uploads")
    check_files(local_stack, [file_id])
    # The budget is per file: another file of the same user is unaffected.
    other = register_file(stack_env, user["user"], size=10, md5="0" * 32)
    assert create(local_stack, user["token"], other)[0] == 200


def test_racing_creates_count_as_one_attempt(
    local_stack: dict[str, Any], stack_env: dict[str, str], user: dict[str, str]
) -> None:
    """Item 5: 20 simultaneous creates for one file: one upload, and one attempt counted.

    The count changes in the transaction that creates the upload and takes the file's lock,
    so requests that lose the lock use up nothing (the stack's DynamoDB serialises requests as
    DynamoDB does; moto's threaded server would not, see PITFALLS.md).
    """
    for _round in range(3):
        file_id = register_file(stack_env, user["user"], size=10, md5="0" * 32)
        results = race(20, lambda file_id=file_id: create(local_stack, user["token"], file_id))
        assert sorted(status for status, _, _ in results) == [200] + [400] * 19, results
        file, uploads = read_file_state(local_stack, file_id)
        assert len(uploads) == 1 and int(file["attempt_count"]) == 1, file
        check_files(local_stack, [file_id])


def test_the_uploads_table_has_the_status_index_the_sweep_queries(
    local_stack: dict[str, Any],
) -> None:
    """Item 5: the sweep's index exists on the stack (tables made by admin create-resources)."""
    name = local_stack["env"].get("UCS_UPLOADS_TABLE", "ghga-uploads")
    table = stack_client(local_stack, "dynamodb").describe_table(TableName=name)
    indexes = {i["IndexName"]: i for i in table["Table"]["GlobalSecondaryIndexes"]}
    assert indexes["upload_status-index"]["KeySchema"] == [
        {"AttributeName": "upload_status", "KeyType": "HASH"},
        {"AttributeName": "updated", "KeyType": "RANGE"},
    ]
    assert indexes["upload_status-index"]["Projection"]["ProjectionType"] == "KEYS_ONLY"


# ---- item 6: presigned part URLs -------------------------------------------------------------


def presign(
    stack: dict[str, Any], token: str, upload_id: str, numbers: list[int]
) -> dict[str, tuple[int, Any]]:
    """The answers of the batch route for ``numbers`` and of the single-part route for each."""
    base = f"{stack['ucs_url']}/uploads/{upload_id}"
    answers = {"batch": call("POST", f"{base}/signed_urls", token, {"part_numbers": numbers})}
    for n in numbers:
        answers[f"part {n}"] = call("POST", f"{base}/parts/{n}/signed_urls", token)
    return answers


def test_part_numbers_beyond_the_file_are_not_presigned(
    local_stack: dict[str, Any], stack_env: dict[str, str], user: dict[str, str]
) -> None:
    """Item 6: a 1-part file has no part 2 or 10000 (both routes); URLs sign Content-Length."""
    _, upload = pending_upload(
        local_stack["ucs_url"], stack_env, user["user"], user["token"], size=1000
    )
    answers = presign(local_stack, user["token"], upload["upload_id"], [2, 10000])
    answers["batch [1, 2]"] = presign(local_stack, user["token"], upload["upload_id"], [1, 2])[
        "batch"
    ]
    for route, (status, answer) in answers.items():
        assert (status, answer["exception_id"]) == (400, "invalidRequest"), (route, answer)
        assert answer["data"]["part_count"] == 1, answer
    for route, (status, answer) in presign(
        local_stack, user["token"], upload["upload_id"], [1]
    ).items():
        assert status == 200, (route, answer)
        url = answer["url"] if "url" in answer else answer["urls"][0]["url"]
        assert parse_qs(urlparse(url).query)["X-Amz-SignedHeaders"] == ["content-length;host"]


def put(url: str, body: bytes, workdir: Path) -> tuple[int, bytes]:
    """PUT ``body`` with curl, which (with ``Expect: 100-continue``) reads RGW's early answer
    to a refused request instead of failing with a broken pipe as urllib does."""
    source, answer = workdir / "body.bin", workdir / "answer.xml"
    source.write_bytes(body)
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-T",
            str(source),
            "-H",
            "Content-Type: application/octet-stream",
            "-H",
            "Expect: 100-continue",
            "-o",
            str(answer),
            "-w",
            "%{http_code}",
            url,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout), answer.read_bytes() if answer.exists() else b""


@pytest.mark.ceph
def test_rgw_refuses_part_bodies_of_another_length(
    ceph_stack: dict[str, Any], ceph_stack_env: dict[str, str], tmp_path: Path
) -> None:
    """Item 6 on Ceph RGW: each part URL takes exactly its part's length, nothing else.

    A 6 MiB file in the stack's 5 MiB parts: part 1 is 5 MiB, part 2 is 1 MiB. Bodies of
    7 MiB, one byte more or less are refused by RGW (signature mismatch); the right lengths are
    accepted and the upload ends accepted (read back and compared by the validation job).
    """
    user = new_user(ceph_stack_env, "ceph-len")
    data = os.urandom(6 * MiB)
    ucs = ceph_stack["ucs_url"]
    md5 = hashlib.md5(data).hexdigest()
    file_id, upload = pending_upload(
        ucs, ceph_stack_env, user["user"], user["token"], len(data), md5
    )
    assert upload["part_size"] == 5 * MiB, upload
    upload_id = upload["upload_id"]
    status, signed = call(
        "POST", f"{ucs}/uploads/{upload_id}/signed_urls", user["token"], {"part_numbers": [1, 2]}
    )
    assert status == 200, signed
    urls = {u["part_no"]: u["url"] for u in signed["urls"]}
    parts = {1: data[: 5 * MiB], 2: data[5 * MiB :]}
    for part_no, right in parts.items():
        for wrong in (os.urandom(7 * MiB), right + b"x", right[:-1]):
            status, answer = put(urls[part_no], wrong, tmp_path)
            assert status == 403 and b"SignatureDoesNotMatch" in answer, (part_no, len(wrong))
    status, listed = call("GET", f"{ucs}/uploads/{upload_id}/parts", user["token"])
    assert status == 200 and listed["parts"] == [], listed  # nothing got in
    for route, (status, answer) in presign(ceph_stack, user["token"], upload_id, [3]).items():
        assert (status, answer["exception_id"]) == (400, "invalidRequest"), (route, answer)
    for part_no, right in parts.items():
        assert put(urls[part_no], right, tmp_path)[0] == 200
    status, _ = call(
        "PATCH", f"{ucs}/uploads/{upload_id}", user["token"], {"upload_status": "uploaded"}
    )
    assert status == 204
    assert settled(ceph_stack, user["token"], upload_id)["upload_status"] == "accepted"
    stored = s3_client(ceph_stack).get_object(Bucket=ceph_stack["permanent_bucket"], Key=file_id)
    assert stored["Body"].read() == data


@pytest.mark.ceph
def test_rgw_one_part_file_takes_only_its_one_part(
    ceph_stack: dict[str, Any], ceph_stack_env: dict[str, str], tmp_path: Path
) -> None:
    """Item 6 on Ceph RGW: part 10000 of a 1-part file is refused when presigning, and the
    part 1 URL of a 1-byte file takes neither 7 MiB nor an empty body."""
    user = new_user(ceph_stack_env, "ceph-one")
    ucs = ceph_stack["ucs_url"]
    md5 = hashlib.md5(b"z").hexdigest()
    _, upload = pending_upload(ucs, ceph_stack_env, user["user"], user["token"], 1, md5)
    for route, (status, answer) in presign(
        ceph_stack, user["token"], upload["upload_id"], [10000]
    ).items():
        assert (status, answer["exception_id"]) == (400, "invalidRequest"), (route, answer)
    status, signed = call(
        "POST", f"{ucs}/uploads/{upload['upload_id']}/parts/1/signed_urls", user["token"]
    )
    assert status == 200, signed
    for wrong in (os.urandom(7 * MiB), b""):
        status, answer = put(signed["url"], wrong, tmp_path)
        assert status == 403 and b"SignatureDoesNotMatch" in answer, (len(wrong), answer)
    assert put(signed["url"], b"z", tmp_path)[0] == 200


# ---- item 7: more than one Authorization header -----------------------------------------------


def duplicate_authorization_answers(
    base_url: str, good: str, file_id: str, upload_id: str
) -> list[Any]:
    bad = "Bearer " + sign({"sub": "root", "iat": 1, "exp": 2}, "not-the-key")
    answers = []
    for pair in ([good, bad], [bad, good], [good, good]):
        for method, path in [
            ("GET", f"/files/{file_id}"),
            ("GET", f"/uploads/{upload_id}"),
            ("GET", f"/ga4gh/drs/v1/objects/{file_id}"),
            ("GET", "/ga4gh/drs/v1/service-info"),
        ]:
            status, _, answer = send(base_url, method, path, pair)
            answers.append((pair.index(good), method, path, status, answer))
    return answers


@pytest.mark.parametrize("server", ["chalice-local", "wsgi"])
def test_two_authorization_headers_are_refused(
    request: pytest.FixtureRequest,
    local_stack: dict[str, Any],
    stack_env: dict[str, str],
    user: dict[str, str],
    server: str,
) -> None:
    """Item 7: with two Authorization headers (whichever is valid) the answer is 400."""
    if server == "wsgi":
        target = request.getfixturevalue("wsgi")
        base, env = target["url"], target["env"]
    else:
        base, env = local_stack["ucs_url"], stack_env
    token = run_admin(env, "mint-token", "--user", user["user"])
    file_id, upload = pending_upload(base, stack_env, user["user"], token)
    for good_at, method, path, status, answer in duplicate_authorization_answers(
        base, f"Bearer {token}", file_id, upload["upload_id"]
    ):
        assert status == 400, (good_at, method, path, status, answer)
        assert answer["exception_id"] == "invalidRequest", answer
        assert "more than one Authorization header" in answer["description"], answer
    # One header still works.
    assert send(base, "GET", f"/files/{file_id}", [f"Bearer {token}"])[0] == 200


# ---- item 8: no other user's ids in error bodies ------------------------------------------


def test_error_bodies_name_no_other_users_ids(
    local_stack: dict[str, Any], stack_env: dict[str, str], user: dict[str, str]
) -> None:
    """Item 8: a stranger keeps ucs.yaml's 403 (existing) vs 404 (missing), but the owner's
    file id and upload ids appear in no error body about someone else's upload or file."""
    data = os.urandom(1000)
    ucs = local_stack["ucs_url"]
    md5 = hashlib.md5(data).hexdigest()
    file_id, upload = pending_upload(ucs, stack_env, user["user"], user["token"], len(data), md5)
    upload_id = upload["upload_id"]
    stranger = new_user(stack_env, "stranger")
    upload_routes = [
        ("GET", f"/uploads/{upload_id}", None),
        ("PATCH", f"/uploads/{upload_id}", {"upload_status": "cancelled"}),
        ("POST", f"/uploads/{upload_id}/parts/1/signed_urls", None),
        ("POST", f"/uploads/{upload_id}/signed_urls", {"part_numbers": [1]}),
        ("GET", f"/uploads/{upload_id}/parts", None),
    ]
    for method, path, body in upload_routes:
        status, answer = call(method, ucs + path, stranger["token"], body)
        assert (status, answer["exception_id"]) == (403, "noFileAccess"), (path, answer)
        assert answer["data"] == {"file_id": "", "upload_id": upload_id}, answer
        assert file_id not in json.dumps(answer), (path, answer)
        missing = path.replace(upload_id, str(uuid.uuid4()))
        assert call(method, ucs + missing, stranger["token"], body)[0] == 404
    # Routes naming the file: the 403 names only what the stranger sent, never the upload.
    for method, path, body in [
        ("GET", f"/files/{file_id}", None),
        ("POST", "/uploads", {"file_id": file_id}),
        ("GET", f"/ga4gh/drs/v1/objects/{file_id}", None),
    ]:
        status, answer = call(method, ucs + path, stranger["token"], body)
        assert status == 403 and answer["exception_id"] == "noFileAccess", (path, answer)
        assert upload_id not in json.dumps(answer), (path, answer)
    assert upload_status(local_stack, user["token"], upload_id)["upload_status"] == "pending"
