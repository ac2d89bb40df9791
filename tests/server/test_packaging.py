"""``build/package_lambda.sh`` produces a deployment.zip whose app imports on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "build" / "package_lambda.sh"


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "chalice").exists(), reason="no chalice CLI")
def test_package_and_import(tmp_path: Path) -> None:
    out = tmp_path / "lambda"
    env = {**os.environ, "PYTHON": sys.executable, "AWS_DEFAULT_REGION": "us-east-1"}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        env.pop(name, None)  # packaging needs no credentials
    proc = subprocess.run(
        ["bash", str(SCRIPT), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    template = json.loads((out / "sam.json").read_text())
    resources = template["Resources"]
    assert {"APIHandler", "OnJobMessage", "SweepStaleUploads", "CleanupOutbox"} <= set(resources)
    body = resources["RestAPI"]["Properties"]["DefinitionBody"]
    assert (
        body["x-amazon-apigateway-gateway-responses"]["MISSING_AUTHENTICATION_TOKEN"]["statusCode"]
        == "404"
    )
    queue = resources["OnJobMessage"]["Properties"]["Events"]["OnJobMessageSqsEventSource"]
    assert "ghga-jobs" in json.dumps(queue)

    unzipped = tmp_path / "unzipped"
    with zipfile.ZipFile(out / "deployment.zip") as zf:
        zf.extractall(unzipped)
    assert (unzipped / "ucs_lambda" / "openapi.yaml").exists()
    site = sysconfig.get_paths()["purelib"]
    code = f"""
import sys
stdlib = [p for p in sys.path if p and 'site-packages' not in p and p != '']
sys.path[:] = [{str(unzipped)!r}, {site!r}] + [p for p in stdlib if not p.startswith({str(ROOT)!r})]
import app, ucs_lambda
assert ucs_lambda.__file__.startswith({str(unzipped)!r}), ucs_lambda.__file__
routes = app.app.routes
assert '/uploads/{{upload_id}}' in routes and '/ga4gh/drs/v1/objects/{{object_id}}' in routes
from ucs_lambda.routes.docs import openapi_document
assert openapi_document()['openapi'] == '3.0.3'
print('ok', len(routes))
"""
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok")
    assert not (ROOT / "vendor" / "ucs_lambda").exists()
