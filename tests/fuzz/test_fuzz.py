"""schemathesis on the session's local stack, bounded so that `make test` stays quick.

`make fuzz` runs the same fuzzing with more examples on a stack of its own
(python -m tests.fuzz.run_fuzz). Here 10 examples per operation and phase (~600 requests over
both documents, ~30 s) catch what the checks find: 5xx, undocumented statuses, bodies, headers
or content types that disagree with ucs_lambda/openapi.yaml or docs/reference/ucs.yaml
(the upstream reference).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fuzz.run_fuzz import SPECS, find_st, fuzz

pytestmark = pytest.mark.e2e


def test_schemathesis_finds_nothing(local_stack: dict[str, Any]) -> None:
    st = find_st()
    assert st, "schemathesis is missing: it is in requirements/dev.txt (make venv)"
    missing = [str(spec[0]) for spec in SPECS.values() if not spec[0].is_file()]
    assert not missing, f"spec not found: {missing}"
    results, leaked = fuzz(local_stack, list(SPECS.values()), 10, st)
    assert not leaked, f"the token appears in the stack's logs: {leaked}"
    for result in results:
        assert result["exit"] == 0, result
        assert result["test_cases"], result
