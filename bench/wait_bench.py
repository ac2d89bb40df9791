"""What the user waits for: an upload until ``accepted``, a download of an unstaged file.

    .venv/bin/python bench/wait_bench.py --size 4G --link-mbit 800 --runs 1 \\
        [--before-rev 1daba9a] [--out bench/wait.json]

For each build -- the "before" server and client of ``--before-rev`` (a ``git worktree`` of
that commit; its own stack and its own ghga-cli, bench/build_baseline.sh) and this checkout --
it starts the local stack on the Ceph RGW of ``build/ceph-up.sh`` and, per run:

1. registers a fresh file and uploads it with ghga-cli (default options, waiting for the
   verdict): **whole command** (start to ``accepted``) against its **transfer phase** (the
   ``seconds`` of its ``--json`` summary);
2. downloads it with ghga-cli from the accepted, *unstaged* file: whole command (request to
   verified file) against its transfer phase;
3. removes the outbox copy, resets the staging state, and times the staging alone (a DRS
   ``GET /objects/{id}`` polled every 0.1 s until 200): the staging throughput.

With ``--link-mbit N`` (> 0) the clients run in a network namespace behind an N Mbit/s link
(bench/netlink.py), as a submitter outside the storage network; 0 runs them on the machine.
``--concurrent 4x512M`` adds the validation of four uploads confirmed together by one worker
(``--concurrency 4``) against one alone, from the uploads' own verdict times. Every object is
deleted after its step. Prints and writes JSON (``--out``); ``bench/report.py`` renders every
``bench/wait-*.json`` into bench/RESULTS.md. ``--project FILE --hash-gib-s X`` adds the Lambda
projection (200 GB, 5 TiB) from the report's staging rate and a measured hash rate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import netlink  # noqa: E402
from harness import (  # noqa: E402
    GIB,
    MIB,
    PROJECT_DIR,
    Bench,
    GhgaCli,
    load,
    log,
    make_source,
    measured,
    wait_for_ceph_space,
)

BEFORE_VENV = HERE / ".before-venv"
BEFORE_SRC = HERE / ".before-src"


def size_arg(text: str) -> int:
    units = {"K": 1 << 10, "M": MIB, "G": GIB}
    text = text.strip().upper()
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


@contextlib.contextmanager
def stack_of(project: Path, state_dir: Path, extra_env: dict[str, str]) -> Iterator[dict]:
    """``project``'s build/stack.py on Ceph (its own server code), on free ports."""
    state_dir.mkdir(parents=True, exist_ok=True)
    stack_file = state_dir / "stack.json"
    stack_file.unlink(missing_ok=True)
    env = {**os.environ, "CEPH_DIR": str(PROJECT_DIR / ".ceph"), **extra_env}
    args = [sys.executable, str(project / "build" / "stack.py"), "--state-dir", str(state_dir)]
    args += ["--s3", "ceph", "--auto-ports", "--quiet"]
    out = (state_dir / "stack.out").open("wb")
    process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=project)
    try:
        deadline = time.monotonic() + 180
        while not stack_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((state_dir / "stack.out").read_text(errors="replace")[-3000:])
            time.sleep(0.2)
        yield json.loads(stack_file.read_text())
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        out.close()


def build_before(rev: str) -> tuple[Path, GhgaCli]:
    """The worktree (server) and the venv (client) of ``rev``, made once."""
    full = subprocess.run(
        ["git", "-C", str(PROJECT_DIR), "rev-parse", rev],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not (BEFORE_SRC / ".git").exists() or _head(BEFORE_SRC) != full:
        subprocess.run(
            ["git", "-C", str(PROJECT_DIR), "worktree", "remove", "--force", str(BEFORE_SRC)],
            capture_output=True,
        )
        subprocess.run(["git", "-C", str(PROJECT_DIR), "worktree", "prune"], check=True)
        subprocess.run(
            ["git", "-C", str(PROJECT_DIR), "worktree", "add", "--detach", str(BEFORE_SRC), full],
            check=True,
            capture_output=True,
        )
    marker = BEFORE_VENV / "BASELINE_REV"
    if not marker.exists() or marker.read_text().strip() != full:
        subprocess.run(
            ["bash", str(HERE / "build_baseline.sh"), full, str(BEFORE_VENV)], check=True
        )
    return BEFORE_SRC, GhgaCli("ghga-cli-before", str(BEFORE_VENV / "bin" / "ghga-cli"), False)


def _head(path: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()


def drs_status(bench: Bench, file_id: str) -> int:
    request = urllib.request.Request(
        f"{bench.stack['drs_url']}/objects/{file_id}",
        headers={"Authorization": f"Bearer {bench.token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def unstage(bench: Bench, file_id: str) -> None:
    """Remove the outbox copy and the staging marks, as the outbox cleanup does."""
    bench.s3.delete_object(Bucket=bench.stack["outbox_bucket"], Key=file_id)
    import boto3

    env = bench.stack["env"]
    table = boto3.resource(
        "dynamodb",
        endpoint_url=bench.stack["dynamodb_endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    ).Table(env.get("UCS_FILES_TABLE", "ghga-files"))
    table.update_item(
        Key={"file_id": file_id}, UpdateExpression="REMOVE staged_at, staging_started"
    )


def time_staging(bench: Bench, file_id: str, timeout: float = 3600) -> float:
    """Seconds from the first DRS request to the 200 (polled every 0.1 s)."""
    started = time.monotonic()
    while drs_status(bench, file_id) != 200:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{file_id} not staged after {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - started


def one_run(bench: Bench, cli: GhgaCli, source: Path, md5: str, work: Path) -> dict[str, Any]:
    size = source.stat().st_size
    file_id = bench.register(source, md5)
    up = measured(
        [*bench.prefix, *bench.ghga_up_args(cli, file_id, source), "--json"], bench.cli_env()
    )
    summary = json.loads(up["stdout"])
    assert summary.get("status") == "accepted", summary
    target = work / "download"
    target.mkdir(exist_ok=True)
    down = measured(
        [*bench.prefix, *bench.ghga_down_args(cli, file_id, target), "--json"], bench.cli_env()
    )
    dsummary = json.loads(down["stdout"])
    assert dsummary.get("status") == "downloaded", dsummary
    for item in target.iterdir():
        item.unlink()
    unstage(bench, file_id)
    staging = time_staging(bench, file_id)
    bench.drop_file_objects(file_id)
    row = {
        "upload_whole_s": round(up["wall_s"], 2),
        "upload_transfer_s": summary["seconds"],
        "download_whole_s": round(down["wall_s"], 2),
        "download_transfer_s": dsummary["seconds"],
        "staging_s": round(staging, 2),
        "staging_mib_s": round(size / MIB / staging, 1),
        "segments_reported": summary.get("segments_reported"),
        "load": load(),
    }
    row["upload_ratio"] = round(row["upload_whole_s"] / row["upload_transfer_s"], 3)
    row["download_ratio"] = round(row["download_whole_s"] / row["download_transfer_s"], 3)
    return row


def reference_upload(bench: Bench, file_id: str, source: Path) -> str:
    """Upload like a client of the reference ucs.yaml (create, presign, PUT every part,
    no segment reports); return the upload id, not yet confirmed."""
    ucs = bench.stack["ucs_url"]
    upload = api_call(bench, "POST", f"{ucs}/uploads", {"file_id": file_id})
    upload_id, part_size = upload["upload_id"], upload["part_size"]
    size = source.stat().st_size
    numbers = list(range(1, max(1, -(-size // part_size)) + 1))
    urls = api_call(
        bench, "POST", f"{ucs}/uploads/{upload_id}/signed_urls", {"part_numbers": numbers}
    )["urls"]
    with source.open("rb") as handle:
        for item in urls:
            handle.seek((item["part_no"] - 1) * part_size)
            body = handle.read(part_size)
            request = urllib.request.Request(
                item["url"],
                data=body,
                method="PUT",
                headers={"Content-Type": "application/octet-stream"},
            )
            with urllib.request.urlopen(request, timeout=300) as response:
                response.read()
    return str(upload_id)


def api_call(bench: Bench, method: str, url: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {bench.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def verdict_seconds(bench: Bench, uploads: list[str]) -> float:
    """Confirm every upload at once; seconds until the last verdict (polled every 0.1 s)."""
    ucs = bench.stack["ucs_url"]
    started = time.monotonic()
    for upload_id in uploads:
        api_call(bench, "PATCH", f"{ucs}/uploads/{upload_id}", {"upload_status": "uploaded"})
    pending = set(uploads)
    while pending:
        for upload_id in list(pending):
            details = api_call(bench, "GET", f"{ucs}/uploads/{upload_id}")
            if details["upload_status"] != "uploaded":
                assert details["upload_status"] == "accepted", details
                pending.discard(upload_id)
        time.sleep(0.1)
    return round(time.monotonic() - started, 2)


def concurrent_validation(work: Path, cli: GhgaCli, count: int, size: int) -> dict[str, Any]:
    """``count`` uploads confirmed together, verified and stored by one worker with
    ``--concurrency`` 1 and ``count``, against one upload alone: seconds from the
    confirmations to the last verdict (the parts are all stored before, no segment reports,
    so all the work is left for after the confirmation)."""
    results: dict[str, Any] = {"count": count, "size": size}
    sources = [make_source(work, size) for _ in range(count)]
    for slots in (count, 1):
        env = {"UCS_WORKER_CONCURRENCY": str(slots)}
        with stack_of(PROJECT_DIR, work / f"stack-slots-{slots}", env) as stack:
            bench = Bench(stack, "ceph", work, [cli])
            rounds = (
                [("alone", sources[:1]), ("together", sources)]
                if slots == count
                else [("together", sources)]
            )
            for name, chosen in rounds:
                wait_for_ceph_space(4 * size * len(chosen) + GIB)
                ids = [bench.register(path, md5) for path, md5 in chosen]
                uploads = [reference_upload(bench, i, path) for i, (path, _) in zip(ids, chosen)]
                results[f"{name}_slots_{slots}_s"] = verdict_seconds(bench, uploads)
                log(json.dumps(results))
                for file_id in ids:
                    bench.drop_file_objects(file_id)
    for path, _ in sources:
        path.unlink()
    alone = results[f"alone_slots_{count}_s"]
    results["together_vs_alone"] = round(results[f"together_slots_{count}_s"] / alone, 2)
    results["one_slot_vs_alone"] = round(results["together_slots_1_s"] / alone, 2)
    return results


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def lambda_projection(report: dict[str, Any], hash_gib_s: float, budget_s: float) -> list[dict]:
    """Job runs and hours on Lambda for 200 GB and 5 TiB, from measured rates.

    Hashing at ``hash_gib_s`` (the validation's read+hash rate); the assembly and the staging
    copy at the rate of a multipart ``UploadPartCopy`` -- the "before" build's staging, which
    copied in parts (the "after" build stages files up to 5 GiB with one CopyObject, which RGW
    serves as a metadata copy: not the rate of a 200 GB copy).
    The hashing and the assembly run side by side in the same runs; with segments both follow
    the upload (as long as the upload is slower than either), so after the last byte only its
    last segment is left: hashed, then copied (an upper bound: they overlap too).
    """
    sys.path.insert(0, str(PROJECT_DIR))
    from ucs_lambda.domain.parts import part_size_for
    from ucs_lambda.domain.segments import SegmentLayout

    copy_mib_s = median([r["staging_mib_s"] for r in report["rows"] if r["build"] == "before"])
    copy_gib_s = copy_mib_s / 1024
    rows = []
    for name, size in (("200 GB", 200 * 10**9), ("5 TiB", 5 * 1024 * GIB)):
        layout = SegmentLayout.plan(size, part_size_for(size), 128 * MIB, 64 * MIB)
        segment = layout.span(1)[1]
        hash_s, copy_s = size / GIB / hash_gib_s, size / GIB / copy_gib_s
        runs = max(math.ceil(hash_s / budget_s), math.ceil(copy_s / budget_s))
        tail_s = segment / GIB / hash_gib_s + segment / GIB / copy_gib_s
        rows.append(
            {
                "file": name,
                "segments": layout.segment_count,
                "segment_mib": round(segment / MIB),
                "hash_gib_s": round(hash_gib_s, 3),
                "copy_gib_s": round(copy_gib_s, 3),
                "validation_hours": round(hash_s / 3600, 2),
                "assembly_hours": round(copy_s / 3600, 2),
                "validation_and_assembly_runs": runs,
                "staging_hours": round(copy_s / 3600, 2),
                "staging_runs": math.ceil(copy_s / budget_s),
                "after_last_byte_s": round(tail_s, 1),
                "after_last_byte_before_s": round(hash_s + copy_s, 1),
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=size_arg, default=4 * GIB)
    parser.add_argument("--link-mbit", type=int, default=800, help="0: no link")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--before-rev", default="1daba9a", help="'' to leave the before build out")
    parser.add_argument("--concurrent", default="", help="e.g. 4x512M (current build only)")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--project",
        type=Path,
        help="add the Lambda projection to this report (from its staging rate and "
        "--hash-gib-s) and exit",
    )
    parser.add_argument("--hash-gib-s", type=float, help="measured read+hash rate (validate_bench)")
    parser.add_argument("--budget-seconds", type=float, default=600.0)
    args = parser.parse_args()
    if args.project:
        report = json.loads(args.project.read_text())
        report["projection"] = lambda_projection(report, args.hash_gib_s, args.budget_seconds)
        report["projection_basis"] = {
            "hash_gib_s": args.hash_gib_s,
            "budget_seconds": args.budget_seconds,
        }
        args.project.write_text(json.dumps(report, indent=2))
        print(json.dumps(report["projection"], indent=2))
        return 0

    work = args.work_dir / "wait-bench"
    work.mkdir(parents=True, exist_ok=True)
    current = GhgaCli("ghga-cli", str(Path(sys.executable).parent / "ghga-cli"), True)
    builds: list[tuple[str, Path, GhgaCli]] = []
    if args.before_rev:
        before_src, before_cli = build_before(args.before_rev)
        builds.append(("before", before_src, before_cli))
    builds.append(("after", PROJECT_DIR, current))
    out: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": f"{platform.node()} {os.cpu_count()} cores, {platform.platform()}",
        "load_at_start": load(),
        "size": args.size,
        "link_mbit": args.link_mbit,
        "rows": [],
    }
    source, md5 = make_source(work, args.size)
    for label, project, cli in builds:
        log(f"{label}: stack of {project}")
        with stack_of(project, work / f"stack-{label}", {}) as stack:
            ports = [urlsplit(stack["ucs_url"]).port, urlsplit(stack["aws_endpoint_url"]).port]
            link = netlink.shaped_link(args.link_mbit, ports) if args.link_mbit else None
            with link if link is not None else contextlib.nullcontext([]) as prefix:
                bench = Bench(stack, "ceph", work, [cli], list(prefix))
                for run in range(args.runs):
                    wait_for_ceph_space(4 * args.size + GIB)
                    row = {"build": label, "run": run + 1, **one_run(bench, cli, source, md5, work)}
                    log(json.dumps(row))
                    out["rows"].append(row)
                    if args.out:
                        args.out.write_text(json.dumps(out, indent=2))
    source.unlink()
    if args.concurrent:
        count, size = args.concurrent.split("x")
        out["concurrent"] = concurrent_validation(work, current, int(count), size_arg(size))
        log(json.dumps(out["concurrent"]))
    out["load_at_end"] = load()
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
