"""Many files in one run: the checks before any byte moves, and the batch's verdict.

``plan_uploads`` and ``plan_downloads`` turn manifest entries into what to submit to the
transfer manager (:class:`UploadOptions`, :class:`DownloadOptions`), after checking
everything that can be checked up front with few API calls (one batch lookup of the files'
metadata for uploads, DRS bulk requests for downloads): every problem is listed with its line
number and nothing is transferred. :func:`batch_exit_code` is the documented rule for a batch
whose files ended differently.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ghga_cli.errors import (
    EXIT_AUTH,
    EXIT_FAILURE,
    EXIT_INTEGRITY,
    EXIT_INTERRUPTED,
    EXIT_NETWORK,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PROTOCOL,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CliError,
    UsageError,
)
from ghga_cli.files import LocalFile, sanitise_name
from ghga_cli.jobs.access import ApiAccess
from ghga_cli.jobs.api import DrsObject, Staging, resolve_file_id
from ghga_cli.jobs.download import DownloadOptions, NameClaims
from ghga_cli.jobs.upload import UploadOptions
from ghga_cli.manifest import Entry, ManifestError
from ghga_cli.progress import format_bytes
from ghga_cli.report import FileReport

#: Which exit code a batch with differently failed files ends with: the first of these that any
#: file ended with. Failures a rerun cannot fix come first; Ctrl+C (130) next; network failures
#: and timeouts, which a rerun resumes, only when nothing worse happened.
EXIT_PRIORITY = (
    EXIT_INTEGRITY,
    EXIT_AUTH,
    EXIT_PROTOCOL,
    EXIT_USAGE,
    EXIT_NOT_FOUND,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NETWORK,
    EXIT_TIMEOUT,
)

EXIT_RULE_HELP = """\
many files (--manifest, repeated --file-id):
  The exit code is 0 only if every file succeeded. Otherwise it is the code of the
  failed files; if they failed differently, the first of 5, 3, 8, 2, 4, 1, 130, 6, 7
  that occurred (what a rerun cannot fix comes before what it resumes). With
  --fail-fast it is the code of the first failure. Problems found by the checks
  before the transfer (missing file, wrong size, no access, duplicates) are listed
  with their line numbers and end the run with 2 before any byte moves."""


def batch_exit_code(reports: Sequence[FileReport], stop_reason: CliError | None = None) -> int:
    """The exit code of a batch (see :data:`EXIT_RULE_HELP`)."""
    codes = {r.exit_code for r in reports if r.error is not None}
    if not codes:
        return EXIT_OK
    if stop_reason is not None:
        return stop_reason.exit_code
    for code in EXIT_PRIORITY:
        if code in codes:
            return code
    return max(codes)


def plan_uploads(
    entries: list[Entry],
    api: ApiAccess,
    template: UploadOptions,
    source: str,
    problems: list[str] | None = None,
) -> list[UploadOptions]:
    """Check every entry (local file, registration, access, size): what to upload.

    ``problems`` (of the manifest's syntax) are reported together with those found here.
    """
    problems = list(problems or [])
    locals_: dict[int, LocalFile] = {}
    for entry in entries:
        assert entry.path is not None
        try:
            locals_[entry.line] = LocalFile.inspect(entry.path)
        except UsageError as exc:
            problems.append(f"line {entry.line}: {exc.message}")
    lookups = api.ucs().lookup_files([e.file_id for e in entries])
    planned = []
    for entry, lookup in zip(entries, lookups):
        local = locals_.get(entry.line)
        if lookup.error is not None:
            problems.append(f"line {entry.line}: file {entry.file_id}: {_reason(lookup.error)}")
            continue
        meta = lookup.metadata
        assert meta is not None
        if local is not None and meta.size != local.size:
            problems.append(
                f"line {entry.line}: {entry.path} has {local.size} bytes, but file "
                f"{entry.file_id} is registered with {meta.size} bytes"
            )
            continue
        options = UploadOptions(
            file_id=entry.file_id,
            path=entry.path or Path(),
            check_parts=template.check_parts,
            local_md5=template.local_md5,
            wait_timeout=template.wait_timeout,
            skip_accepted=True,
            line=entry.line,
            lookup=lookup,
            local=local,
        )
        planned.append(options)
    if problems:
        raise ManifestError(source, problems)
    return planned


def describe_upload_plan(planned: list[UploadOptions]) -> list[str]:
    """One line per file for ``--dry-run``: what a real run would do."""
    lines = []
    for options in planned:
        current = options.lookup.current_upload if options.lookup else None
        status = current.upload_status if current else None
        what = {
            "accepted": "already accepted: skipped",
            "pending": f"resume upload {current.upload_id if current else ''}",
            "uploaded": "uploaded, waiting for validation",
        }.get(status or "", "new upload")
        size = options.local.size if options.local else 0
        lines.append(
            f"line {options.line}: {options.file_id} <- {options.path} "
            f"({format_bytes(size)}): {what}"
        )
    return lines


def plan_downloads(
    values: list[Entry],
    api_url: str | None,
    source: str,
    problems: list[str] | None = None,
) -> tuple[str, list[tuple[Entry, str]]]:
    """The API URL and (entry, file id) pairs, from plain ids and ``drs://`` URIs."""
    problems = list(problems or [])
    resolved: list[tuple[Entry, str]] = []
    urls = set()
    for entry in values:
        try:
            file_id, url = resolve_file_id(entry.file_id, api_url)
        except UsageError as exc:
            problems.append(f"{_where(entry)}{exc.message}")
            continue
        urls.add(url.rstrip("/"))
        resolved.append((entry, file_id))
    seen: dict[str, Entry] = {}
    for entry, file_id in resolved:
        if file_id in seen:
            problems.append(f"{_where(entry)}file {file_id} is listed twice")
        seen[file_id] = entry
    if len(urls) > 1:
        problems.append(f"the files name {len(urls)} different DRS servers: {', '.join(urls)}")
    if problems:
        raise ManifestError(source, problems)
    return (urls.pop() if urls else api_url or ""), resolved


def preflight_downloads(
    pairs: list[tuple[Entry, str]], api: ApiAccess, source: str
) -> dict[str, DrsObject | Staging]:
    """Ask DRS for every file once (this also requests their staging) and check the answers.

    Files the user may not read, unknown ids, and two files with the same name (they would
    overwrite each other in --output-dir) are problems listed before anything is written.
    Names of files still being staged are checked when they become known, before writing.
    """
    drs = api.drs()
    answers = drs.lookup_objects([file_id for _, file_id in pairs])
    problems = []
    names: dict[str, Entry] = {}
    found: dict[str, DrsObject | Staging] = {}
    for entry, file_id in pairs:
        answer = answers[file_id]
        if isinstance(answer, CliError):
            problems.append(f"{_where(entry)}file {file_id}: {_download_reason(answer)}")
            continue
        found[file_id] = answer
        if not answer.name:
            continue
        key = sanitise_name(answer.name, file_id).lower()  # case-insensitive file systems
        first = names.get(key)
        if first is not None:
            where = f" (line {first.line})" if first.line else ""
            problems.append(
                f"{_where(entry)}file {file_id} has the same name ({answer.name}) as file "
                f"{first.file_id}{where}: both would be written to one output file"
            )
        else:
            names[key] = Entry(entry.line, file_id)
    if problems:
        raise ManifestError(source, problems, "fix or remove these files, then rerun")
    return found


def _download_reason(error: CliError) -> str:
    status = getattr(error, "status", None)
    if status == 403:
        return "you may not download it (HTTP 403)"
    if status == 404:
        return "no such file, or it has not been uploaded yet (HTTP 404)"
    return error.message


def plan_download_options(
    pairs: list[tuple[Entry, str]],
    template: DownloadOptions,
    known: dict[str, DrsObject | Staging] | None = None,
) -> list[DownloadOptions]:
    """What to download: one :class:`DownloadOptions` per file, sharing the batch's names."""
    planned = []
    claims = NameClaims()
    for entry, file_id in pairs:
        options = DownloadOptions(
            file_id=file_id,
            output_dir=template.output_dir,
            overwrite=template.overwrite,
            range_size=template.range_size,
            wait_timeout=template.wait_timeout,
            keep_verified=True,
            line=entry.line or None,
            known=(known or {}).get(file_id),
            names=claims,
        )
        planned.append(options)
    return planned


def _where(entry: Entry) -> str:
    return f"line {entry.line}: " if entry.line else ""


def _reason(error: CliError) -> str:
    status = getattr(error, "status", None)
    exception_id = getattr(error, "exception_id", None)
    if status == 403:
        return f"you may not upload it ({exception_id or 'HTTP 403'})"
    if status == 404 or exception_id == "fileNotRegistered":
        return f"not registered ({exception_id or 'HTTP 404'})"
    return getattr(error, "description", None) or error.message
