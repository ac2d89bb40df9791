"""Authentication and authorisation on every route of the local stack.

Every operation of ucs_lambda/openapi.yaml that needs a token is called with each kind of bad
token (missing, malformed, expired, wrong signature, ``alg: none``, wrong scheme, no ``sub``)
and must answer 401 ``notAuthenticated``; with a valid token of a user who has no rights on
the file it must answer 403 ``noFileAccess``. Neither may change anything: the DynamoDB items
of the files and uploads, the inbox, the multipart uploads and the outbox are compared before
and after. Tokens and presigned query strings must not show up in error bodies, the stack's
logs or the client's ``--json`` output.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

from tests.helpers.admin import new_user, register_file, run_admin
from tests.helpers.ceph import require_ceph
from tests.helpers.cli import download
from tests.helpers.invariants import read_file_state
from tests.helpers.localstack import stacklib
from tests.helpers.support import PROJECT_DIR, call, s3_client
from tests.helpers.ucs import accepted_file, put_part, start_upload

pytestmark = pytest.mark.e2e

SIGNED_QUERY = ("X-Amz-Signature", "X-Amz-Credential", "Signature=")


def raw_call(
    method: str, url: str, authorization: str | None, body: dict | None = None
) -> tuple[int, dict[str, Any] | None, str]:
    """A request with exactly this Authorization header (or none); (status, json, raw text)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if authorization is not None:
        request.add_header("Authorization", authorization)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as error:
        raw = error.read().decode()
        status = error.code
    return status, (json.loads(raw) if raw else None), raw


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def world(local_stack: dict[str, Any], stack_env: dict[str, str]) -> dict[str, Any]:
    """An owner with a pending upload on one file and an accepted, readable second file."""
    owner = new_user(stack_env, "owner")
    owner_name = owner["user"]
    data = os.urandom(1000)
    accepted_id, _ = accepted_file(local_stack, stack_env, owner, data)
    run_admin(stack_env, "grant", "--file-id", accepted_id, "--user", owner_name)
    pending_file = register_file(stack_env, owner_name, size=1000, md5="0" * 32)
    upload_id = start_upload(local_stack, owner["token"], pending_file, os.urandom(1000))
    # A reader of the pending file who is not its submitter, and a stranger.
    run_admin(stack_env, "grant", "--file-id", pending_file, "--user", "reader-only")
    return {
        "owner": owner,
        "pending_file": pending_file,
        "upload_id": upload_id,
        "accepted_file": accepted_id,
        "data": data,
        "tokens_seen": [owner["token"]],
    }


def routes(world: dict[str, Any]) -> list[tuple[str, str, dict | None]]:
    f, u, a = world["pending_file"], world["upload_id"], world["accepted_file"]
    return [
        ("GET", f"/files/{f}", None),
        ("POST", "/uploads", {"file_id": f}),
        ("GET", f"/uploads/{u}", None),
        ("PATCH", f"/uploads/{u}", {"upload_status": "cancelled"}),
        ("PATCH", f"/uploads/{u}", {"upload_status": "uploaded"}),
        ("POST", f"/uploads/{u}/parts/1/signed_urls", None),
        ("POST", f"/uploads/{u}/signed_urls", {"part_numbers": [1, 2]}),
        ("GET", f"/uploads/{u}/parts", None),
        ("POST", f"/uploads/{u}/segments/1/complete", None),
        ("POST", "/batch/files", {"file_ids": [f]}),
        ("GET", f"/ga4gh/drs/v1/objects/{a}", None),
        ("GET", f"/ga4gh/drs/v1/objects/{a}/access/s3", None),
        ("POST", "/ga4gh/drs/v1/objects", {"bulk_object_ids": [a]}),
        ("GET", "/ga4gh/drs/v1/service-info", None),
    ]


def snapshot(stack: dict[str, Any], world: dict[str, Any]) -> Any:
    s3 = s3_client(stack)
    state: dict[str, Any] = {}
    for file_id in (world["pending_file"], world["accepted_file"]):
        state[f"db:{file_id}"] = read_file_state(stack, file_id)
        for bucket in ("inbox_bucket", "permanent_bucket", "outbox_bucket"):
            listing = s3.list_objects_v2(Bucket=stack[bucket], Prefix=file_id)
            state[f"{bucket}:{file_id}"] = sorted(
                (o["Key"], o["ETag"]) for o in listing.get("Contents", [])
            )
        multipart = s3.list_multipart_uploads(Bucket=stack["inbox_bucket"], Prefix=file_id)
        state[f"mpu:{file_id}"] = sorted(u["UploadId"] for u in multipart.get("Uploads", []))
    return state


def test_the_matrix_covers_every_secured_operation(world: dict[str, Any]) -> None:
    document = yaml.safe_load((PROJECT_DIR / "ucs_lambda" / "openapi.yaml").read_text())
    secured = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if operation.get("security", document.get("security")) != []
    }
    covered = {
        (method, path)
        for method, path in secured
        for m, url, _ in routes(world)
        if m == method and re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", path), url)
    }
    assert covered == secured


def bad_authorizations(stack_env: dict[str, str], user: str) -> dict[str, str | None]:
    now = int(time.time())
    claims = {"sub": user, "iat": now, "exp": now + 600}
    good = run_admin(stack_env, "mint-token", "--user", user)
    header, payload, _sig = good.split(".")
    return {
        "missing": None,
        "empty": "",
        "malformed": "Bearer not-a-jwt",
        "bearer-only": "Bearer ",
        "wrong-scheme": f"Basic {good}",
        "no-scheme": good,
        "expired": "Bearer " + run_admin(stack_env, "mint-token", "--user", user, "--ttl", "-5"),
        "wrong-signature": "Bearer " + jwt.encode(claims, "x" * 64, algorithm="HS256"),
        "tampered-payload": f"Bearer {header}.{b64({**claims, 'sub': 'root'})}.{_sig}",
        "alg-none": f"Bearer {b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.",
        "alg-none-signed": f"Bearer {b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.{_sig}",
        "no-sub": "Bearer "
        + jwt.encode(
            {"iat": now, "exp": now + 600},
            stack_env["UCS_TOKEN_KEYS"].split(",")[0],
            algorithm="HS256",
        ),
        "no-exp": "Bearer "
        + jwt.encode(
            {"sub": user, "iat": now}, stack_env["UCS_TOKEN_KEYS"].split(",")[0], algorithm="HS256"
        ),
    }


def test_bad_tokens_get_401_on_every_route_and_change_nothing(
    local_stack: dict[str, Any], stack_env: dict[str, str], world: dict[str, Any]
) -> None:
    before = snapshot(local_stack, world)
    owner = world["owner"]["user"]
    for kind, authorization in bad_authorizations(stack_env, owner).items():
        secret = (authorization or "").split(" ")[-1]
        if len(secret) > 10:
            world["tokens_seen"].append(secret)
        for method, path, body in routes(world):
            status, answer, raw = raw_call(
                method, local_stack["ucs_url"] + path, authorization, body
            )
            assert status == 401, (kind, method, path, status, answer)
            assert answer["exception_id"] == "notAuthenticated", (kind, path, answer)
            if authorization and len(authorization) > 10:
                assert authorization.split(" ")[-1] not in raw, (kind, path)
    assert snapshot(local_stack, world) == before


def test_users_without_rights_get_403_and_change_nothing(
    local_stack: dict[str, Any], stack_env: dict[str, str], world: dict[str, Any]
) -> None:
    before = snapshot(local_stack, world)
    stranger = run_admin(stack_env, "mint-token", "--user", f"stranger-{uuid.uuid4().hex[:6]}")
    reader = run_admin(stack_env, "mint-token", "--user", "reader-only")
    world["tokens_seen"] += [stranger, reader]
    for method, path, body in routes(world):
        url = local_stack["ucs_url"] + path
        status, answer = call(method, url, stranger, body)
        if path.endswith("service-info"):
            assert status == 200
            continue
        if path == "/batch/files":  # batch lookup: a 403 per file, nothing else about it
            assert status == 200, answer
            (entry,) = answer["files"]
            assert entry["status"] == 403 and entry["error"]["exception_id"] == "noFileAccess"
            assert set(entry) == {"file_id", "status", "error"}
            continue
        if path.endswith("/objects"):  # bulk: a 403 per object, nothing else about it
            assert status == 200, answer
            assert answer["resolved_drs_object"] == [] and answer["staging_drs_objects"] == []
            assert answer["unresolved_drs_objects"] == [
                {"error_code": 403, "object_ids": [world["accepted_file"]]}
            ]
            continue
        assert status == 403, (method, path, status, answer)
        assert answer["exception_id"] == "noFileAccess"
        if "/ga4gh/" not in path:
            # Reading the pending file does not make its reader a submitter.
            status, answer = call(method, url, reader, body)
            assert status == 403, ("reader", method, path, status, answer)
    assert snapshot(local_stack, world) == before
    # The owner's own requests still work: nothing above locked them out.
    status, _ = call("GET", f"{local_stack['ucs_url']}/uploads/{world['upload_id']}", None)
    assert status == 401
    details = call(
        "GET", f"{local_stack['ucs_url']}/uploads/{world['upload_id']}", world["owner"]["token"]
    )
    assert details[0] == 200 and details[1]["upload_status"] == "pending"


def test_a_submitter_who_is_not_a_reader_cannot_download(
    local_stack: dict[str, Any], stack_env: dict[str, str], world: dict[str, Any]
) -> None:
    user = new_user(stack_env, "uploader")
    file_id, _ = accepted_file(local_stack, stack_env, user, os.urandom(500))
    status, answer = call("GET", f"{local_stack['drs_url']}/objects/{file_id}", user["token"])
    assert status == 403 and answer["exception_id"] == "noFileAccess", answer
    file, _ = read_file_state(local_stack, file_id)
    assert "staging_started" not in file


def test_no_secret_in_logs_errors_or_json_output(
    ghga_cli: list[str],
    local_stack: dict[str, Any],
    world: dict[str, Any],
    tmp_path: Path,
) -> None:
    owner = world["owner"]
    result = download(
        ghga_cli, local_stack, owner["token"], world["accepted_file"], tmp_path, "--json"
    )
    assert result.returncode == 0, result.stderr
    printed = result.stdout + result.stderr
    assert owner["token"] not in printed
    for marker in SIGNED_QUERY:
        assert marker not in printed
    # A presigned URL really went through the stack (so its absence from the logs means
    # something), then every log of the services: chalice (ucs.log), the worker, the launcher.
    status, signed = call(
        "POST",
        f"{local_stack['ucs_url']}/uploads/{world['upload_id']}/signed_urls",
        owner["token"],
        {"part_numbers": [1]},
    )
    assert status == 200 and "X-Amz-Signature" in signed["urls"][0]["url"]
    logs = Path(local_stack["log_dir"])
    # moto.log is the S3 server's own access log (real S3 server access logs record request
    # URIs too); it is the storage, not this project's code, so it is not searched.
    ours = [log for log in sorted(logs.glob("*.log")) if log.name != "moto.log"]
    assert {log.name for log in ours} >= {"ucs.log", "worker.log"}
    for log in ours:
        text = log.read_text(errors="replace")
        for token in world["tokens_seen"]:
            assert token not in text, f"a token in {log.name}"
        for marker in SIGNED_QUERY:
            assert marker not in text, f"{marker} in {log.name}"


@pytest.mark.ceph
def test_presigned_urls_expire_as_configured(tmp_path: Path) -> None:
    """moto checks no signatures; Ceph RGW enforces X-Amz-Expires like S3."""
    require_ceph()

    ttl = 3
    with stacklib.launch(
        tmp_path / "stack", s3_backend="ceph", extra_env={"UCS_PRESIGN_TTL": str(ttl)}
    ) as stack:
        env = {**os.environ, **stack["env"]}
        user = new_user(env, "ttl")
        data = os.urandom(1000)
        file_id = register_file(env, user["user"], data)
        status, upload = call(
            "POST", f"{stack['ucs_url']}/uploads", user["token"], {"file_id": file_id}
        )
        assert status == 200, upload
        url = f"{stack['ucs_url']}/uploads/{upload['upload_id']}/signed_urls"
        status, signed = call("POST", url, user["token"], {"part_numbers": [1]})
        assert status == 200 and signed["expires_in"] == ttl
        assert f"X-Amz-Expires={ttl}" in signed["urls"][0]["url"]
        time.sleep(ttl + 2)
        request = urllib.request.Request(signed["urls"][0]["url"], data=data, method="PUT")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 403
        # A fresh URL works: the refusal was the expiry.
        put_part(stack, user["token"], upload["upload_id"], 1, data)
