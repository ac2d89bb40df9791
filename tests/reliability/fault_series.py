"""Seeded fault series: many uploads and downloads of multi-part files through the fault proxy
in random mode (a share of the S3 requests, optionally of the API requests too, faulted with a
random fault of every type); every run must end verified or with a clear error that a faultless
rerun resumes to a verified end.

    .venv/bin/python -m tests.reliability.fault_series --runs 40 --rate 0.2 --seed 1

Prints (and with ``--out`` writes) a JSON summary; exits 1 if any run broke a guarantee.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

from tests.helpers.admin import new_user, register_file
from tests.helpers.cli import download_args, run_cli, upload_args
from tests.helpers.faultproxy import FaultProxy, Rule
from tests.reliability import _common, harness

PART = 256 * 1024
S3_FAULTS = ("reset", "status", "expired", "truncate", "flip", "stall", "throttle")
API_FAULTS = ("reset", "status")
OPTIONS = ("--parallel", "3", "--retries", "4", "--stall-timeout", "2")


def api_rule(rng: random.Random, api: str, nth: int) -> Rule:
    """A seeded fault for the nth API call: 500/503, or a reset before or after the server
    acted on the request."""
    if rng.random() < 0.5:
        return Rule("status", url=api, nth=nth, status=rng.choice((500, 503)), retry_after=1)
    return Rule("reset", url=api, nth=nth, phase=rng.choice(("request", "headers")))


def proxy_for(stack: dict, seed: int, rate: float, api_rate: float) -> FaultProxy:
    """S3 requests: every fault type at random with ``rate``; API calls: ``api_rate`` of them
    get a seeded rule (random mode has a single rate, so the API faults are drawn here)."""
    api = "^" + stack["ucs_url"].rstrip("/") + "/"
    rng = random.Random(f"api-{seed}")
    rules = [api_rule(rng, api, n) for n in range(1, 60) if rng.random() < api_rate]
    rules.append(Rule("pass", url=api))  # shields the API from the S3 random faults
    return FaultProxy(rules=rules, random_rate=rate, seed=seed, random_faults=S3_FAULTS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="uploads and as many downloads")
    parser.add_argument("--rate", type=float, default=0.2, help="share of S3 requests faulted")
    parser.add_argument(
        "--api-rate", type=float, default=0.1, help="share of API calls faulted in every 2nd run"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    ghga = _common.cli()
    runs, failures = [], []
    faults: Counter[str] = Counter()
    requests = 0
    started = time.monotonic()
    with _common.stack() as (stack, _), tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, **stack["env"]}
        user = new_user(env, "faults")
        payload = os.urandom(6 * PART + 999)
        archived = harness.archive(ghga, stack, env, user, payload)
        for i in range(args.runs):
            for kind in ("upload", "download"):
                seed = args.seed * 100_000 + i * 2 + (kind == "download")
                api_rate = args.api_rate if i % 2 else 0.0
                try:
                    with proxy_for(stack, seed, args.rate, api_rate) as proxy:
                        if kind == "upload":
                            data = random.Random(seed).randbytes(6 * PART + seed % 5000)
                            source = harness.write_source(work, data)
                            file_id = register_file(env, user["user"], data, prefix="fs")
                            result = run_cli(
                                ghga,
                                upload_args(stack, file_id, source, *OPTIONS),
                                token=user["token"],
                                proxy=proxy,
                            )
                        else:
                            out = work / f"out-{seed}"
                            out.mkdir()
                            result = run_cli(
                                ghga,
                                download_args(stack, archived, out, *OPTIONS),
                                token=user["token"],
                                proxy=proxy,
                            )
                    hit = [r.fault for r in proxy.requests if r.fault]
                    faults.update(f.split("@")[0].split(":")[0] for f in hit)
                    requests += len(proxy.requests)
                    if kind == "upload":
                        outcome = harness.judge_upload(
                            ghga, stack, user["token"], file_id, source, result
                        )
                    else:
                        outcome = harness.judge_download(
                            ghga, stack, user["token"], archived, out, payload, result
                        )
                except Exception as error:
                    failures.append({"kind": kind, "seed": seed, "error": repr(error)[:2000]})
                    traceback.print_exc()
                    continue
                runs.append({"kind": kind, "seed": seed, "faults": len(hit), "outcome": outcome})
                print(runs[-1], file=sys.stderr, flush=True)
    result = {
        "runs": len(runs) + len(failures),
        "failures": failures,
        "requests_through_proxy": requests,
        "faults_injected": sum(faults.values()),
        "faults_by_type": dict(faults),
        "outcomes": dict(Counter(f"{r['kind']}:{r['outcome']}" for r in runs)),
        "rate": args.rate,
        "api_rate_every_2nd_run": args.api_rate,
        "seconds": round(time.monotonic() - started, 1),
    }
    _common.report(result, args.out)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
