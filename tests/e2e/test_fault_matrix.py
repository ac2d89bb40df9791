"""Every fault of the proxy against a multi-part upload and download, one fault type per case.

Each case routes ``ghga-cli`` through :class:`tests.helpers.faultproxy.FaultProxy` and judges
the run with :mod:`tests.reliability.harness`: it must end verified (accepted upload whose stored
bytes equal the file; downloaded file byte-identical at its final name) or with a clear error
that a faultless rerun resumes to a verified end. Never a silently wrong file, never an
incomplete file at the final name. Cases: each S3 fault type (reset mid-body, 500, 503 and 429 with
Retry-After, 403 expired, stall, throttle, truncate, flip), a seeded random mix of them on 20 %
of the S3 requests, and faults between the client and the API (500, 503, resets before and
after the server acted) on every API call of the conversation.

The longer seeded series is ``python -m tests.reliability.fault_series``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.admin import register_file
from tests.helpers.cli import download_args, run_cli, upload_args
from tests.helpers.faultproxy import FaultProxy, Rule
from tests.helpers.localstack import E2E_PART_SIZE
from tests.helpers.s3faults import STALL_SECONDS, s3_pattern, s3_records
from tests.reliability import harness

pytestmark = pytest.mark.e2e

STALL_TIMEOUT = 2
#: 6 full parts and a short one: several requests in flight at once with --parallel 3.
UPLOAD_SIZE = 6 * E2E_PART_SIZE + 12345
DOWNLOAD_SIZE = 6 * E2E_PART_SIZE + 999
CLIENT_OPTIONS = ("--parallel", "3", "--retries", "4", "--stall-timeout", str(STALL_TIMEOUT))
RANDOM_FAULTS = ("reset", "status", "expired", "truncate", "flip", "stall", "throttle")


def s3_faults(method: str, s3: str) -> dict[str, list[Rule]]:
    """One list of rules per fault type; each hits the 2nd and 4th S3 request of ``method``."""
    body_phase = "request" if method == "PUT" else "response"

    def on(fault: str, **kw: Any) -> list[Rule]:
        return [Rule(fault, method=method, url=s3, nth=n, **kw) for n in (2, 4)]

    return {
        "reset-mid-body": on("reset", phase=body_phase, after_bytes=64 * 1024),
        "status-500": on("status", status=500),
        "status-503-retry-after": on("status", status=503, retry_after=1),
        "status-429-retry-after": on("status", status=429, retry_after=1),
        "expired-403": on("expired"),
        "stall": [
            Rule(
                "stall",
                method=method,
                url=s3,
                nth=2,
                phase="request" if method == "PUT" else "headers",
                after_bytes=64 * 1024,
                seconds=STALL_SECONDS,
            )
        ],
        "throttle": [Rule("throttle", method=method, url=s3, bps=2 * 1024 * 1024)],
        "truncate": on("truncate", nbytes=1000),
        "flip": on("flip", offset=1234),
    }


FAULT_NAMES = list(s3_faults("PUT", "x"))


def api_pattern(stack: dict[str, Any]) -> str:
    return "^" + stack["ucs_url"].rstrip("/") + "/"


def api_faults(stack: dict[str, Any], kind: str) -> list[Rule]:
    """The same fault on the first call of every API request of the conversation."""
    base = api_pattern(stack)
    calls = [
        ("GET", base + "files/"),
        ("POST", base + "uploads$"),
        ("POST", base + "uploads/[^/]+/signed_urls"),
        ("GET", base + "uploads/[^/]+/parts"),
        ("PATCH", base + "uploads/[^/]+$"),
        ("GET", base + "uploads/[^/]+$"),
        ("GET", base + "ga4gh/drs/v1/objects/"),
    ]
    params: dict[str, dict[str, Any]] = {
        "status-500": {"fault": "status", "status": 500},
        "status-503-retry-after": {"fault": "status", "status": 503, "retry_after": 1},
        # The server never saw the request / acted but the answer was lost.
        "reset-request": {"fault": "reset", "phase": "request"},
        "reset-after-server-acted": {"fault": "reset", "phase": "headers"},
    }[kind]
    return [Rule(method=m, url=u, nth=1, **params) for m, u in calls]


API_FAULTS = ["status-500", "status-503-retry-after", "reset-request", "reset-after-server-acted"]


@pytest.fixture(scope="module")
def download_file(ghga_cli, local_stack, stack_env, user) -> tuple[str, bytes]:
    data = os.urandom(DOWNLOAD_SIZE)
    return harness.archive(ghga_cli, local_stack, stack_env, user, data), data


def run_upload(ghga_cli, stack, stack_env, user, tmp_path: Path, proxy: FaultProxy) -> str:
    data = os.urandom(UPLOAD_SIZE)
    source = harness.write_source(tmp_path, data)
    file_id = register_file(stack_env, user["user"], data, prefix="mx")
    result = run_cli(
        ghga_cli,
        upload_args(stack, file_id, source, *CLIENT_OPTIONS),
        token=user["token"],
        proxy=proxy,
    )
    return harness.judge_upload(ghga_cli, stack, user["token"], file_id, source, result)


def run_download(ghga_cli, stack, user, download_file, tmp_path: Path, proxy: FaultProxy) -> str:
    file_id, data = download_file
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli(
        ghga_cli,
        download_args(stack, file_id, out, *CLIENT_OPTIONS),
        token=user["token"],
        proxy=proxy,
    )
    return harness.judge_download(ghga_cli, stack, user["token"], file_id, out, data, result)


# --------------------------------------------------------------------------------------------
# One S3 fault type per case
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", FAULT_NAMES)
def test_upload_under_s3_fault(fault, ghga_cli, local_stack, stack_env, user, tmp_path) -> None:
    rules = s3_faults("PUT", s3_pattern(local_stack))[fault]
    with FaultProxy(rules=rules) as proxy:
        outcome = run_upload(ghga_cli, local_stack, stack_env, user, tmp_path, proxy)
    hits = [r.fault for r in s3_records(proxy, local_stack, "PUT") if r.fault]
    assert len(hits) >= len(rules), hits  # the fault really happened
    # Every PUT fault is retryable (a flipped/truncated answer carries no body to corrupt).
    assert outcome == "ok"


@pytest.mark.parametrize("fault", FAULT_NAMES)
def test_download_under_s3_fault(
    fault, ghga_cli, local_stack, user, download_file, tmp_path
) -> None:
    rules = s3_faults("GET", s3_pattern(local_stack))[fault]
    with FaultProxy(rules=rules) as proxy:
        outcome = run_download(ghga_cli, local_stack, user, download_file, tmp_path, proxy)
    hits = [r.fault for r in s3_records(proxy, local_stack, "GET") if r.fault]
    assert len(hits) >= len(rules), hits
    if fault == "flip":
        # A flipped byte is only visible to the whole-file checksum: exit 5, then a clean rerun.
        assert outcome == "recovered"
    else:
        assert outcome == "ok"


# --------------------------------------------------------------------------------------------
# Seeded random mix on S3 requests
# --------------------------------------------------------------------------------------------


def random_proxy(stack: dict[str, Any], seed: int, rate: float = 0.2) -> FaultProxy:
    """20 % of S3 requests get a random fault; API requests are shielded by a ``pass`` rule."""
    return FaultProxy(
        rules=[Rule("pass", url=api_pattern(stack))],
        random_rate=rate,
        seed=seed,
        random_faults=RANDOM_FAULTS,
    )


@pytest.mark.parametrize("seed", [11, 12])
def test_upload_under_random_s3_faults(
    seed, ghga_cli, local_stack, stack_env, user, tmp_path
) -> None:
    with random_proxy(local_stack, seed) as proxy:
        run_upload(ghga_cli, local_stack, stack_env, user, tmp_path, proxy)


@pytest.mark.parametrize("seed", [21, 22])
def test_download_under_random_s3_faults(
    seed, ghga_cli, local_stack, user, download_file, tmp_path
) -> None:
    with random_proxy(local_stack, seed) as proxy:
        run_download(ghga_cli, local_stack, user, download_file, tmp_path, proxy)


# --------------------------------------------------------------------------------------------
# Faults between the client and the API
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", API_FAULTS)
def test_upload_under_api_faults(kind, ghga_cli, local_stack, stack_env, user, tmp_path) -> None:
    rules = api_faults(local_stack, kind)
    with FaultProxy(rules=rules) as proxy:
        outcome = run_upload(ghga_cli, local_stack, stack_env, user, tmp_path, proxy)
    faulted = {
        (r.method, r.path.split("?")[0].rsplit("/", 1)[-1]) for r in proxy.requests if r.fault
    }
    assert len(faulted) >= 5, faulted  # files, uploads, signed_urls, PATCH, GET upload
    assert outcome == "ok"


@pytest.mark.parametrize("kind", API_FAULTS)
def test_download_under_api_faults(
    kind, ghga_cli, local_stack, user, download_file, tmp_path
) -> None:
    rules = api_faults(local_stack, kind)
    with FaultProxy(rules=rules) as proxy:
        outcome = run_download(ghga_cli, local_stack, user, download_file, tmp_path, proxy)
    assert any(r.fault for r in proxy.requests if "/objects/" in r.path)
    assert outcome == "ok"
