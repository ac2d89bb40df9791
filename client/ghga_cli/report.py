"""What a run reports: one typed :class:`FileReport` per file and a :class:`RunReport`.

The transfer manager's futures resolve to ``FileReport`` objects; the command line renders
them (one line per file, a table, ``--json``) in one place (``cli/output.py``). The ``--json``
object is described by ``docs/report.schema.json``: a field added here must be added there
(``tests/client/test_report_schema.py`` checks that both agree).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ghga_cli.errors import EXIT_INTERRUPTED, EXIT_OK, CliError

if TYPE_CHECKING:
    from ghga_cli.transfer.engine import EngineStats


@dataclass
class ErrorReport:
    """A failure as reported: one-line message, hint, exit code (and a manifest's problems)."""

    message: str
    hint: str
    exit_code: int
    problems: list[str] | None = None

    @classmethod
    def of(cls, error: CliError) -> ErrorReport:
        problems = getattr(error, "problems", None)
        return cls(error.message, error.hint or "", error.exit_code, list(problems or []) or None)


@dataclass
class FileReport:
    """How one file went: what was moved, how fast, what was verified, and how it ended."""

    file_id: str
    direction: str  # "upload" or "download"
    line: int | None = None  # its line in the manifest
    status: str | None = None  # accepted, uploaded, downloaded, cancelled; error, interrupted
    status_note: str | None = None  # e.g. "already accepted", "already present"
    bytes: int | None = None  # the file's size
    bytes_transferred: int | None = None  # bytes this run moved
    seconds: float | None = None  # the transfer phase: first to last byte of this run
    mib_per_s: float | None = None
    parts: int | None = None
    parts_skipped: int | None = None  # parts (ranges) an earlier run had moved
    parallel: int | None = None
    requests: int | None = None  # storage requests this run made
    retries: int | None = None  # retried storage requests
    retry_reasons: list[str] | None = None  # why, for the last few
    url_refreshes: int | None = None
    # Uploads
    upload_id: str | None = None
    server_verifies: bool | None = None
    part_md5_check: bool | None = None
    whole_file_md5: bool | None = None
    segments_reported: int | None = None
    verified_bytes: int | None = None
    md5: str | None = None  # upload: the local whole-file MD5; download: the verified MD5
    # Downloads
    output: str | None = None
    checksum_type: str | None = None
    sha256: str | None = None
    hash_tail_seconds: float | None = None  # hashing left after the last byte
    error: ErrorReport | None = None
    exit_code: int = EXIT_OK
    # The failure itself, for callers that handle it (never rendered).
    exception: CliError | None = field(default=None, repr=False, compare=False)

    def fail(self, error: CliError) -> None:
        self.exception = error
        self.error = ErrorReport.of(error)
        self.exit_code = error.exit_code
        self.status = "interrupted" if error.exit_code == EXIT_INTERRUPTED else "error"

    @property
    def ok(self) -> bool:
        return self.error is None

    def record_transfer(self, moved: int, stats: EngineStats) -> None:
        """The transfer phase's numbers (also of a transfer that failed)."""
        self.bytes_transferred = moved
        self.seconds = round(stats.seconds, 3)
        self.mib_per_s = (
            round(moved / (1024 * 1024) / stats.seconds, 2) if stats.seconds > 0 else None
        )
        self.requests = stats.requests
        self.retries = stats.retries
        self.retry_reasons = list(stats.retry_reasons[-5:]) or None
        self.url_refreshes = stats.url_refreshes

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object of this file (fields without a value are left out)."""
        data = _without_none(
            {
                f.name: getattr(self, f.name)
                for f in dataclasses.fields(self)
                if f.name not in ("direction", "exception", "error")
            }
        )
        if self.error is not None:
            data["error"] = _without_none(dataclasses.asdict(self.error))
        if "sha256" in data:  # named by its DRS checksum type, like "md5"
            data["sha-256"] = data.pop("sha256")
        if self.direction == "upload":
            data.setdefault("upload_id", None)
        else:
            data.setdefault("output", None)
        return data


@dataclass
class RunReport:
    """One run of the command: its files and how the run ended."""

    command: str
    files: list[FileReport] = field(default_factory=list)
    batch: bool = False
    status: str | None = None
    exit_code: int = EXIT_OK
    error: ErrorReport | None = None
    stopped_by: str | None = None  # the failure that stopped a --fail-fast run
    total_seconds: float | None = None
    api_retries: int = 0
    token_renewals: int = 0

    def to_json(self) -> dict[str, Any]:
        """One file: its fields at the top level; many: ``files`` and the totals."""
        data: dict[str, Any] = {"command": self.command}
        if not self.batch:
            single = self.files[0].to_json() if self.files else {}
            single.pop("exit_code", None)
            single.pop("error", None)
            data.update(single)
            data.setdefault("file_id", None)
        else:
            data["files"] = [f.to_json() for f in self.files]
            data["files_total"] = len(self.files)
            data["files_ok"] = sum(1 for f in self.files if f.ok)
            data["files_failed"] = sum(1 for f in self.files if not f.ok)
            data["bytes"] = sum(f.bytes or 0 for f in self.files)
            data["bytes_transferred"] = sum(f.bytes_transferred or 0 for f in self.files)
            if self.stopped_by is not None:
                data["stopped_by"] = {"message": self.stopped_by}
        data["status"] = self.status
        data["exit_code"] = self.exit_code
        if self.error is not None:
            data["error"] = _without_none(dataclasses.asdict(self.error))
        if data.get("seconds") is None:  # a batch, or one file that moved nothing
            data["seconds"] = self.total_seconds
        data["total_seconds"] = self.total_seconds
        data["api_retries"] = self.api_retries
        if self.token_renewals:
            data["token_renewals"] = self.token_renewals
        return data


def _without_none(data: dict[str, Any]) -> dict[str, Any]:
    return {
        key: _without_none(value) if isinstance(value, dict) else value
        for key, value in data.items()
        if value is not None
    }
