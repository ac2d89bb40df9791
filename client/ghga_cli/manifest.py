"""Manifests of many files, checked as a whole before any byte moves.

Upload manifest: one ``file_id<TAB>path`` per line; or a CSV file whose first line is the header
``file_id,path`` (columns in any order, more columns ignored). Download manifest: one file id
(or ``drs://host/id`` URI) per line; a TSV/CSV like the upload one is accepted too (its
``file_id`` column is used). In both, blank lines and lines starting with ``#`` are ignored, and
relative paths are relative to the manifest's directory (so a manifest works from anywhere).

Problems are collected, not raised one by one: :class:`ManifestError` lists every problem with
its line number, so a user fixes the manifest in one go.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from ghga_cli.errors import UsageError

#: Largest manifest read (a million lines of ids and paths fit easily).
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


class ManifestError(UsageError):
    """Problems found in a manifest (or with the files it names); nothing was transferred."""

    def __init__(self, source: str, problems: list[str], hint: str | None = None) -> None:
        problems = sorted_problems(problems)
        count = len(problems)
        super().__init__(
            f"{source}: {count} problem{'s' if count != 1 else ''} found; nothing was transferred",
            hint or "fix the lines listed above and rerun",
        )
        self.problems = problems


@dataclass(frozen=True)
class Entry:
    """One line of a manifest: the file id, the local path (uploads), the line number."""

    line: int
    file_id: str
    path: Path | None = None


def _read_text(manifest: Path) -> str:
    try:
        with manifest.open("rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(f"manifest {manifest} not found", "check --manifest") from None
    except IsADirectoryError:
        raise UsageError(f"manifest {manifest} is a directory", "check --manifest") from None
    except OSError as exc:
        raise UsageError(
            f"cannot read manifest {manifest}: {exc.strerror or exc}", "check --manifest"
        ) from None
    except ValueError:  # a NUL byte in the path
        raise UsageError(
            f"invalid manifest path {str(manifest)!r}: it holds a NUL byte", "check --manifest"
        ) from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise UsageError(
            f"manifest {manifest} is larger than {MAX_MANIFEST_BYTES // (1024 * 1024)} MiB",
            "split it into several manifests",
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"manifest {manifest} is not UTF-8 text (byte {exc.start})", "save it as UTF-8"
        ) from None


def _rows(text: str) -> tuple[list[tuple[int, list[str]]], bool]:
    """(line number, fields) of every non-blank, non-comment line; whether it is a CSV."""
    lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        return [], False
    first = lines[0][1]
    is_csv = "\t" not in first and "," in first and "file_id" in first.lower()
    if is_csv:
        parsed = csv.reader(io.StringIO("\n".join(line for _, line in lines)))
        return [(number, row) for (number, _), row in zip(lines, parsed)], True
    return [(number, line.split("\t")) for number, line in lines], False


def _columns(header: list[str], wanted: tuple[str, ...]) -> dict[str, int] | None:
    names = [h.strip().lower() for h in header]
    if not all(w in names for w in wanted):
        return None
    return {w: names.index(w) for w in wanted}


def read_upload_manifest(manifest: Path) -> tuple[list[Entry], list[str]]:
    """Entries of an upload manifest and the problems of its malformed lines.

    The problems are returned, not raised, so that the checks of the files themselves can
    add theirs and the user sees every problem at once.
    """
    rows, is_csv = _rows(_read_text(manifest))
    base = manifest.parent
    problems: list[str] = []
    columns = {"file_id": 0, "path": 1}
    if rows:
        header = _columns(rows[0][1], ("file_id", "path"))
        if header is not None:
            columns, rows = header, rows[1:]
        elif is_csv:
            problems.append(f"line {rows[0][0]}: a CSV manifest needs the header file_id,path")
    entries: list[Entry] = []
    for number, fields in rows:
        try:
            file_id = fields[columns["file_id"]].strip()
            raw_path = fields[columns["path"]].strip()
        except IndexError:
            separator = "," if is_csv else "a tab"
            problems.append(
                f"line {number}: expected a file id and a path separated by {separator}"
            )
            continue
        if not file_id or not raw_path:
            problems.append(f"line {number}: the file id or the path is empty")
            continue
        if len(fields) > 2 and not is_csv and any(f.strip() for f in fields[2:]):
            problems.append(f"line {number}: more than two tab-separated fields")
            continue
        path, problem = _local_path(raw_path)
        if path is None:
            problems.append(f"line {number}: {problem}")
            continue
        entries.append(Entry(number, file_id, path if path.is_absolute() else base / path))
    if not entries and not problems:
        problems.append("the manifest lists no files")
    problems.extend(_duplicates(entries, with_paths=True))
    duplicate_lines = {int(p.split(":")[0][5:]) for p in problems if p.startswith("line ")}
    return [e for e in entries if e.line not in duplicate_lines], problems


def _local_path(raw: str) -> tuple[Path | None, str]:
    """The path a manifest line names (``~`` and ``~user`` expanded), or None and why not."""
    if "\x00" in raw:
        return None, f"the path {raw!r} holds a NUL byte"
    try:
        return Path(raw).expanduser(), ""
    except RuntimeError:  # ~user of an unknown user, or no home directory
        user = raw.split("/", 1)[0]
        return None, f"cannot expand {user} in {raw}: no such user or no home directory"


def read_download_manifest(manifest: Path) -> tuple[list[Entry], list[str]]:
    """File ids of a download manifest and the problems of its malformed lines."""
    rows, is_csv = _rows(_read_text(manifest))
    problems: list[str] = []
    column = 0
    if rows:
        header = _columns(rows[0][1], ("file_id",))
        if header is not None:
            column, rows = header["file_id"], rows[1:]
        elif is_csv:
            problems.append(f"line {rows[0][0]}: a CSV manifest needs a file_id header")
    entries: list[Entry] = []
    for number, fields in rows:
        value = fields[column].strip() if column < len(fields) else ""
        if not value or (not is_csv and len(fields) > 2):
            problems.append(f"line {number}: expected one file id per line")
            continue
        entries.append(Entry(number, value))
    if not entries and not problems:
        problems.append("the manifest lists no files")
    problems.extend(_duplicates(entries, with_paths=False))
    duplicate_lines = {int(p.split(":")[0][5:]) for p in problems if p.startswith("line ")}
    return [e for e in entries if e.line not in duplicate_lines], problems


def sorted_problems(problems: list[str]) -> list[str]:
    """Problems in line order (those without a line number first)."""

    def key(problem: str) -> int:
        head = problem.split(":", 1)[0]
        return int(head[5:]) if head.startswith("line ") and head[5:].isdigit() else 0

    return sorted(problems, key=key)


def _duplicates(entries: list[Entry], with_paths: bool) -> list[str]:
    problems = []
    seen_ids: dict[str, int] = {}
    seen_paths: dict[str, int] = {}
    for entry in entries:
        if entry.file_id in seen_ids:
            problems.append(
                f"line {entry.line}: file id {entry.file_id} is listed again "
                f"(first on line {seen_ids[entry.file_id]})"
            )
        else:
            seen_ids[entry.file_id] = entry.line
        if with_paths and entry.path is not None:
            key = str(_resolved(entry.path))
            if key in seen_paths:
                problems.append(
                    f"line {entry.line}: {entry.path} is listed again "
                    f"(first on line {seen_paths[key]})"
                )
            else:
                seen_paths[key] = entry.line
    return problems


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, ValueError):
        return path.absolute()
