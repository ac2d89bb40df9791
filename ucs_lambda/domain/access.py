"""Authorisation: who may do what with a file.

Submitters (set when the operator registers the file) may upload; readers (granted by the
operator) may download. Authentication (is the token valid?) happens before, in ``tokens``.
"""

from __future__ import annotations

from .errors import NoFileAccess
from .models import FileRecord


def require_submitter(file: FileRecord, user_id: str) -> None:
    """Raise ``noFileAccess`` unless ``user_id`` is a registered submitter of ``file``."""
    if user_id not in file.submitters:
        raise NoFileAccess(file.file_id)


def require_reader(file: FileRecord, user_id: str) -> None:
    """Raise ``noFileAccess`` unless ``user_id`` has been granted download access."""
    if user_id not in file.readers:
        raise NoFileAccess(file.file_id)
