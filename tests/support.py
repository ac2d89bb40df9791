"""Helpers for tests that act on the local stack as an operator or a plain HTTP client."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3

PROJECT_DIR = Path(__file__).resolve().parent.parent


def run_admin(stack_env: dict[str, str], *args: str) -> str:
    """Run ``python -m ucs_lambda.admin`` on the stack and return its stdout."""
    result = subprocess.run(
        [sys.executable, "-m", "ucs_lambda.admin", *args],
        cwd=PROJECT_DIR,
        env=stack_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


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


def s3_client(local_stack: dict[str, Any]):
    """A boto3 S3 client on the stack's S3, to check stored bytes without the client under test."""
    env = local_stack["env"]
    return boto3.client(
        "s3",
        endpoint_url=local_stack["aws_endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


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
