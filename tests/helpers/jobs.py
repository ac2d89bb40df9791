"""The job queue of a stack as a stray producer or a duplicating SQS would use it (SQS, or the
``jobs`` table of a stack with ``db_backend`` ``postgres``), and the worker's log of finished
jobs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3

from tests.helpers import PROJECT_DIR


def job_queue(stack: dict[str, Any]) -> tuple[Any, str]:
    env = stack["env"]
    sqs = boto3.client(
        "sqs",
        endpoint_url=stack["sqs_endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    url = sqs.get_queue_url(QueueName=env.get("UCS_JOB_QUEUE", "ghga-jobs"))["QueueUrl"]
    return sqs, url


def jobs_done(stack: dict[str, Any], body: dict[str, Any]) -> int:
    """How often the stack's worker logged ``job done`` for exactly this message body."""
    line = f"job done: {json.dumps(body, sort_keys=True)}"
    log = Path(stack["log_dir"], "worker.log").read_text(errors="replace")
    return sum(1 for entry in log.splitlines() if entry.endswith(line))


def send_jobs(stack: dict[str, Any], bodies: list[Any]) -> None:
    """Put raw messages on the job queue, as SQS redelivery or a stray producer would.

    On PostgreSQL all rows are inserted by one statement (with plain psycopg, not the adapter),
    so they become visible to the workers at the same instant."""
    raws = [body if isinstance(body, str) else json.dumps(body) for body in bodies]
    if stack.get("db_backend") == "postgres":
        import psycopg

        with psycopg.connect(stack["database_url"], autocommit=True) as conn:
            conn.execute("INSERT INTO jobs (body) SELECT unnest(%s::text[])", (raws,))
        return
    sqs, url = job_queue(stack)
    for raw in raws:
        sqs.send_message(QueueUrl=url, MessageBody=raw)


def run_jobs_in_parallel(stack_env: dict[str, str], bodies: list[dict[str, Any]]) -> str:
    """Run ``jobs.handle_message`` for every body at once, like concurrent Lambda invocations.

    Returns the runs' log (INFO and above), so that a caller counting verdicts sees the ones
    these runs logged as well as the workers'."""
    script = (
        "import json, logging, sys, threading\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
        "from ucs_lambda import jobs\n"
        "bodies = json.loads(sys.argv[1])\n"
        "barrier = threading.Barrier(len(bodies))\n"
        "errors = []\n"
        "def run(body):\n"
        "    barrier.wait()\n"
        "    try:\n"
        "        jobs.handle_message(body)\n"
        "    except Exception as exc:\n"
        "        errors.append(repr(exc))\n"
        "threads = [threading.Thread(target=run, args=(b,)) for b in bodies]\n"
        "[t.start() for t in threads]\n"
        "[t.join() for t in threads]\n"
        "print(json.dumps(errors))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(bodies)],
        cwd=PROJECT_DIR,
        env=stack_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # A job that lost a race may raise to be retried; it must never break the rules (checked
    # by the callers), and none of these raced jobs should need a retry.
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [], result.stderr[-3000:]
    return result.stderr
