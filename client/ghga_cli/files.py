"""Local file-system helpers: safe output names, writability, free space, atomic state files,
and the identity of a file being uploaded (size and modification time)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ghga_cli.errors import ConflictError, IntegrityError, UsageError

_WINDOWS_RESERVED = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}


#: The hidden directory of an output directory that holds a download's working files; no
#: downloaded file may have this name (:func:`sanitise_name` prefixes it).
WORK_DIR_NAME = ".ghga-cli"


class WorkingFiles:
    """Where the download of ``target`` keeps its partial file, resume state and lock.

    All three live in ``<output dir>/.ghga-cli/``, named after the target: they can never be
    a downloaded file or a file of the user's next to the downloads, and a rerun finds them.
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        self.directory = target.parent / WORK_DIR_NAME
        self.part = self.directory / (target.name + ".part")
        self.state = self.directory / (target.name + ".part.json")
        self.lock_path = self.directory / (target.name + ".lock")

    def lock(self) -> ExclusiveLock:
        """Create the working directory if needed and take the target's lock in it.

        The directory is shared by every download into the output directory and removed when
        it empties, so creating it and locking inside it must not interleave with another
        download's removal: within this process a guard serialises the two; another process
        may still remove it in between, so that is retried (a few times: each retry means
        another run just finished and left the directory empty).
        """
        lock = ExclusiveLock(self.lock_path, f"downloading {self.target}")
        with _WORK_DIRECTORY_GUARD:
            for attempt in range(_LOCK_ATTEMPTS):
                try:
                    self.directory.mkdir(exist_ok=True)
                    return lock.acquire()
                except (FileNotFoundError, FileExistsError):
                    # removed by another process between mkdir and open, or during mkdir's
                    # own exists check -- or something that is not a directory is there
                    if self.directory.exists() and not self.directory.is_dir():
                        raise UsageError(
                            f"{self.directory} is not a directory: ghga-cli keeps a download's "
                            "working files there",
                            "move that file away or choose another --output-dir",
                        ) from None
                    if attempt == _LOCK_ATTEMPTS - 1:
                        raise
        raise AssertionError("unreachable")

    def unlock(self, lock: ExclusiveLock) -> None:
        """Release the lock and remove the working directory if nothing else is in it."""
        with _WORK_DIRECTORY_GUARD:
            lock.release()
            with contextlib.suppress(OSError):
                self.directory.rmdir()

    def discard_part(self) -> None:
        """Remove the partial file (this client's own, from an earlier attempt)."""
        with contextlib.suppress(FileNotFoundError):
            self.part.unlink()


#: Serialises creating/locking in and removing of working directories within one process
#: (parallel files of one batch share one output directory).
_WORK_DIRECTORY_GUARD = threading.Lock()
_LOCK_ATTEMPTS = 5


def sanitise_name(name: str, fallback: str) -> str:
    """A file name that is safe to create inside the output directory.

    DRS names should be ``[A-Za-z0-9._-]``; a server could still send anything, so path
    separators, ``..``, NUL and control characters, drive letters and Windows device names are
    refused. Characters outside the portable set are replaced by ``_``. An empty or unusable
    result falls back to ``fallback`` (the file id, sanitised the same way).
    """
    cleaned = _clean(name)
    if cleaned is None:
        cleaned = _clean(fallback)
    if cleaned is None:
        raise UsageError("the server sent no usable file name", "contact the helpdesk")
    return cleaned


def _clean(name: str) -> str | None:
    if not name or "\x00" in name:
        return None
    # Only the last path component, whatever the separator, and never a parent reference.
    base = name.replace("\\", "/").split("/")[-1]
    if ":" in base:  # drive letters, NTFS streams
        base = base.split(":")[-1]
    base = base.strip(" ").rstrip(".")  # Windows drops trailing dots and spaces silently
    out = "".join(c if (c.isalnum() and c.isascii()) or c in "._-+" else "_" for c in base)
    if not out or set(out) <= {".", "_"}:
        return None
    if out.split(".")[0].upper() in _WINDOWS_RESERVED or out.lower() == WORK_DIR_NAME:
        out = "_" + out
    return out[:200]


def inside(directory: Path, target: Path) -> bool:
    """True if ``target`` resolves to a direct child of ``directory``."""
    try:
        return target.resolve().parent == directory.resolve()
    except OSError:
        return False


def check_output_dir(directory: Path) -> None:
    """UsageError unless ``directory`` exists, is a directory and we can create files in it."""
    if not directory.exists():
        raise UsageError(f"output directory {directory} does not exist", "create it first")
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory", "give a directory as --output-dir")
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".ghga-cli-probe-"):
            pass
    except ValueError:  # a NUL byte (Path.exists says False for it, so not reached today)
        raise UsageError(
            f"invalid path {str(directory)!r}: it holds a NUL byte", "check --output-dir"
        ) from None
    except OSError as exc:
        raise UsageError(
            f"cannot write to {directory}: {exc.strerror or exc}",
            "choose a writable --output-dir",
        ) from None


def allocated_bytes(path: Path, known: int) -> int:
    """Bytes of the sparse file ``path`` that already occupy disk space (at least ``known``).

    A resumed ``.part`` may hold written ranges that were not yet recorded as done (the last
    run stopped before saving its state); they need no new space. Where the platform does not
    report allocated blocks (Windows), ``known`` is the answer.
    """
    try:
        st = path.stat()
    except OSError:
        return known
    blocks = getattr(st, "st_blocks", None)
    if blocks is None:
        return known
    return max(known, min(st.st_size, blocks * 512))


def check_free_space(directory: Path, needed: int) -> None:
    """UsageError if the file system of ``directory`` has less than ``needed`` bytes free."""
    if needed <= 0:
        return
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return  # cannot tell; writing will fail loudly if space runs out
    if free < needed:
        from ghga_cli.progress import format_bytes

        raise UsageError(
            f"not enough free space in {directory}: need {format_bytes(needed)}, "
            f"have {format_bytes(free)}",
            "free some space or choose another --output-dir",
        )


class ExclusiveLock:
    """An OS lock on ``path`` (created if missing), or ConflictError at once if another holds it.

    Two ghga-cli runs on the same output would write the same ``.part`` and state, and the
    loser would find them renamed or deleted under it. The lock is the OS's (``flock`` /
    ``msvcrt.locking``), so a killed process never leaves a stale lock, at most an empty file
    that the next run takes over and removes. A run that waited on a file removed meanwhile
    holds a lock nobody else sees, but it re-checks everything after locking (the finished file
    exists by then) before it writes anything.
    """

    def __init__(self, path: Path, holder_hint: str):
        self.path = path
        self.holder_hint = holder_hint
        self._handle: Any = None
        self._file_removed = False

    def __enter__(self) -> ExclusiveLock:
        return self.acquire()

    def acquire(self) -> ExclusiveLock:
        """Take the lock (ConflictError at once if another process holds it)."""
        handle = self.path.open("a+b")
        try:
            if os.name == "nt":
                import msvcrt

                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()  # never remove the holder's file: a third run could lock a new one
            raise ConflictError(
                f"another ghga-cli is already {self.holder_hint}",
                "wait for it to finish (or stop it), then rerun if needed",
            ) from None
        self._handle = handle
        return self

    def remove_file(self) -> None:
        """Remove the lock file now and keep the lock: called before the final rename, so a
        kill right after it leaves the finished file alone (Windows cannot remove an open file;
        there it goes on exit)."""
        with contextlib.suppress(OSError):
            self.path.unlink()
            self._file_removed = True

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        if os.name == "nt":
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        handle.close()
        if not self._file_removed:
            with contextlib.suppress(OSError):
                self.path.unlink()


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to ``path`` so that readers see the old or the new content, never half."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(payload, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()  # a disk-full half write must not stay behind
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # write/fsync errors do not say which file
        raise


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None if it is missing or unreadable."""
    try:
        with path.open("r", encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class LocalFile:
    """A local file as it was when the upload started (size and modification time)."""

    path: Path
    size: int
    mtime_ns: int

    @classmethod
    def inspect(cls, path: Path) -> LocalFile:
        """The regular, readable file at ``path`` (UsageError otherwise)."""
        try:
            st = path.stat()
        except FileNotFoundError:
            raise UsageError(f"file not found: {path}", "check --file-path") from None
        except OSError as exc:
            raise UsageError(f"cannot access {path}: {exc.strerror}", "check --file-path") from None
        except ValueError:  # a NUL byte
            raise UsageError(
                f"invalid path {str(path)!r}: it holds a NUL byte", "check --file-path"
            ) from None
        if path.is_dir():
            raise UsageError(f"{path} is a directory, not a file", "give the path of a file")
        if not path.is_file():
            raise UsageError(f"{path} is not a regular file", "give the path of a regular file")
        try:
            with path.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise UsageError(
                f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions"
            ) from None
        return cls(path, st.st_size, st.st_mtime_ns)

    def check_unchanged(self) -> None:
        """IntegrityError if the file's size or modification time differ from the recorded."""
        try:
            st = self.path.stat()
        except OSError as exc:
            raise UsageError(
                f"{self.path} cannot be read any more: {exc.strerror or exc}",
                "do not move or delete the file during the upload; rerun to resume",
            ) from None
        if st.st_size != self.size or st.st_mtime_ns != self.mtime_ns:
            raise IntegrityError(
                f"{self.path} changed while it was being uploaded "
                f"(size {self.size} -> {st.st_size} bytes, or modified); the upload was not "
                "confirmed",
                "do not modify the file during the upload; rerun the same command once it is "
                "final: stored parts are checked against the file and only changed ones resent",
            )


def check_local_file(path: Path) -> int:
    """Size of the regular, readable file at ``path`` (UsageError otherwise)."""
    return LocalFile.inspect(path).size
