"""``ghga-cli`` run as users run it: the console script (or the zipapp) in a child process, the
token in ``GHGA_CLI_TOKEN``, from a neutral working directory, and through the fault proxy
(``http_proxy``) when a test needs to see or break its requests."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers.admin import grant, register_file
from tests.helpers.faultproxy import FaultProxy
from tests.helpers.localstack import E2E_PART_SIZE
from tests.helpers.report_schema import load_report

#: The client's exit codes the tests name (docs: README, "Exit codes").
EXIT_USAGE, EXIT_AUTH, EXIT_CONFLICT, EXIT_INTEGRITY, EXIT_NETWORK = 2, 3, 4, 5, 6

#: Variables that could route the client around the proxy (or through another one).
PROXY_VARIABLES = (
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
)


def client_env(
    token: str | None = None, proxy: FaultProxy | None = None, **extra: str
) -> dict[str, str]:
    """The caller's environment for one client run: ``token`` (if any) in ``GHGA_CLI_TOKEN``,
    every request through ``proxy`` (if any), then ``extra``.

    The caller's own token, ``GHGA_CLI_DEBUG`` (tracebacks) and proxy variables are left out:
    libcurl reads the lowercase ``http_proxy`` for http:// URLs, and ``no_proxy``/``NO_PROXY``
    (which often list 127.0.0.1) would let requests bypass the proxy.
    """
    dropped = {*PROXY_VARIABLES, "GHGA_CLI_TOKEN", "GHGA_CLI_DEBUG"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    if proxy is not None:
        env["http_proxy"] = proxy.url
    if token:
        env["GHGA_CLI_TOKEN"] = token
    env.update(extra)
    return env


def run_cli(
    cli: list[str],
    args: list[str],
    *,
    token: str | None = None,
    proxy: FaultProxy | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess:
    """Run ``cli args`` to its end with :func:`client_env` (``env``: extra variables).

    With ``--json`` the summary it printed is checked against docs/report.schema.json.
    """
    result = subprocess.run(
        [*cli, *args],
        env=client_env(token, proxy, **(env or {})),
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    check_json_output(args, result)
    return result


def check_json_output(args: list[str], result: subprocess.CompletedProcess) -> None:
    """A run with ``--json`` that ended by itself printed one report valid by the schema."""
    if "--json" in args and result.returncode >= 0 and not {"--help", "--version"} & set(args):
        load_report(result.stdout)


def upload_args(
    stack: dict[str, Any], file_id: str, path: Path, *extra: str, json: bool = True
) -> list[str]:
    """``upload-by-id`` of ``path`` as ``file_id`` on the stack (``--json`` unless told)."""
    args = ["upload-by-id", "--api-url", stack["ucs_url"], "--file-id", file_id]
    args += ["--file-path", str(path)]
    return [*args, *(["--json"] if json else []), *extra]


def download_args(
    stack: dict[str, Any], file_id: str, out: Path, *extra: str, json: bool = True
) -> list[str]:
    """``download-by-id`` of ``file_id`` into ``out`` (``--json`` unless told), with ranges as
    small as the e2e parts, so a file of a few parts needs many ranges."""
    args = ["download-by-id", "--api-url", stack["ucs_url"], "--file-id", file_id]
    args += ["--output-dir", str(out), "--range-size", str(E2E_PART_SIZE)]
    return [*args, *(["--json"] if json else []), *extra]


def upload(
    cli: list[str],
    stack: dict[str, Any],
    token: str | None,
    file_id: str,
    path: Path,
    *extra: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """One upload, no proxy; ``extra`` arguments (``--json`` too) after the file's."""
    args = upload_args(stack, file_id, path, *extra, json=False)
    return run_cli(cli, args, token=token, env=env)


def download(
    cli: list[str], stack: dict[str, Any], token: str | None, file_id: str, out: Path, *extra: str
) -> subprocess.CompletedProcess:
    """One download, no proxy; ``extra`` arguments (``--json`` too) after the file's."""
    return run_cli(cli, download_args(stack, file_id, out, *extra, json=False), token=token)


def summary_of(result: subprocess.CompletedProcess) -> dict[str, Any]:
    """The run's ``--json`` summary (stdout)."""
    assert result.stdout.strip(), result.stderr
    return load_report(result.stdout)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *words: str) -> None:
    """The run failed with ``code`` and a short message (no traceback) naming ``words``."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().lower()
    for word in words:
        assert word.lower() in message, message


def archived_file(
    cli: list[str],
    stack: dict[str, Any],
    stack_env: dict[str, str],
    user: dict[str, str],
    data: bytes,
    prefix: str = "e2e",
) -> str:
    """Register ``data`` as ``<id>.bin``, upload it with the client, grant it to ``user``; the
    file id, once the file is accepted (not staged for download yet)."""
    file_id = register_file(stack_env, user["user"], data, prefix=prefix)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"{file_id}.bin"
        source.write_bytes(data)
        result = upload(cli, stack, user["token"], file_id, source)
    assert result.returncode == 0, result.stderr[-2000:]
    grant(stack_env, file_id, user["user"])
    return file_id


# -- a client in the background ---------------------------------------------------------------


def start_cli(
    command: list[str], token: str, proxy: FaultProxy | None, logs: Path
) -> subprocess.Popen:
    """Start ``command`` (the client's argv) in the background, its output in ``logs/stdout``
    and ``logs/stderr`` (files, never a pipe that could fill)."""
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "stdout").open("w") as out, (logs / "stderr").open("w") as err:
        return subprocess.Popen(
            command,
            env=client_env(token, proxy),
            cwd=tempfile.gettempdir(),
            stdout=out,
            stderr=err,
            text=True,
        )


def finished(process: subprocess.Popen, logs: Path) -> subprocess.CompletedProcess:
    """Wait for a client started by :func:`start_cli`; what it printed (with ``--json``, a
    report valid by the schema unless the client was killed)."""
    process.wait()
    result = subprocess.CompletedProcess(
        process.args,
        process.returncode,
        (logs / "stdout").read_text(),
        (logs / "stderr").read_text(),
    )
    check_json_output(list(process.args), result)
    return result


def kill_when(
    cli: list[str],
    token: str,
    proxy: FaultProxy,
    args: list[str],
    logs: Path,
    condition: Callable[[], bool],
    timeout: float = 60.0,
) -> subprocess.CompletedProcess:
    """Start the client, SIGKILL it as soon as ``condition()`` holds; return what it printed."""
    process = start_cli([*cli, *args], token, proxy, logs)
    try:
        deadline = time.monotonic() + timeout
        while not condition():
            if process.poll() is not None:
                break
            assert time.monotonic() < deadline, "the kill condition never held"
            time.sleep(0.02)
    finally:
        process.kill()
        process.wait()
    result = finished(process, logs)
    assert process.returncode == -signal.SIGKILL, (
        f"the client ended by itself (exit {process.returncode}) before it could be killed: "
        f"{result.stderr[-2000:]}"
    )
    return result
