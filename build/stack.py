"""The local stack: everything the services need, on 127.0.0.1, in one foreground process.

Started by ``make stack`` (and by ``make demo`` and the end-to-end tests through
:func:`launch`). It runs, each as a child process with its log in ``<state-dir>/logs/``:

- a threaded moto server for S3 and SQS (or, with ``--s3 ceph``, S3 on a local Ceph RGW),
  whose ranged GETs read only the range (``moto_ranged.py``);
- a single-threaded moto server for DynamoDB (see ``moto_single.py`` for why);
- the Chalice app, served by ``serve_local.py``;
- the job worker (``python -m ucs_lambda.worker``), running the same handlers as the Lambda.

With ``--db postgres`` state and jobs live in PostgreSQL instead of DynamoDB and SQS: the
stack runs ``build/pg-up.sh`` (a local PostgreSQL on 127.0.0.1, left running; ``make pg-down``
stops it), gives this run a database of its own (``stack_<hash of the state dir>``, dropped and
created again at every start, dropped at the stop) and starts no DynamoDB server; moto then
serves only S3, and with ``--s3 ceph --db postgres`` no moto server runs at all.

It then creates the tables (or applies the database's migrations), buckets and queue, registers
a demo file, and writes ``<state-dir>/stack.json`` last, so that the file's existence means
"ready". Ctrl+C or SIGTERM stops every child it started. For reliability tests a running stack
crashes and restarts one child on request (:func:`request_restart`: a file in
``<state-dir>/control/``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
BUILD_DIR = PROJECT_DIR / "build"
DEFAULT_STATE_DIR = PROJECT_DIR / ".stack"
DEMO_FILE_ID = "demo-file"
DEMO_USER = "demo-user"
READY_TIMEOUT = 60.0
DB_BACKENDS = ("dynamodb", "postgres")


class StackError(RuntimeError):
    """The stack could not be started; the message says which part and where its log is."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether our servers could listen on ``port`` now.

    They all bind with SO_REUSEADDR (http.server, werkzeug), which ignores connections of a
    previous run lingering in TIME_WAIT; a check without it refused to restart the stack for a
    minute after Ctrl+C.
    """
    with socket.socket() as sock:
        if os.name != "nt":  # on Windows SO_REUSEADDR would allow taking over a live listener
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for_http(url: str, timeout: float, process: subprocess.Popen, log: Path) -> None:
    """Wait until ``url`` answers with any HTTP status, or fail with the child's log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"{log.stem} exited with code {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise StackError(f"{log.stem} did not answer on {url} within {timeout:.0f} s; see {log}")


class Stack:
    """The child processes of one local stack and how to stop them."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.log_dir = state_dir / "logs"
        self.processes: dict[str, subprocess.Popen] = {}
        self.specs: dict[str, tuple[list[str], dict[str, str]]] = {}
        self.ready_urls: dict[str, str] = {}
        #: (server URL, name) of the database made for this run (``--db postgres``), dropped
        #: by :meth:`stop`
        self.database: tuple[str, str] | None = None

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        self.specs[name] = (args, env)
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                args,
                cwd=PROJECT_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = process
        return process

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self.database:
            drop_database(*self.database)
            self.database = None

    def restart(self, name: str) -> subprocess.Popen:
        """Crash one child (SIGKILL to its process group) and start it again, same args and env.

        For reliability tests (see :func:`request_restart`): what a crashed and restarted
        server or worker does to transfers and jobs in flight. Waits until a restarted HTTP
        service answers again.
        """
        if name not in self.specs:
            raise StackError(f"no child named {name!r} (have: {', '.join(self.specs)})")
        old = self.processes[name]
        if old.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(old.pid, signal.SIGKILL)
        old.wait()
        with self.log(name).open("ab") as out:
            out.write(b"\n--- stack: killed (SIGKILL) and restarted ---\n")
        process = self.spawn(name, *self.specs[name])
        if name in self.ready_urls:
            wait_for_http(self.ready_urls[name], READY_TIMEOUT, process, self.log(name))
        return process

    def serve_control_requests(self, stack_file: Path) -> None:
        """Handle ``<state-dir>/control/restart-<name>`` files written by :func:`request_restart`.

        Each request is removed once handled (``.failed`` next to it on error), and
        ``stack.json`` gets the new ``pids``.
        """
        control = self.state_dir / "control"
        if not control.is_dir():
            return
        for request in sorted(control.glob("restart-*")):
            if request.suffix == ".failed":
                continue
            name = request.name[len("restart-") :]
            try:
                self.restart(name)
            except StackError as error:
                request.with_name(request.name + ".failed").write_text(str(error))
            if stack_file.exists():
                info = json.loads(stack_file.read_text())
                info["pids"] = {n: p.pid for n, p in self.processes.items()}
                partial = stack_file.with_suffix(".json.tmp")
                partial.write_text(json.dumps(info, indent=2))
                partial.chmod(0o600)
                os.replace(partial, stack_file)
            request.unlink(missing_ok=True)

    def first_exited(self) -> str | None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                return name
        return None


def run_admin(args: list[str], env: dict[str, str]) -> str:
    """Run an operator command against the stack; its stdout is the result."""
    result = subprocess.run(
        [sys.executable, "-m", "ucs_lambda.admin", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(
            f"admin {args[0]} failed: {result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout.strip()


def write_random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path`` in 8 MiB blocks and return their MD5."""
    digest = hashlib.md5()
    block = 8 << 20
    with path.open("wb") as out:
        remaining = size
        while remaining:
            chunk = os.urandom(min(block, remaining))
            digest.update(chunk)
            out.write(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def ceph_settings() -> dict[str, str]:
    """The S3 endpoint and keys of the Ceph RGW started by ``make ceph-up``."""
    ceph_dir = Path(os.environ.get("CEPH_DIR", PROJECT_DIR / ".ceph"))
    config_file = ceph_dir / "ceph.json"
    if not config_file.exists():
        raise StackError(f"no Ceph RGW found ({config_file} missing): run `make ceph-up` first")
    config = json.loads(config_file.read_text())
    return {
        "AWS_ENDPOINT_URL_S3": config["endpoint_url"],
        "AWS_ACCESS_KEY_ID": config["access_key"],
        "AWS_SECRET_ACCESS_KEY": config["secret_key"],
    }


def postgres_base_url() -> str:
    """The URL of a PostgreSQL server the stack may create databases on.

    ``STACK_PG_URL`` if set (a server of your own; its role needs CREATEDB), else the local one
    of ``build/pg-up.sh``, started here unless it runs already (``PG_DIR``/``PG_PORT`` pass
    through), read from ``<PG_DIR>/pg.env``.
    """
    if os.environ.get("STACK_PG_URL"):
        return os.environ["STACK_PG_URL"]
    result = subprocess.run(
        ["bash", str(BUILD_DIR / "pg-up.sh")],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(
            "build/pg-up.sh failed (make pg-up shows why):\n"
            + (result.stderr.strip() or result.stdout.strip())[-2000:]
        )
    pg_dir = Path(os.environ.get("PG_DIR") or PROJECT_DIR / ".pg")
    if not pg_dir.is_absolute():
        pg_dir = PROJECT_DIR / pg_dir
    for line in (pg_dir / "pg.env").read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "UCS_DATABASE_URL" and value.strip():
            return value.strip()
    raise StackError(f"{pg_dir / 'pg.env'} names no UCS_DATABASE_URL")


def database_name(state_dir: Path) -> str:
    """The stack's own database: one per state directory, so stacks side by side never meet."""
    return "stack_" + hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]


def redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead (user, host, port and options kept)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def recreate_database(base_url: str, name: str, *, create: bool = True) -> str:
    """Drop database ``name`` on the server of ``base_url`` (ending its sessions), then create
    it again, empty, unless ``create`` is false. Returns the URL of the new database."""
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(base_url, autocommit=True, connect_timeout=10) as conn:
            ident = sql.Identifier(name)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            if create:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    except psycopg.Error as error:
        raise StackError(f"PostgreSQL at {redacted(base_url)}: {error}".strip()) from None
    return with_database(base_url, name)


def remove_buckets(s3: Any, buckets: list[str]) -> None:
    """Abort the unfinished multipart uploads, delete the objects, then each bucket itself.

    For the buckets a run made on a Ceph cluster that outlives it (tests, benchmarks); best
    effort: a bucket already gone or not emptied is skipped.
    """
    for bucket in buckets:
        with contextlib.suppress(Exception):
            for up in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
                s3.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for obj in page.get("Contents", []):
                    s3.delete_object(Bucket=bucket, Key=obj["Key"])
            s3.delete_bucket(Bucket=bucket)


def servers_needed(s3_backend: str, db_backend: str) -> list[str]:
    """The stack's servers with a port: the app, moto (S3 and SQS; only S3 with PostgreSQL,
    none with Ceph and PostgreSQL) and moto's DynamoDB (not with PostgreSQL)."""
    names = ["ucs"]
    if db_backend == "dynamodb" or s3_backend == "moto":
        names.append("moto")
    if db_backend == "dynamodb":
        names.append("dynamodb")
    return names


def start(
    state_dir: Path,
    s3_backend: str,
    ports: dict[str, int],
    demo_size: int,
    db_backend: str = "dynamodb",
) -> Stack:
    """Start every service and write ``stack.json``; on failure stop what was started."""
    if db_backend not in DB_BACKENDS:
        raise StackError(
            f"unknown database backend {db_backend!r} (use {' or '.join(DB_BACKENDS)})"
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "stack.json").unlink(missing_ok=True)
    stack = Stack(state_dir)
    stack.log_dir.mkdir(exist_ok=True)
    needed = servers_needed(s3_backend, db_backend)
    for name, port in ports.items():
        if name in needed and not port_is_free(port):
            raise StackError(f"port {port} for {name} is in use: set STACK_{name.upper()}_PORT")

    moto_url = f"http://127.0.0.1:{ports['moto']}"
    dynamodb_url = f"http://127.0.0.1:{ports['dynamodb']}"
    ucs_url = f"http://127.0.0.1:{ports['ucs']}"
    service_env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": moto_url,
        "AWS_ENDPOINT_URL_SQS": moto_url,
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_url,
        "UCS_TOKEN_KEYS": secrets.token_hex(32),
        # drs:// URIs name the stack's real host:port, so a self_uri resolves here; the
        # services never take it from a request's Host header.
        "UCS_DRS_HOSTNAME": f"127.0.0.1:{ports['ucs']}",
    }
    if s3_backend == "ceph":
        service_env.update(ceph_settings())
    # Settings of the services (sizes, lifetimes) pass through from the caller's environment.
    service_env.update({k: v for k, v in os.environ.items() if k.startswith("UCS_")})
    database_url = None
    if db_backend == "postgres":
        # State and jobs in this run's own database; no DynamoDB, no SQS (so their endpoints
        # are left out: a stray call fails instead of reaching a server).
        for name in ("AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_DYNAMODB"):
            service_env.pop(name, None)
        base_url = postgres_base_url()
        stack.database = (base_url, database_name(state_dir))
        database_url = recreate_database(*stack.database)
        service_env["UCS_STATE_BACKEND"] = "postgres"
        service_env["UCS_DATABASE_URL"] = database_url
    env = {**os.environ, **service_env, "PYTHONUNBUFFERED": "1"}
    if db_backend == "postgres":
        env.pop("AWS_ENDPOINT_URL_SQS", None)
        env.pop("AWS_ENDPOINT_URL_DYNAMODB", None)
    env.pop("AWS_ENDPOINT_URL", None)
    env.pop("AWS_PROFILE", None)

    try:
        python = sys.executable
        # moto serves SQS unless PostgreSQL holds the jobs, and S3 unless S3 is on Ceph (with
        # ranged GETs that read only the range, see moto_ranged.py); neither: no moto at all.
        moto_server = [python, str(BUILD_DIR / "moto_ranged.py")]
        if "moto" in needed:
            moto_args = [*moto_server, "-H", "127.0.0.1", "-p", str(ports["moto"])]
            moto = stack.spawn("moto", moto_args, env)
        if "dynamodb" in needed:
            dynamodb = stack.spawn(
                "dynamodb",
                [python, str(BUILD_DIR / "moto_single.py"), "127.0.0.1", str(ports["dynamodb"])],
                env,
            )
        if "moto" in needed:
            wait_for_http(f"{moto_url}/moto-api/", READY_TIMEOUT, moto, stack.log("moto"))
        if "dynamodb" in needed:
            wait_for_http(
                f"{dynamodb_url}/moto-api/", READY_TIMEOUT, dynamodb, stack.log("dynamodb")
            )
        run_admin(["create-resources"], env)

        ucs = stack.spawn(
            "ucs",
            [python, str(BUILD_DIR / "serve_local.py"), "--port", str(ports["ucs"])],
            env,
        )
        stack.ready_urls["ucs"] = f"{ucs_url}/openapi.json"
        stack.spawn("worker", [python, "-m", "ucs_lambda.worker"], env)
        wait_for_http(stack.ready_urls["ucs"], READY_TIMEOUT, ucs, stack.log("ucs"))

        demo_path = state_dir / "demo.bin"
        demo_md5 = write_random_file(demo_path, demo_size)
        run_admin(
            [
                "register-file",
                "--file-id",
                DEMO_FILE_ID,
                "--file-name",
                demo_path.name,
                "--size",
                str(demo_size),
                "--md5",
                demo_md5,
                "--submitter",
                DEMO_USER,
            ],
            env,
        )
        run_admin(["grant", "--file-id", DEMO_FILE_ID, "--user", DEMO_USER], env)
        token = run_admin(["mint-token", "--user", DEMO_USER, "--ttl", "max"], env)
    except BaseException:
        stack.stop()
        raise

    info: dict[str, Any] = {
        "ucs_url": ucs_url,
        "drs_url": f"{ucs_url}/ga4gh/drs/v1",
        "aws_endpoint_url": service_env["AWS_ENDPOINT_URL_S3"],
        "sqs_endpoint_url": moto_url if db_backend == "dynamodb" else None,
        "dynamodb_endpoint_url": dynamodb_url if db_backend == "dynamodb" else None,
        "database_url": database_url,
        "s3_backend": s3_backend,
        "db_backend": db_backend,
        "inbox_bucket": env.get("UCS_INBOX_BUCKET", "ghga-inbox"),
        "permanent_bucket": env.get("UCS_PERMANENT_BUCKET", "ghga-permanent"),
        "outbox_bucket": env.get("UCS_OUTBOX_BUCKET", "ghga-outbox"),
        "demo_file_id": DEMO_FILE_ID,
        "demo_file_path": str(demo_path),
        "demo_user": DEMO_USER,
        "demo_token": token,
        "env": service_env,
        "log_dir": str(stack.log_dir),
        "pids": {name: process.pid for name, process in stack.processes.items()},
    }
    stack_file = state_dir / "stack.json"
    partial = stack_file.with_suffix(".json.tmp")
    partial.write_text(json.dumps(info, indent=2))
    partial.chmod(0o600)
    os.replace(partial, stack_file)
    return stack


def drop_database(base_url: str, name: str) -> None:
    """Drop the stack's database (at the stop; best effort: a server gone is left alone)."""
    with contextlib.suppress(StackError, ImportError):
        recreate_database(base_url, name, create=False)


def configured_ports(auto: bool) -> dict[str, int]:
    defaults = {"ucs": 8000, "moto": 5050, "dynamodb": 5051}
    if auto:
        return {name: free_port() for name in defaults}
    return {
        name: int(os.environ.get(f"STACK_{name.upper()}_PORT", port))
        for name, port in defaults.items()
    }


def print_summary(info: dict[str, Any]) -> None:
    if info.get("db_backend") == "postgres":
        state = f"PostgreSQL: {info['database_url']}"
        backends = f"S3 on {info['s3_backend']}, state and jobs in PostgreSQL"
    else:
        state = f"DynamoDB: {info['dynamodb_endpoint_url']}"
        backends = f"S3 on {info['s3_backend']}"
    print(
        f"""
Local stack is up ({backends}). Stop it with Ctrl+C.
  UCS API:   {info["ucs_url"]}            (OpenAPI: {info["ucs_url"]}/openapi.json)
  DRS3 API:  {info["drs_url"]}
  S3:        {info["aws_endpoint_url"]}   {state}
  Settings:  {info.get("stack_file")}

Try it (demo file {info["demo_file_id"]!r}, user {info["demo_user"]!r}):
  export GHGA_CLI_TOKEN={info["demo_token"]}
  .venv/bin/ghga-cli upload-by-id --api-url {info["ucs_url"]} --file-id {info["demo_file_id"]} \\
      --file-path {info["demo_file_path"]}
  .venv/bin/ghga-cli download-by-id --api-url {info["ucs_url"]} --file-id {info["demo_file_id"]} \\
      --output-dir /tmp
  curl -H "Authorization: Bearer $GHGA_CLI_TOKEN" {info["ucs_url"]}/files/{info["demo_file_id"]}
Operator commands act on this stack: .venv/bin/python -m ucs_lambda.admin --help
""",
        flush=True,
    )


def request_restart(state_dir: Path, name: str, timeout: float = 2 * READY_TIMEOUT) -> int:
    """Ask a running stack (``make stack`` or :func:`launch`) to crash and restart one child.

    ``name`` is a key of ``stack.json``'s ``pids`` (``ucs``, ``worker``, ``moto``,
    ``dynamodb``; the moto servers lose their data; with ``--db postgres`` there is no
    ``dynamodb``, and no ``moto`` on Ceph). Returns the new pid once the child is up.
    """
    control = state_dir / "control"
    control.mkdir(exist_ok=True)
    request = control / f"restart-{name}"
    failed = control / f"restart-{name}.failed"
    failed.unlink(missing_ok=True)
    request.write_text("")
    deadline = time.monotonic() + timeout
    while request.exists():
        if time.monotonic() > deadline:
            raise StackError(f"the stack did not restart {name} within {timeout:.0f} s")
        time.sleep(0.05)
    if failed.exists():
        raise StackError(f"restarting {name} failed: {failed.read_text()}")
    return int(json.loads((state_dir / "stack.json").read_text())["pids"][name])


@contextlib.contextmanager
def launch(
    state_dir: Path,
    *,
    s3_backend: str = "moto",
    extra_env: dict[str, str] | None = None,
    demo_size: int = 1 << 20,
    db_backend: str = "dynamodb",
) -> Iterator[dict[str, Any]]:
    """Run ``build/stack.py`` as a child process on free ports; yield its ``stack.json``.

    Used by ``make demo`` and the end-to-end tests, so that they exercise exactly what
    ``make stack`` runs.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    stack_file = state_dir / "stack.json"
    stack_file.unlink(missing_ok=True)
    env = {**os.environ, **(extra_env or {})}
    args = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--state-dir",
        str(state_dir),
        "--s3",
        s3_backend,
        "--db",
        db_backend,
        "--auto-ports",
        "--demo-size",
        str(demo_size),
        "--quiet",
    ]
    log = (state_dir / "stack.out").open("wb")
    process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 2 * READY_TIMEOUT
        while not stack_file.exists():
            if process.poll() is not None:
                output = (state_dir / "stack.out").read_text(errors="replace")
                raise StackError(f"local stack failed to start:\n{output[-3000:]}")
            if time.monotonic() > deadline:
                raise StackError(f"local stack not ready after {2 * READY_TIMEOUT:.0f} s")
            time.sleep(0.1)
        yield json.loads(stack_file.read_text())
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="where stack.json and logs go"
    )
    parser.add_argument(
        "--s3",
        choices=["moto", "ceph"],
        default=os.environ.get("S3", "moto"),
        help="S3 backend: moto (default) or the Ceph RGW of `make ceph-up`",
    )
    parser.add_argument(
        "--db",
        choices=list(DB_BACKENDS),
        default=os.environ.get("STACK_DB", "dynamodb"),
        help="where state and jobs live: dynamodb (default: moto's DynamoDB and SQS) or "
        "postgres (a database of this stack's own on the PostgreSQL of build/pg-up.sh, "
        "started if needed, or on $STACK_PG_URL); env STACK_DB",
    )
    parser.add_argument(
        "--auto-ports", action="store_true", help="pick free ports instead of 8000/5050/5051"
    )
    parser.add_argument(
        "--demo-size",
        type=int,
        default=int(os.environ.get("STACK_DEMO_SIZE", 32 << 20)),
        help="size in bytes of the registered demo file (default 32 MiB)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not print the summary")
    args = parser.parse_args()

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    try:
        stack = start(
            args.state_dir.resolve(),
            args.s3,
            configured_ports(args.auto_ports),
            args.demo_size,
            args.db,
        )
    except StackError as error:
        print(f"stack: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    info = json.loads((args.state_dir / "stack.json").read_text())
    info["stack_file"] = str((args.state_dir / "stack.json").resolve())
    if not args.quiet:
        print_summary(info)
        print(f"(ready in {time.monotonic() - started:.1f} s)", flush=True)
    stack_file = args.state_dir.resolve() / "stack.json"
    try:
        while True:
            stack.serve_control_requests(stack_file)
            exited = stack.first_exited()
            if exited:
                print(f"stack: error: {exited} exited; see {stack.log(exited)}", file=sys.stderr)
                stack.stop()
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
        (args.state_dir / "stack.json").unlink(missing_ok=True)
    if not args.quiet:
        print("stack stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
