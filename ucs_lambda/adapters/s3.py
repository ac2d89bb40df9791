"""S3 operations the services and jobs need, with S3's quirks handled in one place.

ETags are returned without quotes; "missing" answers (no such key/upload) become ``None`` or are
ignored where the caller's intent (delete, abort) is already satisfied.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from ..config import Settings
from ..domain.integrity import unquote_etag
from ..domain.parts import MAX_PART_SIZE, part_ranges, part_size_for
from . import aws

log = logging.getLogger(__name__)

_MISSING = {"NoSuchKey", "NoSuchUpload", "404", "NotFound"}


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_missing(exc: ClientError) -> bool:
    """True when S3 says the key or multipart upload does not exist."""
    return error_code(exc) in _MISSING


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

    def create_multipart_upload(self, bucket: str, key: str) -> str:
        resp = self.client.create_multipart_upload(Bucket=bucket, Key=key)
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
        try:
            self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=s3_upload_id)
        except ClientError as exc:
            if not is_missing(exc):
                raise

    # ---- objects -----------------------------------------------------------------------

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            resp = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if is_missing(exc):
                return None
            raise
        return ObjectInfo(
            size=int(resp["ContentLength"]),
            etag=unquote_etag(resp.get("ETag")),
            last_modified=resp.get("LastModified"),
            metadata=dict(resp.get("Metadata") or {}),
        )

    def delete(self, bucket: str, key: str) -> None:
        """Delete; a missing key is fine (S3 itself answers 204 for it)."""
        try:
            self.client.delete_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if not is_missing(exc):
                raise

    def md5_of(self, bucket: str, key: str, chunk: int = 8 * 1024 * 1024) -> str:
        """Stream the object and compute its MD5 (memory stays at one chunk)."""
        body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
        digest = hashlib.md5()
        try:
            for block in iter(lambda: body.read(chunk), b""):
                digest.update(block)
        finally:
            body.close()
        return digest.hexdigest()

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
        uploads, so a 5 TiB object still needs at most 10,000 parts.
        """
        s = self.settings
        part_size = part_size_for(size, default=s.copy_part_size, minimum=s.min_part_size)
        extra: dict[str, Any] = {}
        if metadata is not None:
            extra = {"Metadata": metadata, "MetadataDirective": "REPLACE"}
        source = {"Bucket": src_bucket, "Key": src_key}
        if size <= part_size and size <= MAX_PART_SIZE:
            self.client.copy_object(Bucket=dst_bucket, Key=dst_key, CopySource=source, **extra)
            return
        create_extra = {"Metadata": metadata} if metadata is not None else {}
        upload_id = self.client.create_multipart_upload(
            Bucket=dst_bucket, Key=dst_key, **create_extra
        )["UploadId"]

        def copy_part(rng: tuple[int, int, int]) -> dict[str, Any]:
            part_no, first, last = rng
            resp = self.client.upload_part_copy(
                Bucket=dst_bucket,
                Key=dst_key,
                UploadId=upload_id,
                PartNumber=part_no,
                CopySource=source,
                CopySourceRange=f"bytes={first}-{last}",
            )
            return {"PartNumber": part_no, "ETag": resp["CopyPartResult"]["ETag"]}

        try:
            workers = max(1, min(s.copy_concurrency, 64))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                parts = list(pool.map(copy_part, part_ranges(size, part_size)))
            self.client.complete_multipart_upload(
                Bucket=dst_bucket,
                Key=dst_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except Exception:
            self.abort_multipart_upload(dst_bucket, dst_key, upload_id)
            raise

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
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                found.append(
                    ListedObject(
                        key=obj["Key"], size=int(obj["Size"]), last_modified=obj["LastModified"]
                    )
                )
        return found


@dataclass(frozen=True)
class ListedObject:
    """One entry of a bucket listing."""

    key: str
    size: int
    last_modified: datetime
