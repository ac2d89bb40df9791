"""Domain errors, each with the exception id that the HTTP layer puts into the error body.

The HTTP status and the error body are the routes' business (the same error can be a 404 on
one route and a 400 on another in ucs.yaml, e.g. ``fileNotRegistered``), so errors here carry
only id, text and data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .models import UploadRecord


class DomainError(Exception):
    """Base class: ``exception_id`` + human description + machine-readable ``data``."""

    exception_id: ClassVar[str] = "domainError"

    def __init__(self, description: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.data: dict[str, Any] = data or {}


class NotAuthenticated(DomainError):
    exception_id = "notAuthenticated"

    def __init__(self, description: str = "A valid bearer token is required.") -> None:
        super().__init__(description, {})


class InvalidRequest(DomainError):
    """Malformed JSON, wrong types, values out of range: the request itself is wrong."""

    exception_id = "invalidRequest"


class NoFileAccess(DomainError):
    """The caller may not act on the file it named (ucs.yaml: 403, ``data.file_id`` required)."""

    exception_id = "noFileAccess"

    def __init__(self, file_id: str) -> None:
        super().__init__(
            f"The user has no access to the file with ID {file_id!r}.", {"file_id": file_id}
        )


class NoUploadAccess(NoFileAccess):
    """``noFileAccess`` for another user's upload: the upload's file is not named.

    Error bodies carry only ids the caller sent. ``data.file_id`` (required by ucs.yaml) is
    empty, so a guessed upload id reveals that the upload exists (403 vs 404, as ucs.yaml
    prescribes) but not whose file it belongs to.
    """

    def __init__(self, upload_id: str) -> None:
        DomainError.__init__(
            self,
            f"The user has no access to the upload with ID {upload_id!r}.",
            {"file_id": "", "upload_id": upload_id},
        )


class FileNotRegistered(DomainError):
    exception_id = "fileNotRegistered"

    def __init__(self, file_id: str) -> None:
        super().__init__(
            f"The file with ID {file_id!r} has not (yet) been registered for upload.",
            {"file_id": file_id},
        )


class ExistingActiveUpload(DomainError):
    exception_id = "existingActiveUpload"

    def __init__(
        self, file_id: str, active: UploadRecord | None, active_upload_id: str | None
    ) -> None:
        super().__init__(
            f"The file with ID {file_id!r} already has an active or accepted upload.",
            {"file_id": file_id},
        )
        #: The upload holding the file (its details go into the error body), if still there.
        self.active = active
        self.active_upload_id = active_upload_id


class NoSuchUpload(DomainError):
    exception_id = "noSuchUpload"

    def __init__(self, upload_id: str) -> None:
        super().__init__(
            f"The upload with ID {upload_id!r} does not exist.", {"upload_id": upload_id}
        )


class UploadNotPending(DomainError):
    exception_id = "uploadNotPending"

    def __init__(self, upload_id: str, current_status: str, description: str = "") -> None:
        super().__init__(
            description
            or f"The upload with ID {upload_id!r} is {current_status!r}, not 'pending'.",
            {"upload_id": upload_id, "current_upload_status": current_status},
        )


class UploadStatusChange(DomainError):
    exception_id = "uploadStatusChange"

    def __init__(self, upload_id: str, target_status: str, reason: str) -> None:
        super().__init__(
            f"Cannot change the status of upload {upload_id!r} to {target_status!r}: {reason}",
            {"upload_id": upload_id, "target_status": target_status},
        )


class NoSuchObject(DomainError):
    """DRS: unknown object id, or a file with no accepted upload yet."""

    exception_id = "noSuchObject"

    def __init__(self, object_id: str) -> None:
        super().__init__(
            f"The DRS object with ID {object_id!r} does not exist.", {"object_id": object_id}
        )


class NoSuchAccess(DomainError):
    """DRS: the object exists and may be read, but has no access method with this id."""

    exception_id = "noSuchAccess"

    def __init__(self, object_id: str, access_id: str) -> None:
        super().__init__(
            f"The DRS object {object_id!r} has no access method with ID {access_id!r}.",
            {"object_id": object_id, "access_id": access_id},
        )


class BulkRequestTooLarge(DomainError):
    """DRS bulk request: more object ids than ``UCS_DRS_MAX_BULK_OBJECTS`` (413)."""

    exception_id = "bulkRequestTooLarge"

    def __init__(self, requested: int, limit: int) -> None:
        super().__init__(
            f"A bulk request may name at most {limit} objects, this one names {requested}.",
            {"limit": limit, "requested": requested},
        )


class TooManyUploadAttempts(DomainError):
    """Upload churn: more new uploads for one file than ``UCS_UPLOAD_ATTEMPTS_PER_WINDOW`` allows
    within ``UCS_UPLOAD_ATTEMPT_WINDOW_SECONDS`` (HTTP 429 with ``Retry-After``)."""

    exception_id = "tooManyUploadAttempts"

    def __init__(self, file_id: str, limit: int, window_seconds: int, retry_after: int) -> None:
        super().__init__(
            f"Too many upload attempts for the file with ID {file_id!r}: at most {limit} per "
            f"{window_seconds} seconds; retry after {retry_after} seconds.",
            {
                "file_id": file_id,
                "limit": limit,
                "window_seconds": window_seconds,
                "retry_after": retry_after,
            },
        )
        self.retry_after = retry_after


class SegmentIncomplete(DomainError):
    """A segment was to be completed while some of its parts are not stored (400)."""

    exception_id = "segmentIncomplete"

    #: Most part numbers named in the error's data.
    LISTED = 100

    def __init__(
        self, upload_id: str, segment_no: int, missing: list[int], wrong_size: list[int] = ()
    ) -> None:
        super().__init__(
            f"Segment {segment_no} of upload {upload_id!r} cannot be completed: "
            f"{parts_problem(missing, wrong_size)}; upload them first.",
            {
                "upload_id": upload_id,
                "segment_no": segment_no,
                "missing_parts": list(missing)[: self.LISTED],
                "missing_count": len(missing),
                "wrong_size_parts": list(wrong_size)[: self.LISTED],
            },
        )
        self.missing = list(missing)
        self.wrong_size = list(wrong_size)


def parts_problem(missing: list[int], wrong_size: list[int]) -> str:
    """``2 parts not stored (parts 3, 7); 1 part of another size ... (parts 4)``."""
    problems = []
    if missing:
        problems.append(f"{_count(missing, 'part')} not stored (parts {_some(missing)})")
    if wrong_size:
        problems.append(
            f"{_count(wrong_size, 'part')} of another size than the file's layout "
            f"(parts {_some(wrong_size)})"
        )
    return "; ".join(problems)


def _count(numbers: list[int], what: str) -> str:
    return f"{len(numbers)} {what}{'s' if len(numbers) != 1 else ''}"


def _some(numbers: list[int], shown: int = 5) -> str:
    return ", ".join(str(n) for n in numbers[:shown]) + (", ..." if len(numbers) > shown else "")
