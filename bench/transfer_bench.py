"""Upload and download one large file through the local stack; compare with curl on the same S3.

    .venv/bin/python bench/transfer_bench.py --size-gib 2 [--s3 moto|ceph] [--runs 1]

For each direction it measures ``ghga-cli`` (through the UCS / DRS3 API, as users run it) and
``curl`` moving the same bytes with presigned URLs on the same S3 server:

- upload:   ``curl -T`` of the whole file to one presigned PUT (one stream), and ``curl --parallel``
            PUTting the same parts as ghga-cli to presigned part URLs (the server's ceiling);
- download: ``curl`` of the presigned GET URL the DRS3 API hands out (one stream), and
            ``curl --parallel`` of the same byte ranges as ghga-cli.

Per run: MiB/s of the transfer, client CPU seconds (user + system) and peak RSS of the client
process, read by GNU time (``/usr/bin/time``, which uses ``wait4``) for exactly that process.
ghga-cli's time is its own transfer time from its ``--json`` summary (the wait for
validation/staging is reported separately), and its CPU/RSS cover the whole command. Results
are printed as a Markdown table and as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "build"))

import boto3  # noqa: E402
import stack as stacklib  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30


def measured(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a command under GNU time; wall s, CPU s and peak RSS (MiB) of that command alone.

    Not os.wait4 on a child of this process: Linux carries the forking parent's RSS high-water
    mark into the child's ``ru_maxrss`` (fork/vfork before exec), so every client would show
    at least this orchestrator's ~90 MiB. /usr/bin/time (~1 MiB) forks the client and reads its
    rusage with wait4.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        with tempfile.TemporaryFile() as errors:
            started = time.perf_counter()
            process = subprocess.run(
                ["/usr/bin/time", "-f", "%M %U %S", "-o", report.name, *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=errors,
            )
            wall = time.perf_counter() - started
            errors.seek(0)
            stderr = errors.read().decode(errors="replace")
            if process.returncode != 0:
                message = stderr[-1500:]
                raise RuntimeError(f"{Path(args[0]).name} failed ({process.returncode}): {message}")
        fields = report.read().split()[-3:]
    maxrss_kib, user, system = int(fields[0]), float(fields[1]), float(fields[2])
    return {
        "wall_s": wall,
        "cpu_s": user + system,
        "peak_rss_mib": maxrss_kib / 1024,
        "stdout": process.stdout.decode(),
        # the tail: log lines a row reports (e.g. the old client's "using N parallel transfers")
        "stderr": stderr[-20000:],
    }


def split_into_parts(source: Path, part_size: int, directory: Path) -> list[Path]:
    """Part files for curl, which cannot PUT a byte range of a file (not timed)."""
    parts = []
    with source.open("rb") as data:
        number = 1
        while block := data.read(part_size):
            part = directory / f"part-{number:05d}"
            part.write_bytes(block)
            parts.append(part)
            number += 1
    return parts


def curl_parallel_args(parallel: int) -> list[str]:
    return [
        "curl",
        "-sS",
        "--fail",
        "--parallel",
        "--parallel-max",
        str(parallel),
        "--parallel-immediate",
    ]


def bench_run(
    stack: dict[str, Any], source: Path, md5: str, parallel: int, work: Path
) -> list[dict[str, Any]]:
    env = {**os.environ, **stack["env"]}
    size = source.stat().st_size
    user = "bench-user"
    file_id = f"bench-{os.urandom(4).hex()}"
    admin = [sys.executable, "-m", "ucs_lambda.admin"]
    register = [
        "register-file",
        "--file-id",
        file_id,
        "--file-name",
        source.name,
        "--size",
        str(size),
    ]
    subprocess.run(
        [*admin, *register, "--md5", md5, "--submitter", user],
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*admin, "grant", "--file-id", file_id, "--user", user],
        env=env,
        check=True,
        capture_output=True,
    )
    token = subprocess.run(
        [*admin, "mint-token", "--user", user], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    cli = shutil.which("ghga-cli", path=str(Path(sys.executable).parent))
    cli_env = {**os.environ, "GHGA_CLI_TOKEN": token}
    rows = []

    up = measured(
        [
            cli,
            "upload-by-id",
            "--api-url",
            stack["ucs_url"],
            "--file-id",
            file_id,
            "--file-path",
            str(source),
            "--json",
            "--parallel",
            str(parallel),
        ],
        cli_env,
    )
    summary = json.loads(up["stdout"])
    transfer_s = summary.get("transfer_seconds", summary["seconds"])
    rows.append(row("upload", "ghga-cli", size, transfer_s, up, summary.get("parts")))

    s3 = boto3.client(
        "s3",
        endpoint_url=stack["aws_endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id=stack["env"]["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack["env"]["AWS_SECRET_ACCESS_KEY"],
    )
    bucket = stack["inbox_bucket"]
    put_url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": f"curl-{file_id}"}, ExpiresIn=3600
    )
    single = measured(["curl", "-sS", "--fail", "-o", os.devnull, "-T", str(source), put_url])
    rows.append(row("upload", "curl -T (1 stream)", size, single["wall_s"], single))
    s3.delete_object(Bucket=bucket, Key=f"curl-{file_id}")

    part_size = int(summary.get("part_size") or 16 * MIB)
    part_dir = work / "parts"
    part_dir.mkdir(exist_ok=True)
    parts = split_into_parts(source, part_size, part_dir)
    key = f"curl-mp-{file_id}"
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    args = curl_parallel_args(parallel)
    for number, part in enumerate(parts, 1):
        url = s3.generate_presigned_url(
            "upload_part",
            Params={"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": number},
            ExpiresIn=3600,
        )
        args += ["-o", os.devnull, "-T", str(part), url]
    multi = measured(args)
    rows.append(
        row("upload", f"curl --parallel {parallel}", size, multi["wall_s"], multi, len(parts))
    )
    s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    shutil.rmtree(part_dir)

    target = work / "download"
    target.mkdir(exist_ok=True)
    down = measured(
        [
            cli,
            "download-by-id",
            "--api-url",
            stack["ucs_url"],
            "--file-id",
            file_id,
            "--output-dir",
            str(target),
            "--json",
            "--parallel",
            str(parallel),
        ],
        cli_env,
    )
    summary = json.loads(down["stdout"])
    downloaded = target / source.name
    assert downloaded.stat().st_size == size
    downloaded.unlink()
    rows.append(
        row("download", "ghga-cli", size, summary.get("transfer_seconds", summary["seconds"]), down)
    )

    get_url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": stack["outbox_bucket"], "Key": file_id}, ExpiresIn=3600
    )
    single = measured(["curl", "-sS", "--fail", "-o", str(target / "curl.bin"), get_url])
    rows.append(row("download", "curl (1 stream)", size, single["wall_s"], single))
    (target / "curl.bin").unlink()
    args = curl_parallel_args(parallel)
    ranges = [(start, min(start + part_size, size) - 1) for start in range(0, size, part_size)]
    for number, (first, last) in enumerate(ranges):
        args += ["-r", f"{first}-{last}", "-o", str(target / f"r{number:05d}"), get_url]
    multi = measured(args)
    rows.append(
        row("download", f"curl --parallel {parallel}", size, multi["wall_s"], multi, len(ranges))
    )
    shutil.rmtree(target)
    # Free the space now: a small Ceph cluster fills up over a few multi-GiB runs otherwise.
    for bucket in (stack["permanent_bucket"], stack["outbox_bucket"]):
        s3.delete_object(Bucket=bucket, Key=file_id)
    return rows


def row(
    direction: str, client: str, size: int, seconds: float, usage: dict, parts: int | None = None
) -> dict:
    return {
        "direction": direction,
        "client": client,
        "bytes": size,
        "seconds": round(seconds, 3),
        "mib_per_s": round(size / MIB / seconds, 1) if seconds else None,
        "cpu_s": round(usage["cpu_s"], 2),
        "cpu_s_per_gib": round(usage["cpu_s"] / (size / GIB), 2) if size else None,
        "peak_rss_mib": round(usage["peak_rss_mib"], 1),
        "parts": parts,
    }


def median_rows(runs: list[list[dict]]) -> list[dict]:
    merged = []
    for index in range(len(runs[0])):
        samples = [run[index] for run in runs]
        chosen = sorted(samples, key=lambda r: r["seconds"])[len(samples) // 2]
        merged.append({**chosen, "runs": len(samples)})
    return merged


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--s3", choices=["moto", "ceph"], default="moto")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--runs", type=int, default=1, help="median of this many runs")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    size = int(args.size_gib * GIB)

    with tempfile.TemporaryDirectory(prefix="ghga-bench-") as workdir:
        work = Path(workdir)
        source = work / "bench.bin"
        md5 = stacklib.write_random_file(source, size)
        with stacklib.launch(work / "stack", s3_backend=args.s3) as stack:
            runs = [bench_run(stack, source, md5, args.parallel, work) for _ in range(args.runs)]
    rows = median_rows(runs)
    facts = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "python": platform.python_version(),
        "curl": subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split(
            "\n"
        )[0],
        "s3": args.s3,
        "size_bytes": size,
        "md5": md5,
    }
    print(
        f"# {facts['date']} on {facts['machine']}, S3 on {args.s3}, "
        f"{args.size_gib:g} GiB, runs={args.runs}"
    )
    print("| direction | client | MiB/s | seconds | CPU s | CPU s/GiB | peak RSS MiB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['direction']} | {r['client']} | {r['mib_per_s']} | {r['seconds']} "
            f"| {r['cpu_s']} | {r['cpu_s_per_gib']} | {r['peak_rss_mib']} |"
        )
    if args.json_out:
        args.json_out.write_text(json.dumps({"facts": facts, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
