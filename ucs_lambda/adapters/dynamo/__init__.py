"""DynamoDB (pynamodb) adapters of the state ports: one module per aggregate.

``tables`` holds the item schemas and binds them to the configured tables, ``records`` maps
items to domain records, ``conditional`` turns failed conditions into ``False``, ``files``
and ``uploads`` implement the ports.
"""

from __future__ import annotations

from ...config import Settings
from ...ports.state import State
from .files import DynamoFiles
from .tables import FileItem, Tables, UploadItem
from .uploads import DynamoUploads


def dynamo_state(settings: Settings) -> State:
    """The state ports on DynamoDB for ``settings``."""
    files = DynamoFiles(settings)
    uploads = DynamoUploads(settings)
    return State(files=files, uploads=uploads, leases=uploads, claims=files)


__all__ = [
    "DynamoFiles",
    "DynamoUploads",
    "FileItem",
    "Tables",
    "UploadItem",
    "dynamo_state",
]
