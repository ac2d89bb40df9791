"""Does API latency slow the bytes? ghga-cli with the UCS/DRS API direct and behind a delay.

    .venv/bin/python bench/api_latency_bench.py [--size 1G] [--runs 3] [--delay 1.0] \\
        [--staged] [--out bench/api-latency.json]

Starts this checkout's local stack on the Ceph RGW of ``build/ceph-up.sh`` (which must be
running, as for bench/wait_bench.py) and a :class:`delayrelay.DelayRelay` in front of the API
only: the delayed runs give ghga-cli ``--api-url`` of the relay, which holds the first byte of
every API answer for ``--delay`` seconds (per request, also on kept-alive connections); the
presigned URLs still name the RGW, so the bytes go straight to storage as in the direct runs.

Per run, on freshly registered files (one per API mode), interleaved direct, delayed:
upload (``upload-by-id --json``, default options: until ``accepted``) of each, then download
(``download-by-id --json``) of each, from the accepted file -- unstaged, so the command asks
DRS to stage it and waits, or with ``--staged`` staged beforehand (then the command is the
client's own conversation and transfer). From each ``--json`` summary: ``seconds`` (the
transfer phase) and ``total_seconds`` (the whole command on the client's clock); the relay
counts the API round trips of each delayed command. Medians over the runs, and the ratios
delayed / direct of the medians for the transfer phase and the whole command, per direction.
If the API were off the byte path, the transfer ratio would be ~1.0 and the whole command would
grow by about (round trips on the critical path) x delay.

Writes ``--out`` (raw runs, medians, date, host, load before/after, git commit) after every
row and prints the section that ``bench/report.py`` renders into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402
from delayrelay import DelayRelay  # noqa: E402
from harness import (  # noqa: E402
    GIB,
    PROJECT_DIR,
    Bench,
    GhgaCli,
    ghga_clis,
    load,
    log,
    make_source,
    measured,
    wait_for_ceph_space,
)
from wait_bench import size_arg, stack_of  # noqa: E402

MODES = ("direct", "delayed")
DIRECTIONS = ("upload", "download")


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(PROJECT_DIR), *args], capture_output=True, text=True)
    return done.stdout.strip()


def ceph_running() -> bool:
    """The RGW of CEPH_DIR (default .ceph/) answers."""
    config = Path(os.environ.get("CEPH_DIR", PROJECT_DIR / ".ceph")) / "ceph.json"
    try:
        endpoint = json.loads(config.read_text())["endpoint_url"]
        with urllib.request.urlopen(endpoint, timeout=10) as response:
            response.read()
        return True
    except (OSError, ValueError, KeyError):
        return False


def run_cli(
    bench: Bench, cli: GhgaCli, api_url: str, relay: DelayRelay | None, args: list[str]
) -> dict[str, Any]:
    """One ghga-cli command against ``api_url``; its summary's times and the round trips."""
    before, load_at_start = (relay.round_trips if relay else 0), load()
    result = measured(
        [cli.path, args[0], "--api-url", api_url, *args[1:], "--json"], bench.cli_env()
    )
    summary = json.loads(result["stdout"])
    return {
        "status": summary.get("status"),
        "transfer_s": summary.get("seconds"),
        "total_s": summary.get("total_seconds"),
        "wall_s": round(result["wall_s"], 3),
        "api_round_trips": relay.round_trips - before if relay else None,
        "load": load_at_start,
    }


def one_run(
    bench: Bench, cli: GhgaCli, relay: DelayRelay, source: Path, md5: str, work: Path, staged: bool
) -> list[dict[str, Any]]:
    """Upload, then download, a fresh file per mode, interleaved direct, delayed (one client)."""
    api = {"direct": (bench.stack["ucs_url"], None), "delayed": (relay.url, relay)}
    ids = {mode: bench.register(source, md5) for mode in MODES}
    rows = []
    for mode in MODES:
        url, counter = api[mode]
        args = ["upload-by-id", "--file-id", ids[mode], "--file-path", str(source)]
        rows.append({"direction": "upload", "api": mode, **run_cli(bench, cli, url, counter, args)})
        assert rows[-1]["status"] == "accepted", rows[-1]
        log(json.dumps(rows[-1]))
    if staged:
        for mode in MODES:
            bench.wait_staged(ids[mode])
    target = work / "download"
    target.mkdir(exist_ok=True)
    for mode in MODES:
        url, counter = api[mode]
        args = ["download-by-id", "--file-id", ids[mode], "--output-dir", str(target)]
        rows.append(
            {"direction": "download", "api": mode, **run_cli(bench, cli, url, counter, args)}
        )
        assert rows[-1]["status"] == "downloaded", rows[-1]
        log(json.dumps(rows[-1]))
        for item in target.iterdir():
            item.unlink()
    for mode in MODES:
        bench.drop_file_objects(ids[mode])
    for row in rows:
        row["file_id"] = ids[row["api"]]
        row["cli"] = cli.key
    return rows


def medians(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per direction (and client, for the baseline's rows): medians per mode and the ratios
    delayed / direct of those medians."""
    out: dict[str, Any] = {}
    names = sorted({r.get("cli", "ghga-cli") for r in rows})
    for name in names:
        mine = [r for r in rows if r.get("cli", "ghga-cli") == name]
        for direction, entry in _medians_of(mine).items():
            out[direction if name == "ghga-cli" else f"{direction} ({name})"] = entry
    return out


def _medians_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for direction in DIRECTIONS:
        entry: dict[str, Any] = {}
        for mode in MODES:
            chosen = [r for r in rows if r["direction"] == direction and r["api"] == mode]
            entry[mode] = {}
            for key in ("transfer_s", "total_s", "api_round_trips"):
                values = [r[key] for r in chosen if r.get(key) is not None]
                entry[mode][key] = round(statistics.median(values), 3) if values else None
        direct, delayed = entry["direct"], entry["delayed"]
        for key, name in (("transfer_s", "transfer_ratio"), ("total_s", "total_ratio")):
            both = direct[key] and delayed[key]
            entry[name] = round(delayed[key] / direct[key], 3) if both else None
        both = direct["total_s"] is not None and delayed["total_s"] is not None
        entry["extra_total_s"] = round(delayed["total_s"] - direct["total_s"], 3) if both else None
        out[direction] = entry
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=size_arg, default=GIB, help="bytes, or e.g. 512M, 1G")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--delay", type=float, default=1.0, help="seconds per API round trip")
    parser.add_argument(
        "--staged", action="store_true", help="stage each file before its download is timed"
    )
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, default=HERE / "api-latency.json")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment of the stack's services, e.g. UCS_SEGMENT_SIZE=1099511627776 (one "
        "segment: the server verifies after the last byte, not beside the transfer)",
    )
    parser.add_argument(
        "--baseline-cli",
        type=Path,
        default=None,
        help="also run this ghga-cli build (bench/build_baseline.sh) in every run",
    )
    args = parser.parse_args()
    if not ceph_running():
        raise SystemExit("no Ceph RGW answers: run `CEPH_BLOCK_SIZE=56G bash build/ceph-up.sh`")

    work = args.work_dir / "api-latency-bench"
    work.mkdir(parents=True, exist_ok=True)
    clis = ghga_clis(args.baseline_cli)
    out: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "host": f"{platform.node()} {os.cpu_count()} cores, {platform.platform()}",
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "load_before": load(),
        "size": args.size,
        "delay_s": args.delay,
        "runs": args.runs,
        "download_from": "staged" if args.staged else "unstaged",
        "server_env": args.server_env,
        "baseline": (args.baseline_cli.parent.parent / "BASELINE_REV").read_text().strip()[:7]
        if args.baseline_cli and (args.baseline_cli.parent.parent / "BASELINE_REV").exists()
        else None,
        "rows": [],
    }
    source, md5 = make_source(work, args.size)
    try:
        with contextlib.ExitStack() as context:
            server_env = dict(item.split("=", 1) for item in args.server_env)
            stack = context.enter_context(stack_of(PROJECT_DIR, work / "stack", server_env))
            relay = context.enter_context(DelayRelay(stack["ucs_url"], args.delay))
            bench = Bench(stack, "ceph", work, clis)
            for run in range(args.runs):
                for cli in clis:
                    # two files alive at once: inbox, permanent and outbox copies of each
                    wait_for_ceph_space(2 * 3 * args.size + GIB)
                    rows = one_run(bench, cli, relay, source, md5, work, args.staged)
                    out["rows"] += [{"run": run + 1, **row} for row in rows]
                out["medians"] = medians(out["rows"])
                args.out.write_text(json.dumps(out, indent=2) + "\n")
    finally:
        source.unlink(missing_ok=True)
    out["load_after"] = load()
    out["medians"] = medians(out["rows"])
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print("\n".join(report.api_latency_section(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
