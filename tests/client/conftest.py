"""Fixtures of the client tests: a real moto S3 server (subprocess) and boto3 against it.

moto is slow and keeps objects in memory (see shared/notes/PITFALLS.md): objects stay small and
the minimum part size is lowered with ``S3_UPLOAD_PART_MIN_SIZE`` in the server's environment.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

MIN_PART = 64 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """libcurl honours proxy variables: keep the machine's out of the tests."""
    for name in (
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {
        **os.environ,
        "S3_UPLOAD_PART_MIN_SIZE": str(MIN_PART),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def s3(moto_url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=moto_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


@pytest.fixture(scope="session")
def bucket(s3: Any) -> str:
    name = "client-tests"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def key() -> str:
    return f"obj-{uuid.uuid4().hex}"


@pytest.fixture
def services(
    s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """The fake UCS/DRS (tests/client/fake_services.py) with 64 KiB parts, accepting the test
    module's ``TOKEN``, which is also put in the environment as the user's token (and the
    machine's API URL and debug switch are taken out of it)."""
    from tests.client.fake_services import FakeServices

    token = request.module.TOKEN
    monkeypatch.setenv("GHGA_CLI_TOKEN", token)
    monkeypatch.delenv("GHGA_CLI_API_URL", raising=False)
    monkeypatch.delenv("GHGA_CLI_DEBUG", raising=False)
    with FakeServices(s3, bucket, token, part_size=MIN_PART) as fake:
        yield fake
