"""``docs/report.schema.json`` describes the ``--json`` output exactly (issue 19).

(i) every field of :class:`FileReport`, :class:`RunReport` and :class:`ErrorReport` is in the
schema and the schema names nothing the report does not render; (ii) the outputs of real CLI
runs against the fake services validate: one upload, one download, a batch of each direction,
dry runs, failures. Every other test reads ``--json`` through
``tests.helpers.report_schema.load_report``, which validates too.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from ghga_cli import errors
from ghga_cli.cli.run import main
from ghga_cli.report import ErrorReport, FileReport, RunReport
from tests.client.fake_services import FakeServices
from tests.helpers.report_schema import load_report, report_schema, validate_report

TOKEN = "schema-test-token.abc"
PART = 64 * 1024


def _rendered_file_fields() -> set[str]:
    """The keys FileReport.to_json can write."""
    names = {f.name for f in dataclasses.fields(FileReport)} - {"direction", "exception"}
    return (names - {"sha256"}) | {"sha-256"}


# ---- (i) the dataclasses and the schema agree ------------------------------------------------


def test_every_file_report_field_is_in_the_schema() -> None:
    file_properties = set(report_schema()["$defs"]["file"]["properties"])
    assert file_properties == _rendered_file_fields()


def test_every_run_report_field_is_in_the_schema() -> None:
    defs = report_schema()["$defs"]
    single, batch = set(defs["single"]["properties"]), set(defs["batch"]["properties"])
    run_fields = {f.name for f in dataclasses.fields(RunReport)} - {"batch"}  # batch: the shape
    totals = {"files_total", "files_ok", "files_failed", "bytes", "bytes_transferred", "seconds"}
    assert batch == run_fields | totals
    # One file: its fields at the top level, with the run's status, exit code and error.
    assert single == (run_fields - {"files", "stopped_by"}) | _rendered_file_fields()


def test_every_error_report_field_is_in_the_schema() -> None:
    error = report_schema()["$defs"]["error"]
    assert set(error["properties"]) == {f.name for f in dataclasses.fields(ErrorReport)}


def test_the_exit_codes_are_those_of_errors_py() -> None:
    codes = {value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    codes.discard(errors.EXIT_CODES_HELP)
    assert set(report_schema()["$defs"]["exitCode"]["enum"]) == codes


def test_every_object_is_closed() -> None:
    defs = report_schema()["$defs"]
    for name in ("single", "batch", "file", "error"):
        assert defs[name]["additionalProperties"] is False, name
    sample = RunReport("upload-by-id", [FileReport("F1", "upload", status="accepted")])
    sample.status, sample.total_seconds = "accepted", 1.0
    validate_report(sample.to_json())
    with pytest.raises(AssertionError, match="new_field"):
        validate_report({**sample.to_json(), "new_field": 1})
    sample.batch, sample.status = True, "ok"
    data = sample.to_json()
    validate_report(data)
    data["files"][0]["new_field"] = 1
    with pytest.raises(AssertionError, match="new_field"):
        validate_report(data)


def test_a_failed_file_must_say_why() -> None:
    report = RunReport("download-by-id", [FileReport("F1", "download")], batch=True)
    report.status, report.total_seconds, report.exit_code = "failed", 1.0, 4
    report.files[0].fail(errors.NotFoundError("no such file"))
    validate_report(report.to_json())
    data = report.to_json()
    del data["files"][0]["error"]
    with pytest.raises(AssertionError):
        validate_report(data)


# ---- (ii) outputs of real runs validate ------------------------------------------------------


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    report = load_report(out)
    assert report["exit_code"] == code, err
    return code, report


def _files(tmp_path: Path, services: FakeServices, count: int) -> list[tuple[str, Path, bytes]]:
    made = []
    for i in range(1, count + 1):
        data = os.urandom(PART + 100 * i)
        path = tmp_path / f"src{i}.bin"
        path.write_bytes(data)
        services.register(data, f"GHGAF{i}", name=f"file{i}.bin")
        made.append((f"GHGAF{i}", path, data))
    return made


def _manifest(tmp_path: Path, files: list[tuple[str, Path, bytes]]) -> Path:
    manifest = tmp_path / "upload.tsv"
    manifest.write_text("".join(f"{file_id}\t{path}\n" for file_id, path, _ in files))
    return manifest


def test_one_upload_validates(tmp_path: Path, services: FakeServices, capsys: Any) -> None:
    ((file_id, path, data),) = _files(tmp_path, services, 1)
    argv = ["upload-by-id", "--api-url", services.url, "--file-id", file_id]
    code, report = run_json(capsys, *argv, "--file-path", str(path), "--local-md5")
    assert code == 0 and report["status"] == "accepted" and report["bytes"] == len(data)
    assert report["upload_id"] and "files" not in report
    code, report = run_json(capsys, *argv, "--file-path", str(path))
    assert code == 4 and report["status"] == "error" and report["error"]["exit_code"] == 4


def test_one_upload_without_waiting_and_a_cancel_validate(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    (first, second) = _files(tmp_path, services, 2)
    argv = ["upload-by-id", "--api-url", services.url, "--file-id", first[0]]
    code, report = run_json(capsys, *argv, "--file-path", str(first[1]), "--wait-timeout", "0")
    assert code == 0 and report["status"] == "uploaded"
    services.route("POST", "/uploads", {"file_id": second[0]})
    argv = ["upload-by-id", "--api-url", services.url, "--file-id", second[0], "--cancel"]
    code, report = run_json(capsys, *argv)
    assert code == 0 and report["status"] == "cancelled"


def test_one_download_validates(tmp_path: Path, services: FakeServices, capsys: Any) -> None:
    data = os.urandom(3 * PART)
    services.publish(data, "GHGAF9", name="d.bin", staging_polls=1)
    argv = ["download-by-id", "--api-url", services.url, "--file-id", "GHGAF9"]
    code, report = run_json(capsys, *argv, "--output-dir", str(tmp_path), "--range-size", "64K")
    assert code == 0 and report["status"] == "downloaded"
    assert report["output"] == str(tmp_path / "d.bin") and report["checksum_type"]
    code, report = run_json(capsys, *argv, "--output-dir", str(tmp_path))
    assert code == 4 and report["status"] == "error"


def _upload_batch(
    services: FakeServices, tmp_path: Path, files: list[tuple[str, Path, bytes]]
) -> list[str]:
    """The arguments of a batch upload of ``files`` through a manifest."""
    manifest = _manifest(tmp_path, files)
    return ["upload-by-id", "--api-url", services.url, "--manifest", str(manifest)]


def test_a_batch_upload_and_its_dry_run_validate(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    files = _files(tmp_path, services, 3)
    argv = _upload_batch(services, tmp_path, files)
    code, report = run_json(capsys, *argv, "--dry-run")
    assert code == 0 and report["status"] == "dry-run" and report["files_total"] == 3
    code, report = run_json(capsys, *argv)
    assert code == 0 and report["status"] == "ok" and report["files_ok"] == 3
    assert [f["line"] for f in report["files"]] == [1, 2, 3]
    code, report = run_json(capsys, *argv)  # a rerun: every file already accepted
    assert code == 0 and {f["status_note"] for f in report["files"]} == {"already accepted"}


def test_a_batch_download_and_its_dry_run_validate(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    for i in (1, 2):
        services.publish(os.urandom(PART + i), f"GHGAF{i}", name=f"d{i}.bin")
    manifest = tmp_path / "ids.txt"
    manifest.write_text("GHGAF1\nGHGAF2\n")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = ["download-by-id", "--api-url", services.url, "--output-dir", str(out_dir)]
    code, report = run_json(capsys, *argv, "--manifest", str(manifest), "--dry-run")
    assert code == 0 and report["status"] == "dry-run"
    code, report = run_json(capsys, *argv, "--file-id", "GHGAF1", "--file-id", "GHGAF2")
    assert code == 0 and report["status"] == "ok" and report["files_ok"] == 2


def test_failures_validate(tmp_path: Path, services: FakeServices, capsys: Any) -> None:
    files = _files(tmp_path, services, 2)
    # A batch in which one file fails: status "failed", the file's error.
    services.files[files[1][0]].md5 = "0" * 32
    argv = _upload_batch(services, tmp_path, files)
    code, report = run_json(capsys, *argv)
    assert code == 5 and report["status"] == "failed" and report["files_failed"] == 1
    # A manifest with problems: the run's error lists them.
    bad = tmp_path / "bad.tsv"
    bad.write_text(f"GHGAF1\t{tmp_path / 'missing.bin'}\nGHGAF1\tx\n")
    code, report = run_json(
        capsys, "upload-by-id", "--api-url", services.url, "--manifest", str(bad)
    )
    assert code == 2 and report["status"] == "error" and report["error"]["problems"]
    assert report["files"] == []
    # Usage errors before anything is known, a network error.
    code, report = run_json(capsys, "upload-by-id", "--file-id", "F1", "--file-path", "x")
    assert code == 2 and report["status"] == "error"
    code, report = run_json(capsys, "download-by-id", "--manifest", "m", "--output-dir", "o")
    assert code == 2 and report["file_id"] == ""
    argv = ["download-by-id", "--api-url", "http://127.0.0.1:1", "--file-id", "F1"]
    code, report = run_json(capsys, *argv, "--output-dir", str(tmp_path), "--retries", "0")
    assert code == 6 and report["error"]["hint"]


def test_load_report_refuses_what_is_not_one_json_line() -> None:
    with pytest.raises(AssertionError):
        load_report("")
    with pytest.raises(AssertionError):
        load_report('{"a": 1}\n{"b": 2}\n')
    with pytest.raises(AssertionError):
        load_report(json.dumps({"command": "upload-by-id"}))


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["download-by-id", "--file-id", "F1", "--parallel", "0"], "--parallel"),
        (["upload-by-id", "--file-id", "F1", "--no-such-option"], "--no-such-option"),
        (["download-by-id", "--file-id", "F1"], "--output-dir"),  # a required one missing
    ],
)
def test_an_argument_error_still_prints_the_json_report(
    argv: list[str], words: str, capsys: Any
) -> None:
    """``--json`` promises one object also on failure: bad arguments are a failure too."""
    with pytest.raises(SystemExit) as caught:
        main([*argv, "--json"])
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("ghga-cli: error: ") and words in err
    report = load_report(out)
    assert report["command"] == argv[0] and report["status"] == "error"
    assert report["exit_code"] == 2 and words in report["error"]["message"]
