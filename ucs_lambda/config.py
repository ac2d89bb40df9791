"""Settings, read from the environment on every use.

Why lazily: ``chalice.test.Client`` swaps ``os.environ`` in only for the duration of a request,
and the Lambda runtime may reuse a module across invocations, so nothing is frozen at import
time (the one exception is the SQS queue name that Chalice's decorator needs; see ``app.py``).

Operator processes (``admin``, ``worker``) may additionally fill unset variables from the local
stack file (``.stack/stack.json`` or ``$UCS_STACK_FILE``), see :func:`apply_stack_env`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

MiB = 1024 * 1024

#: Host of ``self_uri`` and the service-info id where nothing is configured: only outside a
#: deployment (local stack, tests). Deployments must set ``UCS_DRS_HOSTNAME`` (issue 11).
LOCAL_DRS_HOSTNAME = "127.0.0.1"

#: One DNS label (an IPv4 address is four of them): what a ``drs://`` host may consist of.
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

#: Longest token lifetime (``exp - iat``) accepted by default: a day bounds what a leaked token
#: is worth, and covers an overnight batch (the client re-reads ``--token-file`` after a 401).
DEFAULT_TOKEN_MAX_TTL = 24 * 3600


class ConfigError(Exception):
    """A configuration value is missing or malformed (operator error, not client error)."""


_N = TypeVar("_N", int, float)


def _number(name: str, default: _N, kind: Callable[[str], _N], what: str) -> _N:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from None


def _int(name: str, default: int) -> int:
    return _number(name, default, int, "an integer")


def _float(name: str, default: float) -> float:
    return _number(name, default, float, "a number")


def _int_in(name: str, default: int, low: int, high: int | None = None) -> int:
    """An integer setting with a range (limits, lifetimes, windows make no sense outside it)."""
    value = _int(name, default)
    if value < low or (high is not None and value > high):
        wanted = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name} must be {wanted}, got {value}")
    return value


def _str(name: str, default: str) -> str:
    raw = os.environ.get(name)
    return raw if raw else default


def _opt(name: str) -> str | None:
    raw = os.environ.get(name)
    return raw if raw else None


@dataclass(frozen=True)
class Settings:
    """One consistent snapshot of the configuration (see docs/CONTRACTS.md for meanings)."""

    files_table: str
    uploads_table: str
    inbox_bucket: str
    permanent_bucket: str
    outbox_bucket: str
    job_queue: str
    region: str
    s3_endpoint: str | None
    dynamodb_endpoint: str | None
    sqs_endpoint: str | None
    presign_ttl: int
    part_size: int
    min_part_size: int
    copy_part_size: int
    copy_concurrency: int
    single_copy_max: int
    segment_size: int
    stale_upload_seconds: int
    revalidate_seconds: int
    max_batch_urls: int
    max_batch_files: int
    job_budget_seconds: float
    job_budget_bytes: int
    validate_range_size: int
    validate_concurrency: int
    validate_checkpoint_seconds: float
    validate_lease_seconds: float
    max_body_bytes: int
    outbox_max_age_seconds: int
    staging_timeout_seconds: int
    staging_bytes_per_second: int
    drs_hostname: str | None
    drs_max_bulk_objects: int
    organization_name: str
    organization_url: str
    deployed: bool
    token_max_ttl: int
    token_leeway: int
    token_audience: str | None
    token_issuer: str | None
    upload_attempts_per_window: int
    upload_attempt_window_seconds: int
    state_backend: str = "dynamodb"
    database_url: str | None = None
    database_pool_size: int = 10
    job_visibility_seconds: int = 900
    job_max_receives: int = 10

    @property
    def s3_addressing_style(self) -> str:
        """Path style for custom endpoints (moto, Ceph on an IP), AWS's default otherwise."""
        return "path" if self.s3_endpoint else "auto"

    @property
    def drs_host(self) -> str:
        """The host of ``drs://<host>/<id>`` URIs and of the service-info id.

        Only ever from configuration, never from the request's ``Host`` header, which any
        caller can set (a forged one would otherwise end up in the ``self_uri`` we hand out).
        A deployment without ``UCS_DRS_HOSTNAME`` is refused with a :class:`ConfigError`
        rather than guessing; only local stacks and tests fall back to 127.0.0.1.
        """
        if self.deployed:
            check_deployment(self)
        return check_drs_hostname(self.drs_hostname) if self.drs_hostname else LOCAL_DRS_HOSTNAME


def check_drs_hostname(value: str) -> str:
    """``value`` if it is ``host`` or ``host:port`` (no scheme, path or user); else ConfigError.

    It ends up verbatim in every ``drs://`` URI and the service-info id, so a typo such as
    ``https://drs.example.org/`` is refused when it is first used instead of being handed out.
    """
    host, _, port = value.partition(":")
    valid_host = len(host) <= 253 and all(_LABEL.fullmatch(label) for label in host.split("."))
    valid_port = not port or (port.isascii() and port.isdigit() and 0 < int(port) < 65536)
    if not (valid_host and valid_port) or value.endswith(":"):
        raise ConfigError(
            f"UCS_DRS_HOSTNAME must be a host name or host:port (no scheme or path), got {value!r}"
        )
    return value


def check_deployment(settings: Settings) -> None:
    """Raise :class:`ConfigError` when a deployment lacks a setting it cannot run without.

    Called where a deployment starts (``wsgi.py``); packaging checks the same for every stage
    of ``.chalice/config.json`` (``build/check_stage.py``).
    """
    if not settings.drs_hostname:
        raise ConfigError(
            "UCS_DRS_HOSTNAME is not set: a deployment must configure the public host of its "
            "DRS API (the host of the drs:// URIs it hands out), e.g. drs.example.org"
        )
    check_drs_hostname(settings.drs_hostname)


def in_deployment() -> bool:
    """True inside the AWS Lambda runtime or the WSGI deployment (see ``wsgi.py``).

    The Lambda runtime always sets ``AWS_LAMBDA_FUNCTION_NAME``; ``ucs_lambda.wsgi`` sets
    ``UCS_DEPLOYMENT=wsgi`` when it is imported. Settings that have a local default (only the
    DRS hostname today) are required there.
    """
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or os.environ.get("UCS_DEPLOYMENT"))


def get_settings() -> Settings:
    """Read the current settings from the environment (cheap; call it per use)."""
    return Settings(
        files_table=_str("UCS_FILES_TABLE", "ghga-files"),
        uploads_table=_str("UCS_UPLOADS_TABLE", "ghga-uploads"),
        inbox_bucket=_str("UCS_INBOX_BUCKET", "ghga-inbox"),
        permanent_bucket=_str("UCS_PERMANENT_BUCKET", "ghga-permanent"),
        outbox_bucket=_str("UCS_OUTBOX_BUCKET", "ghga-outbox"),
        job_queue=_str("UCS_JOB_QUEUE", "ghga-jobs"),
        region=_str("AWS_DEFAULT_REGION", _str("AWS_REGION", "us-east-1")),
        s3_endpoint=_opt("AWS_ENDPOINT_URL_S3") or _opt("AWS_ENDPOINT_URL"),
        dynamodb_endpoint=_opt("AWS_ENDPOINT_URL_DYNAMODB") or _opt("AWS_ENDPOINT_URL"),
        sqs_endpoint=_opt("AWS_ENDPOINT_URL_SQS") or _opt("AWS_ENDPOINT_URL"),
        presign_ttl=_int("UCS_PRESIGN_TTL", 900),
        part_size=_int("UCS_PART_SIZE", 16 * MiB),
        min_part_size=_int("UCS_MIN_PART_SIZE", 5 * MiB),
        # Server-side copies (tuned on Ceph RGW, bench/RESULTS.md): one CopyObject up to S3's
        # 5 GiB limit (RGW shares the source's data instead of copying it: 4 GiB in 1.4 s,
        # where parallel UploadPartCopy moves ~260 MiB/s); above it, and for assembling
        # segments, parts of UCS_COPY_PART_SIZE copied UCS_COPY_CONCURRENCY at a time.
        copy_part_size=_int_in("UCS_COPY_PART_SIZE", 64 * MiB, 1),
        copy_concurrency=_int_in("UCS_COPY_CONCURRENCY", 8, 1, 64),
        single_copy_max=_int_in("UCS_SINGLE_COPY_MAX", 5 * 1024 * MiB, 0, 5 * 1024 * MiB),
        # Target size of an upload's segments (whole parts; at most 256 segments per upload):
        # what is left to verify and store after the client's last byte.
        segment_size=_int_in("UCS_SEGMENT_SIZE", 128 * MiB, 1),
        stale_upload_seconds=_int("UCS_STALE_UPLOAD_SECONDS", 7 * 24 * 3600),
        revalidate_seconds=_int("UCS_REVALIDATE_SECONDS", 3600),
        max_batch_urls=_int("UCS_MAX_BATCH_URLS", 1000),
        max_batch_files=_int_in("UCS_MAX_BATCH_FILES", 1000, 1),
        # One budget for every job run (validation, assembly, staging). The job function's
        # Lambda timeout is 900 s (.chalice/config.json): 600 s of reading or copying leave
        # time for the ranges and copy parts in flight, the last checkpoint and the
        # continuation message. The issue-10 names UCS_VALIDATE_BUDGET_* still work.
        job_budget_seconds=_float(
            "UCS_JOB_BUDGET_SECONDS", _float("UCS_VALIDATE_BUDGET_SECONDS", 600.0)
        ),
        job_budget_bytes=_int("UCS_JOB_BUDGET_BYTES", _int("UCS_VALIDATE_BUDGET_BYTES", 0)),
        validate_range_size=_int("UCS_VALIDATE_RANGE_SIZE", 16 * MiB),
        validate_concurrency=_int("UCS_VALIDATE_CONCURRENCY", 8),
        validate_checkpoint_seconds=_float("UCS_VALIDATE_CHECKPOINT_SECONDS", 10.0),
        validate_lease_seconds=_float("UCS_VALIDATE_LEASE_SECONDS", 120.0),
        max_body_bytes=_int("UCS_MAX_BODY_BYTES", 1 * MiB),
        outbox_max_age_seconds=_int("UCS_OUTBOX_MAX_AGE_SECONDS", 7 * 24 * 3600),
        staging_timeout_seconds=_int("UCS_STAGING_TIMEOUT_SECONDS", 3600),
        staging_bytes_per_second=_int("UCS_STAGING_BYTES_PER_SECOND", 200 * MiB),
        drs_hostname=_opt("UCS_DRS_HOSTNAME"),
        drs_max_bulk_objects=_int_in("UCS_DRS_MAX_BULK_OBJECTS", 1000, 1),
        organization_name=_str("UCS_ORGANIZATION_NAME", "GHGA"),
        organization_url=_str("UCS_ORGANIZATION_URL", "https://www.ghga.de"),
        deployed=in_deployment(),
        token_max_ttl=_int_in("UCS_TOKEN_MAX_TTL", DEFAULT_TOKEN_MAX_TTL, 1),
        token_leeway=_int_in("UCS_TOKEN_LEEWAY_SECONDS", 60, 0, 300),
        token_audience=_opt("UCS_TOKEN_AUDIENCE"),
        token_issuer=_opt("UCS_TOKEN_ISSUER"),
        upload_attempts_per_window=_int_in("UCS_UPLOAD_ATTEMPTS_PER_WINDOW", 10, 1),
        upload_attempt_window_seconds=_int_in("UCS_UPLOAD_ATTEMPT_WINDOW_SECONDS", 3600, 1),
        state_backend=_backend(),
        database_url=_opt("UCS_DATABASE_URL"),
        database_pool_size=_int_in("UCS_DATABASE_POOL_SIZE", 10, 1, 1000),
        # The PostgreSQL job queue (UCS_STATE_BACKEND=postgres); SQS's are set on the queue.
        job_visibility_seconds=_int_in("UCS_JOB_VISIBILITY_SECONDS", 900, 1),
        job_max_receives=_int_in("UCS_JOB_MAX_RECEIVES", 10, 1),
    )


#: Where state and jobs live: DynamoDB + SQS (AWS, the serverless default) or PostgreSQL.
STATE_BACKENDS = ("dynamodb", "postgres")


def _backend() -> str:
    value = _str("UCS_STATE_BACKEND", "dynamodb").strip().lower()
    if value not in STATE_BACKENDS:
        raise ConfigError(
            f"UCS_STATE_BACKEND must be one of {', '.join(STATE_BACKENDS)}, got {value!r}"
        )
    if value == "postgres" and not _opt("UCS_DATABASE_URL"):
        raise ConfigError(
            "UCS_STATE_BACKEND=postgres needs UCS_DATABASE_URL, e.g. "
            "postgresql://ghga@db.example.org:5432/ghga?sslmode=verify-full"
        )
    return value


def stack_file_path() -> Path:
    """Where the local stack describes itself (``$UCS_STACK_FILE`` or ``.stack/stack.json``)."""
    return Path(os.environ.get("UCS_STACK_FILE") or Path.cwd() / ".stack" / "stack.json")


def apply_stack_env() -> Path | None:
    """Fill *unset* environment variables from the local stack file's ``env`` dict.

    Only operator processes call this (admin, worker), so a deployed Lambda never reads files
    from its working directory. Explicit environment variables always win. Returns the file
    used, or None when there is none.
    """
    path = stack_file_path()
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read stack file {path}: {exc}") from None
    env = doc.get("env") if isinstance(doc, dict) else None
    if not isinstance(env, dict):
        raise ConfigError(f"stack file {path} has no 'env' object")
    for key, value in env.items():
        if isinstance(key, str) and value is not None and not os.environ.get(key):
            os.environ[key] = str(value)
    return path
