"""Packages the app once per session (CloudFormation and Terraform), offline, no credentials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "build" / "package_lambda.sh"
CHALICE = Path(sys.executable).parent / "chalice"


def package(out: Path, stage: str = "dev", fmt: str = "cloudformation") -> Path:
    """Run build/package_lambda.sh as `make package-lambda` does, without AWS credentials."""
    if not CHALICE.exists():
        pytest.skip("no chalice CLI next to this Python")
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "AWS_DEFAULT_REGION": "us-east-1",
        "STAGE": stage,
        "PKG_FORMAT": fmt,
    }
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(name, None)
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    proc = subprocess.run(
        ["bash", str(SCRIPT), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.fixture(scope="session")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """{"cfn": {stage: dir}, "tf_stages": {stage: dir}, "tf": the dev stage's Terraform dir}:
    both stages as CloudFormation and as Terraform."""
    base = tmp_path_factory.mktemp("package")
    cfn = {stage: package(base / f"cfn-{stage}", stage) for stage in ("dev", "prod")}
    tf = {stage: package(base / f"tf-{stage}", stage, "terraform") for stage in ("dev", "prod")}
    return {"cfn": cfn, "tf": tf["dev"], "tf_stages": tf}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
