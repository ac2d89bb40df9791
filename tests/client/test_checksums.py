"""Which checksums the client computes, and with which one it verifies a download.

Uploads: the whole-file MD5 only when the server does not verify files itself or with
``--local-md5``; per-part MD5s against the ETags unless ``--no-part-md5``. Downloads: the
cheaper of the offered checksums on this machine, kept across a resume; a mismatch of either
type is exit 5 with nothing at the final name.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from ghga_cli import integrity
from ghga_cli.cli.run import main
from ghga_cli.errors import EXIT_INTEGRITY
from ghga_cli.transfer.download import DownloadState, plan_ranges
from tests.client.fake_services import FakeServices
from tests.helpers.report_schema import load_report

TOKEN = "checksum-token"
PART = 64 * 1024


@pytest.fixture
def prefer(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make one algorithm the faster one, whatever this machine's CPU says."""

    def choose(name: str) -> None:
        speeds = {"md5": 1.0, "sha256": 1.0, name: 2.0}
        monkeypatch.setattr(integrity, "hash_speed", lambda algo: speeds[algo])

    return choose


def run(capsys: Any, *argv: str) -> tuple[int, dict[str, Any], str]:
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, load_report(out), err


def upload(services: FakeServices, tmp_path: Path, file_id: str, *extra: str) -> list[str]:
    data = os.urandom(5 * PART + 11)
    src = tmp_path / f"{file_id}.bin"
    src.write_bytes(data)
    services.register(data, file_id)
    args = ["upload-by-id", "--api-url", services.url, "--file-id", file_id]
    return [*args, "--file-path", str(src), *extra]


def download(services: FakeServices, out: Path, file_id: str, *extra: str) -> list[str]:
    out.mkdir(exist_ok=True)
    args = ["download-by-id", "--api-url", services.url, "--file-id", file_id]
    return [*args, "--output-dir", str(out), "--range-size", "64K", *extra]


# -- uploads ------------------------------------------------------------------------------


def test_a_verifying_server_spares_the_whole_file_md5(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    services.server_verifies = True
    code, summary, err = run(capsys, *upload(services, tmp_path, "GHGAC1"))
    assert code == 0, err
    assert summary["server_verifies"] is True and summary["whole_file_md5"] is False
    assert "md5" not in summary
    assert summary["part_md5_check"] is False  # the server's read-back finds a damaged part
    (patch,) = services.patches
    assert not patch.get("checksums")  # nothing computed, nothing sent
    assert "verifying on the server:" in err  # the wait line shows the server's progress


def test_part_md5_checks_every_part_against_a_verifying_server_too(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    services.server_verifies = True
    code, summary, err = run(capsys, *upload(services, tmp_path, "GHGAC4", "--part-md5"))
    assert code == 0, err
    assert summary["part_md5_check"] is True and summary["whole_file_md5"] is False
    (patch,) = services.patches
    assert "md5" not in patch["checksums"]  # only what was computed is sent
    assert len(patch["checksums"]["part_md5s"]) == 6


def test_an_upload_created_by_this_run_is_not_asked_for_its_parts(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    code, summary, err = run(capsys, *upload(services, tmp_path, "GHGAC6"))
    assert code == 0, err
    assert summary["parts"] == 6
    assert not [r for r in services.requests if r[1].endswith("/parts")]  # it has none yet


def test_a_server_that_does_not_verify_gets_part_and_whole_file_md5s_by_default(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    code, summary, err = run(capsys, *upload(services, tmp_path, "GHGAC5"))
    assert code == 0, err
    assert summary["part_md5_check"] is True and summary["whole_file_md5"] is True
    (patch,) = services.patches
    assert len(patch["checksums"]["part_md5s"]) == 6 and patch["checksums"]["md5"]


def test_local_md5_brings_the_whole_file_check_back(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    services.server_verifies = True
    argv = upload(services, tmp_path, "GHGAC2", "--local-md5")
    code, summary, err = run(capsys, *argv)
    assert code == 0, err
    data = Path(argv[argv.index("--file-path") + 1]).read_bytes()
    assert summary["whole_file_md5"] is True and summary["md5"] == hashlib.md5(data).hexdigest()
    assert services.patches[0]["checksums"]["md5"] == summary["md5"]


def test_a_server_that_does_not_verify_always_gets_the_whole_file_md5(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    code, summary, err = run(capsys, *upload(services, tmp_path, "GHGAC3", "--no-part-md5"))
    assert code == 0, err
    assert summary["whole_file_md5"] is True and summary["md5"]
    assert summary["part_md5_check"] is False
    assert "part_md5s" not in services.patches[0]["checksums"]


def test_a_file_modified_during_the_upload_is_not_confirmed(
    tmp_path: Path, services: FakeServices, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ghga_cli.transfer import upload as uploads

    argv = upload(services, tmp_path, "GHGAC4")
    src = Path(argv[argv.index("--file-path") + 1])
    real_configure = uploads.UploadTransfer.configure

    def configure_then_touch(self: Any, slot: Any, part: Any) -> None:
        if part.number == 3:  # the user saves the file again while part 3 is about to be sent
            data = bytearray(src.read_bytes())
            data[0] ^= 1
            src.write_bytes(bytes(data))
            os.utime(src, ns=(1, 1))
        real_configure(self, slot, part)

    monkeypatch.setattr(uploads.UploadTransfer, "configure", configure_then_touch)
    code, _summary, err = run(capsys, *argv, "--parallel", "1")
    assert code == EXIT_INTEGRITY, err
    assert "changed while it was being uploaded" in err and "not confirmed" in err
    assert services.patches == []  # never confirmed: nothing for the server to accept
    (upload_state,) = services.uploads.values()
    assert upload_state.status == "pending"


# -- downloads ----------------------------------------------------------------------------


def test_the_faster_checksum_is_used_and_reported(
    tmp_path: Path, services: FakeServices, capsys: Any, prefer: Any
) -> None:
    data = os.urandom(3 * PART)
    services.publish(data, "GHGAC5").sha256 = hashlib.sha256(data).hexdigest()
    prefer("sha256")
    code, summary, err = run(capsys, *download(services, tmp_path / "a", "GHGAC5"))
    assert code == 0, err
    assert summary["checksum_type"] == "sha-256" and summary["sha-256"]
    prefer("md5")
    code, summary, err = run(capsys, *download(services, tmp_path / "b", "GHGAC5"))
    assert code == 0, err
    assert summary["checksum_type"] == "md5"


def test_a_sha256_mismatch_is_caught(
    tmp_path: Path, services: FakeServices, capsys: Any, prefer: Any
) -> None:
    data = os.urandom(3 * PART)
    services.publish(data, "GHGAC6").sha256 = hashlib.sha256(b"other bytes").hexdigest()
    prefer("sha256")
    out = tmp_path / "out"
    code, _summary, err = run(capsys, *download(services, out, "GHGAC6"))
    assert code == EXIT_INTEGRITY, err
    assert "sha-256" in err and "does not match" in err
    assert list(out.iterdir()) == []  # nothing at the final name, no .part left


def test_an_object_with_md5_only_still_downloads(
    tmp_path: Path, services: FakeServices, capsys: Any, prefer: Any
) -> None:
    data = os.urandom(2 * PART + 5)
    services.publish(data, "GHGAC7")  # accepted before the server recorded SHA-256s
    prefer("sha256")
    code, summary, err = run(capsys, *download(services, tmp_path / "out", "GHGAC7"))
    assert code == 0, err
    assert summary["checksum_type"] == "md5"
    assert (tmp_path / "out" / "data.bin").read_bytes() == data


def test_a_resumed_download_keeps_its_checksum_type(
    tmp_path: Path, services: FakeServices, capsys: Any, prefer: Any
) -> None:
    data = os.urandom(4 * PART)
    services.publish(data, "GHGAC8").sha256 = hashlib.sha256(data).hexdigest()
    out = tmp_path / "out"
    out.mkdir()
    # An earlier run (which chose MD5) stopped after two ranges.
    partial = bytearray(len(data))
    ranges = plan_ranges(len(data), PART, 0)
    for index in (0, 1):
        offset, size = ranges[index]
        partial[offset : offset + size] = data[offset : offset + size]
    (out / ".ghga-cli").mkdir(exist_ok=True)
    (out / ".ghga-cli" / "data.bin.part").write_bytes(bytes(partial))
    DownloadState(
        out / ".ghga-cli" / "data.bin.part.json",
        object_id="GHGAC8",
        size=len(data),
        checksum=f"md5:{hashlib.md5(data).hexdigest()}",
        range_size=PART,
        done={0, 1},
    ).save(force=True)
    prefer("sha256")  # this run would choose SHA-256 for a new download
    code, summary, err = run(capsys, *download(services, out, "GHGAC8"))
    assert code == 0, err
    assert summary["checksum_type"] == "md5" and summary["parts_skipped"] == 2
    assert (out / "data.bin").read_bytes() == data


def test_an_expired_url_is_refreshed_through_the_access_route(
    tmp_path: Path, services: FakeServices, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an access_id, a 403 on a range asks GET .../access/{id}, not the whole object."""
    from tests.helpers import faultproxy

    data = os.urandom(3 * PART)
    services.publish(data, "GHGAC9")
    services.access_ids = True
    with faultproxy.FaultProxy() as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        proxy.add_rule(faultproxy.Rule("expired", method="GET", url=r"/outbox/", nth=1))
        code, _summary, err = run(capsys, *download(services, tmp_path / "out", "GHGAC9"))
    assert code == 0, err
    assert services.access_calls == 1
    object_calls = [r for r in services.requests if r[1].endswith("/objects/GHGAC9")]
    assert len(object_calls) == 1  # the object was asked for once; the URL came from the route
    assert (tmp_path / "out" / "data.bin").read_bytes() == data
