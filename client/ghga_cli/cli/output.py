"""Everything the command prints: messages, the progress line, per-file lines, the table and
``--json`` -- in one place, so that every printed line is cleaned the same way.

Server text (error descriptions, status reasons, names) can hold anything: every line printed
goes through :meth:`Console.clean`, which drops control characters (no terminal escape sequence
from a server reaches the terminal), removes query strings of URLs (presigned signatures) and
replaces every secret the run knows (its tokens) by ``***``.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Sequence
from typing import Any, TextIO

from ghga_cli.errors import CliError
from ghga_cli.progress import Progress, format_bytes, format_duration
from ghga_cli.report import FileReport, RunReport

_URL_QUERY = re.compile(r"(https?://[^\s?#'\"]+)\?[^\s'\"]*")
# C0 and C1 control characters and DEL (ESC starts terminal escape sequences); tabs become spaces.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def clean_text(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` fit to print: no control characters, no URL query strings, no secrets."""
    text = _CONTROL.sub("", text.replace("\t", " "))
    text = _URL_QUERY.sub(r"\1?…", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class Console:
    """stderr output: messages, the live progress line, and the final lines; all cleaned."""

    def __init__(self, quiet: bool, stream: TextIO | None = None):
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.progress: Progress | None = None
        self.secrets: list[str] = []
        self._lock = threading.Lock()

    def clean(self, text: str) -> str:
        with self._lock:
            secrets = list(self.secrets)
        return clean_text(text, secrets)

    def add_secrets(self, secrets: Sequence[str]) -> None:
        with self._lock:
            self.secrets.extend(s for s in secrets if s and s not in self.secrets)

    def log(self, text: str) -> None:
        if self.quiet:
            return
        text = self.clean(text)
        if self.progress is not None:
            self.progress.message(text)
        else:
            self.stream.write(f"ghga-cli: {text}\n")
            self.stream.flush()

    def error(self, error: CliError) -> None:
        """The failure's lines on stderr (always, also with --quiet)."""
        if self.progress is not None:
            self.progress.finish()
        for problem in getattr(error, "problems", None) or []:
            self.stream.write(self.clean(f"ghga-cli: {problem}") + "\n")
        self.stream.write(self.clean(error.one_line()) + "\n")
        self.stream.flush()

    def make_progress(self, total: int) -> Progress:
        self.progress = Progress(total, quiet=self.quiet, stream=self.stream)
        return self.progress

    def json(self, report: RunReport) -> None:
        """The ``--json`` object on stdout (described by docs/report.schema.json).

        Every string in it is cleaned like a printed line: JSON would only escape a control
        character (``\\u001b``), and a consumer that prints the value (``jq -r``) would send
        it to the terminal raw again.
        """
        text = json.dumps(self._clean_values(report.to_json()), sort_keys=True)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def _clean_values(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.clean(value)
        if isinstance(value, dict):
            return {key: self._clean_values(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._clean_values(item) for item in value]
        return value


def file_line(report: FileReport, done: int, total: int) -> str:
    """The line printed when one file of a batch has ended."""
    prefix = f"[{done}/{total}] {report.file_id}"
    if report.error is not None:
        return f"{prefix}: failed (exit {report.exit_code}): {report.error.message}"
    moved = report.bytes_transferred
    detail = f"{format_bytes(moved)} moved" if moved else "nothing moved"
    if report.mib_per_s and moved:
        detail += f", {report.mib_per_s:.1f} MiB/s"
    what = f"{report.status} ({report.status_note})" if report.status_note else report.status
    return f"{prefix}: {what} ({detail})"


def summary_table(reports: Sequence[FileReport]) -> list[str]:
    """The table printed at the end of a batch (one row per file) and a totals line."""
    rows = [("file id", "status", "size", "moved", "exit")]
    for report in reports:
        status = report.status or "failed"
        rows.append(
            (
                report.file_id,
                status + (f" ({report.status_note})" if report.status_note else ""),
                format_bytes(report.bytes or 0),
                format_bytes(report.bytes_transferred or 0),
                str(report.exit_code),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    ]
    ok = sum(1 for r in reports if r.ok)
    lines.append(f"{len(reports)} files: {ok} succeeded, {len(reports) - ok} failed")
    return lines


def success_line(command: str, report: FileReport) -> str:
    """The last line of a successful one-file run."""
    detail = ""
    if report.bytes_transferred is not None and report.seconds:
        rate = report.mib_per_s
        detail = (
            f" ({format_bytes(report.bytes_transferred)} in {format_duration(report.seconds)}"
            + (f", {rate:.1f} MiB/s" if rate else "")
            + f", {report.retries or 0} retries)"
        )
    if command == "upload-by-id":
        what = {
            "accepted": "uploaded and accepted",
            "uploaded": "uploaded (validation pending)",
            "cancelled": "upload cancelled",
        }.get(report.status or "", report.status or "")
        return f"file {report.file_id}: {what}{detail}"
    return f"file {report.file_id} saved as {report.output}{detail}"
