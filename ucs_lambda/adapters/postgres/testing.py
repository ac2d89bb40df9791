"""Writes past the ports, for tests only: stored state the API could never produce.

Why in the adapter package: the tests (tests/helpers/stored_state.py) must not know the
table layout of segments; the services never import this module.
"""

from __future__ import annotations

from ...config import Settings
from .db import matched, pool_for
from .rows import pack


def set_segment_done(
    settings: Settings, upload_id: str, segment_no: int, etag: str, part_etags: list[str]
) -> None:
    """Record segment ``segment_no`` as completed with this ETag and these part ETags, in any
    status (unconditional, unlike ``record_segment``)."""
    written = matched(
        pool_for(settings),
        """
        INSERT INTO upload_segments (upload_id, segment_no, etag, part_etags)
        VALUES (%s, %s, %s, %s)
        ON CONFLICT (upload_id, segment_no) DO UPDATE
            SET etag = EXCLUDED.etag, part_etags = EXCLUDED.part_etags
        """,
        (upload_id, segment_no, etag, pack(part_etags) or b""),
    )
    assert written, f"no upload {upload_id!r}"
