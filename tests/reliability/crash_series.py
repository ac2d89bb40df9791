"""Crash series: SIGKILL the client at seeded points, crash and restart the API server and the
worker during uploads and staging; every rerun must end verified.

    .venv/bin/python -m tests.reliability.crash_series --uploads 20 --downloads 20 --restarts 5

Prints (and with ``--out`` writes) a JSON summary; exits 1 if any run broke a guarantee.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

from tests.helpers.admin import new_user
from tests.helpers.cli import archived_file
from tests.reliability import _common, crash, harness

RESTART_ENV = {
    "UCS_STAGING_TIMEOUT_SECONDS": "3",
    "UCS_REVALIDATE_SECONDS": "3",
    "UCS_STALE_UPLOAD_SECONDS": "30",
    "UCS_WORKER_SWEEP_SECONDS": "1",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=20, help="killed uploads")
    parser.add_argument("--downloads", type=int, default=20, help="killed downloads")
    parser.add_argument(
        "--restarts", type=int, default=5, help="uploads and stagings with restarts"
    )
    parser.add_argument("--seed", type=int, default=1000, help="first seed")
    parser.add_argument("--out", type=Path, help="write the JSON summary here too")
    args = parser.parse_args()
    ghga = _common.cli()
    runs, failures = [], []
    started = time.monotonic()
    with _common.stack(RESTART_ENV) as (stack, state_dir), tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, **stack["env"]}
        user = new_user(env, "series")
        data = os.urandom(7 * 256 * 1024 + 555)
        archived = harness.archive(ghga, stack, env, user, data)
        plan = [("upload", args.seed + i) for i in range(args.uploads)]
        plan += [("download", args.seed + i) for i in range(args.downloads)]
        plan += [("restart", args.seed + i) for i in range(args.restarts)]
        plan += [("staging", args.seed + i) for i in range(args.restarts)]
        for kind, seed in plan:
            try:
                if kind == "upload":
                    run = crash.killed_upload(ghga, stack, env, user, work, seed)
                elif kind == "download":
                    run = crash.killed_download(ghga, stack, user, archived, data, work, seed)
                elif kind == "restart":
                    run = crash.upload_with_restarts(ghga, stack, state_dir, env, user, work, seed)
                else:
                    size = 4 * 256 * 1024 + seed % 1000
                    payload = os.urandom(size)
                    file_id = archived_file(ghga, stack, env, user, payload, prefix="arc")
                    run = crash.staging_with_worker_crash(
                        ghga, stack, state_dir, user, file_id, payload, work, seed
                    )
            except Exception as error:
                failures.append({"kind": kind, "seed": seed, "error": repr(error)[:2000]})
                traceback.print_exc()
                continue
            runs.append(run)
            print(f"{kind} seed {seed}: {run}", file=sys.stderr, flush=True)
    killed = [r for r in runs if r.get("killed")]
    result = {
        "runs": len(runs) + len(failures),
        "failures": failures,
        "client_kills": len(killed),
        "kills_by_point": dict(Counter(f"{r['kind']}:{r['point']}" for r in killed)),
        "finished_before_kill": sum(1 for r in runs if "killed" in r and not r["killed"]),
        "server_restarts": sum(len(r.get("restarts", [])) for r in runs),
        "worker_crashes_during_staging": sum(1 for r in runs if r["kind"].startswith("staging")),
        "outcomes": dict(Counter(r["outcome"] for r in runs)),
        "seconds": round(time.monotonic() - started, 1),
    }
    _common.report(result, args.out)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
