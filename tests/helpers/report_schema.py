"""The ``--json`` output of ghga-cli, parsed and validated against ``docs/report.schema.json``.

Every test that reads a ``--json`` summary reads it through :func:`load_report`, so every
summary the tests produce is checked against the documented schema (issue 19).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator

from tests.helpers import PROJECT_DIR

#: The schema of the ``--json`` output.
SCHEMA_PATH = PROJECT_DIR / "docs" / "report.schema.json"


@lru_cache(maxsize=1)
def report_schema() -> dict[str, Any]:
    """The schema (checked once to be a valid draft 2020-12 schema)."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return schema


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return Draft202012Validator(report_schema())


def validate_report(report: Any) -> None:
    """AssertionError listing every way ``report`` differs from the schema."""
    errors = sorted(_validator().iter_errors(report), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]
        raise AssertionError(
            "the --json output does not match docs/report.schema.json:\n  "
            + "\n  ".join(lines)
            + f"\n{json.dumps(report, indent=1, sort_keys=True)[:4000]}"
        )


def load_report(stdout: str) -> dict[str, Any]:
    """The ``--json`` object a run printed on ``stdout``, validated against the schema.

    ``--json`` prints exactly one line holding one JSON object.
    """
    text = stdout.strip()
    assert text, "no --json output on stdout"
    assert "\n" not in text, f"--json printed more than one line: {text[:2000]!r}"
    report = json.loads(text)
    assert isinstance(report, dict), text[:2000]
    validate_report(report)
    return report
