"""The object storage port (S3 and S3-compatible stores such as Ceph RGW).

ETags are handled without quotes. "Missing" answers become ``None`` or are ignored where the
caller's intent (delete, abort) is already satisfied; every other error answer is raised as
:class:`StorageError` or one of its subclasses, so no client library's types leak out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class StorageError(Exception):
    """The store answered a call with an error. ``str()`` is ``"<code>: <message>"``, or the
    code alone when the message is empty (Ceph RGW sends none for some codes)."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message or ""


class ObjectMissing(StorageError):
    """The key or the multipart upload does not exist (any more)."""


class ObjectChanged(StorageError):
    """A read conditioned on the object's ETag found another object (``If-Match`` failed)."""


@dataclass(frozen=True)
class Part:
    part_no: int
    size: int
    etag: str
    last_modified: datetime | None = None


@dataclass(frozen=True)
class ObjectRef:
    """An object as a copy source: where it is, and the ETag it must still have."""

    bucket: str
    key: str
    etag: str


@dataclass(frozen=True)
class CopyItem:
    """One ``UploadPartCopy``: bytes ``first..last`` of ``source`` become part ``part_no``."""

    part_no: int
    source: ObjectRef
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str
    last_modified: datetime | None
    metadata: dict[str, str]


@dataclass(frozen=True)
class ListedObject:
    """One entry of a bucket listing."""

    key: str
    size: int
    last_modified: datetime


class ObjectStorage(Protocol):
    """Multipart uploads, presigned URLs, conditional copies and reads."""

    def create_multipart_upload(
        self, bucket: str, key: str, metadata: dict[str, str] | None = None
    ) -> str: ...

    def presign_upload_part(
        self, bucket: str, key: str, s3_upload_id: str, part_no: int, content_length: int
    ) -> str: ...

    def list_parts(self, bucket: str, key: str, s3_upload_id: str) -> list[Part]: ...

    def list_multipart_uploads(self, bucket: str, key: str) -> list[str]: ...

    def complete_multipart_upload(
        self, bucket: str, key: str, s3_upload_id: str, parts: list[Part]
    ) -> None: ...

    def abort_multipart_upload(self, bucket: str, key: str, s3_upload_id: str) -> None: ...

    def head(self, bucket: str, key: str) -> ObjectInfo | None: ...

    def delete(self, bucket: str, key: str) -> None: ...

    def read_range(self, bucket: str, key: str, first: int, last: int, etag: str) -> bytes: ...

    def copy_object(
        self,
        source: ObjectRef,
        dst_bucket: str,
        dst_key: str,
        metadata: dict[str, str] | None = None,
    ) -> str: ...

    def copy_parts(
        self,
        dst_bucket: str,
        dst_key: str,
        upload_id: str,
        items: Iterable[CopyItem],
        keep_going: Callable[[], bool] = ...,
    ) -> Iterator[Part]: ...

    def delete_many(self, bucket: str, keys: list[str]) -> None: ...

    def presign_get(self, bucket: str, key: str) -> str: ...

    def list_objects(self, bucket: str) -> list[ListedObject]: ...
