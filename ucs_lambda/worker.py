"""Local job worker: ``python -m ucs_lambda.worker``.

Does locally what Lambda does in AWS: long-polls the job queue, runs
:func:`ucs_lambda.jobs.handle_message` for each message, deletes the message when the job
succeeded and leaves it for redelivery when it failed. Also runs the periodic sweeps
(stale uploads, outbox clean-up) every ``UCS_WORKER_SWEEP_SECONDS``. Stops on SIGTERM/SIGINT
after the job at hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from . import jobs
from .adapters.sqs import JobQueue
from .config import ConfigError, apply_stack_env, get_settings
from .domain import digests

log = logging.getLogger("ucs_lambda.worker")


class Worker:
    """A polling loop with a stop flag (set by signals or by tests)."""

    def __init__(
        self, sweep_seconds: float = 60.0, retry_delay: int = 5, wait_seconds: int = 1
    ) -> None:
        self.sweep_seconds = sweep_seconds
        self.retry_delay = retry_delay
        self.wait_seconds = wait_seconds
        self.stop_event = threading.Event()
        self._last_sweep = 0.0

    def stop(self, *_: Any) -> None:
        self.stop_event.set()

    def process(self, queue: JobQueue, message: dict[str, Any]) -> bool:
        """Run one message's job; True when it may be deleted."""
        receipt = message["ReceiptHandle"]
        try:
            try:
                body = json.loads(message.get("Body") or "")
            except ValueError:
                raise jobs.InvalidJobMessage("the message body is not JSON") from None
            jobs.handle_message(body)
        except jobs.InvalidJobMessage as exc:
            # not JSON, unknown job: no retry can fix it
            log.error("dropping invalid job message %s: %s", message.get("MessageId"), exc)
        except Exception as exc:
            log.error(
                "job %s failed (%s: %s); it will be retried",
                message.get("MessageId"),
                type(exc).__name__,
                exc,
            )
            try:
                queue.retry_later(receipt, self.retry_delay)
            except Exception:  # visibility change is an optimisation only
                log.warning("could not shorten the visibility timeout", exc_info=True)
            return False
        else:
            log.info("job done: %s", json.dumps(body, sort_keys=True))
        queue.delete(receipt)
        return True

    def sweep_if_due(self) -> None:
        now = time.monotonic()
        if self.sweep_seconds <= 0 or now - self._last_sweep < self.sweep_seconds:
            return
        self._last_sweep = now
        try:
            counts = jobs.sweep_stale_uploads()
            removed = jobs.cleanup_outbox()
            if counts["cancelled"] or counts["requeued"] or removed:
                log.info("sweep: %s, outbox objects removed: %d", counts, removed)
        except Exception as exc:
            log.error("sweep failed: %s: %s", type(exc).__name__, exc)

    def run_once(self) -> int:
        """One poll (plus a due sweep); returns the number of messages handled."""
        self.sweep_if_due()
        queue = JobQueue(get_settings())
        messages = queue.receive(wait_seconds=self.wait_seconds)
        for message in messages:
            self.process(queue, message)
        return len(messages)

    def run(self) -> None:
        log.info("worker started")
        while not self.stop_event.is_set():
            try:
                self.run_once()
            except Exception as exc:  # queue unreachable etc.: back off, keep running
                log.error("polling failed: %s: %s", type(exc).__name__, exc)
                self.stop_event.wait(2.0)
        log.info("worker stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ucs_lambda.worker", description=__doc__)
    parser.add_argument(
        "--sweep-seconds",
        type=float,
        default=None,
        help="interval of the stale-upload/outbox sweeps (default $UCS_WORKER_SWEEP_SECONDS or 60)",
    )
    parser.add_argument("--retry-delay", type=int, default=5, help="seconds before a retry")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        apply_stack_env()
        sweep = args.sweep_seconds
        if sweep is None:
            sweep = float(os.environ.get("UCS_WORKER_SWEEP_SECONDS") or 60)
        get_settings()
    except (ConfigError, ValueError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 3
    try:
        digests.require()  # the validation jobs must not start on an untrustworthy hash
    except digests.DigestUnavailable as exc:
        print(f"cannot validate uploads here: {exc}", file=sys.stderr)
        return 3
    worker = Worker(sweep_seconds=sweep, retry_delay=args.retry_delay)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
