"""S3 operations the services and jobs need, with S3's quirks handled in one place.

ETags are returned without quotes; "missing" answers (no such key/upload) become ``None`` or are
ignored where the caller's intent (delete, abort) is already satisfied. Errors S3 answers with
are raised as :class:`StorageError` (and its subclasses), so botocore's exception types stay
inside this module.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from ..concurrency import bounded_map
from ..config import Settings
from ..domain.integrity import unquote_etag
from ..ports.storage import (
    CopyItem,
    ListedObject,
    ObjectChanged,
    ObjectInfo,
    ObjectMissing,
    ObjectRef,
    Part,
    StorageError,
)
from . import aws

log = logging.getLogger(__name__)

_MISSING = {"NoSuchKey", "NoSuchUpload", "404", "NotFound"}
_CHANGED = {"PreconditionFailed", "412"}


def _translate(exc: ClientError) -> StorageError:
    err = exc.response.get("Error", {})
    code = str(err.get("Code") or "error")
    message = err.get("Message")
    if code in _MISSING:
        return ObjectMissing(code, message)
    if code in _CHANGED:
        return ObjectChanged(code, message)
    return StorageError(code, message)


@contextlib.contextmanager
def _s3_errors() -> Iterator[None]:
    """Raise S3's error answers as :class:`StorageError`."""
    try:
        yield
    except ClientError as exc:
        raise _translate(exc) from exc


class S3Storage:
    """The S3 calls of the service: multipart uploads, presigning, copies, reads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = aws.client("s3", settings)

    # ---- multipart uploads -------------------------------------------------------------

    def create_multipart_upload(
        self, bucket: str, key: str, metadata: dict[str, str] | None = None
    ) -> str:
        extra = {"Metadata": metadata} if metadata is not None else {}
        with _s3_errors():
            resp = self.client.create_multipart_upload(Bucket=bucket, Key=key, **extra)
        return str(resp["UploadId"])

    def presign_upload_part(
        self, bucket: str, key: str, s3_upload_id: str, part_no: int, content_length: int
    ) -> str:
        """A SigV4 presigned PUT URL for one part of exactly ``content_length`` bytes.

        botocore serialises ``ContentLength`` into a ``Content-Length`` header and signs every
        header of the request, so ``X-Amz-SignedHeaders`` becomes ``content-length;host``: S3
        (and Ceph RGW, tests/e2e/test_hardening.py) refuses a body of another length with
        403 ``SignatureDoesNotMatch``. No network call.
        """
        return str(
            self.client.generate_presigned_url(
                "upload_part",
                Params={
                    "Bucket": bucket,
                    "Key": key,
                    "UploadId": s3_upload_id,
                    "PartNumber": part_no,
                    "ContentLength": content_length,
                },
                ExpiresIn=self.settings.presign_ttl,
            )
        )

    def list_parts(self, bucket: str, key: str, s3_upload_id: str) -> list[Part]:
        """All parts S3 holds for a multipart upload (follows pagination), by part number."""
        parts: list[Part] = []
        paginator = self.client.get_paginator("list_parts")
        with _s3_errors():
            for page in paginator.paginate(Bucket=bucket, Key=key, UploadId=s3_upload_id):
                for p in page.get("Parts", []):
                    parts.append(
                        Part(
                            part_no=int(p["PartNumber"]),
                            size=int(p["Size"]),
                            etag=unquote_etag(p.get("ETag")),
                            last_modified=p.get("LastModified"),
                        )
                    )
        parts.sort(key=lambda p: p.part_no)
        return parts

    def list_multipart_uploads(self, bucket: str, key: str) -> list[str]:
        """The ids of every multipart upload in progress on exactly ``key`` (paginated)."""
        ids: list[str] = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        with _s3_errors():
            for page in paginator.paginate(Bucket=bucket, Prefix=key):
                ids.extend(
                    str(u["UploadId"]) for u in page.get("Uploads", []) if u.get("Key") == key
                )
        return ids

    def complete_multipart_upload(
        self, bucket: str, key: str, s3_upload_id: str, parts: list[Part]
    ) -> None:
        with _s3_errors():
            self.client.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=s3_upload_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": p.part_no, "ETag": f'"{p.etag}"'} for p in parts]
                },
            )

    def abort_multipart_upload(self, bucket: str, key: str, s3_upload_id: str) -> None:
        """Abort; an already completed or aborted upload is fine."""
        with contextlib.suppress(ObjectMissing), _s3_errors():
            self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=s3_upload_id)

    # ---- objects -----------------------------------------------------------------------

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            with _s3_errors():
                resp = self.client.head_object(Bucket=bucket, Key=key)
        except ObjectMissing:
            return None
        return ObjectInfo(
            size=int(resp["ContentLength"]),
            etag=unquote_etag(resp.get("ETag")),
            last_modified=resp.get("LastModified"),
            metadata=dict(resp.get("Metadata") or {}),
        )

    def delete(self, bucket: str, key: str) -> None:
        """Delete; a missing key is fine (S3 itself answers 204 for it)."""
        with contextlib.suppress(ObjectMissing), _s3_errors():
            self.client.delete_object(Bucket=bucket, Key=key)

    def read_range(self, bucket: str, key: str, first: int, last: int, etag: str) -> bytes:
        """Bytes ``first..last`` (inclusive) of the object whose ETag is ``etag``.

        ``If-Match`` makes S3 refuse (:class:`ObjectChanged`) instead of answering from
        another object stored under the key meanwhile (skipped for an empty ETag, which some
        stores report). The answer must be exactly the range asked for: a server ignoring
        ``Range`` would hand out other bytes, and the verdict would be wrong.
        """
        want = last - first + 1
        condition = {"IfMatch": f'"{etag}"'} if etag else {}
        with _s3_errors():
            resp = self.client.get_object(
                Bucket=bucket, Key=key, Range=f"bytes={first}-{last}", **condition
            )
            data: bytes = resp["Body"].read()
        answered = str(resp.get("ContentRange") or "")
        if len(data) != want or not answered.startswith(f"bytes {first}-{last}/"):
            raise StorageError(
                "InvalidRange",
                f"asked for bytes {first}-{last}, got {len(data)} bytes ({answered or 'no range'})",
            )
        return data

    def copy_object(
        self,
        source: ObjectRef,
        dst_bucket: str,
        dst_key: str,
        metadata: dict[str, str] | None = None,
    ) -> str:
        """One ``CopyObject`` (up to 5 GiB), conditional on the source's ETag; returns the
        new object's ETag. A source that changed raises :class:`ObjectChanged` (412)."""
        extra: dict[str, Any] = {}
        if metadata is not None:
            extra = {"Metadata": metadata, "MetadataDirective": "REPLACE"}
        if source.etag:
            extra["CopySourceIfMatch"] = f'"{source.etag}"'
        with _s3_errors():
            resp = self.client.copy_object(
                Bucket=dst_bucket,
                Key=dst_key,
                CopySource={"Bucket": source.bucket, "Key": source.key},
                **extra,
            )
        return unquote_etag((resp.get("CopyObjectResult") or {}).get("ETag"))

    def copy_parts(
        self,
        dst_bucket: str,
        dst_key: str,
        upload_id: str,
        items: Iterable[CopyItem],
        keep_going: Callable[[], bool] = lambda: True,
    ) -> Iterator[Part]:
        """Copy these ranges into parts of the multipart upload ``upload_id``,
        ``UCS_COPY_CONCURRENCY`` at a time, each conditional on its source's ETag
        (``CopySourceIfMatch``); yields the parts copied, in the order of ``items``.

        No new part is started once ``keep_going()`` is false (a job's time is up): the parts
        in flight finish, and the caller continues later from what S3 lists. A source that
        changed since it was planned raises :class:`ObjectChanged`.
        """

        def copy_part(item: CopyItem) -> Part:
            condition = {"CopySourceIfMatch": f'"{item.source.etag}"'} if item.source.etag else {}
            with _s3_errors():
                resp = self.client.upload_part_copy(
                    Bucket=dst_bucket,
                    Key=dst_key,
                    UploadId=upload_id,
                    PartNumber=item.part_no,
                    CopySource={"Bucket": item.source.bucket, "Key": item.source.key},
                    CopySourceRange=f"bytes={item.first}-{item.last}",
                    **condition,
                )
            etag = unquote_etag(resp["CopyPartResult"]["ETag"])
            return Part(part_no=item.part_no, size=item.size, etag=etag)

        workers = self.settings.copy_concurrency
        with ThreadPoolExecutor(max_workers=workers) as pool:
            yield from bounded_map(pool, copy_part, items, workers, keep_going)

    def delete_many(self, bucket: str, keys: list[str]) -> None:
        """Delete keys with ``DeleteObjects`` (1,000 per call); missing keys are fine."""
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            with _s3_errors():
                resp = self.client.delete_objects(
                    Bucket=bucket,
                    Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                )
            failed = resp.get("Errors") or []
            if failed:
                first = failed[0]
                raise StorageError(str(first.get("Code") or "error"), str(first.get("Message")))

    def presign_get(self, bucket: str, key: str) -> str:
        """A SigV4 presigned GET URL (ranged GETs allowed) valid for ``UCS_PRESIGN_TTL``."""
        return str(
            self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": bucket, "Key": key},
                ExpiresIn=self.settings.presign_ttl,
            )
        )

    def list_objects(self, bucket: str) -> list[ListedObject]:
        """Every object of a bucket with key, size and age (cleanup sweeps)."""
        found: list[ListedObject] = []
        with _s3_errors():
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for obj in page.get("Contents", []):
                    found.append(
                        ListedObject(
                            key=obj["Key"],
                            size=int(obj["Size"]),
                            last_modified=obj["LastModified"],
                        )
                    )
        return found
