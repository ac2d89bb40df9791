"""The part-size rule: every file up to 5 TiB must fit into S3's 10,000 parts.

S3 multipart uploads (and multipart copies) allow at most 10,000 parts of 5 MiB..5 GiB each
(the last part may be smaller). The default part size (16 MiB) suits small files; larger files
get a part size grown to a whole number of MiB so that ``ceil(size / part_size) <= 10,000``.
"""

from __future__ import annotations

MiB = 1024**2
GiB = 1024**3
TiB = 1024**4

MAX_PARTS = 10_000
MAX_PART_SIZE = 5 * GiB
S3_MIN_PART_SIZE = 5 * MiB
MAX_FILE_SIZE = 5 * TiB


class FileTooLarge(ValueError):
    """The file exceeds what one S3 object (and so one upload) can hold."""


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def part_size_for(file_size: int, default: int = 16 * MiB, minimum: int = S3_MIN_PART_SIZE) -> int:
    """The part size for a file of ``file_size`` bytes.

    ``default`` is used when enough; otherwise the smallest whole number of MiB that keeps the
    part count at or below 10,000. The result is always within ``minimum``..5 GiB (``minimum``
    is configurable so tests can use small parts with a lowered moto limit).
    """
    if file_size < 0:
        raise ValueError("file size must not be negative")
    if file_size > MAX_FILE_SIZE:
        raise FileTooLarge(f"file size {file_size} exceeds the 5 TiB S3 object limit")
    size = max(default, minimum)
    if part_count(file_size, size) > MAX_PARTS:
        size = _ceil_div(_ceil_div(file_size, MAX_PARTS), MiB) * MiB
    return min(max(size, minimum), MAX_PART_SIZE)


def part_count(file_size: int, part_size: int) -> int:
    """Number of parts for ``file_size`` (an empty file is still one, empty, part)."""
    return max(1, _ceil_div(file_size, part_size))


def part_length(file_size: int, part_size: int, part_no: int) -> int:
    """The exact byte count of part ``part_no`` (1-based): what its presigned URL is signed for.

    ``min(part_size, size - (n-1) * part_size)``; an empty file has one part of 0 bytes. Raises
    :class:`PartBeyondFile` for a part number past the file's last part.
    """
    count = part_count(file_size, part_size)
    if not 1 <= part_no <= count:
        raise PartBeyondFile(part_no, count)
    return min(part_size, file_size - (part_no - 1) * part_size)


class PartBeyondFile(ValueError):
    """A part number the file does not have (S3 would take its bytes into the object)."""

    def __init__(self, part_no: int, count: int) -> None:
        super().__init__(f"part {part_no} is beyond the file's last part ({count})")
        self.part_no = part_no
        self.count = count


def part_ranges(file_size: int, part_size: int) -> list[tuple[int, int, int]]:
    """``(part_no, first_byte, last_byte)`` for each part, inclusive ranges (HTTP Range style)."""
    return [
        (n + 1, start, min(start + part_size, file_size) - 1)
        for n, start in enumerate(range(0, max(file_size, 1), part_size))
    ]


def parse_part_number(value: object) -> int:
    """A part number from a path segment or JSON value: an integer in 1..10,000.

    Raises ``ValueError`` with a message for anything else (``"1.0"``, ``"abc"``, ``True``).
    """
    if isinstance(value, bool):
        raise ValueError("part number must be an integer")
    if isinstance(value, str):
        text = value.strip()
        if not text.isdigit() or not text.isascii():
            raise ValueError(f"part number must be an integer, got {value!r}")
        number = int(text)
    elif isinstance(value, int):
        number = value
    else:
        raise ValueError(f"part number must be an integer, got {value!r}")
    if not 1 <= number <= MAX_PARTS:
        raise ValueError(f"part number must be between 1 and {MAX_PARTS}, got {number}")
    return number
