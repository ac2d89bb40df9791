"""Unit tests without network: planning, parsing, naming, formatting, exit codes, arguments."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ghga_cli.cli.parser import build_parser, parse_size
from ghga_cli.cli.run import main, read_token
from ghga_cli.curl import HeaderCollector, redact_url
from ghga_cli.errors import ApiError, CliError, NetworkError, UsageError
from ghga_cli.files import sanitise_name
from ghga_cli.integrity import choose_checksum, file_digest, hash_speed, normalise_etag
from ghga_cli.jobs.api import drs_base, parse_drs_object
from ghga_cli.progress import Progress, format_bytes, format_duration, progress_line
from ghga_cli.retry import RetryPolicy, parse_retry_after
from ghga_cli.transfer.download import (
    MAX_RANGES,
    DownloadState,
    parse_content_range,
    plan_ranges,
    range_size_for,
)
from ghga_cli.transfer.engine import plan_parts

MIB = 1024 * 1024


# -- planning ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "part", "expected"),
    [
        (0, 10, []),
        (1, 10, [(0, 1)]),
        (10, 10, [(0, 10)]),
        (11, 10, [(0, 10), (10, 1)]),
        (25, 10, [(0, 10), (10, 10), (20, 5)]),
    ],
)
def test_plan_parts(size: int, part: int, expected: list[tuple[int, int]]) -> None:
    assert plan_parts(size, part) == expected


def test_plan_parts_covers_file_exactly() -> None:
    pieces = plan_parts(10 * MIB + 3, MIB)
    assert sum(n for _, n in pieces) == 10 * MIB + 3
    assert all(pieces[i][0] + pieces[i][1] == pieces[i + 1][0] for i in range(len(pieces) - 1))


def test_plan_parts_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        plan_parts(10, 0)
    with pytest.raises(ValueError):
        plan_parts(-1, 10)


@pytest.mark.parametrize("size", [0, 1, 100 * MIB, 1024 * MIB + 7, 4096 * MIB - 1])
def test_plan_ranges_covers_the_file_and_shrinks_at_the_end(size: int) -> None:
    ranges = plan_ranges(size, 32 * MIB, tail=8)
    assert sum(n for _, n in ranges) == size
    assert all(off == prev_off + prev_n for (prev_off, prev_n), (off, _) in zip(ranges, ranges[1:]))
    if size >= 1024 * MIB:
        last = [n for _, n in ranges[-16:]]
        assert last == sorted(last, reverse=True) and last[-1] < 4 * MIB
        assert len(ranges) <= size // (32 * MIB) + 16
    else:
        assert ranges == plan_parts(size, 32 * MIB)  # small files: equal ranges


def test_range_size_grows_so_the_plan_stays_bounded() -> None:
    five_tib = 5 * 1024**4
    size = range_size_for(five_tib, 64 * 1024)
    assert size % MIB == 0 and -(-five_tib // size) <= MAX_RANGES
    assert range_size_for(10 * MIB, 64 * 1024) == 64 * 1024


# -- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('"d41d8cd98f00b204e9800998ecf8427e"', "d41d8cd98f00b204e9800998ecf8427e"),
        ("D41D8CD98F00B204E9800998ECF8427E", "d41d8cd98f00b204e9800998ecf8427e"),
        ('W/"abc"', "abc"),
        (' "abc-3" ', "abc-3"),
        (None, ""),
        ("", ""),
    ],
)
def test_normalise_etag(raw: str | None, expected: str) -> None:
    assert normalise_etag(raw) == expected


def test_parse_content_range() -> None:
    assert parse_content_range("bytes 0-99/1000") == (0, 99, 1000)
    assert parse_content_range("bytes 5-9/*") == (5, 9, None)
    assert parse_content_range("bytes */1000") is None
    assert parse_content_range(None) is None
    assert parse_content_range("items 0-1/2") is None


def test_retry_after_and_backoff() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert parse_retry_after("-1") is None
    assert parse_retry_after(None) is None
    policy = RetryPolicy(retries=3, base=1.0, cap=4.0)
    assert policy.can_retry(3) and not policy.can_retry(4)
    for attempt in range(1, 10):
        assert 0 <= policy.delay(attempt) <= 4.0
    assert policy.delay(1, retry_after=7) >= 7
    assert policy.delay(1, retry_after=10_000) <= policy.retry_after_cap


def test_header_collector_skips_interim_responses() -> None:
    collector = HeaderCollector()
    for line in [
        b"HTTP/1.1 100 Continue\r\n",
        b"\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b'ETag: "abc"\r\n',
        b"Content-Length: 0\r\n",
        b"\r\n",
    ]:
        assert collector(line) is None
    assert collector.status == 200 and collector.complete
    assert collector.get("etag") == '"abc"'


def test_header_collector_can_abort_before_body() -> None:
    collector = HeaderCollector()
    collector.on_complete = lambda c: c.status == 206
    collector(b"HTTP/1.1 200 OK\r\n")
    assert collector(b"\r\n") == 0  # libcurl aborts the transfer: nothing is written


def test_parse_drs_object() -> None:
    obj = parse_drs_object(
        {
            "id": "F1",
            "name": "a.bam",
            "size": 5,
            "self_uri": "drs://x/F1",
            "created_time": "2026-01-01T00:00:00Z",
            "checksums": [{"type": "MD5", "checksum": "ABC"}, {"type": "sha-256", "checksum": "d"}],
            "access_methods": [
                {"type": "s3", "access_url": {"url": "https://s3/x?sig=1", "headers": ["A: b"]}}
            ],
        }
    )
    assert obj.size == 5 and obj.name == "a.bam" and obj.url == "https://s3/x?sig=1"
    assert obj.headers == ["A: b"]
    faster = max(("md5", "sha256"), key=hash_speed)
    offered = {"md5": ("md5", "md5", "abc"), "sha256": ("sha-256", "sha256", "d")}
    assert choose_checksum(obj.checksums) == offered[faster]  # the cheaper one on this machine
    assert choose_checksum(obj.checksums, keep="md5") == ("md5", "md5", "abc")  # a resume's
    assert choose_checksum(obj.checksums, keep="sha-256") == ("sha-256", "sha256", "d")
    assert choose_checksum({"md5": "abc"}, keep="sha-256") == ("md5", "md5", "abc")
    assert choose_checksum({"sha-256": "d"}) == ("sha-256", "sha256", "d")
    assert choose_checksum({"crc32c": "x"}) is None
    with pytest.raises(NetworkError):
        parse_drs_object({"size": 1, "access_methods": []})


def test_drs_base() -> None:
    assert drs_base("http://h:1") == "http://h:1/ga4gh/drs/v1"
    assert drs_base("http://h:1/") == "http://h:1/ga4gh/drs/v1"
    assert drs_base("http://h:1/ga4gh/drs/v1/") == "http://h:1/ga4gh/drs/v1"
    assert drs_base("https://api.x/prefix") == "https://api.x/prefix/ga4gh/drs/v1"


def test_redact_url() -> None:
    url = "https://user:pw@s3.example.org:9000/bucket/key?X-Amz-Signature=secret#frag"
    assert redact_url(url) == "https://s3.example.org:9000/bucket/key"


def test_file_digest(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    assert file_digest(path, block=2) == "5d41402abc4b2a76b9719d911017c592"


def test_download_state_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "x.part.json"
    state = DownloadState(path, object_id="F", size=100, checksum="md5:a", range_size=10)
    state.mark_done(3)
    state.etag = "e"
    state.save(force=True)
    loaded = DownloadState.load(path, "F", 100, "md5:a")
    assert loaded is not None and loaded.done == {3} and loaded.etag == "e"
    assert DownloadState.load(path, "F", 101, "md5:a") is None
    assert DownloadState.load(path, "G", 100, "md5:a") is None
    assert DownloadState.load(path, "F", 100, "md5:b") is None
    path.write_text("{not json")
    assert DownloadState.load(path, "F", 100, "md5:a") is None


# -- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sample.bam", "sample.bam"),
        ("../../etc/passwd", "passwd"),
        ("/abs/path/file.txt", "file.txt"),
        ("..\\..\\win.ini", "win.ini"),
        ("C:evil.txt", "evil.txt"),
        ("a b;c$d.txt", "a_b_c_d.txt"),
        ("trailing. ", "trailing"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("ümlaut.txt", "_mlaut.txt"),
        (".hidden", ".hidden"),
    ],
)
def test_sanitise_name(name: str, expected: str) -> None:
    assert sanitise_name(name, "FALLBACK") == expected


@pytest.mark.parametrize("name", ["", "..", ".", "a\x00b", "/", "dir/", "..."])
def test_sanitise_name_falls_back(name: str) -> None:
    assert sanitise_name(name, "GHGAF123") == "GHGAF123"


def test_sanitise_name_never_escapes() -> None:
    for name in ["../x", "x/../../y", "\\\\server\\share\\f", "a/..", "./."]:
        cleaned = sanitise_name(name, "F")
        assert "/" not in cleaned and "\\" not in cleaned and cleaned not in ("..", ".")


# -- formatting -------------------------------------------------------------------------


def test_format_bytes() -> None:
    assert format_bytes(0) == "0 B"
    assert format_bytes(1023) == "1023 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(5 * MIB) == "5.0 MiB"
    assert format_bytes(3 * 1024**4) == "3.0 TiB"


def test_format_duration() -> None:
    assert format_duration(5) == "5s"
    assert format_duration(65) == "1m05s"
    assert format_duration(3725) == "1h02m05s"
    assert format_duration(None) == "--"
    assert format_duration(-1) == "--"


def test_progress_line() -> None:
    line = progress_line(MIB, 4 * MIB, 1.0, MIB)
    assert line == "1.0 MiB / 4.0 MiB   25.0%  1.0 MiB/s  ETA 3s"
    assert "ETA --" in progress_line(0, 10, 0.0, 0.0)
    assert "100.0%" in progress_line(0, 0, 0.0, 0.0)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_throttles_log_lines() -> None:
    stream = io.StringIO()
    clock = _Clock()
    progress = Progress(100 * MIB, stream=stream, tty=False, clock=clock)
    for second in range(1, 12):
        clock.now = float(second)
        progress.update(second * MIB)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # at 5 s and 10 s: one line per 5 s, none at the start
    progress.update(100 * MIB, force=True)
    assert len(stream.getvalue().splitlines()) == 3  # the final state, since lines were shown
    for second in range(12, 40):  # waiting for the server's verdict: nothing new to say
        clock.now = float(second)
        progress.update(100 * MIB)
    progress.update(100 * MIB, force=True)
    assert len(stream.getvalue().splitlines()) == 3
    short = io.StringIO()
    progress = Progress(10, stream=short, tty=False, clock=clock)
    progress.update(10, force=True)
    assert short.getvalue() == ""  # a transfer shorter than 5 s logs no progress line
    assert all(line.startswith("ghga-cli: ") for line in lines)
    assert "MiB/s" in lines[-1]


def test_progress_logs_no_lines_while_a_short_transfer_waits_for_the_server() -> None:
    stream = io.StringIO()
    clock = _Clock()
    progress = Progress(256 * MIB, stream=stream, tty=False, clock=clock)
    clock.now = 1.0
    progress.update(256 * MIB)  # moved in a second: below the log interval
    for tick in range(10, 200):  # the engine keeps sampling while the upload is validated
        clock.now = tick / 10
        progress.update(256 * MIB)
    progress.update(256 * MIB, force=True)
    assert stream.getvalue() == ""  # the file's summary line says it all


def test_progress_logs_the_moment_a_long_transfer_completes() -> None:
    stream = io.StringIO()
    clock = _Clock()
    progress = Progress(100 * MIB, stream=stream, tty=False, clock=clock)
    clock.now = 6.0
    progress.update(60 * MIB)  # a periodic line
    clock.now = 7.0
    progress.update(100 * MIB)  # complete: logged at once, with the rate of the transfer
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "100.0%" in lines[1] and "0.0 MiB/s" not in lines[1]


def test_progress_tty_redraws_in_place_and_quiet_prints_nothing() -> None:
    stream = io.StringIO()
    clock = _Clock()
    progress = Progress(10, stream=stream, tty=True, clock=clock)
    progress.update(5)
    clock.now = 0.1
    progress.update(6)  # within 0.25 s: not redrawn
    progress.finish()
    assert stream.getvalue().count("\r") == 1 and stream.getvalue().endswith("\n")
    quiet = io.StringIO()
    progress = Progress(10, stream=quiet, quiet=True)
    progress.update(10, force=True)
    progress.message("hi")
    progress.finish()
    assert quiet.getvalue() == ""


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "exception_id", "code"),
    [
        (401, "notAuthenticated", 3),
        (403, "noFileAccess", 3),
        (404, "fileNotRegistered", 4),
        (404, "noSuchObject", 4),
        (400, "existingActiveUpload", 4),
        (400, "uploadNotPending", 4),
        (400, "invalidRequest", 2),
        (500, None, 6),
        (503, None, 6),
    ],
)
def test_api_error_exit_codes(status: int, exception_id: str | None, code: int) -> None:
    assert ApiError(status, exception_id, "d").exit_code == code


def test_error_line_format() -> None:
    err = UsageError("file not found: x", "check --file-path")
    assert err.one_line() == "ghga-cli: error: file not found: x (hint: check --file-path)"
    assert "\n" not in CliError("two\nlines", "a\nb").one_line()


# -- arguments --------------------------------------------------------------------------


def test_aliases_and_defaults() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["upload-by-id", "--api_url", "http://x", "--file_id", "F", "--file_path", "p"]
    )
    assert (args.api_url, args.file_id, str(args.file_path)) == ("http://x", "F", "p")
    assert args.parallel == 8 and args.retries == 5 and not args.cancel
    args = parser.parse_args(
        ["download-by-id", "--api-url", "http://x", "--file-id", "F", "--output-dir", "d"]
    )
    assert str(args.output_dir) == "d" and not args.overwrite
    args = parser.parse_args(
        ["download-by-id", "--api_url", "http://x", "--file_id", "F", "--output_dir", "d"]
    )
    assert args.file_ids == ["F"]
    two = ["download-by-id", "--api-url", "http://x", "--file-id", "F", "--file-id", "G"]
    args = parser.parse_args([*two, "--output-dir", "d"])
    assert args.file_ids == ["F", "G"] and args.parallel_files == 4


def test_api_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("GHGA_CLI_API_URL", "http://env-api:1")
    args = build_parser().parse_args(["upload-by-id", "--file-id", "F", "--file-path", "p"])
    assert args.api_url == "http://env-api:1"
    monkeypatch.delenv("GHGA_CLI_API_URL")
    assert main(["upload-by-id", "--file-id", "F", "--file-path", "p"]) == 2
    err = capsys.readouterr().err
    assert "--api-url is required" in err and "GHGA_CLI_API_URL" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["download-by-id", "--api-url", "u", "--file-id", "F"],  # no --output-dir
        ["upload-by-id", "--api-url", "u", "--file-id", "F", "--parallel", "0"],
        ["upload-by-id", "--api-url", "u", "--file-id", "F", "--retries", "x"],
        ["upload-by-id", "--api-url", "u", "--file-id", "F", "--stall-timeout", "0"],
        ["upload-by-id", "--api-url", "u", "--file-id", "F", "--max-memory", "lots"],
        [
            "download-by-id",
            "--api-url",
            "u",
            "--file-id",
            "F",
            "--output-dir",
            "d",
            "--range-size",
            "1K",
        ],
        [
            "download-by-id",
            "--api-url",
            "u",
            "--file-id",
            "F",
            "--output-dir",
            "d",
            "--range-size",
            "6G",
        ],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("ghga-cli: error: ") and err.count("\n") == 1 and "(hint: " in err


def test_parse_size() -> None:
    assert parse_size("65536") == 65536
    assert parse_size("64K") == 64 * 1024
    assert parse_size("16MiB") == 16 * MIB
    assert parse_size("1g") == 1024 * MIB


def test_read_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("abc.def.ghi\n")
    assert read_token(token_file, {}) == "abc.def.ghi"
    assert read_token(None, {"GHGA_CLI_TOKEN": " xyz "}) == "xyz"
    assert read_token(token_file, {"GHGA_CLI_TOKEN": "env"}) == "abc.def.ghi"
    for bad in ["", "two words", "line\nbreak"]:
        token_file.write_text(bad)
        with pytest.raises(UsageError) as info:
            read_token(token_file, {})
        assert bad.strip() == "" or bad not in info.value.one_line()
    with pytest.raises(UsageError):
        read_token(None, {})
    with pytest.raises(UsageError):
        read_token(tmp_path / "missing", {})
    with pytest.raises(UsageError):
        read_token(tmp_path, {})


def test_the_progress_line_shows_what_the_server_verified() -> None:
    from ghga_cli.progress import progress_line

    line = progress_line(3 * 2**30, 4 * 2**30, 10.0, 2**20, verified=2**31)
    assert line.startswith("3.0 GiB / 4.0 GiB   75.0%  verified 2.0 GiB  1.0 MiB/s")
    assert "verified" not in progress_line(1, 2, 1.0, 1.0)


def test_segment_reports_never_wait_for_the_api() -> None:
    """``report`` only queues: the engine's thread goes on while the API call blocks."""
    import threading

    from ghga_cli.jobs.upload import SegmentReporter

    release = threading.Event()
    seen: list[int] = []

    class Ucs:
        def complete_segment(self, upload_id: str, segment_no: int) -> int:
            release.wait(10)
            return segment_no * 100

    class Access:
        def ucs(self) -> Ucs:
            return Ucs()

    reporter = SegmentReporter(Access(), "u1", seen.append, lambda _m: None)  # type: ignore[arg-type]
    for n in (1, 2, 3):
        reporter.report(n)  # returns at once although the first call is blocked
    assert seen == []
    release.set()
    reporter.close()
    assert sorted(seen) == [100, 200, 300] and reporter.reported == 3  # side by side
