"""What MD5 costs a client on this machine: curl's ceiling with and without ghga-cli's hashing.

    .venv/bin/python bench/md5_cost.py [--size-mib 1024] [--runs 3]   (CEPH_DIR: the RGW to use)

ghga-cli hashes every upload twice (the whole-file MD5 the UCS checks and each part's MD5, which
must equal the part's ETag) and every download once (whole file, read back from the page cache).
curl hashes nothing. This script measures, on the Ceph RGW of build/ceph-up.sh:

1. ``hashlib.md5`` alone: CPU seconds per GiB on one core;
2. ``curl --parallel 8`` uploading the file's 16 MiB parts to presigned part URLs and downloading
   32 MiB ranges, alone;
3. the same curl runs while a second process does ghga-cli's hashing of the same bytes at the same
   time (two MD5 passes for the upload, one read-back pass for the download).

If (3) falls to ghga-cli's speed, the checksums -- not the transfer engine -- are what limits it
on a 2-core machine that also runs the S3 server. Result: JSON on stdout, merged into
bench/results.json (or --results) under ``md5_cost`` when that file exists.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "build"))

import stack as stacklib  # noqa: E402
from harness import s3_client  # noqa: E402
from transfer_bench import curl_parallel_args, measured, split_into_parts  # noqa: E402

MIB = 1 << 20
HASHER = """
import hashlib, sys
path, passes = sys.argv[1], int(sys.argv[2])
for _ in range(passes):
    h = hashlib.md5()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(16 << 20):
            h.update(block)
"""


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--results",
        type=Path,
        default=HERE / "results.json",
        help="results.json to merge into under md5_cost, if it exists (default: bench/'s)",
    )
    args = parser.parse_args()
    size = args.size_mib * MIB
    cfg = stacklib.ceph_settings()
    s3 = s3_client(cfg["AWS_ENDPOINT_URL_S3"], cfg)
    bucket = "bench"
    with contextlib.suppress(Exception):  # exists already
        s3.create_bucket(Bucket=bucket)
    result: dict = {"size_bytes": size, "runs": args.runs, "load_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="md5-cost-") as workdir:
        work = Path(workdir)
        source = work / "src.bin"
        stacklib.write_random_file(source, size)
        data = source.read_bytes()
        started = time.process_time()
        hashlib.md5(data).hexdigest()
        result["md5_cpu_s_per_gib"] = round((time.process_time() - started) / (size / (1 << 30)), 2)
        del data
        (work / "parts").mkdir()
        parts = split_into_parts(source, 16 * MIB, work / "parts")
        s3.put_object(Bucket=bucket, Key="md5-cost-src", Body=source.open("rb"))

        def upload() -> float:
            key = f"md5-cost-{os.urandom(3).hex()}"
            upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
            cmd = curl_parallel_args(8)
            for number, part in enumerate(parts, 1):
                url = s3.generate_presigned_url(
                    "upload_part",
                    Params={
                        "Bucket": bucket,
                        "Key": key,
                        "UploadId": upload_id,
                        "PartNumber": number,
                    },
                    ExpiresIn=3600,
                )
                cmd += ["-o", os.devnull, "-T", str(part), url]
            try:
                return measured(cmd)["wall_s"]
            finally:
                s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)

        def download() -> float:
            url = s3.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": "md5-cost-src"}, ExpiresIn=3600
            )
            cmd = curl_parallel_args(8)
            for n, first in enumerate(range(0, size, 32 * MIB)):
                last = min(first + 32 * MIB, size) - 1
                cmd += ["-r", f"{first}-{last}", "-o", str(work / f"r{n:04d}"), url]
            return measured(cmd)["wall_s"]

        def with_hashing(fn, passes: int) -> tuple[float, float]:
            hasher = subprocess.Popen([sys.executable, "-c", HASHER, str(source), str(passes)])
            wall = fn()
            started = time.perf_counter()
            hasher.wait()
            return wall, time.perf_counter() - started

        rows = {}
        for name, fn, passes in (("upload", upload, 2), ("download", download, 1)):
            alone = [fn() for _ in range(args.runs)]
            hashed = [with_hashing(fn, passes) for _ in range(args.runs)]
            rows[name] = {
                "curl_alone_mb_per_s": round(size / 1e6 / median(alone), 1),
                "curl_with_md5_mb_per_s": round(size / 1e6 / median([h[0] for h in hashed]), 1),
                # both done: curl's bytes moved and the hashing finished
                "curl_and_md5_done_mb_per_s": round(
                    size / 1e6 / median([h[0] + h[1] for h in hashed]), 1
                ),
                "hash_passes": passes,
                "hash_finished_after_curl_s": round(median([h[1] for h in hashed]), 2),
                "alone_s": [round(x, 2) for x in alone],
                "with_md5_s": [round(h[0], 2) for h in hashed],
            }
        result["curl"] = rows
        s3.delete_object(Bucket=bucket, Key="md5-cost-src")
    result["load_end"] = os.getloadavg()
    print(json.dumps(result, indent=1))
    results = args.results
    if results.exists():
        merged = json.loads(results.read_text())
        merged["md5_cost"] = result
        results.write_text(json.dumps(merged, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
