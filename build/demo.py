"""``make demo``: the whole journey on the local stack, with the real command-line client.

Starts the local stack (moto by default; ``--s3 ceph``, ``--db postgres`` as for
``build/stack.py``), writes a random file, registers it as an operator
would, uploads it with ``ghga-cli upload-by-id`` (which waits until the validation job has
accepted it), downloads it with ``ghga-cli download-by-id`` (which waits while the DRS3 API
stages it), checks that both files are byte-identical, prints the two transfer summaries and
stops the stack.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stack as stacklib

MIB = 1 << 20


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as source:
        while block := source.read(8 * MIB):
            digest.update(block)
    return digest.hexdigest()


def run_cli(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run one ghga-cli command with --json; progress shows, the summary is parsed."""
    cli = shutil.which("ghga-cli", path=str(Path(sys.executable).parent)) or "ghga-cli"
    result = subprocess.run(
        [cli, *args, "--json"], env=env, stdout=subprocess.PIPE, text=True, check=False
    )
    summary = json.loads(result.stdout) if result.stdout.strip() else {}
    if result.returncode != 0:
        raise SystemExit(
            f"demo: ghga-cli {args[0]} failed with exit code {result.returncode}: {summary}"
        )
    return summary


def describe(summary: dict[str, Any]) -> str:
    return (
        f"{summary.get('bytes', 0) / MIB:,.1f} MiB in {summary.get('seconds', 0):.2f} s "
        f"= {summary.get('mib_per_s', 0):,.1f} MiB/s, {summary.get('parts', '?')} parts, "
        f"{summary.get('retries', 0)} retries, status {summary.get('status')}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--size",
        type=int,
        default=int(os.environ.get("DEMO_SIZE", 256 * MIB)),
        help="bytes of the random demo file (default 256 MiB; env DEMO_SIZE)",
    )
    parser.add_argument("--s3", choices=["moto", "ceph"], default=os.environ.get("S3", "moto"))
    parser.add_argument(
        "--db",
        choices=list(stacklib.DB_BACKENDS),
        default=os.environ.get("STACK_DB", "dynamodb"),
        help="where state and jobs live: dynamodb (moto, default) or postgres (build/pg-up.sh)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ghga-demo-") as workdir:
        work = Path(workdir)
        where = f"S3 on {args.s3}" + (", state in PostgreSQL" if args.db == "postgres" else "")
        print(f"demo: starting the local stack ({where}) ...", flush=True)
        started = time.monotonic()
        with stacklib.launch(work / "stack", s3_backend=args.s3, db_backend=args.db) as stack:
            print(f"demo: stack ready in {time.monotonic() - started:.1f} s at {stack['ucs_url']}")
            env = {**os.environ, **stack["env"]}
            source = work / "genome.bin"
            print(f"demo: writing {args.size / MIB:,.0f} MiB of random data to {source.name}")
            md5 = stacklib.write_random_file(source, args.size)
            file_id = f"demo-{os.urandom(4).hex()}"
            user = "demo-submitter"
            admin = [sys.executable, "-m", "ucs_lambda.admin"]
            subprocess.run(
                [
                    *admin,
                    "register-file",
                    "--file-id",
                    file_id,
                    "--file-name",
                    source.name,
                    "--size",
                    str(args.size),
                    "--md5",
                    md5,
                    "--submitter",
                    user,
                ],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            subprocess.run(
                [*admin, "grant", "--file-id", file_id, "--user", user],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            token = subprocess.run(
                [*admin, "mint-token", "--user", user],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            cli_env = {**os.environ, "GHGA_CLI_TOKEN": token}
            print(f"demo: registered {file_id} (md5 {md5}); uploading with ghga-cli upload-by-id")
            upload = run_cli(
                [
                    "upload-by-id",
                    "--api-url",
                    stack["ucs_url"],
                    "--file-id",
                    file_id,
                    "--file-path",
                    str(source),
                ],
                cli_env,
            )
            print("demo: downloading with ghga-cli download-by-id")
            target_dir = work / "downloads"
            target_dir.mkdir()
            download = run_cli(
                [
                    "download-by-id",
                    "--api-url",
                    stack["ucs_url"],
                    "--file-id",
                    file_id,
                    "--output-dir",
                    str(target_dir),
                ],
                cli_env,
            )
            downloaded = target_dir / source.name
            identical = downloaded.exists() and filecmp.cmp(source, downloaded, shallow=False)
            identical = identical and md5_of(downloaded) == md5
        print()
        print(f"upload:   {describe(upload)}")
        print(f"download: {describe(download)}")
        print(f"bytes identical: {'yes' if identical else 'NO'} (md5 {md5})")
        print(f"total demo time: {time.monotonic() - started:.1f} s")
        return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
