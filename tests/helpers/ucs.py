"""The upload and download APIs of a stack over plain HTTP, as any client of ucs.yaml could call
them: an upload sent part by part, waits for the jobs that decide or stage a file, and
requests released at the same instant."""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.helpers.admin import grant, register_file
from tests.helpers.localstack import E2E_PART_SIZE
from tests.helpers.support import call

#: Upload statuses no job changes any more.
FINAL = {"accepted", "rejected", "cancelled", "failed"}


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll ``condition()`` until it is true-ish; its value (fails after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def race(count: int, request: Callable[[], Any]) -> list[Any]:
    """Run ``request`` in ``count`` threads released at the same instant; return the outcomes."""
    barrier = threading.Barrier(count)

    def at_once() -> Any:
        barrier.wait()
        return request()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: at_once(), range(count)))


def put_part(stack: dict[str, Any], token: str, upload_id: str, part_no: int, data: bytes) -> None:
    """Presign one part and PUT ``data`` to it, as any HTTP client could."""
    url = f"{stack['ucs_url']}/uploads/{upload_id}/parts/{part_no}/signed_urls"
    status, signed = call("POST", url, token)
    assert status == 200, signed
    request = urllib.request.Request(
        signed["url"], data=data, method="PUT", headers={"Content-Type": "application/octet-stream"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def chunks(data: bytes, part_size: int) -> list[bytes]:
    return [data[i : i + part_size] for i in range(0, len(data), part_size)] or [b""]


def start_upload(stack: dict[str, Any], token: str, file_id: str, data: bytes) -> str:
    """POST /uploads and send ``data`` in the upload's parts; returns the (pending) upload id."""
    status, upload = call("POST", f"{stack['ucs_url']}/uploads", token, {"file_id": file_id})
    assert status == 200, upload
    for number, chunk in enumerate(chunks(data, upload["part_size"]), 1):
        put_part(stack, token, upload["upload_id"], number, chunk)
    return upload["upload_id"]


def confirm_body(data: bytes, part_size: int = E2E_PART_SIZE) -> dict[str, Any]:
    """The body of ``PATCH /uploads/<id>`` that confirms ``data`` as uploaded."""
    md5 = hashlib.md5(data).hexdigest()
    part_md5s = [hashlib.md5(c).hexdigest() for c in chunks(data, part_size)]
    return {"upload_status": "uploaded", "checksums": {"md5": md5, "part_md5s": part_md5s}}


def upload_status(stack: dict[str, Any], token: str, upload_id: str) -> dict[str, Any]:
    """The upload's details (``GET /uploads/<id>``)."""
    status, details = call("GET", f"{stack['ucs_url']}/uploads/{upload_id}", token)
    assert status == 200, details
    return details


def settled(stack: dict[str, Any], token: str, upload_id: str) -> dict[str, Any]:
    """The upload's details once no job will change it any more."""
    return wait_for(
        lambda: (d := upload_status(stack, token, upload_id))["upload_status"] in FINAL and d,
        f"upload {upload_id} to settle",
    )


def accepted_file(
    stack: dict[str, Any], stack_env: dict[str, str], user: dict[str, str], data: bytes
) -> tuple[str, str]:
    """Register, upload over plain HTTP and wait for acceptance; (file_id, upload_id)."""
    file_id = register_file(stack_env, user["user"], data)
    upload_id = start_upload(stack, user["token"], file_id, data)
    url = f"{stack['ucs_url']}/uploads/{upload_id}"
    part_size = upload_status(stack, user["token"], upload_id)["part_size"]
    status, body = call("PATCH", url, user["token"], confirm_body(data, part_size))
    assert status == 204, body
    assert settled(stack, user["token"], upload_id)["upload_status"] == "accepted"
    return file_id, upload_id


def readable_file(
    stack: dict[str, Any], stack_env: dict[str, str], user: dict[str, str], data: bytes
) -> str:
    """An accepted file ``user`` uploaded and may download (not staged yet)."""
    file_id, _ = accepted_file(stack, stack_env, user, data)
    grant(stack_env, file_id, user["user"])
    return file_id


def staged_object(stack: dict[str, Any], token: str, file_id: str) -> dict[str, Any]:
    """GET the object until it is staged (the worker copies it); its ``DrsObject``."""
    url = f"{stack['drs_url']}/objects/{file_id}"

    def ready() -> dict[str, Any] | None:
        status, body = call("GET", url, token)
        assert status in (200, 202), body
        return body if status == 200 else None

    return wait_for(ready, f"{file_id} to be staged")


def current_upload_id(stack: dict[str, Any], token: str, file_id: str) -> str:
    """The id of the file's current upload (there must be one)."""
    status, body = call("GET", f"{stack['ucs_url']}/files/{file_id}", token)
    assert status == 200, body
    assert body and body.get("current_upload_id"), body
    return str(body["current_upload_id"])


def staged(stack: dict[str, Any], token: str, file_id: str) -> None:
    """Ask DRS for the object until it is staged, so the client's first call gets a 200."""
    url = f"{stack['drs_url']}/objects/{file_id}"
    wait_for(lambda: call("GET", url, token)[0] == 200, f"staging of {file_id}", 30)
