"""The command line's arguments: ``build_parser`` and the help texts.

Converters check every value as it is parsed (sizes, bounded integers, seconds), so a bad value
is a one-line error with exit code 2 before anything else happens. Which arguments belong
together, and the token, are checked by :mod:`ghga_cli.cli.run`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
from pathlib import Path
from typing import Callable, NoReturn

from ghga_cli import __version__
from ghga_cli.errors import EXIT_CODES_HELP, EXIT_USAGE
from ghga_cli.jobs.batch import EXIT_RULE_HELP

TOKEN_ENV = "GHGA_CLI_TOKEN"
API_URL_ENV = "GHGA_CLI_API_URL"
MIB = 1024 * 1024

DESCRIPTION = """\
Upload files to and download files from GHGA, one file or a manifest of many per
run. Transfers run in parallel over S3 presigned URLs, are verified with checksums,
retry transient network errors and resume where they stopped when the same command
is run again."""

EPILOG = f"""\
authentication:
  The access token is read from --token-file FILE or from the environment variable
  {TOKEN_ENV}. It is sent only to the --api-url server (or {API_URL_ENV}'s),
  the UCS/DRS API: never to the storage URLs the API hands out, and never to a host
  named only by a drs:// URI (a drs:// URI is accepted only if its host is the
  --api-url's). It is never printed.

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


#: The subcommands.
COMMANDS = ("upload-by-id", "download-by-id")


class ArgumentsError(SystemExit):
    """argparse refused the arguments (its one-line error is printed); exit code 2.

    A ``SystemExit`` like argparse's own, carrying the message, so that ``main`` can still
    print the ``--json`` report of the failed run.
    """

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(EXIT_USAGE)
        self.message = message
        self.hint = hint


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors in ghga-cli's format (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        hint = f"see {self.prog} --help"
        sys.stderr.write(f"ghga-cli: error: {message} (hint: {hint})\n")
        raise ArgumentsError(message, hint)


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
        "downloads (with or without the /ga4gh/drs/v1 suffix); the only server the token is "
        f"sent to; default: the environment variable {API_URL_ENV}",
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
        help="GHGA file ID, or the object's drs://host/id URI (its host must be the "
        "--api-url's); may be repeated",
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
