"""State backends side by side (issue 20): API latency and job throughput on DynamoDB/SQS vs
PostgreSQL.

    .venv/bin/python bench/backend_bench.py [--backends dynamodb,postgres] [--clients 16] \\
        [--rounds 8] [--files 200] [--file-size 1M] [--runs 1] [--out bench/backends.json]

For each backend of ``--backends``, a fresh local stack (``build/stack.py``'s ``launch``: S3 on
moto, ``db_backend=`` the backend; with ``postgres`` a database of its own on the server of
``build/pg-up.sh``, started if needed, and no DynamoDB/SQS) and, on it, in this order:

1. **stage**: one 8 MiB file uploaded with ghga-cli (``--wait-timeout 0``), then DRS polled
   until the object is staged (``stage_s``: confirmed -> DRS 200, i.e. the validation and
   staging jobs of one file through the backend's job queue);
2. **latency**: ``bench/ucs_latency.py`` with ``--clients`` threads x ``--rounds`` rounds
   (create-upload, batch-presign of 100 parts, get-object of the staged object);
3. **throughput**: ``--files`` files of ``--file-size`` (the same local files for every
   backend), registered with one ``register-files`` call, uploaded by one
   ``ghga-cli upload-by-id --manifest --json`` run with its default wait: the command exits
   once every upload is ``accepted`` (the worker read every byte back), so its wall time under
   GNU time is start -> every upload accepted. Every file's status is checked in the run's
   summary and again (untimed) through ``POST /batch/files``.

With ``--runs N`` (> 1) the whole sequence repeats, every other run in reverse backend order
(dynamodb, postgres; postgres, dynamodb; ...), each run on fresh stacks; the summary takes the
median of the runs per figure.

Writes ``--out`` after every step: the date, ``nproc``, CPU, kernel, the load averages before
and after (and at every step), the git commit, every run's results per backend, the medians
and the ratios ``postgres / dynamodb`` (times: > 1 means PostgreSQL is slower; files/s: > 1
means it is faster). Prints those ratios as a table at the end. bench/NOTES.md ("Issue 20:
state backends") says how to run it for the real numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from batch_bench import Workload, make_files, registered  # noqa: E402
from harness import (  # noqa: E402
    MIB,
    PROJECT_DIR,
    Bench,
    ghga_clis,
    load,
    log,
    make_source,
    measured,
    run_ucs_latency,
    stacklib,
)

BACKENDS = stacklib.DB_BACKENDS
STAGED_SIZE = 8 * MIB
LOOKUP_CHUNK = 500  # ids per POST /batch/files (the server's limit is UCS_MAX_BATCH_FILES)
OPERATIONS = ("create-upload", "batch-presign", "get-object")
PERCENTILES = ("p50_ms", "p90_ms", "p99_ms")


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(PROJECT_DIR), *args], capture_output=True, text=True)
    return done.stdout.strip()


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": int(nproc) if nproc.isdigit() else os.cpu_count(),
        "cpu": cpu,
        "host": platform.node(),
        "os": platform.platform(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def worker_slots() -> int:
    """Job slots of the stacks' worker (the same for both backends)."""
    sys.path.insert(0, str(PROJECT_DIR))
    from ucs_lambda.worker import concurrency_setting

    return concurrency_setting(None)


def backend_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in BACKENDS]
    if not names or unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"a comma-separated list of distinct names out of {', '.join(BACKENDS)}"
        )
    return names


def post_json(url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def upload_statuses(bench: Bench, ids: list[str]) -> dict[str, int]:
    """How many of ``ids`` the API reports in each current-upload status (untimed check)."""
    counts: dict[str, int] = {}
    url = f"{bench.stack['ucs_url']}/batch/files"
    for start in range(0, len(ids), LOOKUP_CHUNK):
        answer = post_json(url, bench.token, {"file_ids": ids[start : start + LOOKUP_CHUNK]})
        for entry in answer["files"]:
            upload = entry.get("current_upload") or {}
            status = upload.get("upload_status", f"http {entry.get('status')}")
            counts[status] = counts.get(status, 0) + 1
    return counts


def stage_one(bench: Bench, work: Path) -> tuple[str, dict[str, Any]]:
    """Upload one file (not waiting for validation), then wait until DRS serves it."""
    source, md5 = make_source(work, STAGED_SIZE)
    try:
        result, file_id = bench.ghga_up(bench.cli, source, md5)
    finally:
        source.unlink(missing_ok=True)
    waited = bench.wait_staged(file_id, timeout=600)
    return file_id, {
        "bytes": STAGED_SIZE,
        "upload_s": round(result["wall_s"], 3),
        "stage_s": round(waited, 3),
    }


def latency(
    stack: dict[str, Any], work: Path, drs_object: str, clients: int, rounds: int
) -> dict[str, Any]:
    """bench/ucs_latency.py against the stack; its JSON result (an error answer fails it)."""
    stack_file = work / "stack.json"
    stack_file.write_text(json.dumps(stack))
    proc = run_ucs_latency(stack_file, drs_object, clients, rounds)
    if proc.returncode:
        raise RuntimeError(f"ucs_latency.py failed ({proc.returncode}): {proc.stderr[-1500:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # An error answer is timed like any other: a backend with errors is not comparable.
    failed = {op: v["errors"] for op, v in result["operations"].items() if v["errors"]}
    if failed:
        raise RuntimeError(f"ucs_latency.py: requests answered with errors: {failed}")
    return result


def throughput(
    bench: Bench, workload: Workload, paths: list[Path], md5s: list[str]
) -> dict[str, Any]:
    """One ghga-cli manifest run of the workload, timed from start to every upload accepted."""
    files = registered(bench, "thr", paths, md5s)
    manifest = files.write_upload_manifest(bench.work / "throughput.tsv")
    args = [bench.cli.path, "upload-by-id", "--api-url", bench.stack["ucs_url"]]
    args += ["--manifest", str(manifest), "--json", "--quiet"]
    result = measured(args, bench.cli_env())
    summary = json.loads(result["stdout"])
    cli_statuses: dict[str, int] = {}
    for entry in summary.get("files", []):
        cli_statuses[entry.get("status")] = cli_statuses.get(entry.get("status"), 0) + 1
    api_statuses = upload_statuses(bench, files.ids)
    if cli_statuses != {"accepted": workload.count} or api_statuses != cli_statuses:
        raise RuntimeError(f"not every upload accepted: cli {cli_statuses}, api {api_statuses}")
    wall = result["wall_s"]
    return {
        "files": workload.count,
        "bytes_each": workload.size,
        "wall_s": round(wall, 3),
        "files_per_s": round(workload.count / wall, 2),
        "client_total_s": summary.get("total_seconds"),
        "client_cpu_s": round(result["cpu_s"], 2),
        "client_peak_rss_mib": round(result["peak_rss_mib"], 1),
        "statuses": api_statuses,
    }


def one_backend(
    backend: str, work: Path, args: argparse.Namespace, local: tuple[list[Path], list[str]]
) -> dict[str, Any]:
    """A fresh stack on ``backend`` and the three steps on it; their results."""
    out: dict[str, Any] = {"backend": backend, "loads": {"start": load()}}
    state_dir = work / f"stack-{backend}"
    log(f"{backend}: starting the stack")
    with stacklib.launch(state_dir, s3_backend="moto", db_backend=backend) as stack:
        bench = Bench(stack, "moto", work, ghga_clis(None))
        out["loads"]["stage"] = load()
        file_id, out["stage"] = stage_one(bench, work)
        log(f"{backend}: staged {file_id} in {out['stage']['stage_s']} s; latency, load {load()}")
        out["loads"]["latency"] = load()
        out["latency"] = latency(stack, work, file_id, args.clients, args.rounds)
        log(f"{backend}: throughput {args.workload.label}, load {load()}")
        out["loads"]["throughput"] = load()
        out["throughput"] = throughput(bench, args.workload, *local)
        log(f"{backend}: {out['throughput']['files_per_s']} files/s")
    out["loads"]["end"] = load()
    return out


# ---------------------------------------------------------------------------------- summary
def figures(result: dict[str, Any]) -> dict[str, float | None]:
    """The compared figures of one backend's run, flat: name -> value."""
    flat: dict[str, float | None] = {
        "stage: confirmed -> staged s": result["stage"]["stage_s"],
        "latency: wall s": result["latency"]["wall_s"],
    }
    for op in OPERATIONS:
        stats = result["latency"]["operations"][op]
        for key in PERCENTILES:
            flat[f"latency: {op} {key}"] = stats[key]
    flat["throughput: wall s"] = result["throughput"]["wall_s"]
    flat["throughput: files/s"] = result["throughput"]["files_per_s"]
    return flat


def summarise(runs: list[dict[str, Any]], backends: list[str]) -> dict[str, Any]:
    """Per backend the median of each figure over the runs; the ratios postgres/dynamodb."""
    medians: dict[str, dict[str, float | None]] = {}
    for backend in backends:
        per_run = [figures(run[backend]) for run in runs if backend in run]
        if not per_run:
            continue
        medians[backend] = {}
        for name in per_run[0]:
            values = [f[name] for f in per_run if f[name] is not None]
            medians[backend][name] = round(statistics.median(values), 3) if values else None
    ratios: dict[str, float | None] = {}
    if "dynamodb" in medians and "postgres" in medians:
        for name, base in medians["dynamodb"].items():
            other = medians["postgres"][name]
            ratios[name] = round(other / base, 3) if base and other is not None else None
    return {"medians": medians, "ratios_postgres_over_dynamodb": ratios}


def table(summary: dict[str, Any], backends: list[str]) -> str:
    medians = summary["medians"]
    ratios = summary["ratios_postgres_over_dynamodb"]
    names = list(next(iter(medians.values()))) if medians else []
    header = ["figure", *backends, "postgres/dynamodb"]
    rows = [header, ["---"] + ["---:"] * (len(header) - 1)]
    for name in names:
        cells = [name]
        cells += ["" if medians[b][name] is None else f"{medians[b][name]:g}" for b in backends]
        ratio = ratios.get(name)
        cells.append("" if ratio is None else f"{ratio:g}")
        rows.append(cells)
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", type=backend_list, default=list(BACKENDS))
    parser.add_argument("--clients", type=int, default=16, help="ucs_latency.py's threads")
    parser.add_argument("--rounds", type=int, default=8, help="ucs_latency.py's rounds")
    parser.add_argument("--files", type=int, default=200, help="files of the throughput run")
    parser.add_argument(
        "--file-size", default="1M", help="bytes of each such file (K/M/G, binary; default 1M)"
    )
    parser.add_argument("--runs", type=int, default=1, help="repeat, alternating the order")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, default=HERE / "backends.json")
    args = parser.parse_args()
    if min(args.clients, args.rounds, args.files, args.runs) < 1:
        parser.error("--clients, --rounds, --files and --runs must be at least 1")
    try:
        args.workload = Workload.parse(f"{args.files}x{args.file_size}")
    except ValueError as error:
        parser.error(str(error))

    work = args.work_dir / "backend-bench"
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": machine(),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "load_before": load(),
        "s3": "moto",
        "worker_slots": worker_slots(),
        "settings": {
            "clients": args.clients,
            "rounds": args.rounds,
            "files": args.files,
            "bytes_each": args.workload.size,
            "runs": args.runs,
            "backends": args.backends,
        },
        "runs": [],
    }

    def save() -> None:
        args.out.write_text(json.dumps(out, indent=2) + "\n")

    source_dir = work / "throughput-src"
    local = make_files(source_dir, args.workload)
    try:
        for number in range(args.runs):
            order = args.backends if number % 2 == 0 else args.backends[::-1]
            run: dict[str, Any] = {"order": order}
            out["runs"].append(run)
            for backend in order:
                run[backend] = one_backend(backend, work, args, local)
                out.update(summarise(out["runs"], args.backends))
                save()
    finally:
        for path in local[0]:
            path.unlink(missing_ok=True)
    out["load_after"] = load()
    save()
    print(
        f"# {out['date']}, {out['machine']['nproc']} CPUs, load before {out['load_before']}, "
        f"after {out['load_after']}; medians of {args.runs} run(s); raw: {args.out}"
    )
    print(table(out, args.backends))
    return 0


if __name__ == "__main__":
    sys.exit(main())
