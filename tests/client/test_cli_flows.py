"""The CLI end to end against a fake UCS/DRS (tests/client/fake_services.py) and moto S3."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ghga_cli.cli.run import main
from tests.client.fake_services import FakeServices
from tests.helpers.report_schema import load_report

TOKEN = "test-token-abc.def.ghi"
PART = 64 * 1024


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert TOKEN not in out and TOKEN not in err
    assert "X-Amz-Signature" not in out and "X-Amz-Signature" not in err
    assert "Traceback" not in err
    return code, out, err


def upload_args(services: FakeServices, file_id: str, path: Path, *extra: str) -> list[str]:
    return [
        "upload-by-id",
        "--api-url",
        services.url,
        "--file-id",
        file_id,
        "--file-path",
        str(path),
        *extra,
    ]


def test_round_trip(tmp_path: Path, services: FakeServices, capsys: Any) -> None:
    data = os.urandom(5 * PART + 17)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    services.register(data, "GHGAF1", name="sample.bam")
    code, out, err = run(capsys, *upload_args(services, "GHGAF1", src, "--json"))
    assert code == 0, err
    summary = load_report(out)
    assert summary["status"] == "accepted"
    assert summary["parts"] == 6 and summary["bytes"] == len(data)
    assert summary["md5"] and summary["exit_code"] == 0
    assert "waiting for validation" in err

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = run(
        capsys,
        "download-by-id",
        "--api_url",
        services.url,
        "--file_id",
        "GHGAF1",
        "--output_dir",
        str(out_dir),
        "--range-size",
        "64K",
        "--json",
    )
    assert code == 0, err
    summary = load_report(out)
    assert summary["status"] == "downloaded"
    assert (out_dir / "sample.bam").read_bytes() == data
    assert summary["output"] == str(out_dir / "sample.bam")


def test_upload_resumes_pending_upload(
    tmp_path: Path, services: FakeServices, s3: Any, capsys: Any
) -> None:
    data = os.urandom(3 * PART)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    services.register(data, "GHGAF3")
    _status, created, _ = services.route("POST", "/uploads", {"file_id": "GHGAF3"})
    upload = services.uploads[created["upload_id"]]
    s3.upload_part(
        Bucket=services.bucket,
        Key=upload.key,
        UploadId=upload.s3_upload_id,
        PartNumber=2,
        Body=data[PART : 2 * PART],
    )
    code, out, err = run(capsys, *upload_args(services, "GHGAF3", src, "--json"))
    assert code == 0, err
    summary = load_report(out)
    assert summary["upload_id"] == upload.upload_id
    assert summary["parts_skipped"] == 1
    assert summary["bytes_transferred"] == 2 * PART
    assert "resuming upload" in err


def test_upload_size_mismatch(tmp_path: Path, services: FakeServices, capsys: Any) -> None:
    services.register(b"x" * 10, "GHGAF4")
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 11)
    code, _, err = run(capsys, *upload_args(services, "GHGAF4", src))
    assert code == 2
    assert err.count("\n") == 1 and "registered size of file GHGAF4 (10 bytes)" in err


def test_upload_wrong_content_is_not_confirmed(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    services.register(b"a" * 100, "GHGAF5")
    src = tmp_path / "src.bin"
    src.write_bytes(b"b" * 100)
    code, _, err = run(capsys, *upload_args(services, "GHGAF5", src))
    assert code == 5
    assert "differs from the registered checksum" in err
    upload = services.uploads[services.files["GHGAF5"].current_upload_id]
    assert upload.status == "pending"  # left for a rerun with the right file or --cancel


def test_upload_rejected_and_already_accepted(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    data = os.urandom(100)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    services.register(data, "GHGAF6")
    services.reject_next = True
    code, _, err = run(capsys, *upload_args(services, "GHGAF6", src))
    assert code == 5 and "rejected" in err and "checksum mismatch" in err
    code, _, err = run(capsys, *upload_args(services, "GHGAF6", src))
    assert code == 0, err
    code, _, err = run(capsys, *upload_args(services, "GHGAF6", src))
    assert code == 4 and "already uploaded and accepted" in err


def test_upload_cancel(tmp_path: Path, services: FakeServices, capsys: Any) -> None:
    services.register(b"z" * 10, "GHGAF7")
    services.route("POST", "/uploads", {"file_id": "GHGAF7"})
    args = ["upload-by-id", "--api-url", services.url, "--file-id", "GHGAF7", "--cancel"]
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    assert load_report(out)["status"] == "cancelled"
    code, _, err = run(capsys, *args)
    assert code == 4


def test_upload_no_wait(tmp_path: Path, services: FakeServices, capsys: Any) -> None:
    data = os.urandom(10)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    services.register(data, "GHGAF8")
    code, out, err = run(
        capsys, *upload_args(services, "GHGAF8", src, "--wait-timeout", "0", "--json")
    )
    assert code == 0, err
    assert load_report(out)["status"] == "uploaded"


def test_download_waits_for_staging(tmp_path: Path, services: FakeServices, capsys: Any) -> None:
    data = os.urandom(1000)
    services.publish(data, "GHGAF9", name="x.txt", staging_polls=1)
    code, _, err = run(
        capsys,
        "download-by-id",
        "--api-url",
        services.url + "/ga4gh/drs/v1/",
        "--file-id",
        "GHGAF9",
        "--output-dir",
        str(tmp_path),
    )
    assert code == 0, err
    assert "waiting for the file to be staged, retry in 1 s" in err
    assert (tmp_path / "x.txt").read_bytes() == data


def test_download_staging_timeout(tmp_path: Path, services: FakeServices, capsys: Any) -> None:
    services.publish(b"abc", "GHGAF10", staging_polls=100)
    code, out, _err = run(
        capsys,
        "download-by-id",
        "--api-url",
        services.url,
        "--file-id",
        "GHGAF10",
        "--output-dir",
        str(tmp_path),
        "--wait-timeout",
        "1",
        "--json",
    )
    assert code == 7
    assert load_report(out)["status"] == "error"


def test_download_existing_output_and_overwrite(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    services.publish(b"new content", "GHGAF11", name="f.txt")
    (tmp_path / "f.txt").write_bytes(b"old")
    base = [
        "download-by-id",
        "--api-url",
        services.url,
        "--file-id",
        "GHGAF11",
        "--output-dir",
        str(tmp_path),
    ]
    code, _, err = run(capsys, *base)
    assert code == 4 and "already exists" in err and "--overwrite" in err
    code, _, err = run(capsys, *base, "--overwrite")
    assert code == 0, err
    assert (tmp_path / "f.txt").read_bytes() == b"new content"


def test_download_hostile_name_stays_inside(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    services.publish(b"evil", "GHGAF12", name="../../etc/passwd")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run(
        capsys,
        "download-by-id",
        "--api-url",
        services.url,
        "--file-id",
        "GHGAF12",
        "--output-dir",
        str(out_dir),
    )
    assert code == 0, err
    assert [p.name for p in out_dir.iterdir()] == ["passwd"]


def test_unknown_file_and_bad_token(
    tmp_path: Path, services: FakeServices, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(
        capsys,
        "download-by-id",
        "--api-url",
        services.url,
        "--file-id",
        "NOPE",
        "--output-dir",
        str(tmp_path),
    )
    assert code == 4 and "noSuchObject" in err
    src = tmp_path / "f"
    src.write_bytes(b"1")
    code, _, err = run(capsys, *upload_args(services, "NOPE", src))
    assert code == 4 and "fileNotRegistered" in err and "NOPE" in err
    monkeypatch.setenv("GHGA_CLI_TOKEN", "wrong")
    code, _, err = run(capsys, *upload_args(services, "NOPE", src))
    assert code == 3 and "HTTP 401" in err


def test_upload_failed_completion(tmp_path: Path, services: FakeServices, capsys: Any) -> None:
    data = os.urandom(10)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    services.register(data, "GHGAF13")
    services.fail_completion = True
    code, _, err = run(capsys, *upload_args(services, "GHGAF13", src))
    assert code == 5
    assert "failed: the storage refused to complete" in err and "rerun" in err


def test_download_not_enough_space(
    tmp_path: Path, services: FakeServices, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from collections import namedtuple

    services.publish(b"x" * 5000, "GHGAF14", name="big.bin")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**6, 10**6 - 100, 100))
    code, _, err = run(
        capsys,
        "download-by-id",
        "--api-url",
        services.url,
        "--file-id",
        "GHGAF14",
        "--output-dir",
        str(tmp_path),
    )
    assert code == 2 and "not enough free space" in err
    assert list(tmp_path.iterdir()) == []


def test_upload_validation_timeout_then_rerun_waits(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    data = os.urandom(3 * PART)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    services.register(data, "GHGAF15")
    services.validate_after_polls = 8  # more polls than 1 s holds (from 0.25 s apart)
    code, _, err = run(capsys, *upload_args(services, "GHGAF15", src, "--wait-timeout", "1"))
    assert code == 7 and "not validated within 1 s" in err
    puts_before = len([r for r in services.requests if r[0] == "POST"])
    code, out, err = run(capsys, *upload_args(services, "GHGAF15", src, "--json"))
    assert code == 0, err
    assert "already uploaded; waiting for its validation" in err
    assert load_report(out)["status"] == "accepted"
    assert len([r for r in services.requests if r[0] == "POST"]) == puts_before  # no new upload


def test_max_memory_is_obsolete_and_says_so(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    """Parts stream from the file: an old --max-memory neither fails nor lowers --parallel."""
    data = os.urandom(3 * PART)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    services.register(data, "GHGAF9")
    argv = upload_args(services, "GHGAF9", src, "--max-memory", "4K", "--json")
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert "--max-memory is no longer needed and is ignored" in err
    assert load_report(out)["parallel"] == 8


def test_a_second_download_of_the_same_file_stops_at_once(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    """Two runs into one directory would write one .part; the second must not touch it."""
    from ghga_cli.files import ExclusiveLock

    data = os.urandom(3 * PART)
    services.publish(data, "GHGAF7", name="twice.bam")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = ["download-by-id", "--api-url", services.url, "--file-id", "GHGAF7"]
    argv += ["--output-dir", str(out_dir)]
    (out_dir / ".ghga-cli").mkdir()
    with ExclusiveLock(out_dir / ".ghga-cli" / "twice.bam.lock", "downloading (the test)"):
        code, _, err = run(capsys, *argv)
        assert code == 4, err
        assert "another ghga-cli is already downloading" in err
        assert sorted(p.name for p in out_dir.iterdir()) == [".ghga-cli"]
        assert sorted(p.name for p in (out_dir / ".ghga-cli").iterdir()) == ["twice.bam.lock"]
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["twice.bam"]
    assert (out_dir / "twice.bam").read_bytes() == data


def test_drs_uris_name_the_file_when_their_host_is_the_api(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    data = os.urandom(2 * PART)
    services.publish(data, "GHGAF20", name="uri.bin")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    host = services.url.split("://", 1)[1]
    argv = ["download-by-id", "--api-url", services.url, "--output-dir", str(out_dir)]
    code, _, err = run(capsys, *argv, "--file-id", f"drs://{host}/GHGAF20")
    assert code == 0, err
    assert (out_dir / "uri.bin").read_bytes() == data
    code, _, err = run(capsys, *argv, "--file-id", "drs://elsewhere.example/GHGAF20")
    assert code == 2
    assert "names host elsewhere.example" in err and "--api-url" in err


def test_resolve_file_id_takes_the_api_only_from_api_url() -> None:
    from ghga_cli.errors import UsageError
    from ghga_cli.jobs.api import resolve_file_id

    with pytest.raises(UsageError):  # the token goes only where --api-url says
        resolve_file_id("drs://drs.example.org/F1", None)
    assert resolve_file_id("drs://drs.example.org/F1", "https://drs.example.org/") == (
        "F1",
        "https://drs.example.org/",
    )
    assert resolve_file_id("drs://h:8443/F1", "https://h:8443") == ("F1", "https://h:8443")
    assert resolve_file_id("F1", "http://x") == ("F1", "http://x")
    for bad in ("drs://h", "drs:///F1", "drs://h/a/b"):
        with pytest.raises(UsageError):
            resolve_file_id(bad, "http://h")
    with pytest.raises(UsageError):
        resolve_file_id("drs://h:1/F1", "https://h:2")


# ---- segments: the server verifies and stores while the client sends (issue 18) -------------


def test_each_stored_segment_is_reported_before_the_confirmation(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    data = os.urandom(5 * PART + 17)  # 6 parts, segments of 2: 3 segments
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    services.register(data, "GHGAF1")
    services.segment_parts = 2
    services.server_verifies = True
    code, out, err = run(capsys, *upload_args(services, "GHGAF1", src, "--json"))
    assert code == 0, err
    assert sorted(services.segment_calls) == [1, 2, 3]
    calls = [
        i
        for i, (method, path) in enumerate(services.requests)
        if "/segments/" in path or method == "PATCH"
    ]
    assert services.requests[calls[-1]][0] == "PATCH"  # every report came before it
    assert load_report(out)["segments_reported"] == 3


def test_a_failing_segment_report_costs_the_head_start_not_the_upload(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    data = os.urandom(5 * PART + 17)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    services.register(data, "GHGAF1")
    services.segment_parts = 2
    services.segment_status = 500
    code, _out, err = run(capsys, *upload_args(services, "GHGAF1", src, "--retries", "0"))
    assert code == 0, err
    assert "was not reported" in err and "after the confirmation instead" in err
    assert services.patches  # confirmed all the same


def test_a_server_without_segments_gets_no_reports(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    data = os.urandom(3 * PART)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    services.register(data, "GHGAF1")
    assert run(capsys, *upload_args(services, "GHGAF1", src))[0] == 0
    assert not [p for _, p in services.requests if "/segments/" in p]


def test_staging_progress_is_shown(tmp_path: Path, services: FakeServices, capsys: Any) -> None:
    data = os.urandom(3 * PART)
    services.publish(data, "GHGAF1", staging_polls=1)
    services.staged_bytes = len(data) // 4
    code, _out, err = run(
        capsys,
        "download-by-id",
        "--api-url",
        services.url,
        "--file-id",
        "GHGAF1",
        "--output-dir",
        str(tmp_path),
    )
    assert code == 0, err
    assert "waiting for the file to be staged: 25% (48.0 KiB of 192.0 KiB), retry in 1 s" in err
