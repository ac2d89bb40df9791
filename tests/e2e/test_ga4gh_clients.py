"""GA4GH's own DRS tools against the local stack: the compliance suite and the Python client.

``drs-compliance-suite`` 1.0.3 (requirements/drs-compliance.txt) runs in a virtualenv of its own,
because it pins pytest 7.1.2 and requests 2.28.1 (requirements/dev.txt has pytest 8). The venv
is built once and cached under ``<test venv>/drs-compliance/<hash of the pins>``. As published
the suite needs these work-arounds (besides the two pins of requirements/drs-compliance.txt):

1. a top-level module ``supported_drs_versions`` (``SUPPORTED_DRS_VERSIONS = ["1.2.0"]``),
   imported by ``compliance_suite.helper`` but not shipped; written into the venv;
2. ``--server_base_url`` without a trailing slash (it appends ``/service-info``);
3. its service-info schema (DRS 1.2, ``additionalProperties: false``) refuses the fields DRS
   1.4 requires there (``maxBulkRequestLength``, and 1.5's ``drs`` block): the runner wrapper
   below adds exactly those two properties to that schema and nothing else. The test first
   runs the suite *without* that addition and checks that the service-info schema case is
   the only one failing, for exactly those fields, so the work-around never hides more.

Its access phase runs only for objects whose access methods carry an ``access_id``
(issue 12). ``ga4gh-drs-client`` 0.1.7 (requirements/dev.txt, no conflict) insists on https,
so it talks to the stack through a TLS relay with a certificate made here and trusted via
``REQUESTS_CA_BUNDLE``; it reads ``access_id`` unconditionally and fetches the URL from the
access route.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.helpers.admin import new_user
from tests.helpers.support import PROJECT_DIR
from tests.helpers.tlsrelay import self_signed_certificate, tls_relay
from tests.helpers.ucs import readable_file, staged_object

pytestmark = pytest.mark.e2e

SUITE_REQUIREMENTS = PROJECT_DIR / "requirements" / "drs-compliance.txt"
SUPPORTED_VERSIONS_MODULE = 'SUPPORTED_DRS_VERSIONS = ["1.2.0"]\n'

#: Runs the suite's ``main()``; with DRS14_SERVICE_INFO=1 its service-info schema first gets
#: the two DRS 1.4/1.5 properties (work-around 3 above).
RUNNER = """
import os, sys
import compliance_suite.validate_response as vr
from compliance_suite.report_runner import main

LIMIT = {"type": "integer", "minimum": 1}
if os.environ.get("DRS14_SERVICE_INFO") == "1":
    load = vr.ValidateResponse.get_schema

    def get_schema(self, name):
        schema = load(self, name)
        if os.path.basename(name) != "service_info.json":
            return schema
        # The file's root is only a $ref to its own definition, which the resolver would
        # read from disk again: validate against the (extended) definition itself.
        definition = schema["definitions"]["service_info"]
        definition["properties"]["maxBulkRequestLength"] = LIMIT
        definition["properties"]["drs"] = {
            "type": "object",
            "required": ["maxBulkRequestLength"],
            "properties": {"maxBulkRequestLength": LIMIT},
        }
        return definition

    vr.ValidateResponse.get_schema = get_schema
sys.argv = ["drs-compliance-suite", *sys.argv[1:]]
main()
"""


def suite_python() -> Path:
    """The Python of the cached compliance-suite venv, creating the venv when needed."""
    pins = SUITE_REQUIREMENTS.read_bytes()
    key = hashlib.sha256(pins + SUPPORTED_VERSIONS_MODULE.encode() + sys.version.encode())
    target = Path(sys.prefix) / "drs-compliance" / key.hexdigest()[:16]
    python = target / "bin" / "python"
    if (target / "ready").exists():
        return python
    # Built beside the target and renamed into place, so an interrupted build is never used.
    # The venv is run only as `python -m ...`, which works after the rename.
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(partial)], check=True)
    pip = [str(partial / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "-r", str(SUITE_REQUIREMENTS)], check=True, timeout=600)
    purelib = subprocess.run(
        [
            str(partial / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "supported_drs_versions.py").write_text(SUPPORTED_VERSIONS_MODULE)
    (partial / "ready").write_text("")
    try:
        partial.rename(target)
    except OSError:  # another session finished first
        shutil.rmtree(partial, ignore_errors=True)
    return python


def run_suite(
    python: Path, base_url: str, token: str, object_id: str, work: Path, drs14_service_info: bool
) -> dict[str, Any]:
    """One run of the compliance suite (bearer auth, one object); its parsed report."""
    work.mkdir(parents=True, exist_ok=True)
    bearer = {"auth_type": "bearer", "auth_token": token}
    config = {
        "service_info": bearer,
        "drs_object_info": [{"drs_id": object_id, "is_bundle": False, **bearer}],
        "drs_object_access": [{"drs_id": object_id, **bearer}],
    }
    (work / "config.json").write_text(json.dumps(config))
    (work / "runner.py").write_text(RUNNER)
    report = work / "report.json"
    result = subprocess.run(
        [
            str(python),
            str(work / "runner.py"),
            "--server_base_url",
            base_url.rstrip("/"),  # work-around 2
            "--platform_name",
            "ghga-local-stack",
            "--platform_description",
            "ghga-cli local stack (moto)",
            "--drs_version",
            "1.2.0",
            "--config_file",
            str(work / "config.json"),
            "--report_path",
            str(report),
        ],
        cwd=work,  # it writes ./output/
        env={**os.environ, "DRS14_SERVICE_INFO": "1" if drs14_service_info else "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(report.read_text())


def cases(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(phase, case, status, message) of every case in a testbed report."""
    return [
        (phase["phase_name"], case["case_name"], case["status"], case.get("message") or "")
        for phase in report["phases"]
        for test in phase["tests"]
        for case in test["cases"]
    ]


def test_drs_compliance_suite_passes_every_phase(
    local_stack: dict[str, Any],
    stack_env: dict[str, str],
    user: dict[str, str],
    tmp_path: Path,
) -> None:
    object_id = readable_file(local_stack, stack_env, user, os.urandom(4096))
    staged_object(local_stack, user["token"], object_id)
    python = suite_python()
    base = local_stack["drs_url"]

    plain = run_suite(python, base, user["token"], object_id, tmp_path / "plain", False)
    failing = [c for c in cases(plain) if c[2] != "PASS"]
    assert len(failing) == 1, failing  # only the DRS 1.2 service-info schema disagrees
    phase, name, status, message = failing[0]
    assert (phase, name, status) == (
        "service info",
        "Service Info response schema validation",
        "FAIL",
    )
    assert "Additional properties are not allowed" in message
    assert "'drs'" in message and "'maxBulkRequestLength'" in message

    report = run_suite(python, base, user["token"], object_id, tmp_path / "drs14", True)
    phases = {p["phase_name"]: p for p in report["phases"]}
    assert list(phases) == ["service info", "drs object info", "drs object access"]
    for phase in phases.values():
        assert phase["tests"], phase["phase_name"]  # every phase ran tests, none was empty
    assert [c for c in cases(report) if c[2] != "PASS"] == []
    assert report["status"] == "PASS"
    summary = report["summary"]
    assert summary["failed"] == summary["skipped"] == summary["warned"] == summary["unknown"] == 0
    assert summary["passed"] == len(cases(report))
    access_tests = phases["drs object access"]["tests"]
    assert len(access_tests) == 1 and "access id = s3" in access_tests[0]["test_name"]


@pytest.fixture(params=["moto", pytest.param("ceph", marks=pytest.mark.ceph)])
def any_stack(request: pytest.FixtureRequest) -> tuple[dict[str, Any], dict[str, str]]:
    """The local stack on moto, and on Ceph RGW, which (unlike moto) refuses a presigned URL
    that also carries an ``Authorization`` header."""
    if request.param == "ceph":
        return request.getfixturevalue("ceph_stack"), request.getfixturevalue("ceph_stack_env")
    return request.getfixturevalue("local_stack"), request.getfixturevalue("stack_env")


def test_ga4gh_drs_client_downloads_a_staged_object(
    any_stack: tuple[dict[str, Any], dict[str, str]], tmp_path: Path
) -> None:
    drs = Path(sys.executable).parent / "drs"
    assert drs.exists(), "ga4gh-drs-client is in requirements/dev.txt (make venv)"
    local_stack, stack_env = any_stack
    reader = new_user(stack_env, "ga4gh")
    data = os.urandom(300_000)
    object_id = readable_file(local_stack, stack_env, reader, data)
    staged_object(local_stack, reader["token"], object_id)
    cert, key = self_signed_certificate(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    ucs_port = urlparse(local_stack["ucs_url"]).port
    assert ucs_port
    with tls_relay(ucs_port, cert, key) as port:
        result = subprocess.run(
            [
                str(drs),
                "get",
                "--download",
                "--validate-checksum",
                "--silent",
                "--authtoken",
                reader["token"],
                "--output-dir",
                str(out),
                "--output-metadata",
                str(tmp_path / "object.json"),
                f"https://127.0.0.1:{port}",
                object_id,
            ],
            env={**os.environ, "REQUESTS_CA_BUNDLE": str(cert)},
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    metadata = json.loads((tmp_path / "object.json").read_text())
    assert metadata["id"] == object_id and metadata["access_methods"][0]["access_id"] == "s3"
    downloaded = out / object_id / metadata["name"]
    assert downloaded.read_bytes() == data
    report = (out / "drs_download_report.txt").read_text().splitlines()[-1].split("\t")
    assert report[3:6] == ["COMPLETED", "PASSED", "md5"], report
