"""Local job worker: ``python -m ucs_lambda.worker [--concurrency N]``.

Does what Lambda does in AWS: long-polls the job queue (SQS, or the PostgreSQL jobs table
with ``UCS_STATE_BACKEND=postgres``) and runs
:func:`ucs_lambda.jobs.handle_message` for each message, up to N jobs at once on a thread pool
(``--concurrency``, else ``$UCS_WORKER_CONCURRENCY``, else :func:`default_concurrency`). A
message is deleted when its job succeeded, left for redelivery (its visibility shortened to
``--retry-delay`` seconds) when the job failed, and dropped when no retry can fix it (not JSON,
unknown job). Also runs the periodic sweeps (stale uploads, outbox clean-up) every
``UCS_WORKER_SWEEP_SECONDS`` on the polling thread, so never two at once, also while every job
slot is busy. SIGTERM/SIGINT stop the polling; the worker exits after the jobs at hand finish.

The polling thread asks the queue for at most as many messages as there are free job slots (at most
10, SQS's limit per call) and starts each one it receives at once; while every slot is busy it
does not poll, so it never holds an invisible message it cannot start. A message that arrives
after a stop request is handed back (made visible again) instead of being started.

The worker does not extend a message's visibility timeout. A job that runs longer than the
queue's visibility timeout (900 s as ``admin create-resources`` creates the SQS queue;
``UCS_JOB_VISIBILITY_SECONDS`` on PostgreSQL) can be delivered a
second time, to this worker or another one, while the first run still works. The jobs are
safe against that: a validation run holds a lease and writes conditionally, a staging copy is
claimed (docs/CONTRACTS.md), so the second run finds the lease or claim held, or the work done,
and does nothing.
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
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import jobs
from .bootstrap import services
from .config import ConfigError, Settings, apply_stack_env, get_settings
from .domain import digests
from .ports import JobQueue, QueuedJob

log = logging.getLogger("ucs_lambda.worker")

#: SQS's limit of messages per ReceiveMessage call.
RECEIVE_LIMIT = 10
#: Most job slots one worker accepts (each thread shares the process's S3 connection pool).
MAX_CONCURRENCY = 64
#: While every slot is busy, the polling thread looks at the stop flag and the sweep this often.
SLOT_WAIT_SECONDS = 0.5

CONCURRENCY_HELP = (
    "jobs run at once (1..%d; default $UCS_WORKER_CONCURRENCY, else min(4, 2 x CPU cores) = %d "
    "here). Two per core because jobs mostly wait: the RGW does the server-side copies, ranged "
    "reads wait on the network, while a validating job hashes on about one core. At most 4 by "
    "default because each validating job holds up to (UCS_VALIDATE_CONCURRENCY + 1) x 16 MiB "
    "of read buffers (~144 MiB) and keeps UCS_VALIDATE_CONCURRENCY (8) ranged GETs in flight "
    "on the one shared S3 client, whose connection pool holds 32. Raise it on a bigger machine "
    "(README: Deploy next to Ceph)"
)


def default_concurrency(cpus: int | None = None) -> int:
    """Job slots when nothing is configured: ``min(4, 2 x cores)`` (see ``CONCURRENCY_HELP``)."""
    cores = os.cpu_count() if cpus is None else cpus
    return max(1, min(4, 2 * (cores or 1)))


def concurrency_setting(value: int | None, environ: Mapping[str, str] = os.environ) -> int:
    """``--concurrency`` if given, else ``UCS_WORKER_CONCURRENCY``, else the default."""
    name = "--concurrency"
    if value is None:
        raw = (environ.get("UCS_WORKER_CONCURRENCY") or "").strip()
        if not raw:
            return default_concurrency()
        name = "UCS_WORKER_CONCURRENCY"
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, not {raw!r}") from None
    if not 1 <= value <= MAX_CONCURRENCY:
        raise ConfigError(f"{name} must be between 1 and {MAX_CONCURRENCY}, not {value}")
    return value


def prepare_clients(settings: Settings) -> None:
    """Build the shared adapters on the calling thread, before the job threads start.

    The adapters build their clients under a lock and cache them (boto3 clients and pynamodb
    connections are thread-safe once built, building them is not, and costs ~0.1 s of CPU
    each), so every job thread shares them; building them here takes that work out of the
    first jobs. No network call is needed for it.
    """
    built = services(settings)
    _ = built.state, built.storage, built.queue


class Worker:
    """A polling loop feeding up to ``concurrency`` job threads, with a stop flag (set by
    signals or by tests)."""

    def __init__(
        self,
        sweep_seconds: float = 60.0,
        retry_delay: int = 5,
        wait_seconds: int = 1,
        concurrency: int = 1,
    ) -> None:
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be between 1 and {MAX_CONCURRENCY}")
        self.sweep_seconds = sweep_seconds
        self.retry_delay = retry_delay
        self.wait_seconds = wait_seconds
        self.concurrency = concurrency
        self.stop_event = threading.Event()
        self._last_sweep = 0.0
        self._slots = threading.Condition()
        self._running = 0

    def stop(self, *_: Any) -> None:
        """Stop polling; :meth:`run` returns once the running jobs have finished.

        Only sets a flag, so it is safe in a signal handler."""
        self.stop_event.set()

    @property
    def running(self) -> int:
        """Jobs running now."""
        with self._slots:
            return self._running

    def process(self, queue: JobQueue, message: QueuedJob) -> bool:
        """Run one message's job; True when it may be deleted."""
        receipt = message.receipt
        try:
            try:
                body = json.loads(message.body or "")
            except ValueError:
                raise jobs.InvalidJobMessage("the message body is not JSON") from None
            jobs.handle_message(body)
        except jobs.InvalidJobMessage as exc:
            # not JSON, unknown job: no retry can fix it
            log.error("dropping invalid job message %s: %s", message.job_id, exc)
        except Exception as exc:
            log.error(
                "job %s failed (%s: %s); it will be retried",
                message.job_id,
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
        """One poll (plus a due sweep) for up to ``concurrency`` messages, run side by side
        until all have finished; returns the number of messages handled."""
        self.sweep_if_due()
        queue = services().queue
        wanted = min(RECEIVE_LIMIT, self.concurrency)
        messages = queue.receive(wait_seconds=self.wait_seconds, max_messages=wanted)
        if len(messages) == 1:
            self._run_job(queue, messages[0])
        elif messages:
            with ThreadPoolExecutor(len(messages), thread_name_prefix="ucs-job") as pool:
                for message in messages:
                    self._start(pool, queue, message)
        return len(messages)

    def run(self) -> None:
        """Poll and run jobs until :meth:`stop`; then wait for the running jobs."""
        try:
            prepare_clients(get_settings())
        except Exception as exc:  # the jobs build them themselves (under aws.client's lock)
            log.warning("could not prepare the clients: %s: %s", type(exc).__name__, exc)
        log.info("worker started: %d job slot(s)", self.concurrency)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="ucs-job") as pool:
            while not self.stop_event.is_set():
                self.sweep_if_due()
                free = self._wait_for_free_slots()
                if not free:
                    continue  # still busy (look at the sweep and the stop flag), or stopping
                try:
                    queue = services().queue
                    messages = queue.receive(
                        wait_seconds=self.wait_seconds, max_messages=min(RECEIVE_LIMIT, free)
                    )
                except Exception as exc:  # queue unreachable etc.: back off, keep running
                    log.error("polling failed: %s: %s", type(exc).__name__, exc)
                    self.stop_event.wait(2.0)
                    continue
                for message in messages:
                    if self.stop_event.is_set():
                        self._hand_back(queue, message)
                    else:
                        self._start(pool, queue, message)
            if self.running:
                log.info("worker stopping: waiting for %d running job(s)", self.running)
        log.info("worker stopped")

    # ---- job slots ----------------------------------------------------------------------

    def _wait_for_free_slots(self) -> int:
        """Free slots now (0 while all are busy after a short wait, or when stopping)."""
        with self._slots:
            if self._running >= self.concurrency and not self.stop_event.is_set():
                self._slots.wait(SLOT_WAIT_SECONDS)
            if self.stop_event.is_set():
                return 0
            return self.concurrency - self._running

    def _start(self, pool: ThreadPoolExecutor, queue: JobQueue, message: QueuedJob) -> None:
        with self._slots:
            self._running += 1
        try:
            pool.submit(self._run_job, queue, message, True)
        except BaseException:
            self._slot_freed()
            raise

    def _run_job(self, queue: JobQueue, message: QueuedJob, slot: bool = False) -> None:
        try:
            self.process(queue, message)
        except Exception as exc:  # deleting the message failed: it comes again, a no-op then
            log.error(
                "job %s: could not delete its message (%s: %s); it will be delivered again",
                message.job_id,
                type(exc).__name__,
                exc,
            )
        finally:
            if slot:
                self._slot_freed()

    def _slot_freed(self) -> None:
        with self._slots:
            self._running -= 1
            self._slots.notify_all()

    def _hand_back(self, queue: JobQueue, message: QueuedJob) -> None:
        """A message received while stopping: visible again at once, for the next worker."""
        try:
            queue.retry_later(message.receipt, 0)
            log.info("stopping: handed job message %s back", message.job_id)
        except Exception as exc:  # it becomes visible when its visibility timeout ends
            log.warning("could not hand back job message %s: %s", message.job_id, exc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ucs_lambda.worker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sweep-seconds",
        type=float,
        default=None,
        help="interval of the stale-upload/outbox sweeps (default $UCS_WORKER_SWEEP_SECONDS or 60)",
    )
    parser.add_argument("--retry-delay", type=int, default=5, help="seconds before a retry")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        metavar="N",
        help=CONCURRENCY_HELP % (MAX_CONCURRENCY, default_concurrency()),
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s [%(threadName)s] %(message)s"
    )
    try:
        apply_stack_env()
        sweep = args.sweep_seconds
        if sweep is None:
            sweep = float(os.environ.get("UCS_WORKER_SWEEP_SECONDS") or 60)
        concurrency = concurrency_setting(args.concurrency)
        get_settings()
    except (ConfigError, ValueError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 3
    try:
        digests.require()  # the validation jobs must not start on an untrustworthy hash
    except digests.DigestUnavailable as exc:
        print(f"cannot validate uploads here: {exc}", file=sys.stderr)
        return 3
    worker = Worker(sweep_seconds=sweep, retry_delay=args.retry_delay, concurrency=concurrency)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
