"""Deployments name their DRS host in configuration (issue 11 item 4) and publish the DRS routes.

Every stage of .chalice/config.json sets ``UCS_DRS_HOSTNAME``; packaging refuses a stage
without a valid one, and the WSGI deployment refuses to start without it (the Lambda runtime
refuses to serve DRS without it: tests/server/test_drs_interop.py). The packaged API carries the
new DRS operations, OPTIONS included.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, SCRIPT, load

CHECK = ROOT / "build" / "check_stage.py"


def check_stage(stage: str, root: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CHECK), "--stage", stage, "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def project_copy(tmp_path: Path, edit: Any) -> Path:
    """``.chalice/`` copied into ``tmp_path`` with ``edit(config)`` applied to config.json."""
    shutil.copytree(
        ROOT / ".chalice", tmp_path / ".chalice", ignore=shutil.ignore_patterns("deployments")
    )
    path = tmp_path / ".chalice" / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))
    return tmp_path


def test_every_stage_names_a_valid_drs_host() -> None:
    stages = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]
    assert set(stages) >= {"dev", "prod"}
    for stage in stages:
        result = check_stage(stage)
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("value", [None, "", "https://drs.example.org/", "drs.example.org/x"])
def test_packaging_refuses_a_stage_without_a_valid_drs_host(tmp_path: Path, value: Any) -> None:
    def edit(config: dict[str, Any]) -> None:
        env = config["stages"]["dev"]["environment_variables"]
        env.pop("UCS_DRS_HOSTNAME")
        if value is not None:
            env["UCS_DRS_HOSTNAME"] = value

    result = check_stage("dev", project_copy(tmp_path, edit))
    assert result.returncode == 2
    assert result.stderr.startswith("package: refusing to package: stage dev")
    assert "UCS_DRS_HOSTNAME" in result.stderr
    assert check_stage("prod", tmp_path).returncode == 0  # only the broken stage is refused


def test_package_script_checks_the_stage_before_packaging(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        ["bash", str(SCRIPT), str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable, "STAGE": "no-such-stage"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refusing to package" in result.stderr and "no-such-stage" in result.stderr
    assert not out.exists()  # refused before chalice ran


def wsgi_import(env_update: dict[str, str], drop: tuple[str, ...]) -> subprocess.CompletedProcess:
    """Import ``ucs_lambda.wsgi`` (what gunicorn does at boot) in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UCS_", "AWS_LAMBDA"))}
    env.update({"AWS_DEFAULT_REGION": "us-east-1", "UCS_TOKEN_KEYS": "k" * 40, **env_update})
    for name in drop:
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-c", "import ucs_lambda.wsgi"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_wsgi_deployment_refuses_to_start_without_a_drs_host() -> None:
    refused = wsgi_import({}, drop=("UCS_DRS_HOSTNAME",))
    assert refused.returncode != 0
    assert "ConfigError: UCS_DRS_HOSTNAME is not set" in refused.stderr
    refused = wsgi_import({"UCS_DRS_HOSTNAME": "http://drs.example.org"}, drop=())
    assert refused.returncode != 0 and "host name or host:port" in refused.stderr
    started = wsgi_import({"UCS_DRS_HOSTNAME": "drs.example.org"}, drop=())
    assert started.returncode == 0, started.stderr


def test_the_packaged_api_has_the_drs_routes(packaged: dict[str, Any]) -> None:
    for stage, host in (("dev", "drs-dev.ghga.de"), ("prod", "drs.ghga.de")):
        template = load(packaged["cfn"][stage] / "sam.json")
        paths = template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]["paths"]
        assert {"get", "options"} <= set(paths["/ga4gh/drs/v1/objects/{object_id}"])
        assert "get" in paths["/ga4gh/drs/v1/objects/{object_id}/access/{access_id}"]
        assert "post" in paths["/ga4gh/drs/v1/objects"]
        env = template["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
        assert env["UCS_DRS_HOSTNAME"] == host
