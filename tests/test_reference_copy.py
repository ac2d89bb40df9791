"""The upstream API definitions in docs/reference/ are verbatim copies of shared/reference/.

The fuzzing and the docs use the copies so that a checkout alone is enough. The copies are
pinned by SHA-256 to the upstream files they were taken from, so a local edit fails here even
on a clean clone; where shared/ sits beside the checkout (developer machines) the copies are
also compared with it byte for byte, which notices when upstream moves on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
UPSTREAM = PROJECT_DIR.parent / "shared" / "reference"

# sha256 of shared/reference/* when they were vendored (2026-11-25).
PINNED_SHA256 = {
    "ucs.yaml": "894aa7bc830748ccdba87ba5dab7f0073fdc53468223d8d711f2b3a713319f25",
    "drs3.yaml": "a0d1e3215e31d9cb3fa13279e3c1cb4f13fae4cd7f187536ce08a5352196824c",
}


@pytest.mark.parametrize("name", sorted(PINNED_SHA256))
def test_copy_is_the_pinned_upstream_text(name: str) -> None:
    copy = (PROJECT_DIR / "docs" / "reference" / name).read_bytes()
    assert hashlib.sha256(copy).hexdigest() == PINNED_SHA256[name]
    upstream = UPSTREAM / name
    if upstream.is_file():
        assert copy == upstream.read_bytes(), f"{upstream} changed: re-vendor and re-pin it"
