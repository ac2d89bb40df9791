"""ghga-cli works through an HTTP proxy: API and S3 requests both go through it.

libcurl (and so ghga-cli) reads the lowercase ``http_proxy`` for http:// URLs and ignores the
uppercase ``HTTP_PROXY`` on purpose (a CGI program gets a request's ``Proxy:`` header as
``HTTP_PROXY``, "httpoxy"); ``https_proxy``/``HTTPS_PROXY``, ``all_proxy`` and ``no_proxy``/
``NO_PROXY`` are read in both spellings. The client keeps libcurl's rule (README, Proxies).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.admin import grant, new_user, register_file
from tests.helpers.faultproxy import FaultProxy

pytestmark = pytest.mark.e2e

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def clean_env(base: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in base.items() if k.lower() not in PROXY_VARS}


def test_upload_and_download_through_a_proxy(
    ghga_cli: list[str], local_stack: dict[str, Any], stack_env: dict[str, str], tmp_path: Path
) -> None:
    user = new_user(stack_env, "proxy")
    token = user["token"]
    data = os.urandom(700_000)
    source = tmp_path / "proxied.bin"
    source.write_bytes(data)
    file_id = register_file(stack_env, user["user"], source, prefix="px")
    grant(stack_env, file_id, user["user"])

    with FaultProxy() as proxy:
        env = {
            **clean_env(dict(os.environ)),
            "GHGA_CLI_TOKEN": token,
            "http_proxy": proxy.url,
            "HTTP_PROXY": proxy.url,
            "no_proxy": "",
            "NO_PROXY": "",
        }

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*ghga_cli, *args],
                env=env,
                cwd=tempfile.gettempdir(),
                capture_output=True,
                text=True,
                timeout=180,
            )

        up = cli(
            "upload-by-id",
            "--api-url",
            local_stack["ucs_url"],
            "--file-id",
            file_id,
            "--file-path",
            str(source),
        )
        assert up.returncode == 0, up.stderr
        out = tmp_path / "out"
        out.mkdir()
        down = cli(
            "download-by-id",
            "--api-url",
            local_stack["ucs_url"],
            "--file-id",
            file_id,
            "--output-dir",
            str(out),
        )
        assert down.returncode == 0, down.stderr
        assert (out / source.name).read_bytes() == data
        records = proxy.requests
    ucs_port = local_stack["ucs_url"].split(":")[-1].split("/")[0]
    s3_host = local_stack["aws_endpoint_url"].rstrip("/")
    api = [r for r in records if f":{ucs_port}/" in r.url]
    s3 = [r for r in records if r.url.startswith(s3_host)]
    assert any(r.method == "POST" and r.path.endswith("/uploads") for r in api), api
    assert any(r.method == "PATCH" for r in api)
    assert any("/objects/" in r.path for r in api)  # DRS
    assert any(r.method == "PUT" and "partNumber=" in r.url for r in s3)  # presigned parts
    assert any(r.method == "GET" for r in s3)  # presigned download
    assert all(r.status and r.status < 500 for r in records)


def test_uppercase_http_proxy_alone_is_ignored(
    ghga_cli: list[str], local_stack: dict[str, Any]
) -> None:
    """libcurl's rule, kept by the client: only lowercase http_proxy applies to http:// URLs."""
    with FaultProxy() as proxy:
        env = {**clean_env(dict(os.environ)), "HTTP_PROXY": proxy.url, "NO_PROXY": ""}
        env.pop("HTTP_PROXY".lower(), None)
        env["GHGA_CLI_TOKEN"] = local_stack["demo_token"]
        with tempfile.TemporaryDirectory() as out:
            proc = subprocess.run(
                [
                    *ghga_cli,
                    "download-by-id",
                    "--api-url",
                    local_stack["ucs_url"],
                    "--file-id",
                    "no-such-file-for-proxy-test",
                    "--output-dir",
                    out,
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        assert proc.returncode != 0  # unknown file; the point is which way the request went
        assert proxy.requests == []
