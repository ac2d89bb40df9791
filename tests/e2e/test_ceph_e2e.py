"""Upload and download end to end with S3 on Ceph RGW (``make stack S3=ceph``).

Same client (the console script), same services as the moto e2e tests, but the bytes go to a
real RGW, which -- unlike moto -- enforces SigV4 signatures and URL expiry, S3's 5 MiB minimum
part size, and answers a few calls differently (empty ETag from CompleteMultipartUpload,
unquoted ETags from UploadPartCopy). DynamoDB and SQS stay on moto.

Needs the cluster of ``build/ceph-up.sh``: skipped without it, failing instead when
``CEPH_REQUIRED=1`` (CI). Stored bytes are read back with boto3 on the RGW, never through the
client under test.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.admin import new_user, register_file
from tests.helpers.cli import EXIT_AUTH, archived_file, download, run_cli, summary_of, upload
from tests.helpers.faultproxy import FaultProxy, RequestRecord, Rule
from tests.helpers.localstack import CEPH_PART_SIZE, launch_on_ceph
from tests.helpers.report_schema import load_report
from tests.helpers.s3faults import part_url, s3_records
from tests.helpers.support import call, put_parts_directly, s3_client

pytestmark = [pytest.mark.e2e, pytest.mark.ceph]

PART = CEPH_PART_SIZE
SIZES = {
    "empty": 0,
    "one-byte": 1,
    "one-part": PART,
    "one-part-plus-one": PART + 1,
    "many-parts": 3 * PART + 7,
}
#: How long the proxy holds a chosen request before forwarding it: longer than the URL's life.
DELAY = 3.0
SHORT_TTL = 2  # UCS_PRESIGN_TTL of the stack used for the expiry tests, seconds


def parts_of(size: int) -> int:
    return max(1, -(-size // PART))


def multipart_etag(data: bytes, part_size: int) -> str:
    """The ETag S3 gives an object assembled from ``part_size`` parts: MD5 of the MD5s, -N."""
    chunks = [data[i : i + part_size] for i in range(0, max(len(data), 1), part_size)]
    digests = b"".join(hashlib.md5(chunk).digest() for chunk in chunks)
    return f"{hashlib.md5(digests).hexdigest()}-{len(chunks)}"


def assert_copied(etag: str, data: bytes) -> None:
    """``etag`` is that of a server-side copy of ``data`` made by the services on the RGW.

    A file of one segment (below ``UCS_SEGMENT_SIZE``, 128 MiB here) is accepted and staged
    with one CopyObject: S3 gives the copy the plain MD5, RGW keeps the source's ETag, here
    the one of the uploaded multipart object (5 MiB parts). Assemblies of many segments are
    checked in tests/e2e/test_ceph_verification.py.
    """
    etag = etag.strip('"')
    assert etag in (hashlib.md5(data).hexdigest(), multipart_etag(data, PART)), etag


@pytest.fixture(scope="module")
def user(ceph_stack_env: dict[str, str]) -> dict[str, str]:
    """The module's user, on the stack on Ceph (overrides tests/e2e/conftest.py's)."""
    return new_user(ceph_stack_env, "ceph")


# --------------------------------------------------------------------------- upload, download


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_upload_on_ceph(ghga_cli, ceph_stack, ceph_stack_env, user, tmp_path, size) -> None:
    source = tmp_path / "sample.bin"
    source.write_bytes(os.urandom(size))
    file_id = register_file(ceph_stack_env, user["user"], source)

    result = upload(ghga_cli, ceph_stack, user["token"], file_id, source, "--json")

    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert (summary["status"], summary["bytes"]) == ("accepted", size)
    assert summary["parts"] == parts_of(size)
    s3 = s3_client(ceph_stack)
    stored = s3.get_object(Bucket=ceph_stack["permanent_bucket"], Key=file_id)
    data = stored["Body"].read()
    assert hashlib.md5(data).hexdigest() == hashlib.md5(source.read_bytes()).hexdigest()
    assert stored["Metadata"].get("upload-id") == summary["upload_id"]
    # The validation job copied inbox -> permanent on the RGW.
    assert_copied(stored["ETag"], data)
    # Nothing is left in the inbox: neither the object nor an unfinished multipart upload.
    inbox = ceph_stack["inbox_bucket"]
    assert s3.list_objects_v2(Bucket=inbox, Prefix=f"{file_id}/").get("KeyCount") == 0
    assert not [
        u
        for u in s3.list_multipart_uploads(Bucket=inbox).get("Uploads", [])
        if u["Key"].startswith(f"{file_id}/")
    ]


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_download_on_ceph(ghga_cli, ceph_stack, ceph_stack_env, user, tmp_path, size) -> None:
    data = os.urandom(size)
    file_id = archived_file(ghga_cli, ceph_stack, ceph_stack_env, user, data)

    result = download(
        ghga_cli, ceph_stack, user["token"], file_id, tmp_path, "--json", "--range-size", "2M"
    )

    assert result.returncode == 0, result.stderr
    assert (tmp_path / f"{file_id}.bin").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{file_id}.bin"]
    assert "X-Amz-Signature" not in result.stdout + result.stderr
    # The staging job copied permanent -> outbox on the RGW.
    staged = s3_client(ceph_stack).head_object(Bucket=ceph_stack["outbox_bucket"], Key=file_id)
    assert staged["ContentLength"] == size
    assert_copied(staged["ETag"], data)


def test_interrupted_upload_resumes_from_the_parts_the_rgw_lists(
    ghga_cli, ceph_stack, ceph_stack_env, user, tmp_path
) -> None:
    """The rerun learns from ``GET /uploads/{id}/parts`` (RGW's ListParts) what is stored."""
    data = os.urandom(3 * PART + 7)
    source = tmp_path / "src.bin"
    source.write_bytes(data)
    file_id = register_file(ceph_stack_env, user["user"], source)
    args = ["upload-by-id", "--api-url", ceph_stack["ucs_url"], "--file-id", file_id]
    args += ["--file-path", str(source), "--json", "--parallel", "1", "--retries", "0"]
    with FaultProxy(rules=[Rule("reset", method="PUT", url=part_url(3))]) as proxy:
        first = run_cli(ghga_cli, args, token=user["token"], proxy=proxy)
    assert first.returncode != 0, first.stderr

    second = upload(ghga_cli, ceph_stack, user["token"], file_id, source, "--json")

    assert second.returncode == 0, second.stderr
    summary = summary_of(second)
    assert (summary["status"], summary["parts_skipped"]) == ("accepted", 2)
    stored = s3_client(ceph_stack).get_object(Bucket=ceph_stack["permanent_bucket"], Key=file_id)
    assert stored["Body"].read() == data


# --------------------------------------------------------------------------- signatures


def http(method: str, url: str, data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def tamper(url: str) -> str:
    """The URL with one hex digit of its signature changed."""
    match = re.search(r"X-Amz-Signature=([0-9a-f])", url)
    assert match, "not a SigV4 presigned URL"
    digit = "1" if match[1] == "0" else "0"
    return url[: match.start(1)] + digit + url[match.end(1) :]


def test_rgw_refuses_tampered_urls_of_the_services(
    ghga_cli, ceph_stack, ceph_stack_env, user, tmp_path
) -> None:
    """The URLs the UCS and DRS3 hand out work on the RGW as they are, and not when altered."""
    data = os.urandom(1000)
    file_id = archived_file(ghga_cli, ceph_stack, ceph_stack_env, user, data)
    url = f"{ceph_stack['drs_url']}/objects/{file_id}"
    deadline = time.monotonic() + 30
    while (answer := call("GET", url, user["token"]))[0] != 200:
        assert time.monotonic() < deadline, answer
        time.sleep(0.3)
    access_url = answer[1]["access_methods"][0]["access_url"]["url"]
    assert http("GET", access_url) == (200, data)
    status, body = http("GET", tamper(access_url))
    assert (status, b"SignatureDoesNotMatch" in body) == (403, True), body

    # An upload URL of a pending upload (the UCS API, as the client uses it).
    source = tmp_path / "pending.bin"
    source.write_bytes(b"p" * 10)
    pending_id = register_file(ceph_stack_env, user["user"], source)
    status, created = call(
        "POST", f"{ceph_stack['ucs_url']}/uploads", user["token"], {"file_id": pending_id}
    )
    assert status in (200, 201), created
    upload_id = created["upload_id"]
    status, urls = call(
        "POST",
        f"{ceph_stack['ucs_url']}/uploads/{upload_id}/signed_urls",
        user["token"],
        {"part_numbers": [1]},
    )
    assert status == 200, urls
    part_url = urls["urls"][0]["url"]
    status, body = http("PUT", tamper(part_url), b"p" * 10)
    assert (status, b"SignatureDoesNotMatch" in body) == (403, True), body
    assert http("PUT", part_url, b"p" * 10)[0] == 200
    assert call(
        "PATCH",
        f"{ceph_stack['ucs_url']}/uploads/{upload_id}",
        user["token"],
        {"upload_status": "cancelled"},
    )[0] in (200, 204)


class TamperingProxy(FaultProxy):
    """Forwards S3 requests with a broken signature, as a man in the middle would."""

    def __init__(self, s3_port: int) -> None:
        super().__init__()
        self.s3_port = s3_port

    def _exchange(self, conn, rec, method, host, port, path, version, headers):  # type: ignore[no-untyped-def]
        if port == self.s3_port and "X-Amz-Signature=" in path:
            path = tamper(path)
        return super()._exchange(conn, rec, method, host, port, path, version, headers)


def s3_port(stack: dict[str, Any]) -> int:
    return int(stack["aws_endpoint_url"].rsplit(":", 1)[1].strip("/"))


def test_refused_signatures_end_the_client_with_exit_3(
    ghga_cli, ceph_stack, ceph_stack_env, user, tmp_path
) -> None:
    data = os.urandom(PART + 10)
    source = tmp_path / "src.bin"
    source.write_bytes(data)
    up_id = register_file(ceph_stack_env, user["user"], source)
    down_id = archived_file(ghga_cli, ceph_stack, ceph_stack_env, user, data)
    with TamperingProxy(s3_port(ceph_stack)) as proxy:
        up = run_cli(
            ghga_cli,
            [
                "upload-by-id",
                "--api-url",
                ceph_stack["ucs_url"],
                "--file-id",
                up_id,
                "--file-path",
                str(source),
                "--json",
                "--retries",
                "2",
            ],
            token=user["token"],
            proxy=proxy,
        )
        out = tmp_path / "out"
        out.mkdir()
        down = run_cli(
            ghga_cli,
            [
                "download-by-id",
                "--api-url",
                ceph_stack["ucs_url"],
                "--file-id",
                down_id,
                "--output-dir",
                str(out),
                "--json",
                "--retries",
                "2",
            ],
            token=user["token"],
            proxy=proxy,
        )
    for result, method in ((up, "PUT"), (down, "GET")):
        assert result.returncode == EXIT_AUTH, result.stderr
        assert "Traceback" not in result.stderr
        assert "403" in result.stderr
        records = s3_records(proxy, ceph_stack, method)
        assert all(r.fault is None for r in records)
        # Every request the RGW answered was refused by the RGW itself; a part still on its way
        # when the first 403 ended the run was cut off by the client, never answered.
        answered = [r for r in records if r.status is not None]
        assert answered and {r.status for r in answered} == {403}
        assert all(r.error for r in records if r.status is None)
    # No file appears under its final name (the .part files stay for a resumed run).
    assert not (out / f"{down_id}.bin").exists()


# --------------------------------------------------------------------------- URL expiry


class DelayingProxy(FaultProxy):
    """Holds chosen S3 requests for ``DELAY`` seconds before forwarding them to the RGW.

    The URL then reaches the RGW after it expired, however fresh it was when the client sent it.
    ``choose(method, path, n)`` gets the n-th (1-based) S3 request of that method.
    """

    def __init__(self, s3_port: int, choose: Any) -> None:
        super().__init__()
        self.s3_port = s3_port
        self.choose = choose
        self.seen: dict[str, int] = {}

    def _exchange(self, conn, rec, method, host, port, path, version, headers):  # type: ignore[no-untyped-def]
        if port == self.s3_port:
            with self._lock:
                n = self.seen[method] = self.seen.get(method, 0) + 1
            if self.choose(method, path, n):
                time.sleep(DELAY)
        return super()._exchange(conn, rec, method, host, port, path, version, headers)


@pytest.fixture(scope="module")
def short_ttl_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A second stack on Ceph whose presigned URLs live ``SHORT_TTL`` seconds."""
    state_dir = tmp_path_factory.mktemp("ceph-short-ttl")
    with launch_on_ceph(state_dir, {"UCS_PRESIGN_TTL": str(SHORT_TTL)}) as info:
        yield info


@pytest.fixture(scope="module")
def short_ttl_user(short_ttl_stack: dict[str, Any]) -> dict[str, str]:
    env = {**os.environ, **short_ttl_stack["env"]}
    return {**new_user(env, "ttl"), "env": env}


def origin_403s(proxy: FaultProxy, stack: dict[str, Any], method: str) -> list[RequestRecord]:
    """S3 requests the RGW itself refused with 403 (the proxy injected nothing)."""
    return [r for r in s3_records(proxy, stack, method) if r.status == 403 and r.fault is None]


def test_upload_refreshes_a_url_that_expired_on_the_rgw(
    ghga_cli, short_ttl_stack, short_ttl_user, tmp_path
) -> None:
    stack, env = short_ttl_stack, short_ttl_user["env"]
    data = os.urandom(3 * PART + 7)
    source = tmp_path / "src.bin"
    source.write_bytes(data)
    file_id = register_file(env, short_ttl_user["user"], source)

    # With one connection the second PUT is part 2's: it reaches the RGW after its URL expired.
    choose = lambda method, path, n: method == "PUT" and n == 2  # noqa: E731
    with DelayingProxy(s3_port(stack), choose) as proxy:
        result = run_cli(
            ghga_cli,
            [
                "upload-by-id",
                "--api-url",
                stack["ucs_url"],
                "--file-id",
                file_id,
                "--file-path",
                str(source),
                "--json",
                "--parallel",
                "1",
            ],
            token=short_ttl_user["token"],
            proxy=proxy,
        )
    assert result.returncode == 0, result.stderr
    assert summary_of(result)["status"] == "accepted"
    refused = origin_403s(proxy, stack, "PUT")
    assert len(refused) == 1 and "partNumber=2" in refused[0].url, [r.redacted_url for r in refused]
    stored = s3_client(stack).get_object(Bucket=stack["permanent_bucket"], Key=file_id)
    assert stored["Body"].read() == data


def test_download_refreshes_a_url_that_expired_on_the_rgw(
    ghga_cli, short_ttl_stack, short_ttl_user, tmp_path
) -> None:
    stack, env = short_ttl_stack, short_ttl_user["env"]
    data = os.urandom(3 * PART + 7)
    file_id = archived_file(ghga_cli, stack, env, short_ttl_user, data)
    out = tmp_path / "out"
    out.mkdir()
    # The second ranged GET reaches the RGW after the DRS URL expired.
    with DelayingProxy(s3_port(stack), lambda method, path, n: method == "GET" and n == 2) as proxy:
        result = run_cli(
            ghga_cli,
            [
                "download-by-id",
                "--api-url",
                stack["ucs_url"],
                "--file-id",
                file_id,
                "--output-dir",
                str(out),
                "--json",
                "--parallel",
                "1",
                "--range-size",
                str(PART),
            ],
            token=short_ttl_user["token"],
            proxy=proxy,
        )
    assert result.returncode == 0, result.stderr
    assert load_report(result.stdout)["status"] == "downloaded"
    assert (out / f"{file_id}.bin").read_bytes() == data
    assert len(origin_403s(proxy, stack, "GET")) == 1


# --------------------------------------------------------------------------- refused completions


def pending_upload(stack: dict[str, Any], env: dict[str, str], user: dict[str, str], size: int):
    """Register a file of ``size`` bytes and open an upload for it; returns (upload_id, api)."""
    file_id = register_file(env, user["user"], size=size, md5="0" * 32, prefix="pend")
    status, created = call(
        "POST", f"{stack['ucs_url']}/uploads", user["token"], {"file_id": file_id}
    )
    assert status == 200, created
    return created["upload_id"], file_id


def put_parts(stack: dict[str, Any], token: str, upload_id: str, parts: list[bytes]) -> None:
    numbers = list(range(1, len(parts) + 1))
    url = f"{stack['ucs_url']}/uploads/{upload_id}/signed_urls"
    status, answer = call("POST", url, token, {"part_numbers": numbers})
    assert status == 200, answer
    for entry, body in zip(answer["urls"], parts):
        assert http("PUT", entry["url"], body)[0] == 200


def confirm(stack: dict[str, Any], token: str, upload_id: str) -> tuple[int, Any]:
    url = f"{stack['ucs_url']}/uploads/{upload_id}"
    return call("PATCH", url, token, {"upload_status": "uploaded"})


def test_parts_of_another_size_than_the_layout_fail_the_upload(
    ceph_stack, ceph_stack_env, user
) -> None:
    """RGW accepts parts below 5 MiB and would refuse them only at Complete (EntityTooSmall);
    the service checks every part against the file's layout before it completes a segment, so
    the upload fails naming the part, and RGW is never asked to complete it.

    The part URLs only take the registered part lengths (one 200-byte part here), so the two
    small parts are written with the store's own keys.
    """
    upload_id, file_id = pending_upload(ceph_stack, ceph_stack_env, user, 200)
    put_parts_directly(ceph_stack, file_id, [b"a" * 100, b"b" * 100])

    status, answer = confirm(ceph_stack, user["token"], upload_id)

    reason = "completing the upload failed: 1 part of another size than the file's layout (parts 1)"
    assert (status, answer["exception_id"]) == (400, "uploadStatusChange"), answer
    assert answer["description"].endswith(reason), answer
    status, details = call("GET", f"{ceph_stack['ucs_url']}/uploads/{upload_id}", user["token"])
    assert (details["upload_status"], details["status_reason"]) == ("failed", reason)
    s3 = s3_client(ceph_stack)
    listed = s3.list_multipart_uploads(Bucket=ceph_stack["inbox_bucket"], Prefix=f"{file_id}/")
    assert not listed.get("Uploads"), listed  # aborted, nothing left in the inbox


def test_confirming_an_upload_whose_multipart_upload_vanished_fails_it(
    ceph_stack, ceph_stack_env, user
) -> None:
    """The multipart upload was aborted behind the service's back (lifecycle rule, operator):
    RGW answers ListParts with 404 NoSuchKey (S3: NoSuchUpload); the upload becomes failed."""
    upload_id, file_id = pending_upload(ceph_stack, ceph_stack_env, user, 10)
    put_parts(ceph_stack, user["token"], upload_id, [b"x" * 10])
    s3, inbox = s3_client(ceph_stack), ceph_stack["inbox_bucket"]
    for up in s3.list_multipart_uploads(Bucket=inbox, Prefix=f"{file_id}/")["Uploads"]:
        s3.abort_multipart_upload(Bucket=inbox, Key=up["Key"], UploadId=up["UploadId"])

    started = time.monotonic()
    status, answer = confirm(ceph_stack, user["token"], upload_id)

    assert time.monotonic() - started < 5  # no retrying of a 404
    assert (status, answer["exception_id"]) == (400, "uploadStatusChange"), answer
    status, details = call("GET", f"{ceph_stack['ucs_url']}/uploads/{upload_id}", user["token"])
    assert details["upload_status"] == "failed"
    assert "NoSuchKey" in details["status_reason"] and "None" not in details["status_reason"]
