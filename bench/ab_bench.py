"""Two ghga-cli builds, one stack, alternating order: is one faster than the other?

    .venv/bin/python bench/ab_bench.py --baseline-cli bench/.baseline-venv/bin/ghga-cli \\
        [--size 2G] [--rounds 4] [--server-env UCS_SEGMENT_SIZE=1099511627776] \\
        [--out bench/ab-upload.json]

``bench/suite.py`` runs the current build first in every round and the baseline after it (and
after other clients' runs), so a difference of a few percent between them can be the order:
the RGW's garbage collection of the previous round's objects, page cache, the server's own work.
This bench runs only the two builds, on Ceph RGW (``build/ceph-up.sh`` must be running) through
this checkout's local stack, in ABBA order (round 1: current, before; round 2: before, current;
...), each on a freshly registered file: an upload (``--wait-timeout 0``: exits once the
upload is confirmed; the server's verification is waited for untimed, so that no run shares
the machine with the previous file's verification), then, with ``--download``, a download of
the staged file. Per run: wall seconds, the transfer phase (``seconds`` of
``--json``), client CPU seconds (GNU time) and the load; medians per build and the ratios
current / before of the medians. Writes ``--out`` after every run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from api_latency_bench import ceph_running, git  # noqa: E402
from harness import (  # noqa: E402
    GIB,
    PROJECT_DIR,
    Bench,
    GhgaCli,
    ghga_clis,
    ghga_sample,
    load,
    log,
    make_source,
    wait_for_ceph_space,
)
from wait_bench import size_arg, stack_of  # noqa: E402

KEYS = ("seconds", "transfer_s", "mb_per_s", "cpu_s_per_gib")


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per (direction, build), and current / before of the medians."""
    out: dict[str, Any] = {}
    for direction in sorted({r["direction"] for r in rows}):
        entry: dict[str, Any] = {}
        for client in ("ghga-cli", "ghga-cli-before"):
            mine = [r for r in rows if r["direction"] == direction and r["client"] == client]
            entry[client] = {
                key: round(statistics.median(r[key] for r in mine if r.get(key) is not None), 3)
                for key in KEYS
                if any(r.get(key) is not None for r in mine)
            }
            entry[client]["runs"] = len(mine)
        now, before = entry["ghga-cli"], entry["ghga-cli-before"]
        entry["current_over_before"] = {
            key: round(now[key] / before[key], 3)
            for key in KEYS
            if now.get(key) and before.get(key)
        }
        out[direction] = entry
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=size_arg, default=2 * GIB, help="bytes, or e.g. 2G")
    parser.add_argument("--rounds", type=int, default=4, help="each build runs once per round")
    parser.add_argument("--download", action="store_true", help="also time downloads")
    parser.add_argument("--baseline-cli", type=Path, required=True)
    parser.add_argument(
        "--current-cli",
        type=Path,
        default=None,
        help="the current build to compare (default: .venv's, an *editable* install whose "
        "imports cost ~50-80 ms more than a regular one: build one with "
        "`bash bench/build_baseline.sh HEAD /tmp/head-venv` for a like-with-like start-up)",
    )
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, default=HERE / "ab-upload.json")
    args = parser.parse_args()
    if not ceph_running():
        raise SystemExit("no Ceph RGW answers: run `CEPH_BLOCK_SIZE=56G bash build/ceph-up.sh`")
    work = args.work_dir / "ab-bench"
    work.mkdir(parents=True, exist_ok=True)
    current, before = ghga_clis(args.baseline_cli)
    if args.current_cli is not None:
        current = GhgaCli("ghga-cli", str(args.current_cli.resolve()), current=True)
    out: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "host": f"{platform.node()} {os.cpu_count()} cores, {platform.platform()}",
        "commit": git("rev-parse", "--short", "HEAD"),
        "baseline": (args.baseline_cli.parent.parent / "BASELINE_REV").read_text().strip()[:7]
        if (args.baseline_cli.parent.parent / "BASELINE_REV").exists()
        else None,
        "current_cli": current.path,
        "baseline_cli": before.path,
        "size": args.size,
        "server_env": args.server_env,
        "load_before": load(),
        "rows": [],
    }
    source, md5 = make_source(work, args.size)
    target = work / "download"
    try:
        with contextlib.ExitStack() as context:
            server_env = dict(item.split("=", 1) for item in args.server_env)
            stack = context.enter_context(stack_of(PROJECT_DIR, work / "stack", server_env))
            bench = Bench(stack, "ceph", work, [current, before])
            for round_no in range(1, args.rounds + 1):
                order = [current, before] if round_no % 2 else [before, current]
                for cli in order:
                    wait_for_ceph_space(3 * args.size + GIB)
                    at_start = load()
                    result, file_id = bench.ghga_up(cli, source, md5)
                    row = ghga_sample("upload", cli, "default", args.size, result)
                    out["rows"].append({"round": round_no, "load": at_start, **row})
                    log(json.dumps(out["rows"][-1]))
                    # Untimed: the verdict, so that the server's work on this file is over
                    # before the next run and its objects can be deleted (Ceph fills up).
                    bench.wait_accepted(result["summary"]["upload_id"])
                    if args.download:
                        bench.wait_staged(file_id)
                        target.mkdir(exist_ok=True)
                        at_start = load()
                        result = bench.ghga_down(cli, file_id, target)
                        row = ghga_sample("download", cli, "default", args.size, result)
                        out["rows"].append({"round": round_no, "load": at_start, **row})
                        log(json.dumps(out["rows"][-1]))
                        for item in target.iterdir():
                            item.unlink()
                    bench.drop_file_objects(file_id)
                    out["summary"] = summarise(out["rows"])
                    args.out.write_text(json.dumps(out, indent=2) + "\n")
    finally:
        source.unlink(missing_ok=True)
    out["load_after"] = load()
    out["summary"] = summarise(out["rows"])
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
