"""Operator commands: ``python -m ucs_lambda.admin <command>``.

* ``create-resources`` — tables (with GSI), the three buckets and the job queue; idempotent.
* ``register-file`` — register a file for upload by a submitter.
* ``register-files`` — register many files from a TSV (a study), every line checked first.
* ``grant`` — let a user download a file (adds to its readers).
* ``mint-token`` — print a bearer token for a user (signed with the first ``UCS_TOKEN_KEYS``;
  lifetime at most ``UCS_TOKEN_MAX_TTL``, ``aud``/``iss`` from ``UCS_TOKEN_AUDIENCE``/``_ISSUER``).

Configuration comes from the environment; unset variables are taken from the local stack's
``.stack/stack.json`` (or ``$UCS_STACK_FILE``) when it exists. Bad input gives a one-line error
and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import PynamoDBException

from . import tokens
from .bootstrap import services
from .config import ConfigError, apply_stack_env, get_settings
from .domain.ids import MAX_ID_BYTES, id_problem
from .domain.integrity import is_md5_hex
from .domain.models import FileRecord
from .domain.parts import MAX_FILE_SIZE
from .ports import ConditionLost, StoreError
from .routes import shapes


class UsageError(Exception):
    """Invalid input from the operator (exit status 2)."""


def _cmd_create_resources(args: argparse.Namespace) -> int:
    from .adapters.provision import create_all

    result = create_all(get_settings())
    print(json.dumps(result, indent=2))
    return 0


def _format_of(file_name: str) -> str:
    """Default ``format``: the file name's extension (``reads.fastq.gz`` -> ``fastq.gz``)."""
    parts = file_name.split(".")
    if len(parts) < 2:
        return ""
    tail = (
        parts[-2:]
        if parts[-1].lower() in ("gz", "bz2", "xz", "zst") and len(parts) > 2
        else parts[-1:]
    )
    return ".".join(tail).lower()


_FILE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


def _file_name_problem(name: str) -> str | None:
    """Why ``name`` is not a plain base name (None when it is one)."""
    if name in (".", "..") or name.strip(" .") == "":
        return "is '.' or '..'"
    # NFKC: look-alikes such as the fullwidth solidus become the separators they mimic.
    if any(sep in text for text in (name, unicodedata.normalize("NFKC", name)) for sep in "/\\:"):
        return "contains a path separator or drive colon (or a look-alike)"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        return "contains control or invisible formatting characters"
    if len(name.encode("utf-8")) > 255:
        return "is longer than 255 bytes"
    return None


def _checked_record(
    file_id: str,
    file_name: str,
    size: int,
    md5: str,
    *,
    submitters: Sequence[str],
    readers: Sequence[str] = (),
    grouping_label: str = "",
    file_format: str | None = None,
    option: str = "--",
) -> FileRecord:
    """A file record from operator input; UsageError naming the first bad value (as the
    option ``--size`` etc., or with ``option=""`` as the TSV column ``size``)."""
    if not file_id.strip():
        raise UsageError(f"{option}file-id must not be empty")
    if not _FILE_ID.fullmatch(file_id):
        raise UsageError(
            f"{option}file-id may hold only letters, digits, '.', '_' and '-' (at most 128, "
            "not starting with '.'): it becomes part of URLs and S3 keys"
        )
    problem = _file_name_problem(file_name)
    if problem:
        raise UsageError(f"{option}file-name {problem}: it must be a plain file name")
    if size < 0:
        raise UsageError(f"{option}size must not be negative")
    if size > MAX_FILE_SIZE:
        raise UsageError(f"{option}size exceeds the 5 TiB S3 object limit ({MAX_FILE_SIZE} bytes)")
    if not is_md5_hex(md5):
        raise UsageError(f"{option}md5 must be 32 hexadecimal digits")
    now = datetime.now(timezone.utc)
    return FileRecord(
        file_id=file_id,
        file_name=file_name,
        size=size,
        md5_checksum=md5.lower(),
        grouping_label=grouping_label,
        format=file_format if file_format is not None else _format_of(file_name),
        creation_date=now,
        update_date=now,
        submitters=frozenset(submitters),
        readers=frozenset(readers),
    )


def _cmd_register_file(args: argparse.Namespace) -> int:
    record = _checked_record(
        args.file_id,
        args.file_name,
        args.size,
        args.md5,
        submitters=args.submitter,
        readers=args.reader or (),
        grouping_label=args.grouping_label or "",
        file_format=args.format,
    )
    try:
        services().state.files.register_file(record)
    except ConditionLost:
        raise UsageError(f"file {args.file_id!r} is already registered") from None
    print(json.dumps(shapes.file_metadata(record), indent=2))
    return 0


def _cmd_register_files(args: argparse.Namespace) -> int:
    """Register every file of a TSV (file_id, file_name, size, md5); all lines checked first."""
    records, problems = [], []
    try:
        lines = Path(args.source).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {args.source}: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        try:
            file_id, file_name, size, md5 = fields
            records.append(
                _checked_record(
                    file_id.strip(),
                    file_name.strip(),
                    int(size),
                    md5.strip(),
                    submitters=args.submitter,
                    readers=args.reader or (),
                    option="",
                )
            )
        except ValueError:
            problems.append(f"line {number}: expected file_id, file_name, size, md5 (tabs)")
        except UsageError as exc:
            problems.append(f"line {number}: {exc}")
    if problems:
        raise UsageError("; ".join(problems))
    files = services().state.files
    taken = []
    for record in records:
        try:
            files.register_file(record)
        except ConditionLost:
            taken.append(record.file_id)
    print(json.dumps({"registered": len(records) - len(taken), "already_registered": taken}))
    return 0 if not taken else 2


def _cmd_grant(args: argparse.Namespace) -> int:
    problem = id_problem(args.file_id)
    if problem:  # no file can have it, and the store would refuse the key
        raise UsageError(f"--file-id {problem}: ids are 1 to {MAX_ID_BYTES} bytes of UTF-8")
    if not services().state.files.grant_reader(args.file_id, args.user):
        raise UsageError(f"file {args.file_id!r} is not registered")
    print(f"granted download access to {args.file_id} for {args.user}")
    return 0


def _cmd_mint_token(args: argparse.Namespace) -> int:
    ttl = get_settings().token_max_ttl if args.ttl == "max" else args.ttl
    try:
        print(tokens.mint(args.user, ttl_seconds=ttl))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return 0


def _cmd_jobs(args: argparse.Namespace) -> int:
    """The job queue at a glance (PostgreSQL): counts, the dead-lettered jobs; requeue them."""
    letters = services().dead_letters
    if letters is None:
        raise UsageError(
            "the SQS job queue's dead-letter queue is handled with AWS's tools (the SQS "
            "console's 'Start DLQ redrive', or aws sqs start-message-move-task); this command "
            "is for UCS_STATE_BACKEND=postgres"
        )
    requeued = None
    if args.requeue_dead is not None:
        ids = args.requeue_dead
        bad = [i for i in ids if not i.isdigit()]
        if bad:
            raise UsageError(f"job ids are numbers (see 'jobs' without options), got {bad}")
        requeued = letters.requeue_dead(ids or None)
    counts = letters.counts()
    dead = [
        {
            "job_id": job.job_id,
            "body": job.body,
            "receive_count": job.receive_count,
            "created": job.created.isoformat(),
            "last_error": job.last_error,
        }
        for job in letters.dead_jobs(args.limit)
    ]
    report: dict[str, object] = {
        "visible": counts.visible,
        "in_flight": counts.in_flight,
        "dead": counts.dead,
        "dead_jobs": dead,
    }
    if requeued is not None:
        report["requeued"] = requeued
    print(json.dumps(report, indent=2))
    return 0


def _ttl(value: str) -> int | str:
    """``--ttl``: seconds, or ``max`` for the longest lifetime ``UCS_TOKEN_MAX_TTL`` allows."""
    if value == "max":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("must be an integer number of seconds or 'max'") from None


def _non_empty(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ucs_lambda.admin", description="Operator commands for the UCS/DRS3."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("create-resources", help="create tables, buckets and queue (idempotent)")
    p.set_defaults(func=_cmd_create_resources)

    p = sub.add_parser("register-file", help="register a file for upload")
    p.add_argument("--file-id", required=True, type=_non_empty)
    p.add_argument("--file-name", required=True, type=_non_empty)
    p.add_argument("--size", required=True, type=int, help="size in bytes (0..5 TiB)")
    p.add_argument("--md5", required=True, help="hex MD5 of the whole file")
    p.add_argument("--grouping-label", default="")
    p.add_argument("--format", default=None, help="default: the file name's extension")
    p.add_argument(
        "--submitter",
        required=True,
        action="append",
        type=_non_empty,
        help="user id allowed to upload (repeatable)",
    )
    p.add_argument("--reader", action="append", type=_non_empty, help="user id allowed to download")
    p.set_defaults(func=_cmd_register_file)

    p = sub.add_parser(
        "register-files",
        help="register many files from a TSV (file_id, file_name, size, md5 per line)",
    )
    p.add_argument("--from", dest="source", required=True, metavar="FILE")
    p.add_argument("--submitter", required=True, action="append", type=_non_empty)
    p.add_argument("--reader", action="append", type=_non_empty)
    p.set_defaults(func=_cmd_register_files)

    p = sub.add_parser("grant", help="grant download access to a file")
    p.add_argument("--file-id", required=True, type=_non_empty)
    p.add_argument("--user", required=True, type=_non_empty)
    p.set_defaults(func=_cmd_grant)

    p = sub.add_parser(
        "jobs",
        help="the job queue (PostgreSQL): counts and dead-lettered jobs, as JSON",
        description="Counts of visible, in-flight and dead-lettered jobs and the dead jobs "
        "(UCS_STATE_BACKEND=postgres). A job is dead-lettered after UCS_JOB_MAX_RECEIVES "
        "deliveries without success; fix the cause (the worker's log names the job), then "
        "send it again with --requeue-dead.",
    )
    p.add_argument(
        "--requeue-dead",
        nargs="*",
        metavar="JOB_ID",
        default=None,
        help="make these dead jobs (all, when no id is given) ready again",
    )
    p.add_argument("--limit", type=int, default=100, help="dead jobs listed (default 100)")
    p.set_defaults(func=_cmd_jobs)

    p = sub.add_parser("mint-token", help="print a bearer token for a user")
    p.add_argument("--user", required=True, type=_non_empty)
    p.add_argument(
        "--ttl",
        type=_ttl,
        default=3600,
        help="lifetime in seconds (default 3600; at most UCS_TOKEN_MAX_TTL, 'max' for that; "
        "zero or negative: an expired token, for tests)",
    )
    p.set_defaults(func=_cmd_mint_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        apply_stack_env()
        return int(args.func(args))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 3
    except (ClientError, BotoCoreError, PynamoDBException) as exc:
        print(f"AWS error: {exc}", file=sys.stderr)
        return 4
    except StoreError as exc:
        print(f"database error: {exc}", file=sys.stderr)
        return 4


if __name__ == "__main__":
    sys.exit(main())
