"""What every benchmark section shares: one stack, the clients run against it, their samples.

bench/suite.py (the sections of ``make bench``) and bench/batch_bench.py (many files per run)
both drive the clients through :class:`Bench`, so that every row of RESULTS.md is measured the
same way: each client is its own process under GNU time (``measured``), its wall time, CPU
seconds and peak RSS are that process's alone, and the rows have the same fields
(:func:`sample`).

ghga-cli may run in two builds side by side (:class:`GhgaCli`): the current one from this
checkout's .venv and, with ``--baseline-cli``, an older one (bench/build_baseline.sh) whose rows
are labelled "ghga-cli (before)". Both talk to the same server in the same run, so "before" and
"after" differ only by the client.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT_DIR = HERE.parent
sys.path.insert(0, str(PROJECT_DIR / "build"))
sys.path.insert(0, str(HERE))

import boto3  # noqa: E402
import stack as stacklib  # noqa: E402
from transfer_bench import curl_parallel_args, measured, split_into_parts  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30
BENCH_VENV = HERE / ".venv" / "bin"
BUCKET = "bench"
USER = "bench-user"  # submitter and reader of every file the suite registers
PARALLEL = 8  # ghga-cli's default --parallel
PART = 16 * MIB  # the UCS part size (UCS_PART_SIZE default)
RANGE = 32 * MIB  # ghga-cli's default --range-size

__all__ = [
    "BENCH_VENV",
    "BUCKET",
    "GIB",
    "HERE",
    "MIB",
    "PARALLEL",
    "PROJECT_DIR",
    "Bench",
    "GhgaCli",
    "ceph_free_bytes",
    "connections_used",
    "fresh_dir",
    "ghga_clis",
    "ghga_sample",
    "load",
    "log",
    "make_source",
    "measured",
    "median_of",
    "s3_client",
    "safe",
    "sample",
    "stacklib",
    "wait_for_ceph_space",
]


def run_ucs_latency(
    stack_file: Path, object_id: str, clients: int, rounds: int
) -> subprocess.CompletedProcess[str]:
    """``ucs_latency.py`` against a stack (its JSON on the last line of stdout)."""
    return subprocess.run(
        [
            sys.executable,
            str(HERE / "ucs_latency.py"),
            str(stack_file),
            object_id,
            "--clients",
            str(clients),
            "--rounds",
            str(rounds),
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_DIR,
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
        check=False,
    )


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load() -> str:
    """The 1/5/15-minute load averages, recorded before each step (an idle machine is ~0)."""
    return str(Path("/proc/loadavg").read_text().split()[:3])


@dataclass(frozen=True)
class GhgaCli:
    """One build of ghga-cli that the suite runs in every ghga-cli row.

    ``key`` is the ``client`` field of its rows. ``current`` is False for the baseline build
    (bench/build_baseline.sh): it predates ``--no-part-md5``, ``--manifest`` and the
    ``hash_tail_seconds``/``checksum_type`` fields, and lowers ``--parallel`` for large parts to
    stay under its ``--max-memory``; rows that need those are run with the current build only.
    """

    key: str
    path: str
    current: bool

    @property
    def label(self) -> str:
        return "ghga-cli" if self.current else "ghga-cli (before)"


def ghga_clis(baseline: Path | None) -> list[GhgaCli]:
    """The current ghga-cli (beside this Python) and, if given, the baseline build."""
    current = shutil.which("ghga-cli", path=str(Path(sys.executable).parent))
    if current is None:
        raise SystemExit("no ghga-cli beside this Python: run `make venv` and use .venv/bin/python")
    clis = [GhgaCli("ghga-cli", current, current=True)]
    if baseline is not None:
        if not os.access(baseline, os.X_OK):
            raise SystemExit(
                f"--baseline-cli {baseline} is not an executable (make bench-baseline)"
            )
        clis.append(GhgaCli("ghga-cli-before", str(baseline.resolve()), current=False))
    return clis


_OLD_PARALLEL_LINE = re.compile(r"using (\d+) parallel transfers? instead of|using (\d+) parallel")


def connections_used(summary: dict[str, Any], stderr: str) -> int | None:
    """The storage connections an upload used: ``--json`` ``parallel``, else the log line.

    The baseline client says "using N parallel transfers instead of 8 to keep memory under
    --max-memory" (or "using 1 parallel transfer" when one part's buffers exceed it); both
    builds also report the number they used as ``parallel`` in their summary.
    """
    if isinstance(summary.get("parallel"), int):
        return summary["parallel"]
    match = _OLD_PARALLEL_LINE.search(stderr)
    if match:
        return int(match.group(1) or match.group(2))
    return None


def s3_client(endpoint: str, keys: Mapping[str, str]) -> Any:
    """A boto3 S3 client for ``endpoint`` with the AWS_ACCESS_KEY_ID/SECRET of ``keys``."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
    )


class Bench:
    """One stack (Ceph or moto) and everything needed to run the clients against it."""

    def __init__(
        self,
        stack: dict,
        backend: str,
        work: Path,
        clis: Sequence[GhgaCli],
        prefix: list[str] | None = None,
    ):
        self.stack = stack
        self.backend = backend
        self.work = work
        self.clis = list(clis)
        self.prefix = prefix or []
        env = stack["env"]
        self.endpoint = stack["aws_endpoint_url"]
        self.s3_env = {
            **os.environ,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(work / "aws-default.cfg"),
            "RCLONE_CONFIG": str(work / "rclone.conf"),
            "RCLONE_CONFIG_B_TYPE": "s3",
            "RCLONE_CONFIG_B_PROVIDER": "Ceph" if backend == "ceph" else "Other",
            "RCLONE_CONFIG_B_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
            "RCLONE_CONFIG_B_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
            "RCLONE_CONFIG_B_ENDPOINT": self.endpoint,
        }
        self.s3_env.pop("AWS_ENDPOINT_URL", None)
        (work / "aws-default.cfg").write_text("[default]\nregion = us-east-1\n")
        (work / "aws-p8.cfg").write_text(
            "[default]\nregion = us-east-1\ns3 =\n"
            f"  max_concurrent_requests = {PARALLEL}\n  multipart_chunksize = 16MB\n"
        )
        (work / "rclone.conf").write_text("")
        self.s3 = s3_client(self.endpoint, env)
        try:
            self.s3.create_bucket(Bucket=BUCKET)
        except self.s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        except self.s3.exceptions.BucketAlreadyExists:
            pass
        self.admin = [sys.executable, "-m", "ucs_lambda.admin"]
        self.admin_env = {**os.environ, **env}
        self.token = self.run_admin("mint-token", "--user", USER, "--ttl", "86400")
        self.part_cache: dict[tuple[str, int], list[Path]] = {}

    @property
    def cli(self) -> GhgaCli:
        """The current ghga-cli (the rows that only it can produce)."""
        return self.clis[0]

    # ------------------------------------------------------------------ UCS helpers
    def run_admin(self, *args: str) -> str:
        return subprocess.run(
            [*self.admin, *args], env=self.admin_env, check=True, capture_output=True, text=True
        ).stdout.strip()

    def register(self, source: Path, md5: str) -> str:
        """Register ``source`` for upload and download by the bench user; its new file id."""
        file_id = f"bench-{os.urandom(5).hex()}"
        size = str(source.stat().st_size)
        self.run_admin(
            *("register-file", "--file-id", file_id, "--file-name", source.name, "--size", size),
            *("--md5", md5, "--submitter", USER, "--reader", USER),
        )
        return file_id

    def register_many(self, files: Iterable[tuple[str, Path, str]]) -> None:
        """Register (file_id, path, md5) triples with one ``register-files`` call (a study)."""
        with tempfile.NamedTemporaryFile("w", suffix=".tsv", dir=self.work) as tsv:
            for file_id, path, md5 in files:
                tsv.write(f"{file_id}\t{path.name}\t{path.stat().st_size}\t{md5}\n")
            tsv.flush()
            self.run_admin(
                "register-files", "--from", tsv.name, "--submitter", USER, "--reader", USER
            )

    def _get_json(self, url: str) -> tuple[int, dict]:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, {}

    def wait_staged(self, file_id: str, timeout: float = 1800) -> float:
        """Poll DRS until the object is accepted and staged; return the seconds waited."""
        started = time.monotonic()
        url = f"{self.stack['drs_url']}/objects/{file_id}"
        while True:
            status, _ = self._get_json(url)
            if status == 200:
                return time.monotonic() - started
            if status not in (202, 404, 409):
                raise RuntimeError(f"DRS answered {status} for {file_id}")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{file_id} not staged after {timeout} s")
            time.sleep(0.5)

    def wait_accepted(self, upload_id: str, timeout: float = 1800) -> dict:
        """Poll the UCS until the upload has its verdict; return its details (part_size...).

        Unlike :meth:`wait_staged` this does not ask DRS, so no outbox copy is made: the
        part-size rows need only the verdict before their objects are deleted.
        """
        started = time.monotonic()
        while True:
            status, details = self._get_json(f"{self.stack['ucs_url']}/uploads/{upload_id}")
            if status == 200 and details.get("upload_status") == "accepted":
                return details
            if status == 200 and details.get("upload_status") in ("rejected", "failed"):
                raise RuntimeError(f"upload {upload_id}: {details}")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"upload {upload_id} not accepted after {timeout} s")
            time.sleep(0.5)

    def drop_file_objects(self, file_id: str) -> None:
        """Delete a file's stored copies now: a small Ceph cluster fills up otherwise."""
        for bucket in (self.stack["permanent_bucket"], self.stack["outbox_bucket"]):
            self.s3.delete_object(Bucket=bucket, Key=file_id)

    def delete_prefix(self, prefix: str, bucket: str = BUCKET) -> None:
        """Delete every object under ``prefix`` (what s5cmd/aws wrote in a batch row)."""
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})

    def cli_env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "GHGA_CLI_TOKEN": self.token, **extra}

    # ------------------------------------------------------------------ clients
    def ghga_args(self, cli: GhgaCli, command: str, file_id: str, *rest: str) -> list[str]:
        """A single-file ghga-cli command line against this stack (the same for both builds)."""
        api = self.stack["ucs_url"]
        return [cli.path, command, "--api-url", api, "--file-id", file_id, *rest]

    def ghga_up_args(self, cli: GhgaCli, file_id: str, source: Path) -> list[str]:
        return self.ghga_args(cli, "upload-by-id", file_id, "--file-path", str(source))

    def ghga_down_args(self, cli: GhgaCli, file_id: str, target: Path) -> list[str]:
        return self.ghga_args(cli, "download-by-id", file_id, "--output-dir", str(target))

    def ghga_up(
        self, cli: GhgaCli, source: Path, md5: str, extra: Sequence[str] = ()
    ) -> tuple[dict, str]:
        """Register and upload ``source``; exits once the upload is confirmed (not validated)."""
        file_id = self.register(source, md5)
        args = [*self.ghga_up_args(cli, file_id, source), "--json", "--wait-timeout", "0"]
        result = measured(self.prefix + args + list(extra), self.cli_env())
        result["summary"] = json.loads(result["stdout"])
        return result, file_id

    def ghga_down(self, cli: GhgaCli, file_id: str, target: Path) -> dict:
        args = [*self.ghga_down_args(cli, file_id, target), "--json"]
        result = measured(self.prefix + args, self.cli_env())
        result["summary"] = json.loads(result["stdout"])
        return result

    def curl_up(self, source: Path, parallel: int) -> dict:
        size = source.stat().st_size
        cache_key = (str(source), size)
        if cache_key not in self.part_cache:
            part_dir = self.work / f"parts-{size}"
            part_dir.mkdir(exist_ok=True)
            self.part_cache[cache_key] = split_into_parts(source, PART, part_dir)
        parts = self.part_cache[cache_key]
        key = f"curl-{os.urandom(4).hex()}"
        upload_id = self.s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        args = curl_parallel_args(parallel)
        for number, part in enumerate(parts, 1):
            url = self.s3.generate_presigned_url(
                "upload_part",
                Params={"Bucket": BUCKET, "Key": key, "UploadId": upload_id, "PartNumber": number},
                ExpiresIn=7200,
            )
            args += ["-o", os.devnull, "-T", str(part), url]
        try:
            return measured(self.prefix + args)
        finally:
            self.s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)

    def curl_down(self, bucket: str, key: str, size: int, target: Path, parallel: int) -> dict:
        url = self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=7200
        )
        args = curl_parallel_args(parallel)
        for number, first in enumerate(range(0, size, RANGE)):
            last = min(first + RANGE, size) - 1
            args += ["-r", f"{first}-{last}", "-o", str(target / f"r{number:05d}"), url]
        return measured(self.prefix + args)

    def s3_command(self, client: str, variant: str, direction: str, path: Path, key: str):
        p8 = variant == "p8"
        remote = f"s3://{BUCKET}/{key}"
        env = dict(self.s3_env)
        if client == "aws":
            if p8:
                env["AWS_CONFIG_FILE"] = str(self.work / "aws-p8.cfg")
            pair = [str(path), remote] if direction == "up" else [remote, str(path)]
            args = [str(BENCH_VENV / "aws"), "s3", "cp", *pair, "--endpoint-url", self.endpoint]
            args += ["--no-progress", "--only-show-errors"]
        elif client in ("boto3", "crt"):
            args = [str(BENCH_VENV / "python"), str(HERE / "s3clients.py"), client]
            args += ["up" if direction == "up" else "down", str(path), BUCKET, key]
            if p8:
                args += ["--concurrency", str(PARALLEL), "--part-size", str(PART)]
        elif client == "s5cmd":
            pair = [str(path), remote] if direction == "up" else [remote, str(path)]
            args = [str(BENCH_VENV / "s5cmd"), "--endpoint-url", self.endpoint, "cp"]
            if p8:
                args += ["--concurrency", str(PARALLEL), "--part-size", str(PART // MIB)]
            args += pair
        elif client == "rclone":
            rpath = f"B:{BUCKET}/{key}"
            pair = [str(path), rpath] if direction == "up" else [rpath, str(path)]
            args = [str(BENCH_VENV / "rclone"), "copyto", *pair]
            if p8:
                args += ["--s3-upload-concurrency", str(PARALLEL), "--s3-chunk-size", "16M"]
                args += ["--multi-thread-streams", str(PARALLEL)]
        else:
            raise ValueError(client)
        return self.prefix + args, env


def sample(direction: str, client: str, variant: str, size: int, result: dict, **extra) -> dict:
    seconds = result["wall_s"]
    return {
        "direction": direction,
        "client": client,
        "variant": variant,
        "bytes": size,
        "seconds": round(seconds, 3),
        "mb_per_s": round(size / 1e6 / seconds, 1),
        "mib_per_s": round(size / MIB / seconds, 1),
        "cpu_s": round(result["cpu_s"], 2),
        "cpu_s_per_gib": round(result["cpu_s"] / (size / GIB), 2),
        "peak_rss_mib": round(result["peak_rss_mib"], 1),
        **extra,
    }


def ghga_sample(direction: str, cli: GhgaCli, variant: str, size: int, result: dict) -> dict:
    """A ghga-cli row: the common fields plus what its ``--json`` summary tells.

    ``transfer_s`` is the summary's ``seconds`` (the engine's transfer phase); for downloads
    ``tail_s`` = wall - transfer (start-up, the DRS call and the hashing that has not caught up
    when the last byte arrives) and ``hash_tail_s`` the summary's ``hash_tail_seconds`` (last
    byte to the end of the in-order hash; current build only).
    """
    summary = result.get("summary") or {}
    transfer = summary.get("seconds")
    # total_seconds: the client's own clock from start to exit; wall - it = interpreter start-up
    extra: dict[str, Any] = {"transfer_s": transfer, "client_total_s": summary.get("total_seconds")}
    if direction == "upload":
        parallel = connections_used(summary, result.get("stderr", ""))
        parts = summary.get("parts")
        # One PUT per part: no more parts are in flight than there are (512 MiB parts of 2 GiB).
        connections = min(parallel, parts) if parallel and isinstance(parts, int) else parallel
        extra.update(parallel=parallel, parts=parts, connections=connections)
    else:
        if transfer is not None:
            extra["tail_s"] = round(result["wall_s"] - transfer, 3)
        extra["hash_tail_s"] = summary.get("hash_tail_seconds")
        extra["checksum_type"] = summary.get("checksum_type", "md5")
    return sample(direction, cli.key, variant, size, result, **extra)


def safe(label: str, errors: list, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as error:  # a failing client is reported, not fatal
        log(f"FAILED {label}: {error}")
        errors.append({"what": label, "error": str(error)[-600:]})
        return None


# Fields whose median is taken on their own (the row chosen by median time carries the rest).
MEDIAN_FIELDS = ("cpu_s_per_gib", "peak_rss_mib", "tail_s", "hash_tail_s", "transfer_s")


def median_of(samples: list[dict], key_fields: Sequence[str] = ()) -> list[dict]:
    """One row per (direction, client, variant, bytes, *key_fields): the run of median time."""
    groups: dict[tuple, list[dict]] = {}
    for s in samples:
        key = (s["direction"], s["client"], s["variant"], s["bytes"])
        groups.setdefault(key + tuple(s.get(f) for f in key_fields), []).append(s)
    merged = []
    for group in groups.values():
        ordered = sorted(group, key=lambda s: s["seconds"])
        chosen = dict(ordered[len(ordered) // 2])
        chosen["runs"] = len(group)
        chosen["all_mb_per_s"] = [s["mb_per_s"] for s in group]
        for field in MEDIAN_FIELDS:
            values = sorted(s[field] for s in group if s.get(field) is not None)
            if values:
                chosen[field] = values[len(values) // 2]
        merged.append(chosen)
    return merged


def fresh_dir(path: Path) -> Path:
    """An empty directory at ``path`` (what a previous step left there is removed)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def make_source(work: Path, size: int) -> tuple[Path, str]:
    path = work / f"src-{size // MIB}MiB-{os.urandom(3).hex()}.bin"
    log(f"writing {size // MIB} MiB of random data")
    return path, stacklib.write_random_file(path, size)


def ceph_free_bytes() -> int | None:
    """Bytes the Ceph cluster of CEPH_DIR can still store (``ceph df``), None if unknown."""
    conf = Path(os.environ.get("CEPH_DIR", PROJECT_DIR / ".ceph")) / "ceph.conf"
    if not conf.exists() or not shutil.which("ceph"):
        return None
    try:
        done = subprocess.run(
            ["ceph", "-c", str(conf), "df", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return int(json.loads(done.stdout)["stats"]["total_avail_bytes"])
    except (subprocess.SubprocessError, OSError, ValueError, KeyError):
        return None


def wait_for_ceph_space(needed: int, timeout: float = 600) -> bool:
    """Wait (RGW frees deleted objects by garbage collection, ~1-2 min) until ``needed`` fits.

    Returns False if it still does not fit after ``timeout``; True also when the free space
    cannot be read (the step then runs and reports its own failure).
    """
    deadline = time.monotonic() + timeout
    while True:
        free = ceph_free_bytes()
        if free is None or free >= needed:
            return True
        if time.monotonic() > deadline:
            return False
        log(f"Ceph has {free / GIB:.1f} GiB free, {needed / GIB:.1f} needed: waiting for RGW's GC")
        time.sleep(20)
