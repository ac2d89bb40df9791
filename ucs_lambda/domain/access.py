"""Authorisation: who may do what with a file.

Submitters (set when the operator registers the file) may upload; readers (granted by the
operator) may download. Authentication (is the token valid?) happens before, in ``tokens``.
"""

from __future__ import annotations

from .errors import NoFileAccess, NoSuchObject, NoUploadAccess
from .models import FileRecord


def require_submitter(file: FileRecord, user_id: str, upload_id: str | None = None) -> None:
    """Raise ``noFileAccess`` unless ``user_id`` is a registered submitter of ``file``.

    ``upload_id``: the caller named an upload, not the file; the error then withholds the file.
    """
    if user_id not in file.submitters:
        raise NoFileAccess(file.file_id) if upload_id is None else NoUploadAccess(upload_id)


def require_reader(file: FileRecord, user_id: str) -> None:
    """Raise ``noFileAccess`` unless ``user_id`` has been granted download access."""
    if user_id not in file.readers:
        raise NoFileAccess(file.file_id)


def require_downloadable(file: FileRecord | None, object_id: str, user_id: str) -> FileRecord:
    """The DRS rule for one object, shared by the single, access and bulk routes.

    Unknown ids are ``noSuchObject``; a user who is not a reader gets ``noFileAccess`` (the
    status codes drs3.yaml prescribes); a file without an accepted upload has no bytes to hand
    out, so it is not found either. The order of the checks is part of the rule: a non-reader
    learns nothing about the file's upload state.
    """
    if file is None:
        raise NoSuchObject(object_id)
    require_reader(file, user_id)
    if not file.accepted_upload_id:
        raise NoSuchObject(object_id)
    return file
