"""Plain access to a stack: JSON requests, boto3 clients on its services, gunicorn serving the
WSGI app; stored bytes checked without the client under test."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3

from tests.helpers import PROJECT_DIR


def call(
    method: str, url: str, token: str | None, body: dict | None = None
) -> tuple[int, dict[str, Any] | None]:
    """One JSON request; returns (status, parsed body or None)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else None


#: stack.json key of each service's endpoint
ENDPOINT_KEYS = {
    "s3": "aws_endpoint_url",
    "dynamodb": "dynamodb_endpoint_url",
    "sqs": "sqs_endpoint_url",
}


def stack_client(local_stack: dict[str, Any], service: str):
    """A boto3 client on one of the stack's services (``s3``, ``dynamodb``, ``sqs``)."""
    env = local_stack["env"]
    return boto3.client(
        service,
        endpoint_url=local_stack[ENDPOINT_KEYS[service]],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def s3_client(local_stack: dict[str, Any]):
    """A boto3 S3 client on the stack's S3, to check stored bytes without the client under test."""
    return stack_client(local_stack, "s3")


def stored_bytes(stack: dict[str, Any], file_id: str) -> bytes:
    """The file's object in the permanent bucket, read with boto3 (never the client under test)."""
    s3 = s3_client(stack)
    return s3.get_object(Bucket=stack["permanent_bucket"], Key=file_id)["Body"].read()


GUNICORN = Path(sys.executable).parent / "gunicorn"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def gunicorn(env: dict[str, str], log: Path, workers: int = 1) -> Iterator[str]:
    """``ucs_lambda.wsgi`` served by gunicorn on a free port with ``env``; yields its URL."""
    port = free_port()
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                str(GUNICORN),
                "--workers",
                str(workers),
                "--threads",
                "4",
                "--bind",
                f"127.0.0.1:{port}",
                "ucs_lambda.wsgi:application",
            ],
            cwd=PROJECT_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text(errors="replace")
            try:
                urllib.request.urlopen(url + "/openapi.json", timeout=2).close()
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(15)


def put_parts_directly(stack: dict[str, Any], file_id: str, parts: list[bytes]) -> None:
    """Write ``parts`` into the file's pending multipart upload with the store's own keys.

    Around the presigned URLs, which since issue 11 accept only each part's registered length:
    how a store ends up holding parts the service did not plan (e.g. undersized ones).
    """
    s3, inbox = s3_client(stack), stack["inbox_bucket"]
    (pending,) = s3.list_multipart_uploads(Bucket=inbox, Prefix=f"{file_id}/")["Uploads"]
    for number, body in enumerate(parts, start=1):
        s3.upload_part(
            Bucket=inbox,
            Key=pending["Key"],
            UploadId=pending["UploadId"],
            PartNumber=number,
            Body=body,
        )


def assert_nothing_stored(stack: dict[str, Any], file_id: str) -> None:
    """Nothing of ``file_id``'s upload is left: no permanent object and no permanent multipart
    upload (an assembly in progress is aborted), no inbox segment object or multipart upload.
    """
    s3 = s3_client(stack)
    permanent, inbox = stack["permanent_bucket"], stack["inbox_bucket"]
    assert s3.list_objects_v2(Bucket=permanent, Prefix=file_id).get("KeyCount") == 0
    assert not s3.list_multipart_uploads(Bucket=permanent, Prefix=file_id).get("Uploads")
    assert s3.list_objects_v2(Bucket=inbox, Prefix=f"{file_id}/").get("KeyCount") == 0
    assert not s3.list_multipart_uploads(Bucket=inbox, Prefix=f"{file_id}/").get("Uploads")
