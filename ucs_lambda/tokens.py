"""Bearer tokens: HS256 JWTs with ``sub`` (user id), ``iat`` and ``exp``.

``UCS_TOKEN_KEYS`` holds comma-separated secrets: the first signs, all verify, so keys can be
rotated without invalidating tokens in flight. In a deployment the keys can instead live in an
SSM SecureString parameter named by ``UCS_TOKEN_KEYS_PARAMETER`` (cached for five minutes).
Tokens are never logged.
"""

from __future__ import annotations

import os
import threading
import time

import jwt

from .config import ConfigError, get_settings
from .domain.errors import NotAuthenticated

ALGORITHM = "HS256"
_SSM_CACHE_SECONDS = 300
_ssm_cache: dict[str, tuple[float, list[str]]] = {}
_lock = threading.Lock()


def _split(raw: str) -> list[str]:
    return [k.strip() for k in raw.split(",") if k.strip()]


def signing_keys() -> list[str]:
    """The configured keys, first = signing key. Raises ConfigError when there are none."""
    raw = os.environ.get("UCS_TOKEN_KEYS", "")
    keys = _split(raw)
    if keys:
        return keys
    param = os.environ.get("UCS_TOKEN_KEYS_PARAMETER")
    if param:
        return _keys_from_ssm(param)
    raise ConfigError("UCS_TOKEN_KEYS is not set: no key to sign or verify tokens")


def _keys_from_ssm(name: str) -> list[str]:
    now = time.monotonic()
    cached = _ssm_cache.get(name)
    if cached and now - cached[0] < _SSM_CACHE_SECONDS:
        return cached[1]
    from .adapters import aws  # deferred: only deployments use SSM

    resp = aws.client("ssm", get_settings()).get_parameter(Name=name, WithDecryption=True)
    keys = _split(str(resp["Parameter"]["Value"]))
    if not keys:
        raise ConfigError(f"SSM parameter {name} holds no token keys")
    with _lock:
        _ssm_cache[name] = (now, keys)
    return keys


def mint(user_id: str, ttl_seconds: int = 3600, key: str | None = None) -> str:
    """A signed token for ``user_id`` valid for ``ttl_seconds``.

    A zero or negative ``ttl_seconds`` gives an already expired token (to test expiry).
    """
    if not user_id:
        raise ValueError("user id must not be empty")
    now = int(time.time())
    claims = {"sub": user_id, "iat": now, "exp": now + int(ttl_seconds)}
    return jwt.encode(claims, key or signing_keys()[0], algorithm=ALGORITHM)


def verify(token: str) -> str:
    """The user id of a valid token; raises NotAuthenticated for anything else.

    Only HS256 is accepted (``alg: none`` and asymmetric algorithms are refused), ``exp`` and
    ``sub`` are required, and the signature must match one of the configured keys. ``exp`` is
    checked without leeway; ``iat`` is not checked, so a minting machine whose clock runs a
    little ahead does not produce tokens that are "not yet valid".
    """
    keys = signing_keys()
    for key in keys:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "sub"], "verify_iat": False},
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.ExpiredSignatureError:
            raise NotAuthenticated("The token has expired.") from None
        except jwt.InvalidTokenError:
            raise NotAuthenticated("The token is malformed or invalid.") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise NotAuthenticated("The token names no user.")
        return sub
    raise NotAuthenticated("The token signature is not valid.")


def from_header(value: str | None) -> str:
    """The user id from an ``Authorization: Bearer <jwt>`` header value."""
    if not value:
        raise NotAuthenticated("A bearer token is required (Authorization header).")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated("The Authorization header must be 'Bearer <token>'.")
    return verify(token.strip())
