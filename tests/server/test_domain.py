"""Domain rules without AWS: part sizes, status machine, checksum verdicts, authorisation."""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timezone

import pytest

from ucs_lambda.domain import access, errors
from ucs_lambda.domain.integrity import (
    Evidence,
    Verdict,
    is_md5_hex,
    judge_digest,
    multipart_etag,
    precheck,
)
from ucs_lambda.domain.models import FileRecord, UploadStatus
from ucs_lambda.domain.parts import (
    MAX_FILE_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    FileTooLarge,
    GiB,
    MiB,
    TiB,
    parse_part_number,
    part_count,
    part_ranges,
    part_size_for,
)
from ucs_lambda.domain.status import check_client_change

S = UploadStatus


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        5 * MiB,
        16 * MiB,
        100 * GiB,
        16 * MiB * MAX_PARTS,
        16 * MiB * MAX_PARTS + 1,
        200 * 10**9,
        200 * GiB,
        1 * TiB,
        MAX_FILE_SIZE - 1,
        MAX_FILE_SIZE,
    ],
)
def test_part_size_fits_every_file_up_to_5_tib(size: int) -> None:
    part = part_size_for(size)
    assert part_count(size, part) <= MAX_PARTS
    assert 5 * MiB <= part <= MAX_PART_SIZE
    assert part % MiB == 0
    assert part >= 16 * MiB


def test_part_size_defaults_and_growth() -> None:
    assert part_size_for(0) == 16 * MiB
    assert part_size_for(100 * MiB) == 16 * MiB
    assert part_size_for(16 * MiB * MAX_PARTS) == 16 * MiB  # exactly 10,000 parts
    assert part_size_for(16 * MiB * MAX_PARTS + 1) == 17 * MiB
    # 200 GB (decimal): 20 MB per part rounds up to 20 MiB -> 9,537 parts
    assert part_size_for(200 * 10**9) == 20 * MiB
    assert part_count(200 * 10**9, 20 * MiB) == 9537
    # 5 TiB: 524.288 MiB per part rounds up to 525 MiB
    assert part_size_for(5 * TiB) == 525 * MiB
    assert part_count(5 * TiB, 525 * MiB) == math.ceil(5 * TiB / (525 * MiB)) == 9987


def test_part_size_configuration_is_bounded() -> None:
    assert part_size_for(10, default=64 * 1024, minimum=64 * 1024) == 64 * 1024
    assert part_size_for(10, default=1024, minimum=5 * MiB) == 5 * MiB  # never below minimum
    assert part_size_for(10, default=10 * GiB) == MAX_PART_SIZE  # never above 5 GiB
    # a small default still grows for large files
    size = 100 * GiB
    part = part_size_for(size, default=64 * 1024, minimum=64 * 1024)
    assert part_count(size, part) <= MAX_PARTS


def test_part_size_refuses_impossible_files() -> None:
    with pytest.raises(FileTooLarge):
        part_size_for(MAX_FILE_SIZE + 1)
    with pytest.raises(ValueError):
        part_size_for(-1)


def test_part_ranges_cover_the_file() -> None:
    assert part_ranges(0, 10) == [(1, 0, -1)]
    assert part_ranges(25, 10) == [(1, 0, 9), (2, 10, 19), (3, 20, 24)]
    ranges = part_ranges(5 * TiB, 525 * MiB)
    assert len(ranges) == 9987 and ranges[-1][2] == 5 * TiB - 1


@pytest.mark.parametrize("raw", ["1", "10000", 1, 10000, "42"])
def test_part_numbers_valid(raw: object) -> None:
    assert 1 <= parse_part_number(raw) <= 10000


@pytest.mark.parametrize(
    "raw", ["0", "10001", 0, 10001, -1, "-1", "1.0", "abc", "", " ", True, 1.0, None, "\uff11"]
)
def test_part_numbers_invalid(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_part_number(raw)


ALL = list(S)


@pytest.mark.parametrize("current", ALL)
@pytest.mark.parametrize("target", ALL)
def test_client_status_changes(current: S, target: S) -> None:
    allowed = {(S.PENDING, S.UPLOADED), (S.PENDING, S.CANCELLED), (S.UPLOADED, S.CANCELLED)}
    if (current, target) in allowed:
        check_client_change("u", current, target)
        return
    with pytest.raises((errors.UploadNotPending, errors.UploadStatusChange)) as info:
        check_client_change("u", current, target)
    if target in (S.UPLOADED, S.CANCELLED):
        assert info.value.exception_id == "uploadNotPending"
        assert info.value.data == {"upload_id": "u", "current_upload_status": current.value}
    else:
        assert info.value.exception_id == "uploadStatusChange"
        assert info.value.data == {"upload_id": "u", "target_status": target.value}


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def _evidence(object_etag: str | None = None, **over: object) -> Evidence:
    parts = [b"a" * 10, b"b" * 10, b"c" * 5]
    whole = b"".join(parts)
    etags = [_md5(p) for p in parts]
    # Two segments: parts 1-2 and part 3, each its own multipart object.
    segments = [
        (object_etag or multipart_etag(etags[:2]), etags[:2]),
        (multipart_etag(etags[2:]), etags[2:]),
    ]
    base = {
        "registered_size": len(whole),
        "registered_md5": _md5(whole),
        "object_size": len(whole),
        "segments": segments,
        "client_part_md5s": etags,
        "client_md5": _md5(whole),
    }
    base.update(over)
    return Evidence(**base)  # type: ignore[arg-type]


def test_consistent_evidence_proves_nothing_the_object_must_be_read() -> None:
    assert precheck(_evidence()) is None
    assert precheck(_evidence(client_md5=None, client_part_md5s=[])) is None


def test_early_rejections_name_both_values() -> None:
    reason = (precheck(_evidence(object_size=24)) or Verdict(True)).reason or ""
    assert "size mismatch" in reason and "24 bytes" in reason and "25 bytes" in reason
    reason = (precheck(_evidence(client_md5="0" * 32)) or Verdict(True)).reason or ""
    assert "0" * 32 in reason and _md5(b"a" * 10 + b"b" * 10 + b"c" * 5) in reason
    bad_parts = [_md5(b"a" * 10), "1" * 32, _md5(b"c" * 5)]
    reason = (precheck(_evidence(client_part_md5s=bad_parts)) or Verdict(True)).reason or ""
    assert "part 2" in reason and "1" * 32 in reason and _md5(b"b" * 10) in reason
    reason = (precheck(_evidence(client_part_md5s=bad_parts[:2])) or Verdict(True)).reason
    assert "2 parts" in (reason or "") and "3 parts" in (reason or "")
    verdict = precheck(_evidence(object_etag="0" * 32 + "-2"))
    assert verdict is not None and not verdict.accepted and "ETag" in (verdict.reason or "")


def test_the_verdict_on_the_read_bytes_names_both_checksums() -> None:
    assert judge_digest("a" * 32, "A" * 32) == Verdict(True, None)
    verdict = judge_digest("b" * 32, "a" * 32)
    assert not verdict.accepted
    assert "b" * 32 in (verdict.reason or "") and "a" * 32 in (verdict.reason or "")
    assert "computed by the server" in (verdict.reason or "")


def test_md5_hex() -> None:
    assert is_md5_hex("a" * 32) and is_md5_hex("A" * 32)
    assert not is_md5_hex("g" * 32) and not is_md5_hex("a" * 31) and not is_md5_hex(None)


def test_authorisation() -> None:
    now = datetime.now(timezone.utc)
    f = FileRecord("F", "f", 1, "0" * 32, "", "", now, now, frozenset({"s"}), frozenset({"r"}))
    access.require_submitter(f, "s")
    access.require_reader(f, "r")
    with pytest.raises(errors.NoFileAccess):
        access.require_submitter(f, "r")
    with pytest.raises(errors.NoFileAccess):
        access.require_reader(f, "s")
