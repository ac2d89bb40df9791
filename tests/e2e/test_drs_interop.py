"""DRS interoperability over HTTP on the local stack: Host header, self_uri, access route,
OPTIONS, bulk requests; and the access route replacing an expired URL on Ceph RGW.

GA4GH's own compliance suite and client run against the stack in test_ga4gh_clients.py.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.helpers.admin import new_user, run_admin
from tests.helpers.localstack import launch_on_ceph
from tests.helpers.support import call, s3_client
from tests.helpers.ucs import readable_file, staged_object, wait_for

pytestmark = pytest.mark.e2e


def request(
    method: str, url: str, token: str | None, body: Any = None, host: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request with http.client (which sends a ``Host`` header we choose, if asked)."""
    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    headers = {"Host": host} if host else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, parsed.path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def fetch(url: str, headers: Sequence[str] = ()) -> bytes:
    """GET a presigned URL with the ``Name: value`` headers an AccessURL lists."""
    request = urllib.request.Request(url, headers=dict(h.split(": ", 1) for h in headers))
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def test_the_host_header_is_never_trusted(
    local_stack: dict[str, Any], stack_env: dict[str, str], user: dict[str, str]
) -> None:
    """Issue 11 item 4: ``Host: evil.example:1`` used to end up in self_uri and service-info."""
    file_id = readable_file(local_stack, stack_env, user, os.urandom(700))
    staged_object(local_stack, user["token"], file_id)
    stack_host = urlparse(local_stack["ucs_url"]).netloc  # what the stack configures
    drs = local_stack["drs_url"]
    status, _, raw = request(
        "GET", f"{drs}/objects/{file_id}", user["token"], host="evil.example:1"
    )
    assert status == 200
    assert json.loads(raw)["self_uri"] == f"drs://{stack_host}/{file_id}"
    status, _, raw = request("GET", f"{drs}/service-info", user["token"], host="evil.example:1")
    assert status == 200 and json.loads(raw)["id"] == "1.0.0.127.drs"
    body = {"bulk_object_ids": [file_id]}
    status, _, raw = request("POST", f"{drs}/objects", user["token"], body, host="evil.example:1")
    assert status == 200
    assert json.loads(raw)["resolved_drs_object"][0]["self_uri"] == f"drs://{stack_host}/{file_id}"
    assert b"evil" not in raw


def test_self_uri_resolves_to_the_object(
    local_stack: dict[str, Any], stack_env: dict[str, str], user: dict[str, str]
) -> None:
    file_id = readable_file(local_stack, stack_env, user, os.urandom(500))
    obj = staged_object(local_stack, user["token"], file_id)
    uri = urlparse(obj["self_uri"])
    assert uri.scheme == "drs" and uri.path == f"/{file_id}"
    # drs://<host>/<id> -> <host>/ga4gh/drs/v1/objects/<id> (http on the local stack)
    status, again = call(
        "GET", f"http://{uri.netloc}/ga4gh/drs/v1/objects/{file_id}", user["token"]
    )
    assert status == 200 and again["id"] == file_id and again["self_uri"] == obj["self_uri"]


def test_access_route_and_options_over_http(
    local_stack: dict[str, Any], stack_env: dict[str, str], user: dict[str, str]
) -> None:
    data = os.urandom(2000)
    file_id = readable_file(local_stack, stack_env, user, data)
    drs, token = local_stack["drs_url"], user["token"]
    status, headers, _ = request("GET", f"{drs}/objects/{file_id}/access/s3", token)
    assert status == 202 and headers["Retry-After"].isdigit()  # the access route stages too
    obj = staged_object(local_stack, token, file_id)
    method = obj["access_methods"][0]
    assert method["access_id"] == "s3" and fetch(method["access_url"]["url"]) == data
    status, headers, raw = request("GET", f"{drs}/objects/{file_id}/access/s3", token)
    assert status == 200 and headers["Content-Type"] == "application/json"
    access_url = json.loads(raw)
    assert access_url["headers"] == ["Accept: */*"]
    assert fetch(access_url["url"], access_url["headers"]) == data
    status, _, raw = request("GET", f"{drs}/objects/{file_id}/access/gs", token)
    answer = json.loads(raw)
    assert status == 404 and answer["status_code"] == 404 and answer["msg"]
    assert answer["exception_id"] == "noSuchAccess"
    status, _, raw = request("GET", f"{drs}/objects/{file_id}/access/s3", None)
    assert status == 401 and json.loads(raw)["exception_id"] == "notAuthenticated"
    # OPTIONS: served by our view (not chalice local's CORS stand-in), the same for all ids.
    answers = {
        request("OPTIONS", f"{drs}/objects/{object_id}", user_token)[::2]
        for object_id in (file_id, "no-such-object")
        for user_token in (None, token)
    }
    assert answers == {(200, b'{"supported_types":["BearerAuth"]}')}


def test_one_bulk_request_stages_every_object(
    local_stack: dict[str, Any], stack_env: dict[str, str], user: dict[str, str]
) -> None:
    payloads = [os.urandom(300 + i) for i in range(4)]
    ids = [readable_file(local_stack, stack_env, user, data) for data in payloads]
    stranger = run_admin(stack_env, "mint-token", "--user", f"other-{uuid.uuid4().hex[:6]}")
    url = f"{local_stack['drs_url']}/objects"
    status, body = call("POST", url, user["token"], {"bulk_object_ids": [*ids, "missing-id"]})
    assert status == 200, body
    assert body["summary"] == {"requested": 5, "resolved": 0, "unresolved": 5}
    assert body["unresolved_drs_objects"] == [
        {"error_code": 202, "object_ids": ids},
        {"error_code": 404, "object_ids": ["missing-id"]},
    ]
    assert [s["object_id"] for s in body["staging_drs_objects"]] == ids
    # Nothing but that one call asked for staging: the outbox fills up on its own.
    s3 = s3_client(local_stack)

    def outbox_holds_all() -> bool:
        listing = s3.list_objects_v2(Bucket=local_stack["outbox_bucket"])
        return set(ids) <= {o["Key"] for o in listing.get("Contents", [])}

    wait_for(outbox_holds_all, "the worker to stage every object")
    status, body = call("POST", url, stranger, {"bulk_object_ids": ids})
    assert status == 200 and body["resolved_drs_object"] == []
    assert body["unresolved_drs_objects"] == [{"error_code": 403, "object_ids": ids}]
    status, body = call("POST", url, user["token"], {"bulk_object_ids": ids})
    assert body["summary"] == {"requested": 4, "resolved": 4, "unresolved": 0}
    for obj, data in zip(body["resolved_drs_object"], payloads):
        assert obj["checksums"][0] == {"type": "md5", "checksum": hashlib.md5(data).hexdigest()}
        assert fetch(obj["access_methods"][0]["access_url"]["url"]) == data
    log = Path(local_stack["log_dir"], "worker.log").read_text()
    for file_id in ids:  # one staging job per object
        assert log.count(json.dumps({"job": "stage", "file_id": file_id}, sort_keys=True)) == 1, (
            file_id
        )


@pytest.mark.ceph
def test_an_expired_url_is_refreshed_by_the_access_route_on_ceph(tmp_path: Path) -> None:
    """Ceph RGW enforces X-Amz-Expires (moto does not): the URL handed out with the object
    is refused once expired, and the access route's fresh URL fetches the bytes."""
    ttl = 2
    with launch_on_ceph(tmp_path / "stack", {"UCS_PRESIGN_TTL": str(ttl)}) as stack:
        env = {**os.environ, **stack["env"]}
        user = new_user(env, "expiry")
        data = os.urandom(1000)
        file_id = readable_file(stack, env, user, data)
        obj = staged_object(stack, user["token"], file_id)
        old = obj["access_methods"][0]["access_url"]["url"]
        assert fetch(old) == data
        time.sleep(ttl + 2)
        with pytest.raises(urllib.error.HTTPError) as refused:
            fetch(old)
        assert refused.value.code == 403
        access = (
            f"{stack['drs_url']}/objects/{file_id}/access/{obj['access_methods'][0]['access_id']}"
        )
        status, fresh = call("GET", access, user["token"])
        assert status == 200 and fresh["url"] != old
        assert fetch(fresh["url"], fresh["headers"]) == data
