"""Helpers for tests that need the local Ceph RGW started by ``build/ceph-up.sh``.

``make ceph-up`` (or ``build/ceph-up.sh``) writes ``<repo>/.ceph/ceph.json`` (``CEPH_DIR``
overrides the directory) with ``endpoint_url``, ``access_key``, ``secret_key``, ``region`` and
the daemon ``pids``. Tests call :func:`require_ceph` to get that configuration or be skipped.

Set ``CEPH_REQUIRED=1`` (CI) to make a missing cluster a test *failure* instead of a skip.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PROJECT_DIR

REPO = PROJECT_DIR
SKIP_REASON = "Ceph RGW not running: run `make ceph-up` (needs root and Debian's ceph packages)"


def ceph_dir() -> Path:
    """The cluster directory: ``$CEPH_DIR`` or ``<repo>/.ceph``."""
    d = os.environ.get("CEPH_DIR")
    return Path(d).resolve() if d else REPO / ".ceph"


def read_ceph_json() -> dict[str, Any] | None:
    """The parsed ``ceph.json``, or None if it is missing or unreadable."""
    try:
        with open(ceph_dir() / "ceph.json", encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return None
    needed = ("endpoint_url", "access_key", "secret_key", "region")
    if not isinstance(cfg, dict) or not all(cfg.get(k) for k in needed):
        return None
    return cfg


def rgw_answers(endpoint_url: str, timeout: float = 3.0) -> bool:
    """True if an HTTP server answers on ``endpoint_url`` (any status counts)."""
    try:
        with urllib.request.urlopen(endpoint_url.rstrip("/") + "/", timeout=timeout) as r:
            r.read(0)
        return True
    except urllib.error.HTTPError:
        return True  # it answered, e.g. 403
    except (OSError, ValueError):
        return False


def ceph_config() -> dict[str, Any] | None:
    """``ceph.json`` if the cluster it describes answers on its endpoint, else None.

    Keys: endpoint_url, access_key, secret_key, region, pids (and daemons, store, ceph_dir,
    ceph_conf from build/ceph-up.sh).
    """
    cfg = read_ceph_json()
    if cfg is None or not rgw_answers(cfg["endpoint_url"]):
        return None
    return cfg


def require_ceph() -> dict[str, Any]:
    """Return :func:`ceph_config` or skip the test (fail if ``CEPH_REQUIRED=1``)."""
    cfg = ceph_config()
    if cfg is None:
        if os.environ.get("CEPH_REQUIRED") == "1":
            pytest.fail(SKIP_REASON + f" [CEPH_REQUIRED=1, looked in {ceph_dir()}]")
        pytest.skip(SKIP_REASON)
    return cfg


def s3_client(cfg: dict[str, Any] | None = None, **config: Any) -> Any:
    """A boto3 S3 client for the cluster: SigV4, path-style addressing.

    Extra keyword arguments go to ``botocore.config.Config``.
    """
    import boto3  # only the server/test environment has boto3
    from botocore.config import Config

    cfg = cfg or require_ceph()
    return boto3.client(
        "s3",
        endpoint_url=cfg["endpoint_url"],
        aws_access_key_id=cfg["access_key"],
        aws_secret_access_key=cfg["secret_key"],
        region_name=cfg["region"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, **config),
    )


def s3_env(cfg: dict[str, Any] | None = None) -> dict[str, str]:
    """Environment variables pointing boto3/botocore (and the AWS CLI) at the cluster."""
    cfg = cfg or require_ceph()
    return {
        "AWS_ENDPOINT_URL_S3": cfg["endpoint_url"],
        "AWS_ACCESS_KEY_ID": cfg["access_key"],
        "AWS_SECRET_ACCESS_KEY": cfg["secret_key"],
        "AWS_DEFAULT_REGION": cfg["region"],
    }
