"""Ctrl+C during a transfer: exit 130, state kept, and the rerun resumes (POSIX: SIGINT)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.client.fake_services import FakeServices
from tests.helpers import faultproxy
from tests.helpers.report_schema import load_report

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")

TOKEN = "interrupt-token"
PART = 64 * 1024


@pytest.fixture
def proxy() -> Iterator[Any]:
    with faultproxy.FaultProxy(throttle_bps=256 * 1024) as p:
        yield p


def _start(argv: list[str], proxy_url: str) -> subprocess.Popen:
    env = {**os.environ, "GHGA_CLI_TOKEN": TOKEN, "http_proxy": proxy_url}
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    return subprocess.Popen(
        [sys.executable, "-m", "ghga_cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _interrupt_when(proc: subprocess.Popen, ready: Any, timeout: float = 30) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "transfer made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return out, err


def test_upload_interrupt_and_resume(tmp_path: Path, services: FakeServices, proxy: Any) -> None:
    data = os.urandom(16 * PART)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    services.register(data, "GHGAFI1")
    argv = [
        "upload-by-id",
        "--api-url",
        services.url,
        "--file-id",
        "GHGAFI1",
        "--file-path",
        str(src),
        "--parallel",
        "2",
        "--json",
    ]
    proc = _start(argv, proxy.url)
    out, err = _interrupt_when(proc, lambda: proxy.count(method="PUT", status=200) >= 3)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "rerun" in err and "Traceback" not in err
    assert load_report(out)["status"] == "interrupted"

    proxy.set_throttle(None)
    proc = _start(argv, proxy.url)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary = load_report(out)
    assert summary["status"] == "accepted"
    assert summary["parts_skipped"] >= 3
    upload = services.uploads[summary["upload_id"]]
    stored = services.s3.get_object(Bucket=services.bucket, Key=upload.key)["Body"].read()
    assert stored == data


def test_download_interrupt_and_resume(tmp_path: Path, services: FakeServices, proxy: Any) -> None:
    data = os.urandom(16 * PART)
    services.publish(data, "GHGAFI2", name="big.bin")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = [
        "download-by-id",
        "--api-url",
        services.url,
        "--file-id",
        "GHGAFI2",
        "--output-dir",
        str(out_dir),
        "--parallel",
        "2",
        "--range-size",
        "64K",
        "--json",
    ]
    proc = _start(argv, proxy.url)
    out, err = _interrupt_when(
        proc, lambda: proxy.count(method="GET", path_contains="/outbox/", status=206) >= 3
    )
    assert proc.returncode == 130, err
    assert load_report(out)["status"] == "interrupted"
    state = json.loads((out_dir / ".ghga-cli" / "big.bin.part.json").read_text())
    done_before = len(state["done"])
    assert done_before >= 1
    assert not (out_dir / "big.bin").exists()

    proxy.set_throttle(None)
    proxy.reset_log()
    proc = _start(argv, proxy.url)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert (out_dir / "big.bin").read_bytes() == data
    assert proxy.count(method="GET", path_contains="/outbox/") == 16 - done_before
    assert sorted(p.name for p in out_dir.iterdir()) == ["big.bin"]
