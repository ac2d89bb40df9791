"""The DynamoDB tables: item schemas (pynamodb models) and their binding to one deployment.

The schema classes below are never used against a table directly: :meth:`Tables.bind` makes
a subclass of each with the configured table name, region and endpoint in its own ``Meta``
(and its own index objects), once per configuration. So nothing mutates pynamodb's ``Meta``
at run time, and two configurations (tests switching tables) never share a model class.
Condition expressions may use the schema classes' attributes: pynamodb builds them from the
attribute names, which the bound subclasses inherit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from pynamodb.attributes import (
    BinaryAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.connection import Connection
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from ...config import Settings

FILE_ID_INDEX = "file_id-index"
STATUS_INDEX = "upload_status-index"


class FileItem(Model):
    """A registered file; ``active_upload_id`` is the per-file upload lock."""

    class Meta:
        table_name = "unbound"  # see Tables.bind
        region = "us-east-1"

    file_id = UnicodeAttribute(hash_key=True)
    file_name = UnicodeAttribute()
    size = NumberAttribute()
    md5_checksum = UnicodeAttribute()
    grouping_label = UnicodeAttribute(null=True)
    format = UnicodeAttribute(null=True)
    creation_date = UTCDateTimeAttribute()
    update_date = UTCDateTimeAttribute()
    submitters = UnicodeSetAttribute(null=True)
    readers = UnicodeSetAttribute(null=True)
    active_upload_id = UnicodeAttribute(null=True)
    current_upload_id = UnicodeAttribute(null=True)
    accepted_upload_id = UnicodeAttribute(null=True)
    accepted_at = UTCDateTimeAttribute(null=True)
    # DRS staging: epoch seconds when the running staging job was claimed / finished.
    staging_started = NumberAttribute(null=True)
    staged_at = NumberAttribute(null=True)
    # Upload churn: start (epoch seconds) of the current attempt window and attempts in it.
    attempt_window_start = NumberAttribute(null=True)
    attempt_count = NumberAttribute(null=True)
    # Computed by the validation job from the accepted object (absent on older files).
    sha256_checksum = UnicodeAttribute(null=True)
    # ETag of the permanent object as accepted (absent on older files).
    permanent_etag = UnicodeAttribute(null=True)
    # The staging copy while it runs: the outbox multipart upload (copies above one
    # CopyObject), the source ETag it copies, bytes copied, when it began; and the lease of
    # the job run working on it.
    staging_copy_id = UnicodeAttribute(null=True)
    staging_etag = UnicodeAttribute(null=True)
    staged_bytes = NumberAttribute(null=True)
    staging_copy_started = NumberAttribute(null=True)
    staging_owner = UnicodeAttribute(null=True)
    staging_lease_until = NumberAttribute(null=True)


class FileIdIndex(GlobalSecondaryIndex):
    """Uploads by file (``file_id-index``)."""

    class Meta:
        index_name = FILE_ID_INDEX
        projection = AllProjection()

    file_id = UnicodeAttribute(hash_key=True)


class StatusIndex(GlobalSecondaryIndex):
    """Uploads by status and last change (``upload_status-index``), for the sweeps.

    Keys only: the sweeps find few candidates and read each one again consistently, and the
    index stays small (no copies of the part-ETag blobs of accepted uploads).
    """

    class Meta:
        index_name = STATUS_INDEX
        projection = KeysOnlyProjection()

    upload_status = UnicodeAttribute(hash_key=True)
    updated = UTCDateTimeAttribute(range_key=True)


class UploadItem(Model):
    """One multipart upload attempt.

    ``s3_part_etags`` and ``client_part_md5s`` are stored as the concatenated 16-byte binary
    digests (not hex text): 10,000 parts of both then take 320 KB, inside DynamoDB's 400 KB item
    limit, where hex strings would not fit.

    The ``verify_*`` attributes, ``verified_bytes`` and ``copy_upload_id`` are the validation
    job's saved progress and its lease (docs/CONTRACTS.md, "Validation"). ``segments`` maps
    each opened segment (``"<n>"``) to its S3 multipart upload id, ``segments_done`` each
    completed one to ``{"etag": <object ETag>, "parts": <packed part ETags>}``; both maps exist
    from the start (DynamoDB cannot set a path below a missing map). ``s3_part_etags`` and
    ``object_etag`` are only read, from uploads created before segments.
    """

    class Meta:
        table_name = "unbound"  # see Tables.bind
        region = "us-east-1"

    upload_id = UnicodeAttribute(hash_key=True)
    file_id = UnicodeAttribute()
    s3_upload_id = UnicodeAttribute()
    object_key = UnicodeAttribute()
    upload_status = UnicodeAttribute()
    part_size = NumberAttribute()
    created = UTCDateTimeAttribute()
    updated = UTCDateTimeAttribute()
    client_md5 = UnicodeAttribute(null=True)
    client_part_md5s = BinaryAttribute(null=True, legacy_encoding=False)
    s3_part_etags = BinaryAttribute(null=True, legacy_encoding=False)
    object_etag = UnicodeAttribute(null=True)
    status_reason = UnicodeAttribute(null=True)
    verified_bytes = NumberAttribute(null=True)
    verify_state = BinaryAttribute(null=True, legacy_encoding=False)
    verify_etag = UnicodeAttribute(null=True)
    verify_owner = UnicodeAttribute(null=True)
    verify_lease_until = NumberAttribute(null=True)
    copy_upload_id = UnicodeAttribute(null=True)
    segment_parts = NumberAttribute(null=True)
    copy_group = NumberAttribute(null=True)
    segments = MapAttribute(null=True)  # type: ignore[var-annotated]
    segments_done = MapAttribute(null=True)  # type: ignore[var-annotated]


@dataclass(frozen=True)
class Tables:
    """The model classes bound to one deployment's tables, and the connection that
    ``TransactWriteItems`` needs (pynamodb's ``TransactWrite`` ignores ``Meta.host``,
    PITFALLS.md)."""

    files: type[FileItem]
    uploads: type[UploadItem]
    connection: Connection

    def transaction(self) -> TransactWrite:
        return TransactWrite(connection=self.connection)

    @staticmethod
    def bind(settings: Settings) -> Tables:
        """The tables of ``settings``, built once per (tables, region, endpoint) and cached.

        The botocore clients are built here, under the lock: pynamodb builds a connection's
        client lazily and without a lock, so the first requests of a threaded server (50 at
        once in tests/e2e/test_races.py) would each build one, ~0.1 s of CPU apiece.
        """
        key = (
            settings.files_table,
            settings.uploads_table,
            settings.region,
            settings.dynamodb_endpoint,
        )
        found = _bound.get(key)
        if found is not None:
            return found
        with _lock:
            found = _bound.get(key)
            if found is None:
                region, host = settings.region, settings.dynamodb_endpoint
                files = _subclass(FileItem, settings.files_table, region, host, {})
                uploads = _subclass(
                    UploadItem,
                    settings.uploads_table,
                    region,
                    host,
                    {"file_id_index": FileIdIndex(), "status_index": StatusIndex()},
                )
                connection = Connection(region=region, host=host)
                for client_owner in (files, uploads):
                    _ = client_owner._get_connection().connection.client
                _ = connection.client
                found = Tables(files, uploads, connection)
                _bound[key] = found
        return found


_lock = threading.Lock()
_bound: dict[tuple[str, str, str, str | None], Tables] = {}


def _subclass(schema: type[Model], table: str, region: str, host: str | None, extra: dict):  # type: ignore[no-untyped-def]
    meta = type("Meta", (), {"table_name": table, "region": region, "host": host})
    namespace = {"Meta": meta, "__module__": __name__, **extra}
    return type(f"{schema.__name__}[{table}]", (schema,), namespace)
