"""Error types and the exit codes they map to.

Every failure the user can meet is a :class:`CliError` carrying a one-line message, a hint and
an exit code; ``cli.main`` turns it into ``ghga-cli: error: <message> (hint: <hint>)``. Lower
layers raise these (or subclasses) so the exit code is decided where the cause is known.
"""

from __future__ import annotations

import errno
from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1  # unexpected internal error (a bug); never used on purpose
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_INTEGRITY = 5
EXIT_NETWORK = 6
EXIT_TIMEOUT = 7
EXIT_PROTOCOL = 8
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes:
  0    success: transfer completed and verified (upload: accepted by GHGA)
  2    usage error or bad input (missing/unreadable file, size differs from the
       registered size, output directory missing or not writable, not enough disk space
       or the disk filled up: free space and rerun to resume)
  3    authentication or authorisation failed (HTTP 401/403: bad, expired or missing
       token, or no access to this file)
  4    not found or conflict (unknown file, upload already accepted, no pending
       upload to cancel, output file exists without --overwrite, another ghga-cli
       is downloading the same file into the same directory)
  5    integrity failure (checksum or size mismatch) or upload rejected by validation
  6    network failure after all retries, or the API is unreachable
  7    timed out waiting for validation (upload) or staging (download); rerun the
       same command to keep waiting
  8    protocol error: the server sent a value outside what S3 and the API allow
       (e.g. an absurd size, part size or part count); nothing was allocated for it
  130  interrupted (Ctrl+C); rerun the same command to resume"""


class CliError(Exception):
    """A failure with a user-facing message, a hint and an exit code."""

    exit_code = EXIT_FAILURE
    default_hint = ""

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = self.default_hint if hint is None else hint
        if exit_code is not None:
            self.exit_code = exit_code

    def one_line(self) -> str:
        """The single line printed to stderr (no newlines, no secrets)."""
        text = " ".join(self.message.split())
        if self.hint:
            text += f" (hint: {' '.join(self.hint.split())})"
        return f"ghga-cli: error: {text}"


class UsageError(CliError):
    exit_code = EXIT_USAGE
    default_hint = "see ghga-cli --help"


class LocalIOError(CliError):
    """Reading or writing a local file failed: the machine's problem, not a bug or the network."""

    exit_code = EXIT_USAGE
    default_hint = "check the file system, then rerun the same command to resume"

    @classmethod
    def from_os_error(cls, exc: OSError) -> LocalIOError:
        where = f" {exc.filename}" if exc.filename else ""
        reason = exc.strerror or str(exc)
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            hint = "free some space (or use another --output-dir), then rerun the same command: "
            hint += "it resumes where it stopped"
            return cls(f"no space left writing{where}: {reason}", hint)
        return cls(f"file system error on{where or ' a local file'}: {reason}")


class NotFoundError(CliError):
    exit_code = EXIT_NOT_FOUND


class ConflictError(CliError):
    exit_code = EXIT_NOT_FOUND


class IntegrityError(CliError):
    exit_code = EXIT_INTEGRITY


class RejectedError(CliError):
    exit_code = EXIT_INTEGRITY


class NetworkError(CliError):
    exit_code = EXIT_NETWORK
    default_hint = "check the network, proxy settings and --api-url, then rerun to resume"


class ProtocolError(CliError):
    """The server's answer is outside what S3 and the API allow (checked before any use)."""

    exit_code = EXIT_PROTOCOL
    default_hint = "the service misbehaves; contact the helpdesk"


class WaitTimeout(CliError):
    exit_code = EXIT_TIMEOUT
    default_hint = "rerun the same command to keep waiting, or raise --wait-timeout"


class Interrupted(CliError):
    exit_code = EXIT_INTERRUPTED
    default_hint = "rerun the same command to resume"

    def __init__(self, message: str = "interrupted", hint: str | None = None):
        super().__init__(message, hint)


class ApiError(CliError):
    """An error answer of the UCS or DRS API (``{exception_id, description, data}``)."""

    def __init__(
        self,
        status: int,
        exception_id: str | None,
        description: str,
        data: dict[str, Any] | None = None,
        hint: str | None = None,
        context: str = "",
    ):
        self.status = status
        self.exception_id = exception_id
        self.description = description
        self.data = data or {}
        code = _api_exit_code(status, exception_id)
        if hint is None:
            hint = _api_hint(status, exception_id)
        label = f"{exception_id}, " if exception_id else ""
        prefix = f"{context}: " if context else ""
        super().__init__(f"{prefix}{description} ({label}HTTP {status})", hint, code)


def _api_exit_code(status: int, exception_id: str | None) -> int:
    if status in (401, 403):
        return EXIT_AUTH
    if status in (404, 409) or exception_id in (
        "fileNotRegistered",
        "noSuchUpload",
        "noSuchObject",
        "existingActiveUpload",
        "uploadNotPending",
        "uploadStatusChange",
    ):
        return EXIT_NOT_FOUND
    if status >= 500 or status in (408, 429):
        return EXIT_NETWORK
    return EXIT_USAGE


def _api_hint(status: int, exception_id: str | None) -> str:
    if status == 401:
        return (
            "the token is missing, malformed or expired; get a new one and rerun the same "
            "command: a transfer resumes where it stopped"
        )
    if status == 403:
        return "your token does not grant access to this file"
    if exception_id in ("fileNotRegistered", "noSuchObject") or status == 404:
        return "check --file-id and --api-url"
    if status >= 500:
        return "the service has a problem; try again later"
    return "see ghga-cli --help"


def internal_error(exc: BaseException) -> CliError:
    """A bug, as the user sees it: one line and how to report it (exit 1)."""
    error = CliError(
        f"unexpected internal error: {type(exc).__name__}: {exc}",
        "rerun with GHGA_CLI_DEBUG=1 for details and report it",
    )
    error.__cause__ = exc
    return error
