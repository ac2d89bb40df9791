"""The transfer engine against a real moto S3 server (presigned URLs made by boto3)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ghga_cli.jobs.api import PartInfo
from ghga_cli.transfer.download import DownloadState
from ghga_cli.transfer.engine import plan_parts
from tests.client.s3helpers import FakeDrs, engine_download, engine_upload, md5

PART = 64 * 1024

SIZES = {
    "empty": 0,
    "one-byte": 1,
    "exactly-one-part": PART,
    "one-part-plus-one": PART + 1,
    "many-parts": 5 * PART + 123,
}


def _write(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("size", list(SIZES.values()), ids=list(SIZES))
def test_upload_sizes(tmp_path: Path, s3: Any, bucket: str, key: str, size: int) -> None:
    src = tmp_path / "src.bin"
    data = _write(src, size)
    reader, stats, _ = engine_upload(s3, bucket, key, src, PART)
    stored = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert stored == data
    assert reader.whole_md5() == md5(data)
    expected_parts = max(1, len(plan_parts(size, PART)))
    assert stats.parts_done == expected_parts
    assert reader.part_md5s == [md5(data[o : o + n]) for o, n in plan_parts(size, PART)] or [
        md5(b"")
    ]
    assert stats.retries == 0


@pytest.mark.parametrize("size", list(SIZES.values()), ids=list(SIZES))
def test_download_sizes(tmp_path: Path, s3: Any, bucket: str, key: str, size: int) -> None:
    data = os.urandom(size)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    out = tmp_path / "out"
    out.mkdir()
    downloader = engine_download(FakeDrs(s3, bucket, key), out, range_size=PART)
    target = out / "data.bin"
    assert target.read_bytes() == data
    assert not (out / ".ghga-cli" / "data.bin.part").exists()
    assert not (out / ".ghga-cli" / "data.bin.part.json").exists()
    assert downloader.requests == len(plan_parts(size, PART))
    assert downloader.md5 == md5(data)


def test_upload_resume_skips_matching_parts(tmp_path: Path, s3: Any, bucket: str, key: str) -> None:
    src = tmp_path / "src.bin"
    data = _write(src, 4 * PART + 10)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    # Part 1 stored correctly, part 3 stored with wrong bytes (e.g. the file was edited since).
    s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=data[:PART])
    s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=3, Body=os.urandom(PART))
    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
    existing = {
        p["PartNumber"]: PartInfo(p["PartNumber"], p["Size"], p["ETag"].strip('"')) for p in listed
    }
    reader, stats, _ = engine_upload(
        s3, bucket, key, src, PART, s3_upload_id=upload_id, existing=existing
    )
    assert reader.skipped == 1  # part 1 only; part 3 mismatched and was sent again
    assert stats.requests == 4  # parts 2, 3, 4, 5
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert reader.whole_md5() == md5(data)


def test_download_resume_fetches_only_missing_ranges(
    tmp_path: Path, s3: Any, bucket: str, key: str
) -> None:
    data = os.urandom(6 * PART + 7)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    out = tmp_path / "out"
    out.mkdir()
    pieces = plan_parts(len(data), PART)
    done = {0, 2, 5}
    # A partial file from an earlier run: done ranges hold the right bytes, the rest garbage.
    partial = bytearray(os.urandom(len(data)))
    for i in done:
        off, n = pieces[i]
        partial[off : off + n] = data[off : off + n]
    (out / ".ghga-cli").mkdir(exist_ok=True)
    (out / ".ghga-cli" / "data.bin.part").write_bytes(bytes(partial))
    DownloadState(
        out / ".ghga-cli" / "data.bin.part.json",
        object_id="file-1",
        size=len(data),
        checksum=f"md5:{md5(data)}",
        range_size=PART,
        etag=etag,
        done=done,
    ).save(force=True)
    downloader = engine_download(FakeDrs(s3, bucket, key), out, range_size=PART)
    assert downloader.requests == len(pieces) - len(done)
    assert (out / "data.bin").read_bytes() == data
    assert downloader.parts_skipped == len(done)


def test_download_state_of_other_object_is_ignored(
    tmp_path: Path, s3: Any, bucket: str, key: str
) -> None:
    data = os.urandom(3 * PART)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".ghga-cli").mkdir(exist_ok=True)
    (out / ".ghga-cli" / "data.bin.part").write_bytes(os.urandom(len(data)))
    (out / ".ghga-cli" / "data.bin.part.json").write_text(
        json.dumps(
            {
                "version": 1,
                "object_id": "file-1",
                "size": len(data),
                "checksum": "md5:" + "0" * 32,  # another version of the file
                "range_size": PART,
                "etag": None,
                "done": [0, 1, 2],
            }
        )
    )
    downloader = engine_download(FakeDrs(s3, bucket, key), out, range_size=PART)
    assert downloader.requests == 3
    assert (out / "data.bin").read_bytes() == data


def test_download_refuses_existing_output(tmp_path: Path, s3: Any, bucket: str, key: str) -> None:
    from ghga_cli.errors import ConflictError

    s3.put_object(Bucket=bucket, Key=key, Body=b"new")
    out = tmp_path / "out"
    out.mkdir()
    (out / "data.bin").write_bytes(b"old")
    with pytest.raises(ConflictError):
        engine_download(FakeDrs(s3, bucket, key), out, range_size=PART)
    assert (out / "data.bin").read_bytes() == b"old"
    engine_download(FakeDrs(s3, bucket, key), out, range_size=PART, overwrite=True)
    assert (out / "data.bin").read_bytes() == b"new"


def test_download_starts_over_when_object_changed(
    tmp_path: Path, s3: Any, bucket: str, key: str
) -> None:
    """The state pins another ETag: If-Match fails (412) or the ETag differs -> start over."""
    data = os.urandom(3 * PART)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".ghga-cli").mkdir(exist_ok=True)
    (out / ".ghga-cli" / "data.bin.part").write_bytes(os.urandom(len(data)))
    DownloadState(
        out / ".ghga-cli" / "data.bin.part.json",
        object_id="file-1",
        size=len(data),
        checksum=f"md5:{md5(data)}",
        range_size=PART,
        etag="0" * 32,
        done={0},
    ).save(force=True)
    downloader = engine_download(FakeDrs(s3, bucket, key), out, range_size=PART)
    assert (out / "data.bin").read_bytes() == data
    assert downloader.requests == 3
