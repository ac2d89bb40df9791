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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from ..concurrency import bounded_map
from ..config import Settings
from ..domain.integrity import unquote_etag
from ..domain.parts import MAX_PART_SIZE, part_ranges, part_size_for
from . import aws

log = logging.getLogger(__name__)

_MISSING = {"NoSuchKey", "NoSuchUpload", "404", "NotFound"}
_CHANGED = {"PreconditionFailed", "412"}


class StorageError(Exception):
    """S3 answered a call with an error. ``str()`` is ``"<code>: <message>"``, or the code
    alone when the message is empty (Ceph RGW sends none for some codes)."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message or ""


class ObjectMissing(StorageError):
    """The key or the multipart upload does not exist (any more)."""


class ObjectChanged(StorageError):
    """A read conditioned on the object's ETag found another object (``If-Match`` failed)."""


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


@dataclass(frozen=True)
class Part:
    part_no: int
    size: int
    etag: str
    last_modified: datetime | None = None


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str
    last_modified: datetime | None
    metadata: dict[str, str]


class Storage:
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

    def copy(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        size: int,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Server-side copy; multipart (parallel ``UploadPartCopy``) above the copy part size.

        The bytes never pass through this process. The part size follows the same rule as
        uploads, so a 5 TiB object still needs at most 10,000 parts. (The validation job uses
        the same pieces, :meth:`copy_plan` and :meth:`copy_parts`, to copy across several
        invocations.)
        """
        plan = self.copy_plan(size)
        if plan is None:
            self.copy_object(src_bucket, src_key, dst_bucket, dst_key, metadata)
            return
        upload_id = self.create_multipart_upload(dst_bucket, dst_key, metadata)
        try:
            parts = self.copy_parts(src_bucket, src_key, dst_bucket, dst_key, upload_id, plan)
            self.complete_multipart_upload(dst_bucket, dst_key, upload_id, parts)
        except Exception:
            self.abort_multipart_upload(dst_bucket, dst_key, upload_id)
            raise

    def copy_plan(self, size: int) -> list[tuple[int, int, int]] | None:
        """``(part_no, first, last)`` of a multipart copy of ``size`` bytes, or None when one
        ``CopyObject`` does it."""
        s = self.settings
        part_size = part_size_for(size, default=s.copy_part_size, minimum=s.min_part_size)
        if size <= part_size and size <= MAX_PART_SIZE:
            return None
        return part_ranges(size, part_size)

    def copy_object(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """One ``CopyObject`` (objects up to one copy part)."""
        extra: dict[str, Any] = {}
        if metadata is not None:
            extra = {"Metadata": metadata, "MetadataDirective": "REPLACE"}
        source = {"Bucket": src_bucket, "Key": src_key}
        with _s3_errors():
            self.client.copy_object(Bucket=dst_bucket, Key=dst_key, CopySource=source, **extra)

    def copy_parts(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        upload_id: str,
        ranges: Iterable[tuple[int, int, int]],
        keep_going: Callable[[], bool] = lambda: True,
    ) -> list[Part]:
        """Copy these parts into the multipart upload ``upload_id``, ``UCS_COPY_CONCURRENCY``
        at a time; returns the parts copied, by part number.

        No new part is started once ``keep_going()`` is false (a job's time is up): the parts
        in flight finish, and the caller continues later from what S3 lists.
        """
        source = {"Bucket": src_bucket, "Key": src_key}

        def copy_part(rng: tuple[int, int, int]) -> Part:
            part_no, first, last = rng
            with _s3_errors():
                resp = self.client.upload_part_copy(
                    Bucket=dst_bucket,
                    Key=dst_key,
                    UploadId=upload_id,
                    PartNumber=part_no,
                    CopySource=source,
                    CopySourceRange=f"bytes={first}-{last}",
                )
            etag = unquote_etag(resp["CopyPartResult"]["ETag"])
            return Part(part_no=part_no, size=last - first + 1, etag=etag)

        workers = max(1, min(self.settings.copy_concurrency, 64))
        done: list[Part] = []
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for part in bounded_map(pool, copy_part, ranges, workers, keep_going):
                done.append(part)
        return sorted(done, key=lambda p: p.part_no)

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


@dataclass(frozen=True)
class ListedObject:
    """One entry of a bucket listing."""

    key: str
    size: int
    last_modified: datetime
