"""Refuse to package a Chalice stage that a deployment could not run with.

``build/package_lambda.sh`` runs this before anything else. On top of what
``build/cfn/merge.py`` requires of a stage (resource names, the token-key parameter), the
stage's ``environment_variables`` must set what a deployment has no default for: today
``UCS_DRS_HOSTNAME``, the public host of the DRS API (the host of the ``drs://`` URIs it hands
out), which is never taken from a request's ``Host`` header (docs/CONTRACTS.md). The check is
the same one ``ucs_lambda.config.check_deployment`` makes where a deployment starts.

Usage: ``python build/check_stage.py --stage dev [--root DIR]``; exit status 0 when the stage
is fine, 2 with the problem on stderr otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))
sys.path.insert(0, str(PROJECT_DIR / "build" / "cfn"))

from merge import load_stage  # noqa: E402

from ucs_lambda.config import ConfigError, check_drs_hostname  # noqa: E402


def stage_problem(stage: str, root: Path = PROJECT_DIR) -> str | None:
    """Why ``stage`` of ``<root>/.chalice/config.json`` cannot be deployed, or None."""
    try:
        env = load_stage(stage, root)["env"]
    except SystemExit as exc:  # merge.py's own refusals
        return str(exc)
    hostname = env.get("UCS_DRS_HOSTNAME")
    if not hostname:
        return (
            f"stage {stage}: environment_variables lacks UCS_DRS_HOSTNAME (the public host of "
            "the DRS API, e.g. drs.example.org)"
        )
    try:
        check_drs_hostname(str(hostname))
    except ConfigError as exc:
        return f"stage {stage}: {exc}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True)
    parser.add_argument("--root", type=Path, default=PROJECT_DIR, help="holds .chalice/")
    args = parser.parse_args()
    problem = stage_problem(args.stage, args.root)
    if problem:
        print(f"package: refusing to package: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
