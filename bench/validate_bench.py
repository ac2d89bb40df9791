"""Throughput of the server's read-back validation, and what it means for Lambda.

    .venv/bin/python bench/validate_bench.py [--s3 ceph|moto ...] [--sizes 256M,1G] [--runs N]
        [--range-size 16M] [--concurrency 8] [--invocation-bytes 0] [--json OUT]

For each S3 backend and size it stores a random object in a fresh inbox bucket, records the
file and an ``uploaded`` upload the way the UCS does, and runs the validation job itself
(``ValidationService.validate``, the code Lambda and the worker run) in this process until the
verdict. It reports, for the read-and-hash phase alone (ranged GETs + MD5 + SHA-256):

* GiB/s (wall) and CPU s/GiB of this process (all its threads: the job's CPU, not the S3
  server's, which on this machine shares the two cores -- on Lambda it does not);
* the accept copy (server-side) separately, and the number of job runs;

then projects, from the measured GiB/s and from the CPU s/GiB, the Lambda runs and wall time
of 200 GB and 5 TiB files at the configured budget (``UCS_VALIDATE_BUDGET_SECONDS``, default
600 s per run) and the job function's memory in ``.chalice/config.json`` (vCPUs = MB / 1769).

Backends: ``ceph`` is the RGW of ``build/ceph-up.sh`` (``CEPH_DIR``, default ``.ceph``), with
DynamoDB and SQS on a moto server this script starts; ``moto`` puts S3 on that moto server too
(``build/moto_ranged.py``: ranged GETs read only the range). Keep moto sizes small: it holds
objects in memory. ``--invocation-bytes`` forces continuations (``UCS_VALIDATE_BUDGET_BYTES``)
to measure their overhead. Nothing is written to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "build"))

import stack as stacklib  # noqa: E402

GiB = 1024**3
MiB = 1024**2
TARGETS = {"200 GB": 200 * 10**9, "5 TiB": 5 * 1024**4}
LAMBDA_MB_PER_VCPU = 1769  # AWS: one vCPU's worth of CPU at 1,769 MB of memory


def parse_size(text: str) -> int:
    units = {"K": 1024, "M": MiB, "G": GiB, "T": 1024**4}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


@contextlib.contextmanager
def moto_server(log: Path) -> Iterator[str]:
    """The local stack's moto server (S3 with O(range) ranged GETs, DynamoDB, SQS)."""
    port = stacklib.free_port()
    server = [sys.executable, str(ROOT / "build" / "moto_ranged.py")]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*server, "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            stacklib.wait_for_http(url, 60, process, log)
        except stacklib.StackError as exc:
            raise SystemExit(f"moto server did not start: {exc}") from None
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


def ceph_endpoint() -> dict[str, str]:
    ceph_dir = Path(os.environ.get("CEPH_DIR", ROOT / ".ceph"))
    config = json.loads((ceph_dir / "ceph.json").read_text())
    return {
        "AWS_ENDPOINT_URL_S3": config["endpoint_url"],
        "AWS_ACCESS_KEY_ID": config["access_key"],
        "AWS_SECRET_ACCESS_KEY": config["secret_key"],
    }


def configure(backend: str, moto_url: str, args: argparse.Namespace) -> dict[str, str]:
    """Environment of the service for one backend: fresh names for tables, buckets, queue."""
    run = f"vb-{uuid.uuid4().hex[:8]}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": moto_url,
        "AWS_ENDPOINT_URL_DYNAMODB": moto_url,
        "AWS_ENDPOINT_URL_SQS": moto_url,
        "UCS_FILES_TABLE": f"{run}-files",
        "UCS_UPLOADS_TABLE": f"{run}-uploads",
        "UCS_INBOX_BUCKET": f"{run}-inbox",
        "UCS_PERMANENT_BUCKET": f"{run}-permanent",
        "UCS_OUTBOX_BUCKET": f"{run}-outbox",
        "UCS_JOB_QUEUE": f"{run}-jobs",
        "UCS_VALIDATE_RANGE_SIZE": str(args.range_size),
        "UCS_VALIDATE_CONCURRENCY": str(args.concurrency),
        "UCS_VALIDATE_BUDGET_BYTES": str(args.invocation_bytes),
    }
    if backend == "ceph":
        env.update(ceph_endpoint())  # moto (DynamoDB, SQS) accepts any keys
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_REGION"):
        os.environ.pop(name, None)
    os.environ.update(env)
    return env


def store_object(size: int) -> tuple[str, str, str, list[str]]:
    """A random object of ``size`` bytes in the inbox (multipart, 64 MiB parts); (key, md5,
    ETag, part ETags)."""
    from ucs_lambda.adapters import aws
    from ucs_lambda.config import get_settings

    s = get_settings()
    s3 = aws.client("s3", s)
    key = f"bench/{uuid.uuid4()}"
    digest = hashlib.md5()
    part = 64 * MiB
    upload_id = s3.create_multipart_upload(Bucket=s.inbox_bucket, Key=key)["UploadId"]
    parts = []
    for n, start in enumerate(range(0, size, part), 1):
        block = os.urandom(min(part, size - start))
        digest.update(block)
        etag = s3.upload_part(
            Bucket=s.inbox_bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=block
        )["ETag"]
        parts.append({"PartNumber": n, "ETag": etag})
    done = s3.complete_multipart_upload(
        Bucket=s.inbox_bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    del done  # RGW's answer may carry no ETag; HEAD does (the UCS reads it the same way)
    etag = str(s3.head_object(Bucket=s.inbox_bucket, Key=key)["ETag"]).strip('"')
    return key, digest.hexdigest(), etag, [str(p["ETag"]).strip('"') for p in parts]


def measure(size: int) -> dict[str, Any]:
    """Run the validation job of one fresh upload to its verdict, timing its phases."""
    from ucs_lambda.adapters import aws
    from ucs_lambda.adapters.dynamo import Repository
    from ucs_lambda.adapters.provision import create_all
    from ucs_lambda.config import get_settings
    from ucs_lambda.services import validation

    s = get_settings()
    create_all(s)
    upload_id = _prepared(size)
    phases = {"hash_wall": 0.0, "hash_cpu": 0.0, "copy_wall": 0.0, "copy_cpu": 0.0}

    class Timed(validation.ValidationService):
        """The service as deployed, with its two phases timed (wall and this process's CPU)."""

        def _hash(self, *a: Any, **k: Any) -> Any:
            return self._timed("hash", super()._hash, *a, **k)

        def _accept(self, *a: Any, **k: Any) -> Any:
            return self._timed("copy", super()._accept, *a, **k)

        @staticmethod
        def _timed(phase: str, func: Any, *a: Any, **k: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return func(*a, **k)
            finally:
                phases[f"{phase}_wall"] += time.perf_counter() - wall
                phases[f"{phase}_cpu"] += time.process_time() - cpu

    service = Timed.from_env()
    runs, outcome = 0, None
    started = time.perf_counter()
    while outcome in (None, validation.CONTINUED):
        outcome = service.validate(upload_id)
        runs += 1
        if outcome is None:
            raise SystemExit("validation made no progress (lease held?)")
    total = time.perf_counter() - started
    record = Repository(s).get_upload(upload_id)
    assert record is not None and record.upload_status.value == "accepted", record
    _drain_queue(aws.client("sqs", s), s.job_queue)
    return {
        "size": size,
        "runs": runs,
        "outcome": outcome,
        "total_s": round(total, 3),
        "hash_s": round(phases["hash_wall"], 3),
        "hash_gib_s": round(size / GiB / phases["hash_wall"], 3),
        "hash_cpu_s_per_gib": round(phases["hash_cpu"] / (size / GiB), 3),
        "copy_s": round(phases["copy_wall"], 3),
        "copy_cpu_s": round(phases["copy_cpu"], 3),
    }


def _prepared(size: int) -> str:
    """Store the object first (its MD5 is only known then), then register file and upload."""
    from ucs_lambda.adapters.dynamo import Repository, utcnow
    from ucs_lambda.config import get_settings
    from ucs_lambda.domain.attempts import AttemptBudget
    from ucs_lambda.domain.models import FileRecord, StoredSegment, UploadRecord, UploadStatus

    s = get_settings()
    repo = Repository(s)
    key, md5, etag, part_etags = store_object(size)
    file_id, upload_id = f"bench-{uuid.uuid4().hex[:10]}", str(uuid.uuid4())
    now = utcnow()
    repo.register_file(
        FileRecord(file_id, f"{file_id}.bin", size, md5, "", "", now, now, frozenset({"bench"}))
    )
    upload = UploadRecord(upload_id, file_id, "-", key, UploadStatus.PENDING, 64 * MiB, now, now)
    budget = AttemptBudget(
        s.upload_attempts_per_window, s.upload_attempt_window_seconds, int(time.time())
    )
    repo.create_upload(upload, budget)
    # One segment (an upload of the object's 64 MiB parts), completed as the UCS does.
    assert repo.record_segment(upload_id, 1, StoredSegment(etag, tuple(part_etags)))
    assert repo.mark_uploaded(upload_id, None, [])
    return upload_id


def _drain_queue(sqs: Any, name: str) -> None:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    sqs.purge_queue(QueueUrl=url)


def cleanup() -> None:
    """Empty and delete this run's buckets (the Ceph cluster outlives the script)."""
    from ucs_lambda.adapters import aws
    from ucs_lambda.config import get_settings

    s = get_settings()
    buckets = [s.inbox_bucket, s.permanent_bucket, s.outbox_bucket]
    stacklib.remove_buckets(aws.client("s3", s), buckets)
    aws.reset()


def job_memory_mb() -> int:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    stage = config["stages"]["prod"]["lambda_functions"]["on_job_message"]
    return int(stage.get("lambda_memory_size") or config.get("lambda_memory_size") or 128)


def projection(gib_s: float, cpu_s_per_gib: float, budget: float) -> list[dict[str, Any]]:
    """Lambda runs and wall time for the target sizes: at the measured speed, and at the speed
    the job's CPU cost allows on the job function's vCPUs (network assumed not limiting)."""
    vcpus = job_memory_mb() / LAMBDA_MB_PER_VCPU
    speeds = {"measured here": gib_s}
    if cpu_s_per_gib > 0:
        speeds[f"CPU-bound, {vcpus:.2f} vCPU"] = vcpus / cpu_s_per_gib
    rows = []
    for basis, speed in speeds.items():
        per_run = speed * GiB * budget
        for name, size in TARGETS.items():
            runs = math.ceil(size / per_run)
            rows.append(
                {
                    "basis": basis,
                    "file": name,
                    "gib_s": round(speed, 3),
                    "bytes_per_run": int(per_run),
                    "lambda_runs": runs,
                    "hours": round(size / (speed * GiB) / 3600, 2),
                }
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--s3", action="append", choices=["ceph", "moto"], help="default: ceph")
    parser.add_argument("--sizes", default="256M,1G", help="comma-separated, e.g. 256M,1G,4G")
    parser.add_argument("--runs", type=int, default=1, help="repetitions per size (median)")
    parser.add_argument("--range-size", type=parse_size, default=16 * MiB)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--invocation-bytes", type=parse_size, default=0, help="force continuations (0: none)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    backends = args.s3 or ["ceph"]
    sizes = [parse_size(x) for x in args.sizes.split(",") if x.strip()]
    budget = float(
        os.environ.get("UCS_JOB_BUDGET_SECONDS")
        or os.environ.get("UCS_VALIDATE_BUDGET_SECONDS")
        or 600
    )
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    report: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "loadavg_before": load,
        "cpus": os.cpu_count(),
        "range_size": args.range_size,
        "concurrency": args.concurrency,
        "invocation_bytes": args.invocation_bytes,
        "budget_seconds": budget,
        "job_memory_mb": job_memory_mb(),
        "results": [],
    }
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"validate-bench-moto-{os.getpid()}.log"
    with moto_server(log) as moto_url:
        for backend in backends:
            configure(backend, moto_url, args)
            try:
                for size in sizes:
                    samples = [measure(size) for _ in range(args.runs)]
                    samples.sort(key=lambda r: r["hash_gib_s"])
                    best = samples[len(samples) // 2]
                    row = {"s3": backend, **best, "samples": samples}
                    row["projection"] = projection(
                        best["hash_gib_s"], best["hash_cpu_s_per_gib"], budget
                    )
                    report["results"].append(row)
                    print_row(row)
            finally:
                cleanup()
    report["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3] if load else []
    print(f"load average before {' '.join(load)}, after {' '.join(report['loadavg_after'])}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def print_row(row: dict[str, Any]) -> None:
    print(
        f"{row['s3']:>4} {row['size'] / MiB:8.0f} MiB: read+hash {row['hash_gib_s']:.3f} GiB/s, "
        f"{row['hash_cpu_s_per_gib']:.2f} CPU s/GiB (job process); accept copy "
        f"{row['copy_s']:.2f} s; {row['runs']} job run(s), {row['total_s']:.2f} s in all",
        flush=True,
    )
    for p in row["projection"]:
        print(
            f"      {p['file']:>6} at {p['gib_s']:.3f} GiB/s ({p['basis']}): "
            f"{p['lambda_runs']} Lambda runs of {p['bytes_per_run'] / GiB:.1f} GiB, "
            f"{p['hours']:.2f} h of reading",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
