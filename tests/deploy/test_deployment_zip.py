"""The deployment zip imports on its own and serves requests (moto, tokens from SSM)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

from .conftest import ROOT

NEW_KEY = "new-key-0123456789abcdef0123456789abcdef"
OLD_KEY = "old-key-0123456789abcdef0123456789abcdef"

SERVE = r"""
import json, sys
zip_dir, site = sys.argv[1], sys.argv[2]
sys.path[:] = [zip_dir] + [p for p in sys.path if p.startswith(sys.base_prefix) and
                           'site-packages' not in p] + [site]
import os
from moto import mock_aws

with mock_aws():
    import boto3
    boto3.client("ssm").put_parameter(
        Name=os.environ["UCS_TOKEN_KEYS_PARAMETER"],
        Value=os.environ["NEW_KEY"] + "," + os.environ["OLD_KEY"],
        Type="SecureString")
    import app  # the zip's app.py, as the Lambda runtime imports it
    import ucs_lambda
    assert ucs_lambda.__file__.startswith(zip_dir), ucs_lambda.__file__
    from ucs_lambda.config import get_settings
    from ucs_lambda.adapters import provision
    from ucs_lambda.bootstrap import services
    from ucs_lambda.domain.models import FileRecord
    from ucs_lambda import tokens
    from datetime import datetime, timezone
    settings = get_settings()
    provision.create_all(settings)
    now = datetime.now(timezone.utc)
    services(settings).state.files.register_file(FileRecord(
        file_id="F1", file_name="a.bin", size=1024, md5_checksum="0" * 32, grouping_label="",
        format="bin", creation_date=now, update_date=now, submitters=frozenset({"alice"}),
        readers=frozenset()))
    # a token signed with the older key still verifies (rotation)
    token = tokens.mint("alice", key=os.environ["OLD_KEY"])
    # The zip carries Chalice's runtime part only (chalice/app.py); the test client comes
    # from the full install, driving the zip's app module.
    import chalice
    assert chalice.__file__.startswith(zip_dir), chalice.__file__
    chalice.__path__.append(os.path.join(site, "chalice"))
    from chalice.test import Client
    with Client(app.app) as client:
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        r = client.http.post("/uploads", headers=auth, body=json.dumps({"file_id": "F1"}))
        assert r.status_code == 200, (r.status_code, r.body)
        upload = json.loads(r.body)
        r = client.http.post(f"/uploads/{upload['upload_id']}/signed_urls", headers=auth,
                             body=json.dumps({"part_numbers": [1]}))
        assert r.status_code == 200, (r.status_code, r.body)
        assert json.loads(r.body)["urls"][0]["url"].startswith("https://")
        r = client.http.get("/files/F1", headers={"Authorization": "Bearer x"})
        assert r.status_code == 401, r.status_code
        r = client.http.get("/ga4gh/drs/v1/service-info", headers=auth)
        assert r.status_code == 200, r.status_code
print("served", upload["upload_id"])
"""


def test_zip_imports_and_serves(packaged: dict[str, Any], tmp_path: Path) -> None:
    unzipped = tmp_path / "zip"
    with zipfile.ZipFile(packaged["cfn"]["dev"] / "deployment.zip") as zf:
        zf.extractall(unzipped)
    assert (unzipped / "app.py").is_file() and (unzipped / "ucs_lambda" / "app.py").is_file()
    assert (unzipped / "pynamodb").is_dir() and (unzipped / "jwt").is_dir()
    assert not (unzipped / "ucs_lambda" / "admin.py").read_text().count("UCS_TOKEN_KEYS=")
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "UCS_TOKEN_KEYS_PARAMETER": "/ghga-ucs/test/token-keys",
        "NEW_KEY": NEW_KEY,
        "OLD_KEY": OLD_KEY,
    }
    proc = subprocess.run(
        [sys.executable, "-I", "-c", SERVE, str(unzipped), sysconfig.get_paths()["purelib"]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("served ")
    assert not (ROOT / "vendor" / "ucs_lambda").exists()
