"""Crash runs: SIGKILL the client, or crash and restart the API server or the job worker.

Shared by the short e2e tests (``tests/e2e/test_crash_safety.py``) and the long series
(``python -m tests.reliability.crash_series``). Every run is judged by :mod:`harness`: the
killed run may have done anything up to the kill; the rerun without faults must end verified,
and the per-file upload invariants must hold before and after.

Kill points of the client (chosen by a seeded RNG, so a series is repeatable):

- ``time``: a random moment (0.1-2.5 s) after start, S3 throttled so that it lands anywhere from
  the first API call to the end of the transfer;
- ``parts``/``ranges``: after a random number of parts/ranges were stored;
- ``patch-seen``: when the proxy receives ``PATCH uploaded`` (the server may or may not act);
- ``patch-before``/``patch-after``/``wait`` (uploads) and ``rename-before``/``rename-after``
  (downloads): exact points inside the client, through ``killpoint.py``.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from tests.helpers.admin import register_file
from tests.helpers.cli import download_args, finished, start_cli, upload_args
from tests.helpers.faultproxy import FaultProxy, Rule
from tests.helpers.localstack import E2E_PART_SIZE, stacklib
from tests.helpers.s3faults import THROTTLE_BPS, s3_pattern, s3_records
from tests.reliability import harness

KILLPOINT = str(Path(__file__).with_name("killpoint.py"))
UPLOAD_POINTS = ("time", "parts", "patch-seen", "patch-before", "patch-after", "wait")
DOWNLOAD_POINTS = ("time", "ranges", "rename-before", "rename-after")


def run_until(
    process: subprocess.Popen, condition: Callable[[], bool] | None, timeout: float = 60
) -> bool:
    """SIGKILL ``process`` once ``condition()`` holds (None: let it end); True if killed."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if condition is not None and condition():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise AssertionError("the client neither ended nor reached its kill point")
        time.sleep(0.01)
    return process.returncode == -signal.SIGKILL


def killed_upload(
    cli: list[str],
    stack: dict[str, Any],
    stack_env: dict[str, str],
    user: dict[str, str],
    work: Path,
    seed: int,
    point: str | None = None,
    parts: int = 8,
) -> dict[str, Any]:
    """One upload killed at a seeded point, then rerun; returns what happened."""
    rng = random.Random(f"upload-{seed}")
    point = point or rng.choice(UPLOAD_POINTS)
    data = rng.randbytes(parts * E2E_PART_SIZE - rng.randrange(1000))
    source = harness.write_source(work, data)
    file_id = register_file(stack_env, user["user"], data, prefix="crash")
    args = upload_args(stack, file_id, source, "--parallel", "2")
    command = [*cli, *args]
    condition: Callable[[], bool] | None = None
    rules = [Rule("throttle", method="PUT", url=s3_pattern(stack), bps=THROTTLE_BPS)]
    if point in ("patch-before", "patch-after", "wait"):
        command = [sys.executable, KILLPOINT, point, *args]
        rules = []
    with FaultProxy(rules=rules) as proxy:
        if point == "time":
            at = time.monotonic() + rng.uniform(0.1, 2.5)
            condition = lambda: time.monotonic() >= at  # noqa: E731
        elif point == "parts":
            k = rng.randrange(1, parts)
            condition = lambda: (  # noqa: E731
                sum(r.status == 200 for r in s3_records(proxy, stack, "PUT")) >= k
            )
        elif point == "patch-seen":
            condition = lambda: any(r.method == "PATCH" for r in proxy.requests)  # noqa: E731
        logs = work / f"upload-{seed}"
        process = start_cli(command, user["token"], proxy, logs)
        killed = run_until(process, condition)
    result = finished(process, logs)
    outcome = harness.judge_upload(
        cli, stack, user["token"], file_id, source, result, killed=killed
    )
    return {"kind": "upload", "seed": seed, "point": point, "killed": killed, "outcome": outcome}


def killed_download(
    cli: list[str],
    stack: dict[str, Any],
    user: dict[str, str],
    file_id: str,
    data: bytes,
    work: Path,
    seed: int,
    point: str | None = None,
) -> dict[str, Any]:
    """One download killed at a seeded point, then rerun; returns what happened."""
    rng = random.Random(f"download-{seed}")
    point = point or rng.choice(DOWNLOAD_POINTS)
    out = work / f"download-{seed}"
    out.mkdir(parents=True)
    args = download_args(stack, file_id, out, "--parallel", "2")
    command = [*cli, *args]
    rules = [Rule("throttle", method="GET", url=s3_pattern(stack), bps=THROTTLE_BPS)]
    condition: Callable[[], bool] | None = None
    if point.startswith("rename-"):
        command = [sys.executable, KILLPOINT, point, *args]
        rules = []
    state_file = out / ".ghga-cli" / f"{file_id}.bin.part.json"

    def saved_ranges() -> int:
        try:
            return len(json.loads(state_file.read_text())["done"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    with FaultProxy(rules=rules) as proxy:
        if point == "time":
            at = time.monotonic() + rng.uniform(0.1, 2.0)
            condition = lambda: time.monotonic() >= at  # noqa: E731
        elif point == "ranges":
            k = rng.randrange(1, 6)
            condition = lambda: saved_ranges() >= k  # noqa: E731
        logs = work / f"download-{seed}.logs"
        process = start_cli(command, user["token"], proxy, logs)
        killed = run_until(process, condition)
    result = finished(process, logs)
    outcome = harness.judge_download(
        cli, stack, user["token"], file_id, out, data, result, killed=killed
    )
    return {"kind": "download", "seed": seed, "point": point, "killed": killed, "outcome": outcome}


# --------------------------------------------------------------------------------------------
# Server-side crashes
# --------------------------------------------------------------------------------------------


def restart(stack_dir: Path, name: str) -> None:
    stacklib.request_restart(stack_dir, name)


def upload_with_restarts(
    cli: list[str],
    stack: dict[str, Any],
    stack_dir: Path,
    stack_env: dict[str, str],
    user: dict[str, str],
    work: Path,
    seed: int,
    names: tuple[str, ...] = ("ucs", "worker"),
    parts: int = 12,
) -> dict[str, Any]:
    """Upload while the API server and the worker are crashed and restarted at seeded moments.

    The client keeps running: its API calls fail while the server is down and are retried.
    """
    rng = random.Random(f"restart-{seed}")
    data = rng.randbytes(parts * E2E_PART_SIZE - rng.randrange(1000))
    source = harness.write_source(work, data)
    file_id = register_file(stack_env, user["user"], data, prefix="rst")
    args = upload_args(stack, file_id, source, "--parallel", "2", "--retries", "8")
    rules = [Rule("throttle", method="PUT", url=s3_pattern(stack), bps=THROTTLE_BPS)]
    logs = work / f"restart-{seed}"
    restarts = []
    with FaultProxy(rules=rules) as proxy:
        process = start_cli([*cli, *args], user["token"], proxy, logs)
        for name in names:
            time.sleep(rng.uniform(0.3, 1.5))
            if process.poll() is not None:
                break
            restart(stack_dir, name)
            restarts.append(name)
        run_until(process, None, timeout=180)
    result = finished(process, logs)
    outcome = harness.judge_upload(cli, stack, user["token"], file_id, source, result)
    return {"kind": "upload-restart", "seed": seed, "restarts": restarts, "outcome": outcome}


def staging_with_worker_crash(
    cli: list[str],
    stack: dict[str, Any],
    stack_dir: Path,
    user: dict[str, str],
    file_id: str,
    data: bytes,
    work: Path,
    seed: int,
) -> dict[str, Any]:
    """Download a not-yet-staged file while the worker is crashed right after staging was
    requested: the staging job is lost or redelivered, the marker expires
    (``UCS_STAGING_TIMEOUT_SECONDS``) and a later request stages it again."""
    rng = random.Random(f"staging-{seed}")
    out = work / f"staging-{seed}"
    out.mkdir(parents=True)
    logs = work / f"staging-{seed}.logs"
    with FaultProxy() as proxy:
        process = start_cli(
            [*cli, *download_args(stack, file_id, out, "--wait-timeout", "120")],
            user["token"],
            proxy,
            logs,
        )
        # Crash the worker once the client asked for the object (staging requested).
        deadline = time.monotonic() + 30
        while not any("/objects/" in r.path for r in proxy.requests):
            assert time.monotonic() < deadline, "the client never asked for the object"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.5))
        restart(stack_dir, "worker")
        run_until(process, None, timeout=180)
    result = finished(process, logs)
    outcome = harness.judge_download(cli, stack, user["token"], file_id, out, data, result)
    return {"kind": "staging-worker-crash", "seed": seed, "outcome": outcome}
