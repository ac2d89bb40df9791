"""Plumbing of the reliability scripts (run from the checkout's root as
``python -m tests.reliability.<script>``): start a local stack, find the CLI."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.helpers.localstack import E2E_ENV, stacklib


def cli() -> list[str]:
    script = shutil.which("ghga-cli", path=str(Path(sys.executable).parent))
    if not script:
        raise SystemExit("ghga-cli is not installed in this Python's environment (make venv)")
    return [script]


@contextlib.contextmanager
def stack(extra_env: dict[str, str] | None = None) -> Iterator[tuple[dict[str, Any], Path]]:
    """A fresh local stack (e2e part sizes) in a temporary directory: (stack.json, state dir)."""
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        state_dir = Path(tmp) / "stack"
        with stacklib.launch(state_dir, extra_env={**E2E_ENV, **(extra_env or {})}) as info:
            yield info, state_dir


def report(result: dict[str, Any], path: Path | None) -> None:
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if path is not None:
        path.write_text(text + "\n")
