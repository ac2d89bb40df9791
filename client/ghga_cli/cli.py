"""Command line: ``ghga-cli upload-by-id`` and ``ghga-cli download-by-id``.

This layer parses arguments, reads the token, wires the API clients and the transfer engine
together, prints progress and results, and turns every failure into one line
``ghga-cli: error: <what> (hint: <what to do>)`` with the exit code documented in ``--help``.
Tracebacks are shown only with ``GHGA_CLI_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
import time
import traceback
from pathlib import Path
from typing import Any, Callable, NoReturn, TextIO

from ghga_cli import __version__
from ghga_cli.errors import (
    EXIT_CODES_HELP,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Interrupted,
    LocalIOError,
    UsageError,
)
from ghga_cli.progress import Progress, format_bytes, format_duration

TOKEN_ENV = "GHGA_CLI_TOKEN"
DEBUG_ENV = "GHGA_CLI_DEBUG"
MIB = 1024 * 1024

DESCRIPTION = """\
Upload files to and download files from GHGA. Transfers run in parallel over S3
presigned URLs, are verified with MD5 checksums, retry transient network errors and
resume where they stopped when the same command is run again."""

EPILOG = f"""\
authentication:
  The access token is read from --token-file FILE or from the environment variable
  {TOKEN_ENV}. It is sent only to the API (never to the storage) and never printed.

proxies:
  The standard variables http_proxy, https_proxy/HTTPS_PROXY, ALL_PROXY and NO_PROXY
  are honoured.

{EXIT_CODES_HELP}
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors in ghga-cli's format (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        hint = f"see {self.prog} --help"
        sys.stderr.write(f"ghga-cli: error: {message} (hint: {hint})\n")
        sys.exit(EXIT_USAGE)


def parse_size(text: str) -> int:
    """``65536``, ``64K``, ``16M``, ``16MiB``, ``1G`` -> bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not match:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (use e.g. 64M or 1G)")
    factor = {"": 1, "K": 1024, "M": MIB, "G": 1024 * MIB, "T": 1024 * 1024 * MIB}[match[2]]
    value = int(match[1]) * factor
    if value <= 0:
        raise argparse.ArgumentTypeError("size must be positive")
    return value


def _size_between(low: int, high: int, low_text: str, high_text: str) -> Callable[[str], int]:
    def convert(text: str) -> int:
        value = parse_size(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low_text} and {high_text}")
        return value

    return convert


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return convert


def _seconds(minimum: float) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from None
        if not value >= minimum or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g} seconds")
        return value

    return convert


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=88)


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="ghga-cli", description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter
    )
    parser.add_argument("--version", action="version", version=f"ghga-cli {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api-url",
        "--api_url",
        dest="api_url",
        required=True,
        metavar="URL",
        help="base URL of the API: the Upload Controller Service for uploads, DRS3 for "
        "downloads (with or without the /ga4gh/drs/v1 suffix)",
    )
    common.add_argument(
        "--file-id",
        "--file_id",
        dest="file_id",
        required=True,
        metavar="ID",
        help="GHGA file ID",
    )
    common.add_argument(
        "--token-file",
        metavar="FILE",
        type=Path,
        help=f"file holding the access token (default: environment variable {TOKEN_ENV})",
    )
    common.add_argument(
        "--parallel",
        type=_bounded_int(1, 64),
        default=8,
        metavar="N",
        help="parallel connections to the storage (1-64, default: %(default)s)",
    )
    common.add_argument(
        "--retries",
        type=_bounded_int(0, 100),
        default=5,
        metavar="N",
        help="retries per request after a network error, timeout, HTTP 5xx/408/429 or an "
        "expired URL, with exponential backoff and jitter (default: %(default)s)",
    )
    common.add_argument(
        "--stall-timeout",
        type=_seconds(1),
        default=60.0,
        metavar="SECONDS",
        help="abort and retry a request that moved less than 1 KiB/s for this long "
        "(default: %(default)g)",
    )
    common.add_argument(
        "--quiet", "-q", action="store_true", help="print no progress or messages, only errors"
    )
    common.add_argument(
        "--json",
        action="store_true",
        help="print one JSON summary object on stdout at the end (also on failure)",
    )

    up = commands.add_parser(
        "upload-by-id",
        parents=[common],
        help="upload a file registered with GHGA",
        description=_wrap(
            "Upload the local file --file-path as GHGA file --file-id. Rerunning the "
            "same command resumes an interrupted upload; parts already stored are verified and "
            "skipped. After the upload the command waits until GHGA validated the file."
        ),
        epilog=EPILOG,
        formatter_class=formatter,
    )
    up.add_argument(
        "--file-path",
        "--file_path",
        dest="file_path",
        type=Path,
        metavar="PATH",
        help="local file to upload (required unless --cancel)",
    )
    up.add_argument(
        "--wait-timeout",
        type=_seconds(0),
        default=3600.0,
        metavar="SECONDS",
        help="how long to wait for validation (accepted/rejected) after the upload; 0 = do not "
        "wait and exit 0 once the upload is confirmed (default: %(default)g)",
    )
    up.add_argument(
        "--max-memory",
        type=parse_size,
        default=1024 * MIB,
        metavar="SIZE",
        help="upper bound for part buffers (each part is held in memory until stored); "
        "--parallel is lowered if needed (default: 1G)",
    )
    up.add_argument(
        "--cancel",
        action="store_true",
        help="cancel the file's pending upload instead of uploading (no --file-path needed)",
    )

    down = commands.add_parser(
        "download-by-id",
        parents=[common],
        help="download a file from GHGA",
        description=_wrap(
            "Download GHGA file --file-id into --output-dir. The file is written as "
            "<name>.part and renamed only after its size and checksum were verified. Rerunning "
            "the same command resumes an interrupted download."
        ),
        epilog=EPILOG,
        formatter_class=formatter,
    )
    down.add_argument(
        "--output-dir",
        "--output_dir",
        dest="output_dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="existing, writable directory to save the file in",
    )
    down.add_argument(
        "--overwrite", action="store_true", help="replace the output file if it already exists"
    )
    down.add_argument(
        "--wait-timeout",
        type=_seconds(0),
        default=3600.0,
        metavar="SECONDS",
        help="how long to wait while GHGA stages the file for download (default: %(default)g)",
    )
    down.add_argument(
        "--range-size",
        # Every range is one GET and one entry in the resume state: below 64K the requests
        # cost more than the bytes; above 5G a retried range repeats too much.
        type=_size_between(64 * 1024, 5 * 1024 * MIB, "64K", "5G"),
        default=32 * MIB,
        metavar="SIZE",
        help="size of each parallel byte range, 64K..5G (default: 32M)",
    )
    return parser


def read_token(token_file: Path | None, environ: dict[str, str] | None = None) -> str:
    """The token from ``token_file`` or ``$GHGA_CLI_TOKEN`` (UsageError if absent or bad)."""
    environ = os.environ if environ is None else environ
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise UsageError(f"token file {token_file} not found", "check --token-file") from None
        except IsADirectoryError:
            raise UsageError(
                f"token file {token_file} is a directory", "check --token-file"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not readable text"
            raise UsageError(
                f"cannot read token file {token_file}: {reason}", "check --token-file"
            ) from None
        source = f"token file {token_file}"
    else:
        token = environ.get(TOKEN_ENV, "").strip()
        source = f"${TOKEN_ENV}"
        if not token:
            raise UsageError(
                "no access token given",
                f"pass --token-file FILE or set the environment variable {TOKEN_ENV}",
            )
    if not token:
        raise UsageError(f"{source} is empty", "put the access token in it")
    if any(c.isspace() or ord(c) < 33 or ord(c) > 126 for c in token):
        raise UsageError(
            f"{source} does not look like a token (it contains spaces, line breaks or "
            "non-ASCII characters)",
            "it must hold only the token",
        )
    return token


def check_api_url(url: str) -> str:
    if not re.match(r"^https?://[^/\s]+", url):
        raise UsageError(f"invalid --api-url {url!r}", "give an http:// or https:// URL")
    return url


class Console:
    """stderr output: messages, the live progress line, and the final line."""

    def __init__(self, quiet: bool, stream: TextIO | None = None):
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.progress: Progress | None = None

    def log(self, text: str) -> None:
        if self.quiet:
            return
        if self.progress is not None:
            self.progress.message(text)
        else:
            self.stream.write(f"ghga-cli: {text}\n")
            self.stream.flush()

    def make_progress(self, total: int) -> Progress:
        self.progress = Progress(total, quiet=self.quiet, stream=self.stream)
        return self.progress


def _scrub(text: str, secrets: list[str]) -> str:
    """Remove query strings of URLs and any secret from text meant for output."""
    text = re.sub(r"(https?://[^\s?#'\"]+)\?[^\s'\"]*", r"\1?…", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code (``sys.exit`` by the caller)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(args.quiet)
    secrets: list[str] = []
    summary: dict[str, Any] = {"command": args.command, "file_id": args.file_id}
    started = time.monotonic()
    code = EXIT_OK
    error: CliError | None = None
    try:
        try:
            status = _run(args, console, summary, secrets)
        except KeyboardInterrupt:
            raise Interrupted() from None
        summary["status"] = status
        _print_success(args, console, summary, status)
    except CliError as exc:
        error = exc
        code = exc.exit_code
    except OSError as exc:  # transfers go through pycurl, so this is a local file (disk full, ...)
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        error = LocalIOError.from_os_error(exc)
        code = error.exit_code
    except Exception as exc:  # a bug: one line unless debugging
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        error = CliError(
            f"unexpected internal error: {type(exc).__name__}: {exc}",
            f"rerun with {DEBUG_ENV}=1 for details and report it",
        )
        code = EXIT_FAILURE
    if error is not None:
        if os.environ.get(DEBUG_ENV) and error.__traceback__ is not None:
            traceback.print_exception(type(error), error, error.__traceback__)
        if console.progress is not None:
            console.progress.finish()
        line = _scrub(error.one_line(), secrets)
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        summary["status"] = "interrupted" if isinstance(error, Interrupted) else "error"
        summary["error"] = {
            "message": _scrub(error.message, secrets),
            "hint": _scrub(error.hint, secrets),
            "exit_code": code,
        }
    if args.json:
        summary.setdefault("seconds", round(time.monotonic() - started, 3))
        summary["total_seconds"] = round(time.monotonic() - started, 3)
        summary["exit_code"] = code
        text = _scrub(json.dumps(summary, sort_keys=True), secrets)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    return code


def _run(
    args: argparse.Namespace, console: Console, summary: dict[str, Any], secrets: list[str]
) -> str:
    from ghga_cli.api import DrsClient, UcsClient
    from ghga_cli.curl import pycurl_module
    from ghga_cli.http import HttpClient
    from ghga_cli.retry import RetryPolicy

    check_api_url(args.api_url)
    if args.command == "upload-by-id" and not args.cancel and args.file_path is None:
        raise UsageError("--file-path is required", "give the file to upload with --file-path")
    if args.command == "download-by-id":
        from ghga_cli.files import check_output_dir

        check_output_dir(args.output_dir)
    elif not args.cancel:
        from ghga_cli.uploads import check_local_file

        check_local_file(args.file_path)
    token = read_token(args.token_file)
    secrets.append(token)
    pycurl_module()  # fail early and clearly if pycurl is missing
    http = HttpClient(
        token,
        RetryPolicy(retries=args.retries),
        stall_timeout=args.stall_timeout,
        log=console.log,
    )
    try:
        if args.command == "upload-by-id":
            return _upload(args, console, summary, http, UcsClient(http, args.api_url))
        drs = DrsClient(http, args.api_url, log=console.log)
        return _download(args, console, summary, drs)
    finally:
        summary["api_retries"] = http.retries
        http.close()


def _upload(
    args: argparse.Namespace, console: Console, summary: dict[str, Any], http: Any, ucs: Any
) -> str:
    from ghga_cli.uploads import Uploader, UploadOptions

    options = UploadOptions(
        file_id=args.file_id,
        path=args.file_path or Path(),
        parallel=args.parallel,
        retries=args.retries,
        stall_timeout=args.stall_timeout,
        wait_timeout=args.wait_timeout,
        max_memory=args.max_memory,
    )
    uploader = Uploader(ucs, options, progress_factory=console.make_progress, log=console.log)
    try:
        return uploader.cancel() if args.cancel else uploader.upload()
    finally:
        summary.update(uploader.summary)


def _download(args: argparse.Namespace, console: Console, summary: dict[str, Any], drs: Any) -> str:
    from ghga_cli.downloads import Downloader, DownloadOptions

    options = DownloadOptions(
        file_id=args.file_id,
        output_dir=args.output_dir,
        parallel=args.parallel,
        retries=args.retries,
        stall_timeout=args.stall_timeout,
        wait_timeout=args.wait_timeout,
        overwrite=args.overwrite,
        range_size=args.range_size,
    )
    downloader = Downloader(drs, options, progress_factory=console.make_progress, log=console.log)
    try:
        downloader.download()
        return "downloaded"
    finally:
        summary.update(downloader.summary)


def _print_success(
    args: argparse.Namespace, console: Console, summary: dict[str, Any], status: str
) -> None:
    if args.quiet:
        return
    moved = summary.get("bytes_transferred")
    detail = ""
    if moved is not None and summary.get("seconds"):
        rate = summary.get("mib_per_s")
        detail = (
            f" ({format_bytes(moved)} in {format_duration(summary['seconds'])}"
            + (f", {rate:.1f} MiB/s" if rate else "")
            + f", {summary.get('retries', 0)} retries)"
        )
    if args.command == "upload-by-id":
        what = {
            "accepted": "uploaded and accepted",
            "uploaded": "uploaded (validation pending)",
            "cancelled": "upload cancelled",
        }.get(status, status)
        console.log(f"file {args.file_id}: {what}{detail}")
    else:
        console.log(f"file {args.file_id} saved as {summary.get('output')}{detail}")


def run() -> NoReturn:
    sys.exit(main())
