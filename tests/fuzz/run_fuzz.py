"""API fuzzing with schemathesis against the local stack: ``make fuzz``
(``python -m tests.fuzz.run_fuzz`` from the checkout's root).

Starts the stack with :func:`build/stack.launch` (as the e2e tests do), mints a token for a
fuzzing user, registers files for it (one with an accepted upload, one with a pending upload)
and runs ``st run`` for both OpenAPI documents:

- ``ucs_lambda/openapi.yaml`` — this project's contract (UCS + extensions + DRS3), and
- ``../shared/reference/ucs.yaml`` — the reference UCS contract the service must also honour.

The path parameters are pinned to those real ids (``schemathesis.toml`` beside this script,
filled from the environment), so the generated requests reach the code behind the lookups
instead of ending in 404s; bodies, part numbers and headers are generated. Checks: no 5xx, status
codes, content types, headers and bodies as the document says, auth enforced, 405 for other
methods (the ``[checks]`` of the config files). The example
count per operation is bounded (``--max-examples``, default 30) so the run suits CI.

Exit status: 0 when both runs pass, 1 when schemathesis found failures, 2 when the stack or a
spec is missing. ``--json`` prints a summary (examples run, operations, failures per spec).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.helpers import PROJECT_DIR
from tests.helpers.admin import grant, new_user, register_file
from tests.helpers.localstack import E2E_ENV, stacklib
from tests.helpers.ucs import accepted_file, start_upload

HERE = Path(__file__).resolve().parent
#: name -> (document, schemathesis config, generation mode).
#: The reference is fuzzed with schema-valid data only: how malformed input is refused
#: (400 invalidRequest, 413, 415) is this project's extension, documented in its own document,
#: which is fuzzed in both modes.
SPECS = {
    "project": (PROJECT_DIR / "ucs_lambda" / "openapi.yaml", HERE / "schemathesis.toml", "all"),
    "reference": (
        # A verbatim copy of ../shared/reference/ucs.yaml (tests/test_reference_copy.py keeps
        # it identical while shared/ is beside the checkout), so the fuzzing never depends on it.
        PROJECT_DIR / "docs" / "reference" / "ucs.yaml",
        HERE / "reference.toml",
        "positive",
    ),
}


def prepare(stack: dict[str, Any]) -> dict[str, str]:
    """A fuzzing user with a token and real ids for every path parameter."""
    env = {**os.environ, **stack["env"]}
    user = new_user(env, "fuzzer", ttl=7200)
    name = user["user"]
    accepted_id, accepted_upload = accepted_file(stack, env, user, os.urandom(1000))
    grant(env, accepted_id, name)
    pending_file = register_file(
        env, name, size=1000, md5="0" * 32, name="pending.bin", prefix="fuzz", readers=[name]
    )
    pending_upload = start_upload(stack, user["token"], pending_file, os.urandom(1000))
    return {
        "FUZZ_TOKEN": user["token"],
        "FUZZ_FILE_ID": pending_file,
        "FUZZ_UPLOAD_ID": pending_upload,
        "FUZZ_OBJECT_ID": accepted_id,
        "FUZZ_ACCEPTED_UPLOAD_ID": accepted_upload,
    }


def run_spec(
    st: str,
    spec: tuple[Path, Path, str],
    url: str,
    env: dict[str, str],
    max_examples: int,
) -> dict[str, Any]:
    """One ``st run``; returns its exit status and counts read from its JUnit report."""
    document, config, mode = spec
    args = [
        st,
        "--no-color",
        "--config-file",
        str(config),
        "run",
        str(document),
        "--mode",
        mode,
        "--url",
        url,
        "--max-examples",
        str(max_examples),
        "--seed",
        env.get("FUZZ_SEED", "1"),
        "--generation-deterministic",
        "--request-timeout",
        "20",
        "--warnings",
        "off",
    ]
    started = time.monotonic()
    # Outside the checkout: schemathesis keeps a cache (.schemathesis/) in its working directory.
    with tempfile.TemporaryDirectory(prefix="st-") as cwd:
        result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    # The token must not be printed even in failure reports (schemathesis sanitises headers).
    output = output.replace(env["FUZZ_TOKEN"], "<token>")
    summary = {
        "spec": str(document.relative_to(PROJECT_DIR.parent)),
        "mode": mode,
        "exit": result.returncode,
        "seconds": round(time.monotonic() - started, 1),
    }
    match = re.search(r"(\d+) generated", output)
    summary["test_cases"] = int(match.group(1)) if match else None
    match = re.search(r"API Operations:\s*\n?\s*Selected:\s*(\d+)/(\d+)", output)
    if match:
        summary["operations"] = f"{match.group(1)}/{match.group(2)}"
    match = re.search(r"(\d+) (?:failures|failure)\b", output)
    summary["failures"] = int(match.group(1)) if match else (0 if result.returncode == 0 else None)
    summary["output"] = output
    return summary


def fuzz(
    stack: dict[str, Any], specs: list[tuple[Path, Path, str]], max_examples: int, st: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Fuzz the running ``stack`` with each spec; (summaries, logs that contain the token)."""
    ids = prepare(stack)
    env = {**os.environ, **ids}
    results = []
    for spec in specs:
        summary = run_spec(st, spec, stack["ucs_url"], env, max_examples)
        output = summary.pop("output")
        if summary["exit"]:
            print(output, end="")
        print(f"fuzz: {json.dumps(summary)}", flush=True)
        results.append(summary)
    logs = Path(stack["log_dir"])
    leaked = [
        log.name
        for log in sorted(logs.glob("*.log"))
        if ids["FUZZ_TOKEN"] in log.read_text(errors="replace")
    ]
    return results, leaked


def find_st() -> str | None:
    return shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=30, help="per operation (default 30)")
    parser.add_argument("--spec", choices=sorted(SPECS), action="append", help="default: both")
    parser.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    args = parser.parse_args()

    st = find_st()
    if st is None:
        print("fuzz: schemathesis (st) is not installed: make venv (requirements/dev.txt)")
        return 2
    specs = [SPECS[name] for name in (args.spec or sorted(SPECS))]
    missing = [str(spec[0]) for spec in specs if not spec[0].is_file()]
    if missing:
        print(f"fuzz: spec not found: {', '.join(missing)}")
        return 2

    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:  # noqa: SIM117 (py39)
        with stacklib.launch(Path(tmp) / "stack", extra_env=E2E_ENV) as stack:
            results, leaked = fuzz(stack, specs, args.max_examples, st)
    if leaked:
        print(f"fuzz: the token appears in the stack's logs: {leaked}")
    if args.json:
        print(json.dumps(results, indent=2))
    failed = leaked or any(r["exit"] != 0 for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
