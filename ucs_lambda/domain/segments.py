"""The segment layout: how an upload's global parts map to inbox segments and permanent parts.

Parts of an open S3 multipart upload cannot be read, so an upload that is one multipart
upload can only be verified after its last byte. The UCS therefore stores an upload as a
sequence of **segments**, each its own multipart upload in the inbox: segment ``s`` (1-based)
holds the global parts ``(s-1)*k+1 .. s*k`` as its local parts ``1..k``. A finished segment
is completed (it becomes a readable object that no presigned URL can change any more),
hashed in order and copied into the permanent object's multipart upload while the client
still sends the later segments. The API's part numbers stay global, so a client of the
reference ``ucs.yaml`` works unchanged.

The permanent object is assembled with ``UploadPartCopy``: each segment becomes a fixed
number of *copy parts* of ``g`` upload parts each (the last may hold fewer), numbered
``(s-1)*c + j`` with ``c = ceil(k / g)``. Copy parts are whole upload parts, so every one is
at least the upload's part size (>= 5 MiB) except the object's last, and there are never
more of them than upload parts (<= 10,000): every size up to 5 TiB fits S3's limits.

The number of segments is capped (:data:`MAX_SEGMENTS`) so that an upload's per-segment
state fits one DynamoDB item beside its 10,000 part checksums; a 5 TiB file then has
~20 GiB segments, a 4 GiB file (with the default 128 MiB target) 32 segments of 128 MiB.
"""

from __future__ import annotations

from dataclasses import dataclass

from .parts import MAX_PART_SIZE, MAX_PARTS, part_count

#: Most segments of one upload (their multipart upload ids and checksums live in one item).
MAX_SEGMENTS = 256


class SegmentBeyondUpload(ValueError):
    """A segment number the upload does not have."""

    def __init__(self, segment_no: int, count: int) -> None:
        super().__init__(f"segment {segment_no} is beyond the upload's last segment ({count})")
        self.segment_no = segment_no
        self.count = count


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class CopyRange:
    """One ``UploadPartCopy`` of an assembly: bytes ``first..last`` of a segment object
    become part ``part_no`` of the permanent object."""

    part_no: int
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class SegmentLayout:
    """Where every part of an upload lives (a pure function of four numbers).

    ``size`` and ``part_size`` are the file's registered size and the upload's part size;
    ``segment_parts`` (k) the upload parts per segment; ``copy_group`` (g) the upload parts
    per copy part. An upload created before segments existed is one segment of all its
    parts (``segment_parts`` >= the part count).
    """

    size: int
    part_size: int
    segment_parts: int
    copy_group: int

    @classmethod
    def plan(
        cls,
        size: int,
        part_size: int,
        segment_size: int,
        copy_part_size: int,
        max_segments: int = MAX_SEGMENTS,
    ) -> SegmentLayout:
        """The layout for a new upload: segments of about ``segment_size`` bytes (whole
        parts, at least one), no more than ``max_segments`` of them, copy parts of about
        ``copy_part_size`` bytes (whole parts, at most 5 GiB)."""
        parts = part_count(size, part_size)
        k = max(1, segment_size // part_size, _ceil_div(parts, max_segments))
        k = min(k, parts)
        g = max(1, min(copy_part_size // part_size, MAX_PART_SIZE // part_size, k))
        return cls(size, part_size, k, g)

    # ---- parts and segments ------------------------------------------------------------

    @property
    def part_count(self) -> int:
        return part_count(self.size, self.part_size)

    @property
    def segment_count(self) -> int:
        return _ceil_div(self.part_count, self.segment_parts)

    @property
    def copy_parts_per_segment(self) -> int:
        return _ceil_div(self.segment_parts, self.copy_group)

    def check_segment(self, segment_no: int) -> None:
        if not 1 <= segment_no <= self.segment_count:
            raise SegmentBeyondUpload(segment_no, self.segment_count)

    def segment_of(self, part_no: int) -> tuple[int, int]:
        """``(segment_no, local_part_no)`` of global part ``part_no`` (both 1-based)."""
        index = part_no - 1
        return index // self.segment_parts + 1, index % self.segment_parts + 1

    def parts_of(self, segment_no: int) -> range:
        """The global part numbers of a segment."""
        self.check_segment(segment_no)
        first = (segment_no - 1) * self.segment_parts + 1
        return range(first, min(first + self.segment_parts, self.part_count + 1))

    def part_length(self, part_no: int) -> int:
        """Bytes of global part ``part_no`` (the last part may be shorter; empty file: 0)."""
        return max(0, min(self.part_size, self.size - (part_no - 1) * self.part_size))

    def span(self, segment_no: int) -> tuple[int, int]:
        """``(offset, length)`` of a segment within the file."""
        parts = self.parts_of(segment_no)
        offset = (parts[0] - 1) * self.part_size
        return offset, min(parts[-1] * self.part_size, self.size) - offset

    def segment_at(self, offset: int) -> int:
        """The segment holding byte ``offset`` (``offset == size`` gives the last one)."""
        part_no = min(offset // self.part_size + 1, self.part_count)
        return self.segment_of(part_no)[0]

    # ---- assembly ----------------------------------------------------------------------

    def copy_ranges(self, segment_no: int) -> list[CopyRange]:
        """The copy parts of a segment, ranges relative to the segment object."""
        parts = self.parts_of(segment_no)
        c = self.copy_parts_per_segment
        ranges = []
        for j, start in enumerate(range(0, len(parts), self.copy_group)):
            group = parts[start : start + self.copy_group]
            first = (group[0] - parts[0]) * self.part_size
            length = sum(self.part_length(n) for n in group)
            ranges.append(CopyRange((segment_no - 1) * c + j + 1, first, first + length - 1))
        return ranges

    def check(self) -> None:
        """Refuse a layout outside S3's limits (a stored layout is checked before use)."""
        if self.part_size <= 0 or self.segment_parts <= 0 or self.copy_group <= 0:
            raise ValueError("part size, segment parts and copy group must be positive")
        if self.part_count > MAX_PARTS:
            raise ValueError(f"{self.part_count} parts exceed S3's {MAX_PARTS}")
        if self.copy_group * self.part_size > MAX_PART_SIZE and self.copy_group > 1:
            raise ValueError("a copy part would exceed 5 GiB")
