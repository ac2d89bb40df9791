"""The proxy as a command (``python -m tests.helpers.faultproxy``, for benchmarks): prints its
URL as the first line of stdout, runs until SIGINT/SIGTERM, then summarizes the faults."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from .records import log_line
from .rules import DEFAULT_RANDOM_FAULTS, FAULTS
from .server import FaultProxy


def main(argv: Sequence[str] | None = None) -> int:
    """Run a proxy until SIGINT/SIGTERM; print its URL first, a fault summary on exit."""
    args = _parser().parse_args(argv)
    proxy = FaultProxy(
        args.host,
        args.port,
        rules=args.rule,
        random_rate=args.random_rate,
        seed=args.seed,
        random_faults=[f for f in args.random_faults.split(",") if f],
        max_faults_per_key=args.max_faults_per_key,
        throttle_bps=args.throttle_bps,
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with proxy:
        print(proxy.url, flush=True)
        printed = 0
        while not done.wait(0.5):
            if args.log:
                records = proxy.requests
                for rec in records[printed:]:
                    if rec.duration is None:
                        break
                    print(log_line(rec), file=sys.stderr, flush=True)
                    printed += 1
    total = len(proxy.requests)
    faulted = proxy.faults()
    print(f"faultproxy: {total} requests, {len(faulted)} faulted", file=sys.stderr)
    print(f"faultproxy: seed {proxy.seed}", file=sys.stderr)
    for method, url, label in faulted:
        print(f"  {label:<20} {method} {url}", file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.helpers.faultproxy",
        description="A fault-injecting HTTP forward proxy for tests and benchmarks.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address")
    parser.add_argument("--port", type=int, default=0, help="listen port (0: any free port)")
    parser.add_argument(
        "--random-rate", type=float, default=0.0, help="share of requests given a random fault"
    )
    parser.add_argument("--seed", type=int, default=None, help="makes random faults repeatable")
    parser.add_argument(
        "--random-faults",
        default=",".join(DEFAULT_RANDOM_FAULTS),
        help=f"comma-separated subset of {','.join(FAULTS)}",
    )
    parser.add_argument(
        "--max-faults-per-key",
        type=int,
        default=2,
        help="random faults per logical request (method, path, Range) at most",
    )
    parser.add_argument(
        "--throttle-bps", type=int, default=None, help="shared link bandwidth per direction"
    )
    parser.add_argument(
        "--rule",
        action="append",
        default=[],
        help='repeatable, e.g. --rule "fault=reset method=PUT url=partNumber=2 nth=1"',
    )
    parser.add_argument("--log", action="store_true", help="print each request to stderr")
    return parser
