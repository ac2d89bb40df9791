"""Code the tests share, imported as ``tests.helpers.<module>``.

The repository root is on ``sys.path`` (pytest's ``pythonpath`` in pyproject.toml, or the
current directory of ``python -m tests.<package>.<script>`` run from the root), so no test or
script edits ``sys.path``.
"""

from __future__ import annotations

from pathlib import Path

#: The checkout's root directory.
PROJECT_DIR = Path(__file__).resolve().parents[2]
