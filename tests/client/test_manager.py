"""The transfer manager: the byte loop never waits for the API; one file's wait is its own.

Also the hostile-pass findings about downloads: working files that cannot collide with any
downloaded name or a user's file, and a malformed DRS answer that ends the file (exit 8).
"""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ghga_cli.cli import main
from ghga_cli.errors import EXIT_PROTOCOL
from ghga_cli.files import WorkingFiles
from ghga_cli.jobs.http import HttpClient
from ghga_cli.transfer.engine import Engine
from tests.client.fake_services import FakeServices
from tests.helpers.report_schema import load_report

TOKEN = "manager-test-token"
PART = 64 * 1024


@pytest.fixture
def forbidden_url() -> Iterator[str]:
    """A storage URL that answers 403 (a presigned URL that has expired)."""

    class Forbidden(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forbidden)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/bucket/expired?X-Amz-Signature=old"
    finally:
        server.shutdown()
        server.server_close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert TOKEN not in out and TOKEN not in err
    assert "Traceback" not in err
    return code, out, err


def download(services: FakeServices, out_dir: Path, *file_ids: str, extra: tuple[str, ...] = ()):
    args = ["download-by-id", "--api-url", services.url, "--output-dir", str(out_dir)]
    for file_id in file_ids:
        args += ["--file-id", file_id]
    return [*args, *extra]


@pytest.fixture
def engine_threads(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Records the engine's thread while it runs, and every API request made on it then."""
    seen: dict[str, Any] = {"engine": None, "api_on_engine": [], "api_calls": 0}
    real_run, real_request = Engine.run_queue, HttpClient.request

    def run_queue(self: Engine, queue: Any) -> None:
        seen["engine"] = threading.get_ident()
        try:
            real_run(self, queue)
        finally:
            seen["engine"] = None

    def request(self: HttpClient, method: str, url: str, *args: Any, **kw: Any) -> Any:
        seen["api_calls"] += 1
        if seen["engine"] == threading.get_ident():
            seen["api_on_engine"].append((method, url))
        return real_request(self, method, url, *args, **kw)

    monkeypatch.setattr(Engine, "run_queue", run_queue)
    monkeypatch.setattr(HttpClient, "request", request)
    return seen


def test_the_engine_thread_never_calls_the_api(
    tmp_path: Path,
    services: FakeServices,
    capsys: Any,
    engine_threads: dict[str, Any],
    forbidden_url: str,
) -> None:
    """An upload of many parts (URLs fetched ahead, segments reported) and a download whose
    URL expires (refreshed through the access route): no API request from the engine's thread,
    with every API answer slowed down."""
    services.api_delay = 0.05
    services.segment_parts = 4
    data = os.urandom(40 * PART + 5)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    services.register(data, "GHGAM1")
    code, out, err = run(
        capsys,
        "upload-by-id",
        "--api-url",
        services.url,
        "--file-id",
        "GHGAM1",
        "--file-path",
        str(src),
        "--parallel",
        "4",
        "--json",
    )
    assert code == 0, err
    assert load_report(out)["status"] == "accepted"

    services.access_ids = True
    services.publish(data, "GHGAM2", name="m2.bin")
    services.url_overrides["GHGAM2"] = forbidden_url
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = run(
        capsys, *download(services, out_dir, "GHGAM2", extra=("--range-size", "64K", "--json"))
    )
    assert code == 0, err
    assert (out_dir / "m2.bin").read_bytes() == data
    assert load_report(out)["url_refreshes"] >= 1 and services.access_calls >= 1
    assert engine_threads["api_calls"] > 10
    assert engine_threads["api_on_engine"] == []


def test_a_file_staged_again_waits_alone_while_the_others_finish(
    tmp_path: Path, services: FakeServices, capsys: Any, forbidden_url: str
) -> None:
    """One file's URL expires and its object must be staged again (the access route answers
    202 for 30 s): the other files of the batch are downloaded during that wait."""
    services.access_ids = True
    services.retry_after = "2"
    blobs = {f"GHGAW{i}": os.urandom(6 * PART + i) for i in range(1, 4)}
    for file_id, data in blobs.items():
        services.publish(data, file_id, name=f"{file_id}.bin")
    services.url_overrides["GHGAW1"] = forbidden_url
    services.restage_seconds["GHGAW1"] = 30.0
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    started = time.time()
    code, out, err = run(
        capsys,
        *download(
            services,
            out_dir,
            *blobs,
            extra=("--range-size", "64K", "--parallel", "2", "--wait-timeout", "120", "--json"),
        ),
    )
    assert code == 0, err
    report = load_report(out)
    assert [f["status"] for f in report["files"]] == ["downloaded"] * 3
    for file_id, data in blobs.items():
        assert (out_dir / f"{file_id}.bin").read_bytes() == data
    staged_again = services.restaged_at["GHGAW1"]
    assert staged_again - started >= 30.0
    for file_id in ("GHGAW2", "GHGAW3"):  # finished while GHGAW1 waited
        finished = (out_dir / f"{file_id}.bin").stat().st_mtime
        assert finished < staged_again - 20.0, (file_id, finished - started)
    assert "waiting for the file to be staged" in err


def test_a_batch_of_files_named_like_working_files_keeps_them_all(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    """Files named x.part, x.part.json, x.part.lock and x in one batch: all four are written
    (working files used to be x.part and its siblings: three were lost, and it exited 0)."""
    names = ["x.part", "x.part.json", "x.part.lock", "x"]
    blobs = {f"GHGAN{i}": (name, os.urandom(3 * PART + i)) for i, name in enumerate(names)}
    for file_id, (name, data) in blobs.items():
        services.publish(data, file_id, name=name)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = run(
        capsys, *download(services, out_dir, *blobs, extra=("--range-size", "64K", "--json"))
    )
    assert code == 0, err
    assert load_report(out)["files_ok"] == 4
    for name, data in blobs.values():
        assert (out_dir / name).read_bytes() == data
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(names)


def test_a_download_never_touches_a_users_file_next_to_it(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    """The user's own x.part, x.part.json and x.part.lock survive a download of x."""
    data = os.urandom(3 * PART)
    services.publish(data, "GHGAU1", name="x")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    mine = {name: os.urandom(100) for name in ("x.part", "x.part.json", "x.part.lock")}
    for name, content in mine.items():
        (out_dir / name).write_bytes(content)
    code, _out, err = run(capsys, *download(services, out_dir, "GHGAU1"))
    assert code == 0, err
    assert (out_dir / "x").read_bytes() == data
    for name, content in mine.items():
        assert (out_dir / name).read_bytes() == content


def test_a_file_named_like_the_working_directory_is_renamed(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    data = os.urandom(1000)
    services.publish(data, "GHGAU2", name=".ghga-cli")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _out, err = run(capsys, *download(services, out_dir, "GHGAU2"))
    assert code == 0, err
    assert (out_dir / "_.ghga-cli").read_bytes() == data


def test_parallel_downloads_share_the_working_directory_without_racing(tmp_path: Path) -> None:
    """Parallel files of one batch create, lock in and remove one ``.ghga-cli`` directory.

    A rerun of a batch whose files are all present does this 50 times in a few milliseconds:
    one file's removal of the (momentarily empty) directory used to land between another's
    mkdir and lock, and that file failed (FileNotFoundError / FileExistsError; CI, 2026-12-03).
    """
    errors: list[BaseException] = []

    def lock_and_unlock(worker: int) -> None:
        for round_ in range(300):
            work = WorkingFiles(tmp_path / f"file-{worker}-{round_}")
            try:
                lock = work.lock()
                assert work.lock_path.exists()
                work.unlock(lock)
            except BaseException as error:  # collected, asserted below
                errors.append(error)

    threads = [threading.Thread(target=lock_and_unlock, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert list(tmp_path.iterdir()) == []  # the last one out removed the directory


def test_a_users_file_where_the_working_directory_goes_is_refused_and_kept(
    tmp_path: Path, services: FakeServices, capsys: Any
) -> None:
    services.publish(os.urandom(1000), "GHGAU3", name="x")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / ".ghga-cli").write_bytes(b"mine")
    code, _out, err = run(capsys, *download(services, out_dir, "GHGAU3"))
    assert code == 2, err
    assert "is not a directory" in err and "hint:" in err and "Traceback" not in err
    assert (out_dir / ".ghga-cli").read_bytes() == b"mine"
    assert sorted(p.name for p in out_dir.iterdir()) == [".ghga-cli"]


@pytest.mark.parametrize("batch", [False, True], ids=["one-file", "batch"])
def test_a_malformed_drs_answer_ends_the_file_with_exit_8(
    tmp_path: Path, services: FakeServices, capsys: Any, batch: bool
) -> None:
    """checksums as an object instead of a list: exit 8 at once (it used to print an internal
    error every half second until killed, whatever --wait-timeout said)."""
    services.publish(b"abc", "GHGAB1")
    services.bad_object_fields = {"checksums": {"md5": "900150983cd24fb0d6963f7d28e17f72"}}
    file_ids = ["GHGAB1"]
    if batch:
        services.publish(b"def", "GHGAB2", name="other.bin")
        file_ids.append("GHGAB2")
    started = time.monotonic()
    code, out, err = run(
        capsys,
        *download(services, tmp_path, *file_ids, extra=("--wait-timeout", "5", "--json")),
    )
    assert time.monotonic() - started < 5.0
    assert code == EXIT_PROTOCOL, err
    assert "internal error" not in err and "checksums" in err
    # A batch asks for every object before it writes anything: the answer ends the run.
    assert load_report(out)["error"]["exit_code"] == EXIT_PROTOCOL


def test_a_file_whose_urls_cannot_be_had_fails_alone(
    tmp_path: Path, services: FakeServices, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API refuses one upload's later URL batches (fetched ahead, off the engine's thread):
    that file fails with the API's exit code, the batch's other file is accepted."""
    blobs = {"GHGAX1": os.urandom(30 * PART), "GHGAX2": os.urandom(30 * PART + 1)}
    lines = []
    for file_id, data in blobs.items():
        path = tmp_path / f"{file_id}.bin"
        path.write_bytes(data)
        services.register(data, file_id)
        lines.append(f"{file_id}\t{path}")
    manifest = tmp_path / "upload.tsv"
    manifest.write_text("\n".join(lines) + "\n")
    real = services.route
    batches: dict[str, int] = {}

    def route(method: str, path: str, body: Any) -> Any:
        if path.endswith("/signed_urls"):
            upload = services.uploads[path.split("/")[2]]
            batches[upload.file_id] = batches.get(upload.file_id, 0) + 1
            if upload.file_id == "GHGAX1" and batches[upload.file_id] > 1:
                return 403, {"exception_id": "noFileAccess", "description": "no"}, {}
        return real(method, path, body)

    monkeypatch.setattr(services, "route", route)
    code, out, err = run(
        capsys,
        "upload-by-id",
        "--api-url",
        services.url,
        "--manifest",
        str(manifest),
        "--parallel",
        "2",
        "--json",
    )
    files = {f["file_id"]: f for f in load_report(out)["files"]}
    assert files["GHGAX2"]["status"] == "accepted", err
    assert files["GHGAX1"]["status"] == "error" and files["GHGAX1"]["exit_code"] == 3
    assert code == 3
