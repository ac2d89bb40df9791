"""The upstream API definitions in docs/reference/ are verbatim copies of shared/reference/.

The fuzzing and the docs use the copies so that a checkout alone is enough; this test notices
when upstream changes (it needs shared/ beside the checkout, as on CI and developer machines).
"""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
UPSTREAM = PROJECT_DIR.parent / "shared" / "reference"


@pytest.mark.parametrize("name", ["ucs.yaml", "drs3.yaml"])
def test_copy_matches_upstream(name: str) -> None:
    upstream = UPSTREAM / name
    if not upstream.is_file():
        pytest.skip(f"{upstream} is not beside this checkout")
    assert (PROJECT_DIR / "docs" / "reference" / name).read_bytes() == upstream.read_bytes()
