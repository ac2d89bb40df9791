"""Command line: ``ghga-cli upload-by-id`` and ``ghga-cli download-by-id``.

This layer parses arguments, reads the token, wires the API clients and the transfer engine
together, prints progress and results, and turns every failure into one line
``ghga-cli: error: <what> (hint: <what to do>)`` with the exit code documented in ``--help``.
Tracebacks are shown only with ``GHGA_CLI_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
import threading
import time
import traceback
from concurrent.futures import Future
from pathlib import Path
from typing import Callable, NoReturn

from ghga_cli import __version__
from ghga_cli.cli.output import Console, file_line, success_line, summary_table
from ghga_cli.curl import pycurl_module
from ghga_cli.errors import (
    EXIT_CODES_HELP,
    EXIT_USAGE,
    CliError,
    Interrupted,
    LocalIOError,
    UsageError,
    internal_error,
)
from ghga_cli.files import check_local_file, check_output_dir
from ghga_cli.jobs.access import ApiAccess
from ghga_cli.jobs.api import Staging
from ghga_cli.jobs.batch import (
    EXIT_RULE_HELP,
    batch_exit_code,
    describe_upload_plan,
    plan_download_options,
    plan_downloads,
    plan_uploads,
    preflight_downloads,
)
from ghga_cli.jobs.download import DownloadOptions
from ghga_cli.jobs.http import TokenSource
from ghga_cli.jobs.upload import UploadOptions, cancel_upload
from ghga_cli.manager import ManagerOptions, TransferManager
from ghga_cli.manifest import Entry, read_download_manifest, read_upload_manifest
from ghga_cli.report import ErrorReport, FileReport, RunReport
from ghga_cli.retry import RetryPolicy
from ghga_cli.transfer.engine import InterruptFlag

TOKEN_ENV = "GHGA_CLI_TOKEN"
API_URL_ENV = "GHGA_CLI_API_URL"
DEBUG_ENV = "GHGA_CLI_DEBUG"
MIB = 1024 * 1024

DESCRIPTION = """\
Upload files to and download files from GHGA, one file or a manifest of many per
run. Transfers run in parallel over S3 presigned URLs, are verified with checksums,
retry transient network errors and resume where they stopped when the same command
is run again."""

EPILOG = f"""\
authentication:
  The access token is read from --token-file FILE or from the environment variable
  {TOKEN_ENV}. It is sent only to the API (never to the storage) and never printed.

proxies:
  The standard variables http_proxy, https_proxy/HTTPS_PROXY, ALL_PROXY and NO_PROXY
  are honoured.

{EXIT_CODES_HELP}

{EXIT_RULE_HELP}
"""

UPLOAD_EPILOG = f"""\
checksums:
  The server reads every uploaded byte back and accepts a file only if its size and
  MD5 equal the registered ones, so by default this client hashes nothing while it
  sends. --part-md5 also checks each part's MD5 against the storage's ETag while it
  is sent (a damaged part is resent at once instead of the file being rejected at the
  end); --local-md5 computes the whole file's MD5 here too. Against a server that
  does not verify files itself both checks are on (--no-part-md5 turns off the first).
  Parts already in storage are checked against the local file before a resume skips
  them.

many files:
  --manifest FILE lists one file per line: FILE_ID<TAB>PATH, or a CSV file with the
  header file_id,path. Blank lines and lines starting with # are ignored; relative
  paths are relative to the manifest's directory. Every line is checked first (file
  readable, size equal to the registered size, upload allowed, no duplicates); all
  problems are listed with their line numbers before anything is sent. A rerun skips
  files already accepted and resumes the others.

{EPILOG}"""

DOWNLOAD_EPILOG = f"""\
checksums:
  A file is verified with the cheapest strong checksum the server offers on this
  machine: MD5 and SHA-256 are timed on a small buffer at start-up and the faster
  one is used (--json says which, as checksum_type). A resumed download keeps the
  checksum type it started with.

many files:
  Repeat --file-id, or give --manifest FILE with one file id (or drs:// URI) per line
  (blank lines and # comments allowed). Staging is requested for every file at the
  start and each file is downloaded as soon as it is staged. Files keep their
  registered names in --output-dir; two files with the same name are an error
  before anything is written. A rerun skips files that are already there and match
  their checksum, and resumes the others.

{EPILOG}"""


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
        default=os.environ.get(API_URL_ENV) or None,
        metavar="URL",
        help="base URL of the API: the Upload Controller Service for uploads, DRS3 for "
        "downloads (with or without the /ga4gh/drs/v1 suffix); default: the environment "
        f"variable {API_URL_ENV}",
    )
    common.add_argument(
        "--token-file",
        metavar="FILE",
        type=Path,
        help=f"file holding the access token (default: environment variable {TOKEN_ENV}); "
        "re-read once when the API refuses the token, so a long run can continue with a "
        "renewed token written to the same file",
    )
    common.add_argument(
        "--manifest",
        metavar="FILE",
        type=Path,
        help="move every file listed in FILE in one run (see 'many files' below)",
    )
    common.add_argument(
        "--parallel",
        type=_bounded_int(1, 64),
        default=8,
        metavar="N",
        help="parallel connections to the storage in all, shared by the files of a run "
        "(1-64, default: %(default)s)",
    )
    common.add_argument(
        "--parallel-files",
        type=_bounded_int(1, 64),
        default=4,
        metavar="N",
        help="files whose bytes move at once in a run of many files; files waiting for "
        "validation or staging do not count (1-64, default: %(default)s)",
    )
    common.add_argument(
        "--fail-fast",
        action="store_true",
        help="stop the whole run at the first file that fails (default: the other files go on)",
    )
    common.add_argument(
        "--dry-run",
        action="store_true",
        help="check the files (and the manifest) and say what would be done; move nothing",
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
        help="print one JSON summary object on stdout at the end (also on failure); for many "
        "files it holds one result per file under 'files'",
    )

    up = commands.add_parser(
        "upload-by-id",
        parents=[common],
        help="upload a file registered with GHGA",
        description=_wrap(
            "Upload the local file --file-path as GHGA file --file-id, or every file of "
            "--manifest. Rerunning the same command resumes an interrupted upload; parts "
            "already stored are verified against the local file and skipped. After the upload "
            "the command waits until GHGA validated the file: the server reads every uploaded "
            "byte back and accepts the file only if its MD5 equals the registered one."
        ),
        epilog=UPLOAD_EPILOG,
        formatter_class=formatter,
    )
    up.add_argument(
        "--file-id",
        "--file_id",
        dest="file_id",
        metavar="ID",
        help="GHGA file ID (required unless --manifest)",
    )
    up.add_argument(
        "--file-path",
        "--file_path",
        dest="file_path",
        type=Path,
        metavar="PATH",
        help="local file to upload (required unless --cancel or --manifest)",
    )
    up.add_argument(
        "--wait-timeout",
        type=_seconds(0),
        default=None,
        metavar="SECONDS",
        help="longest wait for validation (accepted/rejected) after the upload; 0 = do not "
        "wait and exit 0 once the upload is confirmed (default: wait as long as the server "
        "makes progress: give up after an hour without any)",
    )
    parts = up.add_mutually_exclusive_group()
    parts.add_argument(
        "--part-md5",
        dest="part_md5",
        action="store_const",
        const=True,
        default=None,
        help="check each part's MD5 against the ETag the storage returns while it is sent, so "
        "that a part damaged on its way is sent again at once (default: only against a server "
        "that does not read files back itself; costs about 2 CPU s/GiB). Useful over plain "
        "http on an unreliable network, where the server's check would otherwise reject the "
        "whole file at the end. Stored parts are always checked on resume",
    )
    parts.add_argument(
        "--no-part-md5",
        dest="part_md5",
        action="store_const",
        const=False,
        help="never check the parts' MD5s while sending, not even against a server that does "
        "not verify files (then only the whole-file MD5 is compared before confirming)",
    )
    up.add_argument(
        "--local-md5",
        action="store_true",
        help="also compute the whole file's MD5 here and compare it with the registered one "
        "before confirming (always on against a server that does not verify files itself)",
    )
    up.add_argument(
        "--max-memory",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help=argparse.SUPPRESS,  # obsolete: memory no longer depends on the part size
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
            "Download GHGA file --file-id (repeat it for several files, or use --manifest) "
            "into --output-dir. A file is written to a working file in "
            "--output-dir/.ghga-cli/ and renamed into place only after its size and checksum "
            "were verified. Rerunning the same command resumes an interrupted download."
        ),
        epilog=DOWNLOAD_EPILOG,
        formatter_class=formatter,
    )
    down.add_argument(
        "--file-id",
        "--file_id",
        dest="file_ids",
        action="append",
        default=[],
        metavar="ID",
        help="GHGA file ID, or the object's drs://host/id URI; may be repeated",
    )
    down.add_argument(
        "--output-dir",
        "--output_dir",
        dest="output_dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="existing, writable directory to save the files in (under their registered names)",
    )
    down.add_argument(
        "--overwrite", action="store_true", help="replace output files that already exist"
    )
    down.add_argument(
        "--wait-timeout",
        type=_seconds(0),
        default=3600.0,
        metavar="SECONDS",
        help="how long to wait while GHGA stages a file for download (default: %(default)g)",
    )
    down.add_argument(
        "--range-size",
        # Every range is one GET and one entry in the resume state: below 64K the requests
        # cost more than the bytes; above 5G a retried range repeats too much.
        type=_size_between(64 * 1024, 5 * 1024 * MIB, "64K", "5G"),
        default=32 * MIB,
        metavar="SIZE",
        help="size of each parallel byte range, 64K..5G (default: 32M; raised for files "
        "that would need more than 50,000 ranges)",
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code (``sys.exit`` by the caller)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(args.quiet)
    report = RunReport(command=args.command)
    started = time.monotonic()
    error: CliError | None = None
    try:
        try:
            _run(args, console, report)
        except KeyboardInterrupt:
            raise Interrupted() from None
    except CliError as exc:
        error = exc
    except OSError as exc:  # transfers go through pycurl, so this is a local file (disk full, ...)
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        error = LocalIOError.from_os_error(exc)
    except Exception as exc:  # a bug: one line unless debugging
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        error = internal_error(exc)
    if error is not None:
        if os.environ.get(DEBUG_ENV) and error.__traceback__ is not None:
            traceback.print_exception(type(error), error, error.__traceback__)
        console.error(error)
        report.status = "interrupted" if isinstance(error, Interrupted) else "error"
        report.error = ErrorReport.of(error)
        report.exit_code = error.exit_code
        if not report.files and not report.batch:
            report.files.append(FileReport(_first_id(args) or "", _direction(args)))
    report.total_seconds = round(time.monotonic() - started, 3)
    if args.json:
        console.json(report)
    return report.exit_code


def _direction(args: argparse.Namespace) -> str:
    return "upload" if args.command == "upload-by-id" else "download"


def _first_id(args: argparse.Namespace) -> str | None:
    if args.command == "upload-by-id":
        return args.file_id
    return args.file_ids[0] if len(args.file_ids) == 1 and not args.manifest else None


def _run(args: argparse.Namespace, console: Console, report: RunReport) -> None:
    """Check the arguments, read the token, run the files; the outcome goes into ``report``."""
    batch = _check_arguments(args)
    report.batch = batch
    if args.command == "download-by-id":
        check_output_dir(args.output_dir)
    elif not args.cancel and not batch:
        check_local_file(args.file_path)
    if args.command == "upload-by-id" and args.max_memory is not None:
        console.log(
            "--max-memory is no longer needed and is ignored: upload memory no longer depends "
            "on the part size (parts stream from the file)"
        )
    token = read_token(args.token_file)
    tokens = TokenSource(token, args.token_file, read_token if args.token_file else None)
    console.add_secrets([token])
    pycurl_module()  # fail early and clearly if pycurl is missing
    api_url, entries = (
        _download_targets(args) if args.command == "download-by-id" else (args.api_url, None)
    )
    api = ApiAccess(
        api_url,
        tokens,
        RetryPolicy(retries=args.retries),
        stall_timeout=args.stall_timeout,
        log=console.log,
        interrupt=InterruptFlag(),
    )
    try:
        if args.command == "upload-by-id":
            _upload(args, console, report, api, batch)
        else:
            _download(args, console, report, api, entries or [], batch)
    finally:
        report.api_retries = api.retries
        report.token_renewals = tokens.renewals
        console.add_secrets(tokens.seen)
        api.close()


def _check_arguments(args: argparse.Namespace) -> bool:
    """Which arguments belong together; True for a run of many files."""
    if not args.api_url and not (
        args.command == "download-by-id"
        and args.file_ids
        and all(v.lower().startswith("drs://") for v in args.file_ids)
    ):
        raise UsageError("--api-url is required", f"give --api-url URL or set {API_URL_ENV}")
    if args.api_url:
        check_api_url(args.api_url)
    if args.command == "upload-by-id":
        if args.manifest is not None:
            if args.file_id or args.file_path or args.cancel:
                raise UsageError(
                    "--manifest replaces --file-id/--file-path (and cannot be combined with "
                    "--cancel)",
                    "give either a manifest or one file",
                )
            return True
        if not args.file_id:
            raise UsageError("--file-id is required", "give --file-id ID (or --manifest FILE)")
        if not args.cancel and args.file_path is None:
            raise UsageError("--file-path is required", "give the file to upload with --file-path")
        return False
    if not args.file_ids and args.manifest is None:
        raise UsageError("--file-id is required", "give --file-id ID (or --manifest FILE)")
    return args.manifest is not None or len(args.file_ids) > 1


def _manager(
    args: argparse.Namespace, console: Console, api: ApiAccess, batch: bool
) -> TransferManager:
    options = ManagerOptions(
        parallel=args.parallel,
        files_in_flight=args.parallel_files if batch else 1,
        retries=args.retries,
        stall_timeout=args.stall_timeout,
        fail_fast=args.fail_fast,
    )
    return TransferManager(
        options,
        api,
        progress=console.make_progress(0),
        log=console.log,
        interrupt=api.interrupt,
        batch=batch,
    )


def _run_manager(
    args: argparse.Namespace,
    console: Console,
    report: RunReport,
    manager: TransferManager,
    futures: list[Future[FileReport]],
) -> None:
    """Run the submitted files; one file: its status or its error; many: the batch's code."""
    progress = manager.progress
    assert progress is not None
    if report.batch:
        total = len(futures)
        ended = [0]
        lock = threading.Lock()
        progress.set_files(0, total)

        def file_ended(future: Future[FileReport]) -> None:
            with lock:
                ended[0] += 1
                done = ended[0]
            progress.set_files(done, total)
            console.log(file_line(future.result(), done, total))

        for future in futures:
            future.add_done_callback(file_ended)
    try:
        files = manager.run()
    finally:
        progress.finish()
    report.files = files
    if not report.batch:
        (single,) = files
        if single.error is not None:
            raise _failure_of(single)
        report.status = single.status
        if not args.quiet:
            console.log(success_line(args.command, single))
        return
    stop = manager.stop_reason
    report.exit_code = batch_exit_code(files, stop)
    report.status = "ok" if report.exit_code == 0 else "failed"
    report.stopped_by = stop.message if stop is not None else None
    if not args.quiet:
        for line in summary_table(files):
            console.log(line)


def _failure_of(single: FileReport) -> CliError:
    """The one file's failure, raised again as the run's."""
    assert single.error is not None
    if single.exception is not None:
        return single.exception
    return CliError(single.error.message, single.error.hint, exit_code=single.exit_code)


def _upload(
    args: argparse.Namespace, console: Console, report: RunReport, api: ApiAccess, batch: bool
) -> None:
    template = UploadOptions(
        file_id=args.file_id or "",
        path=args.file_path or Path(),
        check_parts=args.part_md5,
        local_md5=args.local_md5,
        wait_timeout=args.wait_timeout,
    )
    if not batch:
        if args.cancel:
            single = FileReport(args.file_id, "upload")
            report.files = [single]
            single.status = report.status = cancel_upload(api, args.file_id, single)
            console.log(f"cancelled upload {single.upload_id} of file {args.file_id}")
            return
        if args.dry_run:
            raise UsageError("--dry-run is for manifests", "use it together with --manifest")
        manager = _manager(args, console, api, batch=False)
        _run_manager(args, console, report, manager, [manager.upload(template)])
        return
    entries, problems = read_upload_manifest(args.manifest)
    planned = plan_uploads(entries, api, template, f"manifest {args.manifest}", problems)
    if args.dry_run:
        for line in describe_upload_plan(planned):
            console.log(line)
        report.files = [FileReport(o.file_id, "upload", line=o.line) for o in planned]
        report.status = "dry-run"
        console.log(f"dry run: {len(planned)} files checked; nothing was sent")
        return
    manager = _manager(args, console, api, batch=True)
    futures = [manager.upload(options) for options in planned]
    _run_manager(args, console, report, manager, futures)


def _download_targets(args: argparse.Namespace) -> tuple[str, list[tuple[Entry, str]]]:
    """The DRS API URL and the (entry, file id) pairs of --file-id values and --manifest."""
    values = [Entry(0, value) for value in args.file_ids]
    source, problems = "--file-id", []
    if args.manifest is not None:
        listed, problems = read_download_manifest(args.manifest)
        values += listed
        source = f"manifest {args.manifest}"
    return plan_downloads(values, args.api_url, source, problems)


def _download(
    args: argparse.Namespace,
    console: Console,
    report: RunReport,
    api: ApiAccess,
    entries: list[tuple[Entry, str]],
    batch: bool,
) -> None:
    template = DownloadOptions(
        file_id="",
        output_dir=args.output_dir,
        overwrite=args.overwrite,
        range_size=args.range_size,
        wait_timeout=args.wait_timeout,
    )
    if not batch:
        ((_entry, file_id),) = entries
        template.file_id = file_id
        if args.dry_run:
            raise UsageError("--dry-run is for many files", "use it with --manifest")
        manager = _manager(args, console, api, batch=False)
        _run_manager(args, console, report, manager, [manager.download(template)])
        return
    source = f"manifest {args.manifest}" if args.manifest else "--file-id"
    known = preflight_downloads(entries, api, source)
    planned = plan_download_options(entries, template, known)
    if args.dry_run:
        for options in planned:
            what = "being staged" if isinstance(options.known, Staging) else "staged"
            console.log(f"{options.file_id}: {what}")
        report.files = [FileReport(o.file_id, "download", line=o.line) for o in planned]
        report.status = "dry-run"
        console.log(f"dry run: {len(planned)} files checked; nothing was downloaded")
        return
    manager = _manager(args, console, api, batch=True)
    futures = [manager.download(options) for options in planned]
    _run_manager(args, console, report, manager, futures)
