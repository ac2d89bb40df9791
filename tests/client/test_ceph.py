"""The engine against Ceph RGW, which (unlike moto) enforces SigV4 and URL expiry.

Run with a cluster from ``build/ceph-up.sh`` (CI starts one); skipped otherwise.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ghga_cli.errors import EXIT_AUTH, CliError
from ghga_cli.jobs.api import DrsObject
from ghga_cli.transfer import upload as uploads
from tests.client import s3helpers
from tests.client.s3helpers import FakeDrs, Presigner, engine_download, engine_upload
from tests.helpers import ceph as ceph_support

pytestmark = pytest.mark.ceph

MIB = 1024 * 1024
PART = 5 * MIB  # RGW's default minimum part size, like S3


@pytest.fixture(scope="module")
def rgw() -> tuple[Any, str]:
    s3 = ceph_support.s3_client(ceph_support.require_ceph())
    bucket = f"client-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    return s3, bucket


class ExpiredFirst(Presigner):
    """Hands out URLs that expire after 1 s (but claims 900 s) on the first call."""

    def presign_parts(self, upload_id: str, numbers: list[int]) -> tuple[dict[int, str], float]:
        self.expires = 1 if not self.calls else 900
        urls, _ = super().presign_parts(upload_id, numbers)
        return urls, 900.0


def test_upload_refreshes_urls_that_really_expired(
    tmp_path: Path, rgw: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    s3, bucket = rgw
    key = f"up-{uuid.uuid4().hex}"
    data = os.urandom(PART + 1000)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    real_take = uploads.UrlSupply.take
    slept: list[bool] = []

    def take_after_expiry(self: Any, number: int, upcoming: list[int]) -> str | None:
        url = real_take(self, number, upcoming)
        if url is not None and not slept:
            slept.append(True)
            time.sleep(1.5)  # let the first URLs expire before they are used
        return url

    monkeypatch.setattr(s3helpers, "Presigner", ExpiredFirst)
    monkeypatch.setattr(uploads.UrlSupply, "take", take_after_expiry)
    _, stats, presigner = engine_upload(s3, bucket, key, src, PART, parallel=2)
    assert stats.url_refreshes >= 1
    assert len(presigner.calls) >= 2
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data


class ExpiredFirstDrs(FakeDrs):
    def request_object(self, object_id: str) -> DrsObject:
        obj = super().request_object(object_id)
        if self.calls == 1:
            obj.url = self.s3.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self.key}, ExpiresIn=1
            )
            time.sleep(1.5)
        return obj


def test_download_refreshes_a_url_that_really_expired(tmp_path: Path, rgw: tuple[Any, str]) -> None:
    s3, bucket = rgw
    key = f"down-{uuid.uuid4().hex}"
    data = os.urandom(3 * MIB + 5)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    drs = ExpiredFirstDrs(s3, bucket, key)
    downloader = engine_download(drs, tmp_path, range_size=MIB, parallel=2)
    assert drs.calls == 2
    assert (downloader.url_refreshes or 0) >= 1
    assert (tmp_path / "data.bin").read_bytes() == data
    assert (
        hashlib.md5((tmp_path / "data.bin").read_bytes()).hexdigest()
        == hashlib.md5(data).hexdigest()
    )


class TamperedDrs(FakeDrs):
    def request_object(self, object_id: str) -> DrsObject:
        obj = super().request_object(object_id)
        obj.url = obj.url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
        return obj


def test_download_with_a_refused_signature_ends_with_exit_3(
    tmp_path: Path, rgw: tuple[Any, str]
) -> None:
    s3, bucket = rgw
    key = f"bad-{uuid.uuid4().hex}"
    s3.put_object(Bucket=bucket, Key=key, Body=b"x" * 1000)
    with pytest.raises(CliError) as info:
        engine_download(TamperedDrs(s3, bucket, key), tmp_path, range_size=MIB, retries=1)
    assert info.value.exit_code == EXIT_AUTH
    assert "403" in info.value.message
