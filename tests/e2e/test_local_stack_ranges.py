"""Ranged GETs through the local stack's S3 (moto with ``build/moto_ranged.py``) return exactly
the bytes and headers S3 would: the patch reads only the range, and changes nothing else."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.helpers.support import s3_client

pytestmark = pytest.mark.e2e

SIZE = 9 * 1024 * 1024 + 17


@pytest.fixture(scope="module")
def stored(local_stack: dict[str, Any]) -> tuple[Any, str, bytes]:
    s3 = s3_client(local_stack)
    bucket = local_stack["inbox_bucket"]
    key = f"ranges/{uuid.uuid4().hex}"
    data = os.urandom(SIZE)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return s3, key, data


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=0-1048575", 0, 1048575),
        ("bytes=4194304-8388607", 4194304, 8388607),
        (f"bytes={SIZE - 1}-{SIZE - 1}", SIZE - 1, SIZE - 1),
        (f"bytes={SIZE - 100}-{SIZE + 5000}", SIZE - 100, SIZE - 1),  # clipped to the end
        ("bytes=5000000-", 5000000, SIZE - 1),  # open-ended
        ("bytes=-4096", SIZE - 4096, SIZE - 1),  # suffix
    ],
)
def test_a_ranged_get_returns_exactly_the_range(
    stored: tuple[Any, str, bytes], local_stack: dict[str, Any], header: str, first: int, last: int
) -> None:
    s3, key, data = stored
    resp = s3.get_object(Bucket=local_stack["inbox_bucket"], Key=key, Range=header)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert resp["ContentRange"] == f"bytes {first}-{last}/{SIZE}"
    assert resp["ContentLength"] == last - first + 1
    assert resp["Body"].read() == data[first : last + 1]


def test_a_range_beyond_the_end_is_refused(
    stored: tuple[Any, str, bytes], local_stack: dict[str, Any]
) -> None:
    s3, key, _ = stored
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=local_stack["inbox_bucket"], Key=key, Range=f"bytes={SIZE}-")
    assert info.value.response["Error"]["Code"] == "InvalidRange"


@pytest.mark.parametrize("header", ["bytes=0-10,20-30", "bytes=abc"])
def test_ranges_moto_answers_with_the_whole_object_still_do(
    stored: tuple[Any, str, bytes], local_stack: dict[str, Any], header: str
) -> None:
    s3, key, data = stored
    resp = s3.get_object(Bucket=local_stack["inbox_bucket"], Key=key, Range=header)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp["Body"].read() == data


def test_plain_get_head_and_if_match_are_unchanged(
    stored: tuple[Any, str, bytes], local_stack: dict[str, Any]
) -> None:
    s3, key, data = stored
    bucket = local_stack["inbox_bucket"]
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == SIZE
    ranged = s3.get_object(Bucket=bucket, Key=key, Range="bytes=10-19", IfMatch=head["ETag"])
    assert ranged["Body"].read() == data[10:20]
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key=key, Range="bytes=10-19", IfMatch='"0000"')
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
