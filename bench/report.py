"""Turn results.json into RESULTS.md and results.png (run in bench/.venv).

    bench/.venv/bin/python bench/report.py [--out-dir DIR]    (default: bench/)

Reads DIR/results.json (bench/suite.py writes it), DIR/wait-*.json (bench/wait_bench.py) and
DIR/api-latency*.json (bench/api_latency_bench.py) and writes DIR/RESULTS.md and DIR/results.png;
bench/NOTES.md is appended to RESULTS.md as it is. Every section of results.json is optional, so
older results (without the before/after, part-size, batch or validation sections) still render.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MIB = 1 << 20
GHGA = "ghga-cli"
BEFORE = "ghga-cli-before"
LABEL = {
    GHGA: "ghga-cli",
    BEFORE: "ghga-cli (before)",
    "curl": "curl --parallel (ceiling)",
    "aws": "aws s3 cp",
    "boto3": "boto3/s3transfer",
    "crt": "AWS CRT",
    "s5cmd": "s5cmd",
    "rclone": "rclone",
}
MAX_RSS_MIB = 150  # issue 14: upload peak RSS with 256 MiB parts


def size_label(n: int) -> str:
    return f"{n / (1 << 30):g} GiB" if n >= 1 << 30 else f"{n / MIB:g} MiB"


def is_ghga(row: dict) -> bool:
    return row["client"] in (GHGA, BEFORE)


def name(row: dict) -> str:
    base = LABEL.get(row["client"], row["client"])
    if row["client"] == BEFORE:
        return base
    if row["client"] == GHGA and row.get("variant") in ("part-md5", "no-part-md5"):
        return f"{base} --{row['variant']} (8 conn.)"
    if row["client"] in (GHGA, "curl"):
        return base + " (8 conn.)"
    return base + (" -p 8" if row["variant"] == "p8" else " (defaults)")


def build_name(row: dict) -> str:
    """ghga-cli's build (and variant) without a connection count: for tables where it varies."""
    base = LABEL.get(row["client"], row["client"])
    variant = row.get("variant")
    return base + (f" --{variant}" if variant in ("part-md5", "no-part-md5") else "")


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def cell(value: Any) -> str:
    return "-" if value is None else str(value)


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("**met**" if ok else "**not met**")


def table(headers: list[str], rows: Iterable[list[Any]], align: str = "") -> list[str]:
    """A Markdown table; ``align`` has one letter per column: l (left) or r (right, default)."""
    marks = ["---" if (align[i : i + 1] or "r") == "l" else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


# ---------------------------------------------------------------------------- transfers
def find(group: list[dict], client: str, variant: str = "default") -> dict | None:
    return next((r for r in group if r["client"] == client and r["variant"] == variant), None)


def best_other(group: list[dict], defaults_only: bool) -> dict | None:
    """The fastest client that is neither ghga-cli nor curl (with its defaults, if asked)."""
    others = [
        r
        for r in group
        if not is_ghga(r)
        and r["client"] != "curl"
        and (r["variant"] == "default" or not defaults_only)
    ]
    return max(others, key=lambda r: r["mb_per_s"], default=None)


def transfer_groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r.get("backend", "?"), r["bytes"], r["direction"]), []).append(r)
    return groups


def transfer_columns(direction: str) -> list[tuple[str, Callable[[dict], Any]]]:
    columns: list[tuple[str, Callable[[dict], Any]]] = [
        ("MB/s", lambda r: r["mb_per_s"]),
        ("s", lambda r: r["seconds"]),
        ("CPU s/GiB", lambda r: r["cpu_s_per_gib"]),
        ("peak RSS MiB", lambda r: r["peak_rss_mib"]),
        ("transfer s", lambda r: r.get("transfer_s")),
    ]
    if direction == "download":
        columns += [
            ("tail s (wall - transfer)", lambda r: r.get("tail_s")),
            ("hash tail s", lambda r: r.get("hash_tail_s")),
            ("checksum", lambda r: r.get("checksum_type")),
        ]
    columns.append(
        (
            "runs (MB/s each)",
            lambda r: (
                f"{r.get('runs', 1)} ({', '.join(str(x) for x in r.get('all_mb_per_s', []))})"
            ),
        )
    )
    return columns


def ratio_lines(group: list[dict], direction: str) -> list[str]:
    """What each ghga-cli row is relative to curl, the best other client and the old build."""
    curl = find(group, "curl", "p8")
    best_default = best_other(group, defaults_only=True)
    best_any = best_other(group, defaults_only=False)
    s5cmd = find(group, "s5cmd")
    lines = []
    for row in (r for r in group if is_ghga(r)):
        parts = [f"{name(row)}: / curl **{ratio(row['mb_per_s'], curl and curl['mb_per_s'])}**"]
        if best_default:
            parts.append(
                f"/ best other with its defaults ({name(best_default)}) "
                f"**{ratio(row['mb_per_s'], best_default['mb_per_s'])}**"
            )
        if best_any and best_any is not best_default:
            parts.append(
                f"/ best other ({name(best_any)}) {ratio(row['mb_per_s'], best_any['mb_per_s'])}"
            )
        if direction == "download" and s5cmd:
            parts.append(f"/ s5cmd (unverified) **{ratio(row['mb_per_s'], s5cmd['mb_per_s'])}**")
        lines.append("- " + "; ".join(parts))
    new, old = find(group, GHGA), find(group, BEFORE)
    if new and old:
        lines.append(
            f"- after / before: MB/s **{ratio(new['mb_per_s'], old['mb_per_s'])}**, CPU s/GiB "
            f"{old['cpu_s_per_gib']} → {new['cpu_s_per_gib']}, peak RSS {old['peak_rss_mib']} → "
            f"{new['peak_rss_mib']} MiB"
            + (
                f", tail {old.get('tail_s')} → {new.get('tail_s')} s"
                if direction == "download"
                else ""
            )
        )
    return lines


def transfer_tables(rows: list[dict]) -> list[str]:
    lines: list[str] = []
    for (backend, size, direction), group in transfer_groups(rows).items():
        columns = transfer_columns(direction)
        lines.append(f"\n#### {backend}, {direction}, {size_label(size)}\n")
        body = [
            [f"**{name(r)}**" if is_ghga(r) else name(r)] + [fn(r) for _, fn in columns]
            for r in sorted(group, key=lambda r: -r["mb_per_s"])
        ]
        lines += table(["client"] + [h for h, _ in columns], body, align="l")
        lines.append("")
        lines += ratio_lines(group, direction)
    return lines


def targets(data: dict) -> list[str]:
    """The numbers the open issues ask for, each against its target, from this run."""
    lines: list[str] = []
    groups = transfer_groups(data.get("transfers") or [])
    rows = []
    for (backend, size, direction), group in sorted(groups.items()):
        if backend != "ceph":
            continue
        new, old = find(group, GHGA), find(group, BEFORE)
        if not new:
            continue
        if direction == "upload":
            other = best_other(group, defaults_only=True)
            goal = "≥ every other client (defaults)"
        else:
            other = find(group, "s5cmd")
            goal = "≥ s5cmd (unverified)"
        checked = find(group, GHGA, "part-md5")
        rows.append(
            [
                f"{direction} {size_label(size)}",
                old and old["mb_per_s"],
                new["mb_per_s"],
                checked and checked["mb_per_s"],
                other and f"{name(other)} {other['mb_per_s']}",
                ratio(new["mb_per_s"], other and other["mb_per_s"]),
                f"{goal}: {verdict(bool(other) and new['mb_per_s'] >= other['mb_per_s'])}",
                old and old["cpu_s_per_gib"],
                new["cpu_s_per_gib"],
                checked and checked["cpu_s_per_gib"],
                (old.get("tail_s") if old else None) if direction == "download" else "",
                new.get("tail_s") if direction == "download" else "",
            ]
        )
    if rows:
        lines += [
            "",
            "### Ceph: before vs after, and the targets (issues 10, 14, 15)",
            "",
            "MB/s and CPU s/GiB are the medians of the transfer tables below. Upload target "
            "(issue 10): ghga-cli with its defaults at least as fast as every other client with "
            "its defaults; download target (issue 15): ghga-cli's verified download at least as "
            "fast as s5cmd's unverified one; upload CPU s/GiB not worse than before (issue 14). "
            "Tail = wall - transfer phase of the download.",
            "",
        ]
        lines += table(
            [
                "Ceph",
                "before MB/s",
                "after MB/s",
                "--part-md5 MB/s",
                "reference MB/s",
                "after / reference",
                "target",
                "before CPU s/GiB",
                "after CPU s/GiB",
                "--part-md5 CPU s/GiB",
                "before tail s",
                "after tail s",
            ],
            rows,
            align="lrrrlrl",
        )
    lines += partsize_targets(data.get("partsizes") or [])
    return lines


# ---------------------------------------------------------------------------- part sizes
def partsize_targets(rows: list[dict]) -> list[str]:
    new = {r["part_size_config"]: r for r in rows if r["client"] == GHGA}
    if not new:
        return []
    size = size_label(next(iter(new.values()))["bytes"])
    lines = ["", f"Part sizes (issue 14, current ghga-cli, {size} upload, default options):", ""]
    big, base = new.get(256 * MIB), new.get(16 * MIB)
    if big:
        lines.append(
            f"- 256 MiB parts: {big.get('connections')} connections (target 8: "
            f"{verdict(big.get('connections') == 8)}), peak RSS {big['peak_rss_mib']} MiB (target "
            f"≤ {MAX_RSS_MIB}: {verdict(big['peak_rss_mib'] <= MAX_RSS_MIB)})"
            + (
                f", {big['mb_per_s']} MB/s vs {base['mb_per_s']} with 16 MiB parts (target ≥: "
                f"{verdict(big['mb_per_s'] >= base['mb_per_s'])})"
                if base
                else ""
            )
        )
    rss = [r["peak_rss_mib"] for r in new.values()]
    if len(rss) > 1:
        spread = (max(rss) - min(rss)) / min(rss)
        lines.append(
            f"- peak RSS across part sizes {size_label(min(new))}..{size_label(max(new))}: "
            f"{min(rss)}-{max(rss)} MiB, spread {spread:.0%} "
            f"({'flat (within 20%)' if spread <= 0.2 else 'NOT flat'})"
        )
    return lines


def partsize_section(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = [
        "",
        f"## Part sizes (Ceph, {size_label(rows[0]['bytes'])} upload, default options)",
        "",
        "One Ceph stack per `UCS_PART_SIZE`; each ghga-cli build uploads the same file with its "
        "default options (`--wait-timeout 0`). 'parallel' is what the client reports in "
        "`--json` (the old build lowers it to stay under its `--max-memory`, default 1 GiB, and "
        "logs 'using N parallel transfers instead of 8'); one PUT per part, so the connections "
        "used are the smaller of 'parallel' and 'parts'; 'part size used' is what the UCS gave "
        "the upload.",
        "",
    ]
    body = [
        [
            size_label(r["part_size_config"]),
            f"**{build_name(r)}**" if r["client"] == GHGA else build_name(r),
            r["mb_per_s"],
            r["seconds"],
            r["cpu_s_per_gib"],
            r["peak_rss_mib"],
            r.get("parallel"),
            r.get("parts"),
            r.get("connections"),
            r.get("part_size") and size_label(r["part_size"]),
            f"{r.get('runs', 1)} ({', '.join(str(x) for x in r.get('all_mb_per_s', []))})",
        ]
        for r in sorted(rows, key=lambda r: (r["part_size_config"], r["client"]))
    ]
    lines += table(
        [
            "UCS_PART_SIZE",
            "client",
            "MB/s",
            "s",
            "CPU s/GiB",
            "peak RSS MiB",
            "parallel",
            "parts",
            "connections",
            "part size used",
            "runs (MB/s each)",
        ],
        body,
        align="ll",
    )
    return lines  # its targets are in the summary at the top (partsize_targets)


# ---------------------------------------------------------------------------- growth, scale
def growth_section(data: dict) -> list[str]:
    growth = list(data.get("growth") or [])
    seen = {(r["client"], r["direction"], r["bytes"]) for r in growth}
    for r in data.get("transfers") or []:  # the Ceph medians of the transfers section
        mine = r.get("backend") == "ceph" and is_ghga(r) and r["variant"] == "default"
        if mine and (r["client"], r["direction"], r["bytes"]) not in seen:
            growth.append(r)
    if not growth:
        return []
    lines = [
        "",
        "## Growth (ghga-cli on Ceph)",
        "",
        "Sizes from `--growth-sizes`: one run each, in one invocation; a size that the growth "
        "run lacks is taken from the medians of the transfer tables above.",
        "",
    ]
    body = [
        [
            build_name(r),
            r["direction"],
            size_label(r["bytes"]),
            r["seconds"],
            r["mb_per_s"],
            r["cpu_s"],
            r["cpu_s_per_gib"],
            r["peak_rss_mib"],
        ]
        for r in sorted(growth, key=lambda r: (r["client"], r["direction"], r["bytes"]))
    ]
    lines += table(
        ["client", "direction", "size", "s", "MB/s", "CPU s", "CPU s/GiB", "peak RSS MiB"],
        body,
        align="lll",
    )
    for client in (GHGA, BEFORE):
        for direction in ("upload", "download"):
            rss = [
                r["peak_rss_mib"]
                for r in growth
                if (r["client"], r["direction"]) == (client, direction)
            ]
            if len(rss) > 1:
                spread = (max(rss) - min(rss)) / min(rss)
                flat = "flat (within 20%)" if spread <= 0.2 else "NOT flat"
                lines.append(
                    f"\n{LABEL[client]} {direction}: peak RSS spread {spread:.0%} — {flat}."
                )
    return lines


def scale_section(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["", "## Scale (4 ghga-cli processes at once, Ceph)", ""]
    body = [
        [
            LABEL.get(r.get("client", GHGA)),
            r["direction"],
            r["clients"],
            size_label(r["bytes_each"]),
            r["wall_s"],
            r["aggregate_mb_per_s"],
            r["errors"],
        ]
        for r in rows
    ]
    return lines + table(
        ["client", "direction", "clients", "size each", "wall s", "aggregate MB/s", "errors"],
        body,
        align="ll",
    )


def link_section(link: dict | None) -> list[str]:
    if not link:
        return []
    lines = [
        "",
        f"## Bandwidth-limited link ({link['rate_mbit']} Mbit/s tbf, Ceph)",
        "",
        "Clients in a network namespace behind a veth pair shaped with `tc qdisc tbf` on both "
        "ends (bench/netlink.py); socat relays the 127.0.0.1 ports. One run per client.",
        "",
    ]
    body = [
        [
            r["direction"],
            name(r),
            r["mb_per_s"],
            f"{r['link_fraction']:.0%}",
            r["cpu_s_per_gib"],
            r["peak_rss_mib"],
        ]
        for r in sorted(link["rows"], key=lambda r: (r["direction"] != "upload", -r["mb_per_s"]))
    ]
    return lines + table(
        ["direction", "client", "MB/s", "fraction of link", "CPU s/GiB", "peak RSS MiB"],
        body,
        align="ll",
    )


# ---------------------------------------------------------------------------- batch
BATCH_METHOD = {
    "manifest": "one `--manifest` run",
    "loop": "shell loop of single-file runs",
    "s5cmd": "`s5cmd cp` (wildcard)",
    "aws": "`aws s3 cp --recursive`",
}


def batch_section(rows: list[dict], requests: list[dict]) -> list[str]:
    if not rows and not requests:
        return []
    lines = [
        "",
        "## Many files per run (issue 13)",
        "",
        "Wall time of one process tree per row (GNU time; a loop's CPU includes its children, "
        "its RSS is the largest child's). Each ghga-cli method uploads freshly registered files, "
        "so its download starts from accepted files that are not staged yet. s5cmd and aws "
        "write straight to the same S3 (bucket `bench`) with their defaults: no API, "
        "validation, staging or checksum — the ceiling, not a like-for-like row.",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["backend"], r["files"], r["bytes_each"], r["direction"]), []).append(r)
    for (backend, _files, _each, direction), group in groups.items():
        lines.append(f"\n#### {backend}, {group[0]['workload']}, {direction}\n")
        body = [
            [
                BATCH_METHOD.get(r["variant"], r["variant"]),
                LABEL.get(r["client"], r["client"]),
                r["seconds"],
                r["files_per_s"],
                r["mb_per_s"],
                r["cpu_s"],
                r["peak_rss_mib"],
            ]
            for r in sorted(group, key=lambda r: r["seconds"])
        ]
        lines += table(
            ["method", "client", "wall s", "files/s", "MB/s", "CPU s", "peak RSS MiB"],
            body,
            align="ll",
        )
        by = {(r["variant"], r["client"]): r for r in group}
        manifest = by.get(("manifest", GHGA))
        if manifest:
            lines.append("")
            lines += batch_ratios(manifest, by)
    included = {(r["variant"], r["direction"]): r.get("includes") for r in rows}
    if included:
        lines += ["", "What each row includes:", ""]
        lines += [
            f"- {BATCH_METHOD.get(m, m)}, {d}: {text}"
            for (m, d), text in sorted(included.items())
            if text
        ]
    return lines + request_section(requests)


def batch_ratios(manifest: dict, by: dict[tuple, dict]) -> list[str]:
    """The manifest run against the loops (speed-up) and against the direct tools (ceiling)."""
    lines = []
    for key, what in ((("loop", GHGA), "the loop"), (("loop", BEFORE), "the loop (before)")):
        if key in by:
            lines.append(
                f"- one manifest run is **{ratio(by[key]['seconds'], manifest['seconds'])}x** "
                f"as fast as {what} of single-file runs ({manifest['seconds']} s vs "
                f"{by[key]['seconds']} s)"
            )
    for key, what in ((("s5cmd", "s5cmd"), "s5cmd"), (("aws", "aws"), "aws s3 cp --recursive")):
        if key in by:
            lines.append(
                f"- it takes **{ratio(manifest['seconds'], by[key]['seconds'])}x** the time of "
                f"{what} straight to S3 (the ceiling: {by[key]['seconds']} s)"
            )
    return lines


def request_section(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = [
        "",
        "#### API requests of a batch (untimed, through tests/faultproxy.py as `http_proxy`)",
        "",
        "A separate run of the same commands with the proxy logging every request; API = "
        "requests to the UCS/DRS port, storage = presigned S3 requests. A loop makes about "
        "(files) x the single-file figures.",
        "",
    ]
    body = [
        [
            r["backend"],
            r["workload"],
            LABEL.get(r["client"], r["client"]),
            r["method"],
            r["direction"],
            r["files"],
            r["api_requests"],
            round(r["api_requests"] / max(1, r["files"]), 2),
            r["storage_requests"],
            ", ".join(f"{k} x{v}" for k, v in list(r["api_routes"].items())[:6]),
        ]
        for r in rows
    ]
    return lines + table(
        [
            "backend",
            "workload",
            "client",
            "run",
            "direction",
            "files",
            "API requests",
            "API per file",
            "storage requests",
            "API routes (most frequent)",
        ],
        body,
        align="lllll",
    )


# ---------------------------------------------------------------------------- validation
def validation_section(report: dict | None) -> list[str]:
    """bench/validate_bench.py's report: throughput rows and the Lambda projection."""
    if not report:
        return []
    lines = [
        "",
        "## Server-side validation throughput (issue 10, bench/validate_bench.py)",
        "",
        f"`{report.get('command', 'bench/validate_bench.py')}` in {report.get('duration_s', '?')} s"
        f"; load before {report.get('loadavg_before', '?')}, after "
        f"{report.get('loadavg_after', '?')}; budget {report.get('budget_seconds', '?')} s per "
        f"Lambda run, job memory {report.get('job_memory_mb', '?')} MB.",
        "",
    ]
    results = report.get("results") or []
    lines += table(
        ["S3", "size", "read+hash GiB/s", "CPU s/GiB", "accept copy s", "job runs", "total s"],
        (
            [
                r.get("s3"),
                r.get("size") and size_label(r["size"]),
                r.get("hash_gib_s"),
                r.get("hash_cpu_s_per_gib"),
                r.get("copy_s"),
                r.get("runs"),
                r.get("total_s"),
            ]
            for r in results
        ),
        align="ll",
    )
    projections = [(r, p) for r in results for p in r.get("projection") or []]
    if projections:
        lines += ["", "Projection from the measured figures:", ""]
        lines += table(
            ["from", "basis", "file", "GiB/s", "Lambda runs", "hours"],
            (
                [
                    f"{r.get('s3')} {size_label(r['size']) if r.get('size') else ''}",
                    p.get("basis"),
                    p.get("file"),
                    p.get("gib_s"),
                    p.get("lambda_runs"),
                    p.get("hours"),
                ]
                for r, p in projections
            ),
            align="lll",
        )
    return lines


# ---------------------------------------------------------------------------- latency, md5
def latency_section(lat: dict | None) -> list[str]:
    if not lat:
        return []
    lines = [
        "",
        f"## UCS/DRS3 API latency ({lat['clients']} concurrent clients x {lat['rounds']} "
        "rounds, local stack: chalice local + single-threaded moto DynamoDB, S3 on Ceph)",
        "",
    ]
    body = [
        [op, v["count"], v["errors"], v["p50_ms"], v["p90_ms"], v["p99_ms"], v["max_ms"]]
        for op, v in lat["operations"].items()
    ]
    return lines + table(
        ["operation", "requests", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms"], body, "l"
    )


def md5_section(m: dict | None) -> list[str]:
    if not m:
        return []
    lines = [
        "",
        "## What the checksums cost (bench/md5_cost.py, Ceph)",
        "",
        f"`hashlib.md5` here: {m['md5_cpu_s_per_gib']} CPU s per GiB on one core. curl "
        f"--parallel 8 on {size_label(m['size_bytes'])}, median of {m['runs']}, alone and "
        "while a second process does ghga-cli's hashing of the same bytes (2 MD5 passes "
        "for an upload, 1 read-back pass for a download). Load "
        f"{', '.join(f'{x:.1f}' for x in m['load_start'])} at the start.",
        "",
    ]
    body = [
        [
            direction,
            v["curl_alone_mb_per_s"],
            v["curl_with_md5_mb_per_s"],
            v["curl_and_md5_done_mb_per_s"],
        ]
        for direction, v in m["curl"].items()
    ]
    return lines + table(
        ["direction", "curl alone MB/s", "curl with MD5 beside it MB/s", "both done MB/s"],
        body,
        "l",
    )


# ---------------------------------------------------------------------------- page, plot
def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data.get("transfers") or []
    panels = sorted(
        {(r["backend"], r["bytes"], r["direction"]) for r in rows},
        key=lambda k: (k[0], k[1], k[2] != "upload"),
    )
    if not panels:
        return
    cols = 2
    nrows = (len(panels) + 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(13, 3.4 * nrows), squeeze=False)
    colour = {GHGA: "tab:red", BEFORE: "tab:orange", "curl": "tab:gray"}
    for ax, key in zip(axes.flat, panels):
        group = sorted(
            (r for r in rows if (r["backend"], r["bytes"], r["direction"]) == key),
            key=lambda r: r["mb_per_s"],
        )
        colors = [colour.get(r["client"], "tab:blue") for r in group]
        ax.barh([name(r) for r in group], [r["mb_per_s"] for r in group], color=colors)
        for i, r in enumerate(group):
            ax.text(r["mb_per_s"], i, f" {r['mb_per_s']:.0f}", va="center", fontsize=7)
        ax.set_title(f"{key[0]}: {key[2]} {size_label(key[1])} (MB/s, median)", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"ghga-cli vs other S3 clients — {data['date']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


METHOD = (
    "Every client runs as its own process; time is that process's wall time (start-up and "
    "multipart create/complete included), CPU is user+system seconds and peak RSS is "
    "`ru_maxrss`, both read by GNU `/usr/bin/time` (`wait4`) for exactly that process (not "
    "`os.wait4` on a child of the Python driver: Linux carries the parent's RSS high-water "
    "mark across fork+exec, which put ~88 MiB under every client). MB/s = 10^6 bytes/s. "
    "ghga-cli goes through the UCS/DRS3 API (`--wait-timeout 0`: validation and staging "
    "are server-side copies, not counted; the file is staged before the download); all other "
    "clients talk to the same S3 server directly. 'ghga-cli (before)' is the client of an "
    "earlier commit (`--baseline-cli`, see Versions) run in the same rows against the same "
    "server; '--part-md5' is the current client with per-part checking on (its default is "
    "off since the server reads every byte back; the before build always checked). Download "
    "rows: 'transfer s' is the client's own `--json` `seconds`, 'tail' = wall - transfer, "
    "'hash tail' the client's `hash_tail_seconds` (last byte to the end of the in-order hash). "
    "curl is `curl --parallel --parallel-max 8` "
    "on presigned part URLs (16 MiB parts, pre-split files) and 32 MiB ranges: the ceiling "
    "of the transport. 'defaults' = the tool's own settings; '-p 8' = 8 parallel "
    "connections and 16 MiB parts like ghga-cli (aws: `max_concurrent_requests`/"
    "`multipart_chunksize`; boto3: `TransferConfig`; CRT: `max_active_connections_override`, "
    "`part_size`; s5cmd: `--concurrency --part-size`; rclone: `--s3-upload-concurrency "
    "--s3-chunk-size --multi-thread-streams`). Each figure is the median of the runs shown; "
    "all runs of a table interleave the clients in one session."
)


def header(data: dict) -> list[str]:
    lines = [
        "# ghga-cli benchmark results",
        "",
        f"Generated by bench/suite.py (`{data['command']}`), on {data['date']}, "
        f"in {data.get('duration_s', '?')} s. Raw samples: `bench/results.json`; "
        "plot: `bench/results.png`. Do not edit by hand: notes live in `bench/NOTES.md`.",
        "",
        "![results](results.png)",
        "",
        "## Machine and load",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in data["machine"].items()]
    lines += ["- load averages (1/5/15 min, `/proc/loadavg`) when each step started:"]
    lines += [f"  - {entry}" for entry in data["loads"]]
    for extra in data.get("supplements", []):
        lines += [
            f"- re-run of {', '.join(extra['sections'])} (replaces those rows of the run "
            f"above): `{extra['command']}` on {extra['date']} in {extra['duration_s']} s, "
            f"on {extra.get('machine', {}).get('cpu', '?')} "
            f"({extra.get('machine', {}).get('kernel', '?')}); load averages:"
        ]
        lines += [f"  - {entry}" for entry in extra["loads"]]
    lines += ["", "## Versions", ""]
    lines += [f"- {k}: `{v}`" for k, v in data["versions"].items()]
    return [*lines, "", "## Method", "", METHOD]


# ---------------------------------------------------------------------------- waiting
def _median(values: list[float]) -> float | None:
    ordered = sorted(v for v in values if v is not None)
    if not ordered:
        return None
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def wait_section(reports: list[dict]) -> list[str]:
    """bench/wait_bench.py's reports (bench/wait-*.json): what the user waits for, before
    and after issue 18, with the issue's targets, the concurrent validations and the Lambda
    projection."""
    if not reports:
        return []
    lines = [
        "",
        "## What the user waits for (issue 18, bench/wait_bench.py)",
        "",
        "Whole command (wall clock: upload until `accepted`, download of an accepted, unstaged "
        "file until the verified file) against its transfer phase (the client's `--json` "
        "`seconds`); staging alone timed from the first DRS request to the 200 "
        "(permanent -> outbox on the RGW). 'before' is the server and client of the commit "
        "named in the command, 'after' this checkout, each with its own stack on the same RGW "
        "in the same run. Medians of the runs shown; ratios of medians.",
    ]
    for report in reports:
        link = report.get("link_mbit")
        where = f"behind a {link} Mbit/s link (bench/netlink.py)" if link else "no link"
        lines += [
            "",
            f"### {size_label(report['size'])} on Ceph RGW, {where}",
            "",
            f"`{report['command']}` on {report['date']}, {report['machine']}; load "
            f"(1/5/15 min) at start {report.get('load_at_start')}, at end "
            f"{report.get('load_at_end')}.",
            "",
        ]
        rows = report.get("rows") or []
        lines += table(
            [
                "build",
                "run",
                "upload transfer s",
                "upload whole s",
                "ratio",
                "download transfer s",
                "download whole s",
                "ratio",
                "staging s",
                "staging MiB/s",
                "load",
            ],
            (
                [
                    r["build"],
                    r["run"],
                    r["upload_transfer_s"],
                    r["upload_whole_s"],
                    r["upload_ratio"],
                    r["download_transfer_s"],
                    r["download_whole_s"],
                    r["download_ratio"],
                    r["staging_s"],
                    r["staging_mib_s"],
                    r.get("load"),
                ]
                for r in rows
            ),
            align="l",
        )
        med = {
            build: {
                key: _median([r[key] for r in rows if r["build"] == build])
                for key in (
                    "upload_transfer_s",
                    "upload_whole_s",
                    "download_transfer_s",
                    "download_whole_s",
                    "staging_mib_s",
                )
            }
            for build in ("before", "after")
            if any(r["build"] == build for r in rows)
        }
        after, before = med.get("after"), med.get("before")
        if after:
            up = after["upload_whole_s"] / after["upload_transfer_s"]
            down = after["download_whole_s"] / after["download_transfer_s"]
            lines += [
                "",
                f"- upload, start to `accepted` / transfer phase: **{up:.2f}** (target <= 1.10: "
                f"{verdict(up <= 1.10)})"
                + (
                    f"; before {before['upload_whole_s'] / before['upload_transfer_s']:.2f}"
                    if before
                    else ""
                ),
                f"- download of an unstaged file, whole / transfer phase: **{down:.2f}** "
                f"(target <= 1.30: {verdict(down <= 1.30)})"
                + (
                    f"; before {before['download_whole_s'] / before['download_transfer_s']:.2f}"
                    if before
                    else ""
                ),
            ]
            if before:
                slower = after["upload_transfer_s"] / before["upload_transfer_s"]
                lines += [
                    f"- upload transfer phase after / before: {slower:.3f} (target <= 1.05: "
                    f"{verdict(slower <= 1.05)})",
                    f"- whole upload after / before: "
                    f"{ratio(after['upload_whole_s'], before['upload_whole_s'])}; whole download "
                    f"after / before: "
                    f"{ratio(after['download_whole_s'], before['download_whole_s'])}",
                    f"- staging throughput: before {before['staging_mib_s']:.0f} MiB/s, after "
                    f"{after['staging_mib_s']:.0f} MiB/s",
                ]
        concurrent = report.get("concurrent")
        if concurrent:
            lines += ["", "Validations of uploads confirmed together (reference client):", ""]
            lines += [f"- `{k}`: {v}" for k, v in concurrent.items()]
        projection = report.get("projection")
        if projection:
            basis = report.get("projection_basis", {})
            lines += [
                "",
                f"Lambda projection (budget {basis.get('budget_seconds')} s per run; hashing at "
                f"the measured {basis.get('hash_gib_s')} GiB/s (bench/validate_bench.py, 1 GiB "
                "on this RGW), assembly and staging at the multipart copy rate of the before "
                "build's staging in this run; 'after last byte' = the last segment hashed, then "
                "copied, against the whole file hashed, then copied before issue 18):",
                "",
            ]
            lines += table(
                [
                    "file",
                    "segments",
                    "segment MiB",
                    "validation h",
                    "assembly h",
                    "validation+assembly runs",
                    "staging h",
                    "staging runs",
                    "after last byte s",
                    "before issue 18 s",
                ],
                (
                    [
                        p["file"],
                        p["segments"],
                        p["segment_mib"],
                        p["validation_hours"],
                        p["assembly_hours"],
                        p["validation_and_assembly_runs"],
                        p["staging_hours"],
                        p["staging_runs"],
                        p["after_last_byte_s"],
                        p["after_last_byte_before_s"],
                    ]
                    for p in projection
                ),
                align="l",
            )
    return lines


# ---------------------------------------------------------------------------- API latency
def api_latency_section(report: dict | None) -> list[str]:
    """bench/api_latency_bench.py's report (bench/api-latency.json): ghga-cli with the API
    direct and behind a delaying relay, the storage reached directly in both."""
    if not report:
        return []
    delay, med = report["delay_s"], report.get("medians") or {}
    lines = [
        "",
        "## Does API latency slow the bytes? (bench/api_latency_bench.py)"
        + (f" -- server: {', '.join(report['server_env'])}" if report.get("server_env") else ""),
        "",
        f"{size_label(report['size'])} on Ceph RGW; 'delayed': the UCS/DRS API behind "
        f"bench/delayrelay.py, +{delay} s on every API round trip, presigned S3 URLs direct. "
        f"Upload until `accepted`, download of the accepted file ({report['download_from']}); "
        "transfer = the `--json` `seconds`, whole = its `total_seconds`; round trips = API "
        "answers the relay delayed. Direct and delayed interleave on fresh files; medians of "
        f"{report['runs']} runs, ratios of medians. `{report['command']}` on {report['date']}, "
        f"{report['host']}, commit {report['commit']}"
        + (" (with uncommitted changes)" if report.get("dirty") else "")
        + (
            f"; rows marked ghga-cli-before: the client of commit {report['baseline']} in the "
            "same runs"
            if report.get("baseline")
            else ""
        )
        + f"; load (1/5/15 min) before {report['load_before']}, after "
        f"{report.get('load_after')}.",
        "",
    ]
    lines += table(
        [
            "",
            "transfer direct s",
            "delayed s",
            "ratio",
            "whole direct s",
            "delayed s",
            "ratio",
            "delayed - direct s",
            "round trips",
            "round trips x delay s",
        ],
        (
            [
                direction,
                m["direct"]["transfer_s"],
                m["delayed"]["transfer_s"],
                m["transfer_ratio"],
                m["direct"]["total_s"],
                m["delayed"]["total_s"],
                m["total_ratio"],
                m["extra_total_s"],
                m["delayed"]["api_round_trips"],
                None
                if m["delayed"]["api_round_trips"] is None
                else round(m["delayed"]["api_round_trips"] * delay, 1),
            ]
            for direction, m in med.items()
        ),
        align="l",
    )
    lines += ["", "Runs:", ""]
    lines += table(
        ["run", "client", "direction", "API", "transfer s", "whole s", "round trips", "load"],
        (
            [
                r["run"],
                r.get("cli", "ghga-cli"),
                r["direction"],
                r["api"],
                r["transfer_s"],
                r["total_s"],
                r["api_round_trips"],
                r.get("load"),
            ]
            for r in report.get("rows") or []
        ),
        align="lll",
    )
    return lines


def render(
    data: dict,
    notes: str | None,
    waits: list[dict] | None = None,
    api_latency: list[dict] | None = None,
) -> str:
    for r in data.get("transfers") or []:
        r.setdefault("backend", "?")
    lines = header(data)
    lines += targets(data)
    lines += ["", "## Transfers"]
    lines += transfer_tables(data.get("transfers") or [])
    lines += partsize_section(data.get("partsizes") or [])
    lines += batch_section(data.get("batch") or [], data.get("batch_requests") or [])
    lines += validation_section(data.get("validation"))
    lines += wait_section(waits or [])
    for latency in api_latency or []:
        lines += api_latency_section(latency)
    lines += growth_section(data)
    lines += scale_section(data.get("scale") or [])
    lines += link_section(data.get("link"))
    lines += latency_section(data.get("latency"))
    lines += md5_section(data.get("md5_cost"))
    lines += ["", "## Errors and missing rows", ""]
    problems = [f"- {e['what']}: `{e['error'][:300]}`" for e in data.get("errors") or []]
    problems += [f"- {note}" for note in data.get("notes") or []]
    lines += problems or ["- none"]
    if notes:
        lines += ["", notes.strip()]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=HERE, help="holds results.json")
    args = parser.parse_args()
    data = json.loads((args.out_dir / "results.json").read_text())
    notes_file = HERE / "NOTES.md"
    notes = notes_file.read_text() if notes_file.exists() else None
    waits = [json.loads(p.read_text()) for p in sorted(args.out_dir.glob("wait-*.json"))]
    api_latency = [
        json.loads(p.read_text()) for p in sorted(args.out_dir.glob("api-latency*.json"))
    ]
    (args.out_dir / "RESULTS.md").write_text(render(data, notes, waits, api_latency))
    plot(data, args.out_dir / "results.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
