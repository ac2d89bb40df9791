"""Load: N clients upload and download small multi-part files continuously against the local
stack; every transfer must succeed and verify, the per-file upload invariants must hold, and
the API latency (measured at a fault-free proxy in front of the API) is reported.

    .venv/bin/python -m tests.reliability.load --clients 16 --seconds 300

Each client loops: register a new file (operator command), upload it with ``ghga-cli``
(waiting for acceptance), download it with ``ghga-cli`` (waiting for staging), compare bytes.
Prints (and with ``--out`` writes) a JSON summary; exits 1 on any failed transfer or
invariant violation.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.helpers import invariants
from tests.helpers.admin import new_user, run_admin
from tests.helpers.cli import download_args, run_cli, upload_args
from tests.helpers.faultproxy import FaultProxy
from tests.reliability import _common, harness

PART = 256 * 1024


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def endpoint(path: str) -> str:
    path = path.split("?")[0]
    for name in ("signed_urls", "parts", "objects", "files"):
        if f"/{name}" in path:
            return name
    return "uploads"


def final_check(stack: dict[str, Any]) -> list[str]:
    try:
        invariants.check_files(stack)
    except AssertionError as error:
        return str(error).splitlines()[1:]
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--max-size", type=int, default=4 * PART, help="largest file, bytes")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    ghga = _common.cli()
    lock = threading.Lock()
    done: Counter[str] = Counter()
    failures: list[dict[str, Any]] = []
    file_ids: list[str] = []
    violations: list[str] = []
    stop = threading.Event()
    with _common.stack() as (stack, _), tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **stack["env"]}
        user = new_user(env, "load")
        api = stack["ucs_url"].rstrip("/") + "/"
        with FaultProxy(client_timeout=300, upstream_timeout=300) as proxy:
            deadline = time.monotonic() + args.seconds

            def client(number: int) -> None:
                rng = random.Random(f"{args.seed}-{number}")
                work = Path(tmp) / f"client-{number}"
                while time.monotonic() < deadline:
                    data = rng.randbytes(rng.randrange(64 * 1024, args.max_size + 1))
                    file_id = f"load-{number}-{rng.getrandbits(48):012x}"
                    try:
                        run_admin(
                            env, "register-file", "--file-id", file_id, "--file-name",
                            f"{file_id}.bin", "--size", str(len(data)), "--md5",
                            hashlib.md5(data).hexdigest(), "--submitter", user["user"],
                            "--reader", user["user"],
                        )  # fmt: skip
                        with lock:
                            file_ids.append(file_id)
                        source = harness.write_source(work, data)
                        up = run_cli(
                            ghga,
                            upload_args(stack, file_id, source),
                            token=user["token"],
                            proxy=proxy,
                        )
                        if up.returncode != 0:
                            raise AssertionError(f"upload exit {up.returncode}: {up.stderr[-500:]}")
                        with lock:
                            done["uploads"] += 1
                            done["bytes_up"] += len(data)
                        out = work / "out"
                        out.mkdir(parents=True, exist_ok=True)
                        down = run_cli(
                            ghga,
                            download_args(stack, file_id, out),
                            token=user["token"],
                            proxy=proxy,
                        )
                        if down.returncode != 0:
                            raise AssertionError(
                                f"download exit {down.returncode}: {down.stderr[-500:]}"
                            )
                        if (out / f"{file_id}.bin").read_bytes() != data:
                            raise AssertionError("downloaded bytes differ")
                        with lock:
                            done["downloads"] += 1
                            done["bytes_down"] += len(data)
                    except Exception as error:
                        with lock:
                            failures.append(
                                {"client": number, "file_id": file_id, "error": str(error)[:1000]}
                            )
                        print(f"client {number}: {error}", file=sys.stderr, flush=True)
                    finally:
                        shutil.rmtree(work, ignore_errors=True)

            def sampler() -> None:
                while not stop.wait(10):
                    with lock:
                        ids = file_ids[-50:]  # a sample while transfers run
                    found = [v for f in ids for v in harness.active_upload_violations(stack, f)]
                    with lock:
                        violations.extend(found)
                    print(f"{time.strftime('%X')} {dict(done)} failures={len(failures)} "
                          f"violations={len(violations)}", file=sys.stderr, flush=True)  # fmt: skip

            started = time.monotonic()
            threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
            watcher = threading.Thread(target=sampler, daemon=True)
            watcher.start()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - started
            stop.set()
            records = proxy.requests
        # Settled: every file and upload of this stack against the full rules.
        violations.extend(final_check(stack))
    api_records = [r for r in records if r.url.startswith(api) and r.duration is not None]
    latencies = [r.duration for r in api_records]
    by_endpoint: dict[str, list[float]] = {}
    for r in api_records:
        by_endpoint.setdefault(f"{r.method} {endpoint(r.path)}", []).append(r.duration)
    ms = lambda v: None if v is None else round(v * 1000, 1)  # noqa: E731
    result = {
        "clients": args.clients,
        "seconds": round(elapsed, 1),
        "transfers": done["uploads"] + done["downloads"],
        "uploads": done["uploads"],
        "downloads": done["downloads"],
        "bytes": done["bytes_up"] + done["bytes_down"],
        "failed_transfers": len(failures),
        "failures": failures[:20],
        "files": len(file_ids),
        "invariant_violations": len(violations),
        "violations": violations[:20],
        "invariant_check": (
            "tests/helpers/invariants.py (all files, at the end) + harness sampler every 10 s"
        ),
        "api_requests": len(latencies),
        "api_errors_5xx": sum(1 for r in api_records if (r.status or 0) >= 500),
        "api_latency_ms": {
            "p50": ms(percentile(latencies, 0.50)),
            "p95": ms(percentile(latencies, 0.95)),
            "p99": ms(percentile(latencies, 0.99)),
            "max": ms(max(latencies) if latencies else None),
        },
        "api_latency_ms_by_call": {
            k: {"n": len(v), "p50": ms(percentile(v, 0.5)), "p99": ms(percentile(v, 0.99))}
            for k, v in sorted(by_endpoint.items())
        },
    }
    _common.report(result, args.out)
    return 1 if failures or violations else 0


if __name__ == "__main__":
    sys.exit(main())
