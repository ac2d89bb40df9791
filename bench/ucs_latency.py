"""Latency of the UCS/DRS3 API under concurrent clients (run by bench/suite.py and, once per
state backend, by bench/backend_bench.py).

    .venv/bin/python bench/ucs_latency.py STACK_JSON DRS_OBJECT_ID [--clients 16] [--rounds 8]

Each of ``--clients`` threads runs ``--rounds`` rounds of: ``POST /uploads`` (create-upload, a new
file per round), ``POST /uploads/{id}/signed_urls`` for 100 parts (batch presign) and
``GET /ga4gh/drs/v1/objects/{id}`` of an already staged object (get-object). One keep-alive
``http.client`` connection per thread. Prints JSON: per operation count, errors, p50/p90/p99, max,
and the stack's ``s3_backend`` and ``db_backend`` (where state and jobs live).
The (empty) multipart uploads it created are aborted at the end: the inbox may be a shared RGW.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

#: parts presigned by one batch-presign request
PRESIGNED = 100


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def abort_uploads(stack: dict, prefix: str) -> int:
    """Abort the inbox's multipart uploads under ``prefix`` (this run's); how many there were."""
    from harness import s3_client

    s3 = s3_client(stack["aws_endpoint_url"], stack["env"])
    bucket = stack["inbox_bucket"]
    uploads = []
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
        uploads += page.get("Uploads", [])
    for upload in uploads:
        s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    return len(uploads)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("stack_json", type=Path)
    parser.add_argument("drs_object")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    stack = json.loads(args.stack_json.read_text())
    os.environ.update(stack["env"])
    os.environ["UCS_STACK_FILE"] = str(args.stack_json)
    from ucs_lambda import admin  # after the environment: pynamodb reads it at import
    from ucs_lambda.config import get_settings
    from ucs_lambda.domain.parts import part_size_for

    # Registered large enough for PRESIGNED parts: a part beyond the file's end is refused
    # (since b13447e), which would time an error answer instead of a batch presign.
    settings = get_settings()
    size = PRESIGNED * max(settings.part_size, settings.min_part_size)
    assert size // part_size_for(size, settings.part_size, settings.min_part_size) >= PRESIGNED

    user = "latency-user"
    run = os.urandom(3).hex()
    ids = [f"lat-{run}-{i}" for i in range(args.clients * args.rounds)]
    with contextlib.redirect_stdout(io.StringIO()):
        for file_id in ids:
            admin.main(
                [
                    "register-file",
                    "--file-id",
                    file_id,
                    "--file-name",
                    "x.bin",
                    "--size",
                    str(size),
                    "--md5",
                    "0" * 32,
                    "--submitter",
                    user,
                ]
            )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        admin.main(["mint-token", "--user", user])
    token = out.getvalue().strip()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        admin.main(["mint-token", "--user", "bench-user"])
    reader_token = out.getvalue().strip()
    base = urlsplit(stack["ucs_url"])
    samples: dict[str, list[float]] = {"create-upload": [], "batch-presign": [], "get-object": []}
    errors: dict[str, int] = {name: 0 for name in samples}
    lock = threading.Lock()
    barrier = threading.Barrier(args.clients)

    def call(conn, name, method, path, body, auth):
        headers = {"Authorization": f"Bearer {auth}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        elapsed = time.perf_counter() - started
        with lock:
            samples[name].append(elapsed)
            if response.status >= 300:
                errors[name] += 1
        return response.status, payload

    def client(index: int) -> None:
        conn = http.client.HTTPConnection(base.hostname, base.port, timeout=60)
        barrier.wait()
        for r in range(args.rounds):
            file_id = ids[index * args.rounds + r]
            status, payload = call(
                conn, "create-upload", "POST", "/uploads", {"file_id": file_id}, token
            )
            if status < 300:
                upload_id = json.loads(payload)["upload_id"]
                call(
                    conn,
                    "batch-presign",
                    "POST",
                    f"/uploads/{upload_id}/signed_urls",
                    {"part_numbers": list(range(1, PRESIGNED + 1))},
                    token,
                )
            call(
                conn,
                "get-object",
                "GET",
                f"/ga4gh/drs/v1/objects/{args.drs_object}",
                None,
                reader_token,
            )
        conn.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(client, range(args.clients)))
    wall = time.perf_counter() - started
    abort_uploads(stack, f"lat-{run}-")
    result = {
        "s3_backend": stack.get("s3_backend"),
        "db_backend": stack.get("db_backend", "dynamodb"),
        "clients": args.clients,
        "rounds": args.rounds,
        "wall_s": round(wall, 2),
        "operations": {
            name: {
                "count": len(values),
                "errors": errors[name],
                "p50_ms": round(1000 * percentile(values, 0.5), 1),
                "p90_ms": round(1000 * percentile(values, 0.9), 1),
                "p99_ms": round(1000 * percentile(values, 0.99), 1),
                "max_ms": round(1000 * max(values), 1) if values else None,
            }
            for name, values in samples.items()
        },
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
