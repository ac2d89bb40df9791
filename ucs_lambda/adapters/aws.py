"""boto3 clients, built once per (service, region, endpoint) and shared.

Creating a botocore client costs tens of milliseconds, and clients are thread-safe, so they are
cached; the cache key includes everything read from the environment so a changed configuration
(tests, the local stack) gets a fresh client.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

from ..config import Settings

_lock = threading.Lock()
_clients: dict[tuple[Any, ...], Any] = {}
_session: boto3.session.Session | None = None


def _shared_session() -> boto3.session.Session:
    """One boto3 session: its loaders cache the service models (a new one costs ~60 ms)."""
    global _session
    if _session is None:
        _session = boto3.session.Session()
    return _session


def _endpoint(settings: Settings, service: str) -> str | None:
    return {
        "s3": settings.s3_endpoint,
        "dynamodb": settings.dynamodb_endpoint,
        "sqs": settings.sqs_endpoint,
    }.get(service)


def client(service: str, settings: Settings) -> Any:
    """A cached boto3 client for ``service`` configured from ``settings``.

    S3 clients sign with SigV4 (presigned URLs must work on AWS, Ceph RGW and moto alike) and
    use path-style addressing when an endpoint is configured (buckets on ``127.0.0.1``).
    """
    endpoint = _endpoint(settings, service)
    key = (service, settings.region, endpoint)
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(key)
        if found is None:
            extra: dict[str, Any] = {}
            if service == "s3":
                extra = {
                    "signature_version": "s3v4",
                    "s3": {"addressing_style": settings.s3_addressing_style},
                }
            config = Config(
                retries={"max_attempts": 5, "mode": "standard"},
                # A job run keeps UCS_VALIDATE_CONCURRENCY ranged GETs and UCS_COPY_CONCURRENCY
                # part copies in flight (8 + 8); the worker runs up to 4 jobs by default.
                max_pool_connections=64,
                **extra,
            )
            found = _shared_session().client(
                service, region_name=settings.region, endpoint_url=endpoint, config=config
            )
            _clients[key] = found
    return found


def reset() -> None:
    """Forget cached clients (tests switch moto backends and credentials)."""
    global _session
    with _lock:
        _clients.clear()
        _session = None
