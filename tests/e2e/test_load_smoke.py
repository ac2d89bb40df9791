"""A short run of the load script (``python -m tests.reliability.load``), so it keeps working:
4 clients for 10 seconds on a stack of their own, zero failed transfers, zero rule violations.

The real run (16 clients, 5 minutes) and its numbers are in docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import PROJECT_DIR

pytestmark = pytest.mark.e2e


def test_load_script_short_run(tmp_path) -> None:
    out = tmp_path / "load.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.reliability.load",
            "--clients",
            "4",
            "--seconds",
            "10",
            "--out",
            str(out),
        ],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["failed_transfers"] == 0 and summary["invariant_violations"] == 0
    assert summary["transfers"] >= 2 and summary["api_latency_ms"]["p99"] is not None
