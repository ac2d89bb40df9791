"""Command line: ``ghga-cli upload-by-id`` and ``ghga-cli download-by-id``.

``main`` parses the arguments (:mod:`ghga_cli.cli.parser`), checks which belong together, reads
the token, runs the files through the transfer manager, prints through
:mod:`ghga_cli.cli.output`, and turns every failure into one line
``ghga-cli: error: <what> (hint: <what to do>)`` with the exit code documented in ``--help``.
Tracebacks are shown only with ``GHGA_CLI_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
import traceback
from concurrent.futures import Future
from pathlib import Path
from urllib.parse import urlsplit

from ghga_cli.cli.output import Console, file_line, success_line, summary_table
from ghga_cli.cli.parser import API_URL_ENV, COMMANDS, TOKEN_ENV, ArgumentsError, build_parser
from ghga_cli.curl import pycurl_module
from ghga_cli.errors import (
    EXIT_USAGE,
    CliError,
    Interrupted,
    LocalIOError,
    UsageError,
    internal_error,
)
from ghga_cli.files import check_local_file, check_output_dir
from ghga_cli.jobs.access import ApiAccess
from ghga_cli.jobs.api import Staging, resolve_file_id
from ghga_cli.jobs.batch import (
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

DEBUG_ENV = "GHGA_CLI_DEBUG"


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
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8, or a NUL in the path
            if isinstance(exc, OSError):
                where, reason = str(token_file), exc.strerror or "not readable"
            elif isinstance(exc, UnicodeDecodeError):
                where, reason = str(token_file), "not readable text"
            else:
                where, reason = repr(str(token_file)), "the path holds a NUL byte"
            raise UsageError(
                f"cannot read token file {where}: {reason}", "check --token-file"
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
    """``url`` if it is an http(s) URL with a host (and a valid port); UsageError otherwise."""
    try:
        parts = urlsplit(url)
        valid = bool(re.match(r"^https?://[^/\s]+", url) and parts.hostname) and parts.port != 0
    except ValueError:  # a port out of range or not a number, an unclosed IPv6 bracket
        valid = False
    if not valid:
        raise UsageError(f"invalid --api-url {url!r}", "give an http:// or https:// URL")
    return url


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code (``sys.exit`` by the caller)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except ArgumentsError as exc:  # its line is printed; --json promises the report too
        _print_argument_error_report(argv, exc)
        raise
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


def _print_argument_error_report(argv: list[str], exc: ArgumentsError) -> None:
    """With ``--json`` (and a command), the report of a run whose arguments were refused."""
    command = next((a for a in argv if a in COMMANDS), None)
    if command is None or "--json" not in argv:
        return
    report = RunReport(command=command, status="error", exit_code=EXIT_USAGE, total_seconds=0.0)
    report.error = ErrorReport(exc.message, exc.hint, EXIT_USAGE)
    report.files.append(FileReport("", "upload" if command == "upload-by-id" else "download"))
    Console(quiet=True).json(report)


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
    if not args.api_url:
        # The token goes only to --api-url: a drs:// URI is refused, naming its host as the
        # hint, so that the user names the server that gets the token.
        uris = [v for v in getattr(args, "file_ids", []) if v.lower().startswith("drs://")]
        if uris:
            resolve_file_id(uris[0], None)
        raise UsageError("--api-url is required", f"give --api-url URL or set {API_URL_ENV}")
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
