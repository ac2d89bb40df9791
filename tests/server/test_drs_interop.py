"""DRS interoperability (issue 12): access route, bulk requests, OPTIONS, configured hostname.

In-process (chalice.test + moto). The same routes over HTTP on the local stack, and GA4GH's
own compliance suite and client against them, are in tests/e2e/test_drs_interop.py and
tests/e2e/test_ga4gh_clients.py.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any
from urllib.parse import parse_qs, urlparse

import botocore.auth
import pytest
import requests

from ucs_lambda import jobs
from ucs_lambda.bootstrap import services
from ucs_lambda.ports import JobQueueError

from .conftest import KEY, Api, payload, queued_jobs, register, state, token
from .test_drs import DATA, drs_error, get, run_jobs

PREFIX = "/ga4gh/drs/v1"
ACCESS = f"{PREFIX}/objects/F1/access/s3"


def accepted(api: Api, file_id: str, data: bytes = DATA, readers: tuple[str, ...] = ("rita",)):
    """``file_id`` uploaded by alice and accepted (not staged); ``readers`` may download it."""
    register(file_id, data, readers=readers)
    api.upload_file(data, file_id=file_id)
    for job in queued_jobs():
        jobs.handle_message(job)
    rec = state().files.get_file(file_id)
    assert rec is not None and rec.accepted_upload_id


def staged(api: Api, file_id: str = "F1", **kw: Any) -> None:
    accepted(api, file_id, **kw)
    assert get(api, f"{PREFIX}/objects/{file_id}").status_code == 202
    assert run_jobs() == [{"job": "stage", "file_id": file_id}]


def bulk(api: Api, ids: Any, user: str | None = "rita", **kw: Any) -> Any:
    return api.call("POST", f"{PREFIX}/objects", {"bulk_object_ids": ids}, user=user, **kw)


def signed_at(url: str) -> datetime.datetime:
    """When a SigV4 presigned URL was signed (its validity starts there)."""
    stamp = parse_qs(urlparse(url).query)["X-Amz-Date"][0]
    return datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)


# ---- access route -------------------------------------------------------------------------


def test_object_names_its_access_id_and_the_access_route_hands_out_a_url(api: Api) -> None:
    staged(api)
    obj = get(api).json_body
    assert [(m["type"], m["access_id"]) for m in obj["access_methods"]] == [("s3", "s3")]
    r = get(api, ACCESS)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["Cache-Control"] == "no-store"
    assert set(r.json_body) == {"url", "headers"}
    assert r.json_body["headers"] == ["Accept: */*"]  # never empty: see ACCESS_URL_HEADERS
    url = r.json_body["url"]
    assert parse_qs(urlparse(url).query)["X-Amz-Expires"] == ["900"]
    assert requests.get(url, timeout=10).content == DATA
    assert queued_jobs() == []  # staged: nothing to do


def test_access_route_auth_matrix(api: Api) -> None:
    staged(api, readers=("rita",))
    r = get(api, ACCESS, user=None)
    assert r.status_code == 401 and drs_error(r)["exception_id"] == "notAuthenticated"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    forged = token("rita", key="another-key-that-is-long-enough-123456")
    r = api.client.http.get(ACCESS, headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401 and drs_error(r)["exception_id"] == "notAuthenticated"
    expired = token("rita", ttl=-10, key=KEY)
    r = api.client.http.get(ACCESS, headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401
    r = get(api, ACCESS, user="alice")  # the submitter is no reader
    assert r.status_code == 403 and drs_error(r)["exception_id"] == "noFileAccess"
    r = get(api, f"{PREFIX}/objects/F1/access/nope", user="alice")  # authorisation comes first
    assert r.status_code == 403
    assert get(api, ACCESS, user="rita").status_code == 200


def test_access_route_unknown_ids(api: Api) -> None:
    staged(api)
    register("F2", DATA, readers=("rita",))  # registered, never uploaded
    r = get(api, f"{PREFIX}/objects/F1/access/https")
    assert r.status_code == 404
    body = drs_error(r)
    assert body["exception_id"] == "noSuchAccess"
    assert body["data"] == {"object_id": "F1", "access_id": "https"}
    for path in (f"{PREFIX}/objects/NOPE/access/s3", f"{PREFIX}/objects/F2/access/s3"):
        r = get(api, path)
        assert r.status_code == 404
        assert drs_error(r)["exception_id"] == "noSuchObject"
    assert queued_jobs() == []


def test_access_route_stages_like_the_object_route(api: Api) -> None:
    accepted(api, "F1")
    r = get(api, ACCESS)  # never staged: the access route requests it
    assert r.status_code == 202
    assert r.json_body == {"staged_bytes": 0, "size": len(DATA)}  # staging progress
    assert 1 <= int(r.headers["Retry-After"]) <= 300
    assert get(api, ACCESS).status_code == 202
    assert run_jobs() == [{"job": "stage", "file_id": "F1"}]  # one job for both requests
    assert get(api, ACCESS).status_code == 200


def test_access_route_restages_when_the_outbox_copy_is_gone(api: Api) -> None:
    """An outbox copy expires (cleanup job); the access route then stages it again."""
    staged(api)
    assert get(api, ACCESS).status_code == 200
    assert jobs.cleanup_outbox(now=datetime.datetime.now().timestamp() + 8 * 24 * 3600) == 1
    r = get(api, ACCESS)
    assert r.status_code == 202 and r.headers["Retry-After"].isdigit()
    assert run_jobs() == [{"job": "stage", "file_id": "F1"}]
    r = get(api, ACCESS)
    assert r.status_code == 200
    assert requests.get(r.json_body["url"], timeout=10).content == DATA


def test_an_expired_url_is_replaced_by_asking_again(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each call presigns anew, so a URL that has expired is replaced by one valid from now.

    moto checks no signatures; tests/e2e/test_drs_interop.py proves the same on Ceph RGW,
    which refuses the expired URL.
    """
    monkeypatch.setenv("UCS_PRESIGN_TTL", "60")
    staged(api)
    real_now = botocore.auth.get_current_datetime
    with monkeypatch.context() as m:
        m.setattr(
            botocore.auth, "get_current_datetime", lambda: real_now() - datetime.timedelta(hours=2)
        )
        old = get(api).json_body["access_methods"][0]["access_url"]["url"]
    now = real_now().replace(tzinfo=datetime.timezone.utc)
    assert signed_at(old) + datetime.timedelta(seconds=60) < now  # expired
    fresh = get(api, ACCESS).json_body["url"]
    assert fresh != old
    assert signed_at(fresh) <= now < signed_at(fresh) + datetime.timedelta(seconds=60)
    assert parse_qs(urlparse(fresh).query)["X-Amz-Expires"] == ["60"]


# ---- bulk requests ------------------------------------------------------------------------


def test_bulk_mixed_results_in_one_answer(api: Api) -> None:
    staged(api, "F1")
    accepted(api, "F2", payload(5000, seed=2))
    accepted(api, "F3", payload(100, seed=3), readers=("someone-else",))
    register("F4", DATA, readers=("rita",))  # no accepted upload
    queued_jobs()
    r = bulk(api, ["NOPE", "F2", "F1", "F3", "F4", "F1"])
    assert r.status_code == 200, r.body
    body = r.json_body
    assert body["summary"] == {"requested": 5, "resolved": 1, "unresolved": 4}
    assert [o["id"] for o in body["resolved_drs_object"]] == ["F1"]
    single = get(api).json_body
    resolved = body["resolved_drs_object"][0]
    for drs_object in (single, resolved):  # presigned per call: compare without the URL
        drs_object["access_methods"][0]["access_url"].pop("url")
    assert resolved == single
    assert body["unresolved_drs_objects"] == [
        {"error_code": 202, "object_ids": ["F2"]},
        {"error_code": 403, "object_ids": ["F3"]},
        {"error_code": 404, "object_ids": ["NOPE", "F4"]},
    ]
    # Staging objects name themselves (the caller may read them): a batch checks names early.
    assert body["staging_drs_objects"] == [
        {"object_id": "F2", "retry_after": 1, "name": "F2.bin", "size": 5000, "staged_bytes": 0}
    ]
    assert queued_jobs() == [{"job": "stage", "file_id": "F2"}]  # not F3 (no access), not F4


def test_bulk_requests_staging_of_every_object_in_one_call(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [f"B{i:02d}" for i in range(12)]  # more than one SendMessageBatch (10 per call)
    for i, file_id in enumerate(ids):
        accepted(api, file_id, payload(1000 + i, seed=i))
    calls: list[int] = []
    files = type(state().files)
    real_get_files = files.get_files

    def counting_get_files(self: Any, file_ids: list[str]) -> Any:
        calls.append(len(file_ids))
        return real_get_files(self, file_ids)

    with monkeypatch.context() as m:
        m.setattr(files, "get_files", counting_get_files)
        m.setattr(files, "get_file", None)  # no item-by-item reads
        body = bulk(api, ids).json_body
    assert calls == [12]
    assert body["summary"] == {"requested": 12, "resolved": 0, "unresolved": 12}
    assert body["unresolved_drs_objects"] == [{"error_code": 202, "object_ids": ids}]
    assert [s["object_id"] for s in body["staging_drs_objects"]] == ids
    found = queued_jobs()
    assert sorted(j["file_id"] for j in found) == ids and len(found) == 12
    body = bulk(api, ids).json_body  # still staging: no second round of jobs
    assert len(body["staging_drs_objects"]) == 12 and queued_jobs() == []
    for file_id in ids:
        jobs.handle_message({"job": "stage", "file_id": file_id})
    body = bulk(api, ids).json_body
    assert body["summary"] == {"requested": 12, "resolved": 12, "unresolved": 0}
    assert [o["id"] for o in body["resolved_drs_object"]] == ids
    assert body["unresolved_drs_objects"] == [] and body["staging_drs_objects"] == []


def test_bulk_limit_is_413_with_the_limit(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UCS_DRS_MAX_BULK_OBJECTS", "3")
    accepted(api, "F1")
    queued_jobs()
    r = bulk(api, ["F1", "F1", "F1", "F1"])  # the length of the list counts
    assert r.status_code == 413
    body = drs_error(r)
    assert body["exception_id"] == "bulkRequestTooLarge"
    assert body["data"] == {"limit": 3, "requested": 4}
    assert queued_jobs() == []  # refused before any work
    assert bulk(api, ["F1", "NOPE", "X"]).status_code == 200
    assert get(api, f"{PREFIX}/service-info").json_body["maxBulkRequestLength"] == 3


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"bulk_object_ids": []},
        {"bulk_object_ids": "F1"},
        {"bulk_object_ids": ["F1", 7]},
        {"bulk_object_ids": [""]},
        {"bulk_object_ids": ["F1"], "passports": ["eyJ..."]},
        [],
    ],
)
def test_bulk_bad_bodies_are_400(api: Api, body: Any) -> None:
    r = api.call("POST", f"{PREFIX}/objects", body, user="rita")
    assert r.status_code == 400
    assert drs_error(r)["exception_id"] == "invalidRequest"


def test_bulk_needs_a_token_and_json(api: Api) -> None:
    r = bulk(api, ["F1"], user=None)
    assert r.status_code == 401 and drs_error(r)["exception_id"] == "notAuthenticated"
    r = api.call("POST", f"{PREFIX}/objects", raw=b"{not json", user="rita")
    assert r.status_code == 400 and drs_error(r)["exception_id"] == "invalidRequest"


def test_bulk_never_shows_other_users_objects(api: Api) -> None:
    staged(api, "F1", readers=("rita",))
    body = bulk(api, ["F1"], user="mallory").json_body
    assert body["resolved_drs_object"] == [] and body["staging_drs_objects"] == []
    assert body["unresolved_drs_objects"] == [{"error_code": 403, "object_ids": ["F1"]}]
    assert "F1.bin" not in json.dumps(body)


def test_bulk_frees_claims_when_jobs_cannot_be_queued(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    accepted(api, "F1")
    accepted(api, "F2", payload(10, seed=2))

    def refuse(self: Any, bodies: list[dict]) -> None:
        raise JobQueueError("queue down", bodies)

    with monkeypatch.context() as m:
        m.setattr(type(services().queue), "send_many", refuse)
        assert bulk(api, ["F1", "F2"]).status_code == 500
    repo = state()
    assert all(repo.files.get_file(f).staging_started is None for f in ("F1", "F2"))  # type: ignore[union-attr]
    bulk(api, ["F1", "F2"])  # the next request queues them
    assert sorted(j["file_id"] for j in queued_jobs()) == ["F1", "F2"]


@pytest.mark.parametrize("backend", ["dynamodb"], indirect=True)  # SQS adapter
def test_send_many_reports_the_entries_sqs_refused(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = services().queue
    bodies = [{"job": "stage", "file_id": f"F{i}"} for i in range(12)]
    real = queue.client.send_message_batch

    def partly(**kw: Any) -> dict:
        """SQS refusing entry "3" of each batch that has one (as throttling can)."""
        kept = [e for e in kw["Entries"] if e["Id"] != "3"]
        resp = real(QueueUrl=kw["QueueUrl"], Entries=kept)
        if len(kept) < len(kw["Entries"]):
            resp["Failed"] = [{"Id": "3", "Code": "Throttled", "SenderFault": False}]
        return resp

    monkeypatch.setattr(queue.client, "send_message_batch", partly)
    with pytest.raises(JobQueueError) as info:
        queue.send_many(bodies)
    assert info.value.unsent == [bodies[3]]  # first chunk's 4th entry; chunk 2 has no Id 3
    assert sorted(j["file_id"] for j in queued_jobs()) == sorted(
        b["file_id"] for b in bodies if b is not bodies[3]
    )


# ---- OPTIONS and service-info -------------------------------------------------------------


def test_options_is_public_and_the_same_for_every_id(api: Api) -> None:
    staged(api)
    answers = [
        api.call("OPTIONS", f"{PREFIX}/objects/{object_id}", user=user)
        for object_id in ("F1", "NOPE")
        for user in (None, "rita", "mallory")
    ]
    assert {r.status_code for r in answers} == {200}
    assert {r.body for r in answers} == {answers[0].body}
    assert answers[0].json_body == {"supported_types": ["BearerAuth"]}
    assert answers[0].headers["Content-Type"] == "application/json"
    assert queued_jobs() == []


# ---- hostname from configuration only (issue 11 item 4) -----------------------------------


def test_host_header_is_never_used(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    staged(api)
    evil = {"Host": "evil.example:1"}
    assert get(api, headers=evil).json_body["self_uri"] == "drs://127.0.0.1/F1"
    info = get(api, f"{PREFIX}/service-info", headers=evil).json_body
    assert info["id"] == "1.0.0.127.drs"
    monkeypatch.setenv("UCS_DRS_HOSTNAME", "drs.example.org:8443")
    assert get(api, headers=evil).json_body["self_uri"] == "drs://drs.example.org:8443/F1"
    body = bulk(api, ["F1"], headers=evil).json_body
    assert body["resolved_drs_object"][0]["self_uri"] == "drs://drs.example.org:8443/F1"
    assert get(api, f"{PREFIX}/service-info").json_body["id"] == "org.example.drs.drs"


@pytest.mark.parametrize("hostname", [None, "https://drs.example.org/"])
def test_a_deployment_without_a_valid_hostname_refuses_to_serve_drs(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, hostname: Any
) -> None:
    """In the Lambda runtime the hostname has no default: DRS answers 500, the log says why."""
    staged(api)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "ghga-ucs-dev")
    if hostname:
        monkeypatch.setenv("UCS_DRS_HOSTNAME", hostname)
    with caplog.at_level(logging.ERROR):
        for path in (f"{PREFIX}/objects/F1", f"{PREFIX}/service-info"):
            r = get(api, path, headers={"Host": "evil.example:1"})
            assert r.status_code == 500, path
            assert json.loads(r.body)["exception_id"] == "internalError"
            assert "evil" not in r.body.decode()
    assert "UCS_DRS_HOSTNAME" in caplog.text
    assert api.call("GET", "/files/F1").status_code == 200  # the UCS keeps serving
    monkeypatch.setenv("UCS_DRS_HOSTNAME", "drs.example.org")
    assert get(api).json_body["self_uri"] == "drs://drs.example.org/F1"
