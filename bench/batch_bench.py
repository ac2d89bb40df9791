"""Many files per run (issue 13): one ghga-cli manifest run vs a user's loop vs s5cmd and aws.

Run by bench/suite.py (``--sections batch``) on each backend, for each ``--batch-workloads``
entry (``COUNTxSIZE``, e.g. ``200x1M,16x64M``). Every row is one process tree under GNU time:
wall time, CPU (the loop's children included: bash waits for them) and the largest peak RSS.
What each row includes is in :data:`INCLUDES` (printed in RESULTS.md beside the table):

- ``manifest``: one ``ghga-cli upload-by-id --manifest`` run, then one ``download-by-id
  --manifest`` run of the same files. The upload waits for every file's verdict (default
  ``--wait-timeout``, not 0: the server reads every byte back before it accepts); the download
  starts from files that are accepted but not staged, so their staging overlaps the transfers.
- ``loop``: the shell loop a user writes today, one single-file ghga-cli run per file in
  series, each with its default wait (uploads wait for acceptance, downloads for staging); with
  ``--baseline-cli`` also with the "before" build.
- ``s5cmd`` / ``aws``: ``s5cmd cp 'dir/*'`` and ``aws s3 cp --recursive`` of the same files
  straight to the same S3 (bucket ``bench``), with their defaults: no API, validation, staging
  or checksum, so these rows are the ceiling, not a like-for-like comparison.

Each ghga-cli method gets its own freshly registered files (one ``register-files`` call), so
that every download starts from unstaged files. The request counts (:func:`count_requests`) are
a separate, untimed run through tests/helpers/faultproxy as ``http_proxy``.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness import (
    BENCH_VENV,
    BUCKET,
    MIB,
    PROJECT_DIR,
    Bench,
    GhgaCli,
    fresh_dir,
    load,
    log,
    measured,
    median_of,
    safe,
    sample,
    stacklib,
)

sys.path.insert(0, str(PROJECT_DIR))  # the test helpers: tests/helpers/faultproxy

from tests.helpers.faultproxy import FaultProxy


@dataclass(frozen=True)
class Workload:
    """``count`` files of ``size`` bytes each."""

    count: int
    size: int

    @classmethod
    def parse(cls, text: str) -> Workload:
        """``200x1M`` -> 200 files of 1 MiB (units K, M, G; binary)."""
        match = re.fullmatch(r"(\d+)x(\d+(?:\.\d+)?)([KMG])", text.strip(), re.IGNORECASE)
        if not match:
            raise ValueError(f"batch workload {text!r}: expected COUNTxSIZE, e.g. 200x1M")
        unit = {"K": 1 << 10, "M": MIB, "G": 1 << 30}[match.group(3).upper()]
        return cls(int(match.group(1)), int(float(match.group(2)) * unit))

    @property
    def label(self) -> str:
        return f"{self.count} x {self.size / MIB:g} MiB"


INCLUDES = {
    ("manifest", "upload"): "one run: start-up, manifest checks, upload of every file and the wait "
    "until every file is accepted (the server reads every byte back)",
    ("manifest", "download"): "one run from accepted, unstaged files: start-up, staging requested "
    "for all files at once (overlapping the transfers), transfer and checksum of every file",
    ("loop", "upload"): "one single-file run per file in series, each: start-up, API calls, "
    "upload and the wait for acceptance (default --wait-timeout, not 0)",
    ("loop", "download"): "one single-file run per file in series from accepted, unstaged files, "
    "each: start-up, wait for staging (DRS 202 + Retry-After), transfer and checksum",
    ("s5cmd", "upload"): "direct PUTs to the same S3, s5cmd defaults: no API, validation or "
    "checksum (ceiling)",
    ("s5cmd", "download"): "direct GETs from the same S3: no API, staging or checksum (ceiling)",
    ("aws", "upload"): "direct PUTs to the same S3, aws defaults: no API or validation (ceiling)",
    ("aws", "download"): "direct GETs from the same S3: no API, staging or checksum (ceiling)",
}

# A user's loop over a TSV of ``file_id<TAB>path``: the same file the manifest run reads.
LOOP = {
    "upload": r"""set -euo pipefail
while IFS=$'\t' read -r id path; do
  "$GHGA_CLI" upload-by-id --api-url "$API_URL" --file-id "$id" --file-path "$path" --quiet
done < "$LIST"
""",
    "download": r"""set -euo pipefail
while IFS=$'\t' read -r id path; do
  "$GHGA_CLI" download-by-id --api-url "$API_URL" --file-id "$id" --output-dir "$OUT" --quiet
done < "$LIST"
""",
}


# A workload's local files and their MD5s, written once and shared by every method.
Local = tuple[list[Path], list[str]]


@dataclass
class FileSet:
    """The local files of a workload and the ids one method registered them under."""

    paths: list[Path]
    ids: list[str]

    def write_upload_manifest(self, path: Path) -> Path:
        path.write_text("".join(f"{i}\t{p}\n" for i, p in zip(self.ids, self.paths)))
        return path

    def write_download_manifest(self, path: Path) -> Path:
        path.write_text("".join(f"{i}\n" for i in self.ids))
        return path


def make_files(directory: Path, workload: Workload) -> Local:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"f{n:04d}.bin" for n in range(workload.count)]
    log(f"batch: writing {workload.label} of random data")
    return paths, [stacklib.write_random_file(p, workload.size) for p in paths]


def registered(bench: Bench, method: str, paths: list[Path], md5s: list[str]) -> FileSet:
    tag = os.urandom(3).hex()
    ids = [f"b-{method}-{tag}-{n:04d}" for n in range(len(paths))]
    bench.register_many(zip(ids, paths, md5s))
    return FileSet(paths, ids)


def check_output(out_dir: Path, paths: list[Path]) -> bool:
    """Every file arrived under its own name with its size (ghga-cli checked the checksums)."""
    missing = [p.name for p in paths if not (out_dir / p.name).is_file()]
    wrong = [
        p.name
        for p in paths
        if p.name not in missing and (out_dir / p.name).stat().st_size != p.stat().st_size
    ]
    if missing or wrong:
        raise RuntimeError(f"download incomplete: missing {missing[:5]}, wrong size {wrong[:5]}")
    return True


def ghga_command(
    bench: Bench, cli: GhgaCli, method: str, direction: str, files: FileSet, out_dir: Path
) -> tuple[list[str], dict[str, str]]:
    """The command line (and environment) of one ghga-cli batch row."""
    work = bench.work
    api = bench.stack["ucs_url"]
    if method == "manifest":
        verb = "upload-by-id" if direction == "upload" else "download-by-id"
        manifest = (
            files.write_upload_manifest(work / "batch-up.tsv")
            if direction == "upload"
            else files.write_download_manifest(work / "batch-down.txt")
        )
        args = [cli.path, verb, "--api-url", api, "--manifest", str(manifest), "--quiet"]
        if direction == "download":
            args += ["--output-dir", str(out_dir)]
        return args, bench.cli_env()
    listing = files.write_upload_manifest(work / "batch-loop.tsv")
    env = bench.cli_env(GHGA_CLI=cli.path, API_URL=api, LIST=str(listing), OUT=str(out_dir))
    return ["bash", "-c", LOOP[direction]], env


def direct_command(
    bench: Bench, tool: str, direction: str, src: Path, prefix: str, out_dir: Path
) -> tuple[list[str], dict[str, str]]:
    """s5cmd (wildcards) or aws s3 cp --recursive, with the tool's defaults."""
    remote = f"s3://{BUCKET}/{prefix}"
    if tool == "s5cmd":
        pair = [f"{src}/*", remote] if direction == "upload" else [f"{remote}*", f"{out_dir}/"]
        return [str(BENCH_VENV / "s5cmd"), "--endpoint-url", bench.endpoint, "cp", *pair], (
            bench.s3_env
        )
    pair = [str(src), remote] if direction == "upload" else [remote, str(out_dir)]
    args = [str(BENCH_VENV / "aws"), "s3", "cp", "--recursive", *pair]
    return [*args, "--endpoint-url", bench.endpoint, "--no-progress", "--only-show-errors"], (
        bench.s3_env
    )


@dataclass
class Row:
    """Who one batch row measures: the ``client`` and ``variant`` (method) of its samples."""

    bench: Bench
    workload: Workload
    client: str
    method: str

    def sample(self, direction: str, result: dict) -> dict:
        workload = self.workload
        return sample(
            direction,
            self.client,
            self.method,
            workload.count * workload.size,
            result,
            backend=self.bench.backend,
            workload=workload.label,
            files=workload.count,
            bytes_each=workload.size,
            files_per_s=round(workload.count / result["wall_s"], 2),
            includes=INCLUDES[(self.method, direction)],
        )

    def run(
        self,
        command: Callable[[str], tuple[list[str], dict]],
        paths: list[Path],
        out_dir: Path,
        errors: list,
    ) -> list[dict]:
        """Upload, then (if it worked) download into ``out_dir``, checked; their samples."""
        tag = f"batch {self.bench.backend} {self.workload.label} {self.client} {self.method}"
        rows = []
        for direction in ("upload", "download"):
            args, env = command(direction)
            log(f"{tag} {direction}, load {load()}")
            result = safe(f"{tag} {direction}", errors, measured, args, env)
            if result is None:
                break
            if direction == "download" and not safe(
                f"{tag} output", errors, check_output, out_dir, paths
            ):
                break
            rows.append(self.sample(direction, result))
        return rows


def ghga_rows(
    bench: Bench, cli: GhgaCli, method: str, workload: Workload, local: Local, errors: list
) -> list[dict]:
    """Upload then download of freshly registered files by one ghga-cli method."""
    files = registered(bench, method, *local)
    out_dir = fresh_dir(bench.work / "batch-out")
    try:
        return Row(bench, workload, cli.key, method).run(
            lambda d: ghga_command(bench, cli, method, d, files, out_dir),
            files.paths,
            out_dir,
            errors,
        )
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        for file_id in files.ids:
            bench.drop_file_objects(file_id)


def direct_rows(
    bench: Bench, tool: str, workload: Workload, paths: list[Path], errors: list
) -> list[dict]:
    """The same files straight to S3 under a fresh prefix of the bench bucket, then back."""
    prefix = f"batch-{tool}-{os.urandom(3).hex()}/"
    out_dir = fresh_dir(bench.work / "batch-out")
    try:
        return Row(bench, workload, tool, tool).run(
            lambda d: direct_command(bench, tool, d, paths[0].parent, prefix, out_dir),
            paths,
            out_dir,
            errors,
        )
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        bench.delete_prefix(prefix)


def batch_round(
    bench: Bench, workload: Workload, local: Local, loop_clis: list[GhgaCli], errors: list
) -> list[dict]:
    """One run of every method on the workload's files (the loop with each of ``loop_clis``)."""
    rows = ghga_rows(bench, bench.cli, "manifest", workload, local, errors)
    for cli in loop_clis:
        rows += ghga_rows(bench, cli, "loop", workload, local, errors)
    for tool in ("s5cmd", "aws"):
        rows += direct_rows(bench, tool, workload, local[0], errors)
    return rows


def route_of(url: str, ids: set[str]) -> str:
    """``/uploads/<uuid>/parts`` -> ``/uploads/{id}/parts``: requests grouped by API route."""
    segments = []
    for segment in urlsplit(url).path.split("/"):
        if segment in ids or re.fullmatch(r"[0-9a-f-]{16,}|\d+", segment):
            segment = "{id}"
        segments.append(segment)
    return "/".join(segments)


def count_requests(bench: Bench, workload: Workload, local: Local, errors: list) -> list[dict]:
    """API and storage requests of the manifest runs and of one single-file run (untimed).

    The client runs with ``http_proxy`` pointing at tests/helpers/faultproxy (no faults), which logs
    every request; API requests are those to the UCS port. A loop makes about ``count`` times
    the single-file figures.
    """
    rows = []
    runs = [(bench.cli, "manifest", workload.count)] + [(c, "single", 1) for c in bench.clis]
    for cli, method, count in runs:
        paths, md5s = (part[:count] for part in local)
        files = registered(bench, f"count-{method}", paths, md5s)
        out_dir = fresh_dir(bench.work / "batch-out")
        try:
            with FaultProxy() as proxy:
                for direction in ("upload", "download"):
                    if method == "manifest":
                        args, env = ghga_command(bench, cli, method, direction, files, out_dir)
                    elif direction == "upload":
                        args = bench.ghga_up_args(cli, files.ids[0], files.paths[0])
                        env = bench.cli_env()
                    else:
                        args = bench.ghga_down_args(cli, files.ids[0], out_dir)
                        env = bench.cli_env()
                    env.update(http_proxy=proxy.url, no_proxy="", NO_PROXY="")
                    proxy.reset_log()
                    label = f"batch requests {workload.label} {cli.key} {method} {direction}"
                    if safe(label, errors, measured, args, env) is None:
                        break
                    rows.append(request_row(bench, workload, cli, method, direction, files, proxy))
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
            for file_id in files.ids:
                bench.drop_file_objects(file_id)
    return rows


def request_row(
    bench: Bench,
    workload: Workload,
    cli: GhgaCli,
    method: str,
    direction: str,
    files: FileSet,
    proxy: FaultProxy,
) -> dict[str, Any]:
    """What the proxy logged of one run: API requests (to the UCS port) by route, the rest."""
    api_port = urlsplit(bench.stack["ucs_url"]).port
    records = proxy.requests
    api = [r for r in records if urlsplit(r.url).port == api_port]
    routes: dict[str, int] = {}
    for r in api:
        key = f"{r.method} {route_of(r.url, set(files.ids))}"
        routes[key] = routes.get(key, 0) + 1
    return {
        "backend": bench.backend,
        "workload": workload.label,
        "client": cli.key,
        "method": method,
        "direction": direction,
        "files": len(files.ids),
        "api_requests": len(api),
        "storage_requests": len(records) - len(api),
        "api_routes": dict(sorted(routes.items(), key=lambda kv: -kv[1])),
    }


def section_batch(
    bench: Bench,
    workloads: list[Workload],
    runs: int,
    with_counts: bool,
    baseline_loops: bool,
    errors: list,
    out: dict,
    save: Callable[[dict], None],
) -> None:
    """Every workload: ``runs`` rounds of every method (median), then the request counts.

    ``baseline_loops`` False leaves out the loop of the "before" build: most of a loop's time
    is per-file start-up and waiting, about the same for both builds, and a 200-file loop
    takes ~12 minutes per direction and backend.
    """
    loop_clis = bench.clis if baseline_loops else [bench.cli]
    for workload in workloads:
        src = bench.work / f"batch-src-{workload.count}x{workload.size}"
        local = make_files(src, workload)
        try:
            samples: list[dict] = []
            for run in range(runs):
                out["loads"].append(
                    f"batch {bench.backend} {workload.label} run {run + 1}: {load()}"
                )
                samples += batch_round(bench, workload, local, loop_clis, errors)
            out["batch"] += median_of(samples, key_fields=("backend", "files"))
            out["raw_batch"] += samples
            if with_counts:
                out["batch_requests"] += count_requests(bench, workload, local, errors)
        finally:
            shutil.rmtree(src, ignore_errors=True)
        save(out)
