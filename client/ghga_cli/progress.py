"""Progress reporting and the human-readable formatting it needs.

Three modes: on a terminal one live line (bytes, %, MiB/s, ETA) redrawn at most 4 times a second;
otherwise (pipes, CI logs) one plain line every 5 seconds while bytes move and one when they are
all done (none for a transfer shorter than that, none while files wait for the server);
``--quiet`` prints nothing. The engine calls :meth:`Progress.update` as often as it likes;
throttling happens here.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, TextIO

MIB = 1024 * 1024


def format_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``; binary units, one decimal (none for bytes)."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024.0
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"
    return f"{n:.1f} PiB"  # pragma: no cover


def format_duration(seconds: float | None) -> str:
    """``3725`` -> ``1h02m05s``; ``None`` or absurd values -> ``--``."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds > 99 * 86400:
        return "--"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_rate(bytes_per_s: float) -> str:
    return f"{bytes_per_s / MIB:.1f} MiB/s"


def progress_line(
    done: int,
    total: int,
    elapsed: float,
    rate: float,
    files: tuple[int, int] | None = None,
    verified: int | None = None,
) -> str:
    """One status line, e.g. ``1.0 GiB / 4.0 GiB  25.0%  112.3 MiB/s  ETA 27s``.

    ``files`` (done, total) prefixes the line of a batch: ``files 3/50  ...``; ``verified``
    (bytes the server has verified and stored while an upload is sent) follows the bytes:
    ``1.0 GiB / 4.0 GiB  25.0%  verified 0.8 GiB  ...``.
    """
    pct = 100.0 if total <= 0 else min(100.0, 100.0 * done / total)
    eta = (total - done) / rate if rate > 0 else None
    prefix = f"files {files[0]}/{files[1]}  " if files is not None else ""
    checked = f"verified {format_bytes(verified)}  " if verified is not None else ""
    return (
        f"{prefix}{format_bytes(done)} / {format_bytes(total)}  {pct:5.1f}%  {checked}"
        f"{format_rate(rate)}  ETA {format_duration(eta)}"
    )


class Progress:
    """Throttled progress output to ``stream`` (stderr by default).

    Counts bytes of one file or of a whole batch: ``total`` grows as files join
    (:meth:`add_total`), bytes done by an earlier run are added with :meth:`add_skipped` (they
    count in %, not in the rate), and the engine reports the bytes moved by this run with
    :meth:`update_moved`.
    """

    TTY_INTERVAL = 0.25
    LOG_INTERVAL = 5.0

    def __init__(
        self,
        total: int,
        *,
        label: str = "",
        quiet: bool = False,
        stream: TextIO | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total = total
        self.label = label
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self._clock = clock
        self.start = clock()
        self.done = 0
        self.baseline = 0  # bytes already present before this run (resume)
        self.files: tuple[int, int] | None = None  # (done, total) in a batch
        self._verified: dict[str, int] = {}  # bytes the server verified, per file
        # A terminal shows the line at once; logs get their first line after LOG_INTERVAL, so
        # short transfers do not clutter them.
        self._last_draw = -1e9 if tty else self.start
        self._lines = 0
        self._logged_done = -1  # bytes done when the last log line was written
        self._samples: list[tuple[float, int]] = [(self.start, 0)]  # (time, bytes moved)
        self._drawn = False
        # The engine updates from its thread, file jobs add totals and messages from theirs.
        self._lock = threading.RLock()

    def add_skipped(self, nbytes: int) -> None:
        """More bytes done by an earlier run (a resumed file joined the batch)."""
        with self._lock:
            self.baseline += nbytes

    def add_total(self, nbytes: int) -> None:
        """A file joined the batch (or its size became known)."""
        with self._lock:
            self.total += nbytes

    def set_verified(self, key: str, nbytes: int) -> None:
        """Bytes of one file (``key``) the server has verified so far (shown on the line)."""
        with self._lock:
            self._verified[key] = max(nbytes, self._verified.get(key, 0))

    def set_files(self, done: int, total: int) -> None:
        """Files finished / in the batch, shown at the start of the line."""
        self.files = (done, total)

    def update_moved(self, moved: int, force: bool = False) -> None:
        """Bytes moved by this run so far (the engine's figure)."""
        self.update(self.baseline + moved, force=force)

    def update(self, done: int, force: bool = False) -> None:
        """Bytes done in all (earlier runs included)."""
        with self._lock:
            self._update(done, force)

    def _update(self, done: int, force: bool) -> None:
        self.done = done
        if self.quiet:
            return
        if self.total <= 0:
            return  # no file's size is known yet: nothing to show
        now = self._clock()
        if self.tty:
            if not force and now - self._last_draw < self.TTY_INTERVAL:
                return
        elif not self._log_due(now, done, force):
            return
        self._last_draw = now
        self._logged_done = done
        rate = self._rate(now, max(0, done - self.baseline))
        verified = sum(self._verified.values()) if self._verified else None
        line = progress_line(done, self.total, now - self.start, rate, self.files, verified)
        if self.label:
            line = f"{self.label} {line}"
        if self.tty:
            self.stream.write("\r" + line.ljust(79) + "\x1b[K")
            self._drawn = True
        else:
            self.stream.write(f"ghga-cli: {line}\n")
        self._lines += 1
        self.stream.flush()

    def _log_due(self, now: float, done: int, force: bool) -> bool:
        """Whether a log (non-terminal) line is due: every LOG_INTERVAL while bytes are left,
        once more when all known bytes are done (the 100% line), then nothing while the files
        wait for the server: repeated 100% lines with a falling rate would say nothing."""
        complete = done >= self.total
        if complete and done == self._logged_done:
            return False  # the complete state is logged already
        if force or complete:
            return self._lines > 0  # nothing was logged during the transfer: the summary suffices
        return now - self._last_draw >= self.LOG_INTERVAL

    def _rate(self, now: float, moved: int) -> float:
        """Rate over the last ~10 s (smooths bursts, follows changes)."""
        self._samples.append((now, moved))
        while len(self._samples) > 2 and now - self._samples[0][0] > 10.0:
            self._samples.pop(0)
        t0, d0 = self._samples[0]
        if now - t0 <= 0:
            return 0.0
        return max(0.0, (moved - d0) / (now - t0))

    def finish(self) -> None:
        """End the live line so that following messages start on a fresh line."""
        if self.quiet:
            return
        with self._lock:
            self._finish()

    def _finish(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def message(self, text: str) -> None:
        """An informational line (not an error); suppressed by --quiet."""
        if self.quiet:
            return
        with self._lock:
            self._message(text)

    def _message(self, text: str) -> None:
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False
        self.stream.write(f"ghga-cli: {text}\n")
        self.stream.flush()
