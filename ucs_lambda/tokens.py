"""Bearer tokens: HS256 JWTs with ``sub`` (user id), ``iat`` and ``exp`` (and ``aud``/``iss``
when ``UCS_TOKEN_AUDIENCE``/``UCS_TOKEN_ISSUER`` are set); the profile is in the README.

``UCS_TOKEN_KEYS`` holds comma-separated secrets: the first signs, all verify, so keys can be
rotated without invalidating tokens in flight. In a deployment the keys can instead live in an
SSM SecureString parameter named by ``UCS_TOKEN_KEYS_PARAMETER`` (cached for five minutes).
Tokens are never logged.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import jwt

from .config import ConfigError, Settings, get_settings
from .domain.claims import TokenPolicy, check_claims
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


def _policy(settings: Settings | None = None) -> TokenPolicy:
    """The configured token profile (lifetime cap, leeway for ``iat``/``nbf``)."""
    s = settings or get_settings()
    return TokenPolicy(max_ttl=s.token_max_ttl, leeway=s.token_leeway)


def mint(user_id: str, ttl_seconds: int = 3600, key: str | None = None) -> str:
    """A signed token for ``user_id`` valid for ``ttl_seconds``, with ``aud``/``iss`` when set.

    A zero or negative ``ttl_seconds`` gives an already expired token (to test expiry); more
    than ``UCS_TOKEN_MAX_TTL`` raises ``ValueError``: the service would refuse such a token.
    """
    if not user_id:
        raise ValueError("user id must not be empty")
    settings = get_settings()
    if ttl_seconds > settings.token_max_ttl:
        raise ValueError(
            f"a lifetime (--ttl) of {ttl_seconds} seconds exceeds UCS_TOKEN_MAX_TTL "
            f"({settings.token_max_ttl} seconds): the service would refuse the token"
        )
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + int(ttl_seconds)}
    if settings.token_audience:
        claims["aud"] = settings.token_audience
    if settings.token_issuer:
        claims["iss"] = settings.token_issuer
    return jwt.encode(claims, key or signing_keys()[0], algorithm=ALGORITHM)


def verify(token: str) -> str:
    """The user id of a valid token; raises NotAuthenticated for anything else.

    Only HS256 is accepted (``alg: none`` and asymmetric algorithms are refused), the signature
    must match one of the configured keys, ``aud``/``iss`` must match when configured, and the
    claims must fit the token profile of :mod:`ucs_lambda.domain.claims` (integer ``exp`` and
    ``iat``, ``iat`` not in the future, lifetime capped). PyJWT's own time checks are switched
    off because they accept numeric strings and booleans; ours run after the signature check.
    """
    settings = get_settings()
    required = ["exp", "iat", "sub"]
    if settings.token_audience:
        required.append("aud")
    if settings.token_issuer:
        required.append("iss")
    options = {
        "require": required,
        "verify_exp": False,
        "verify_iat": False,
        "verify_nbf": False,
        "verify_aud": bool(settings.token_audience),
        "verify_iss": bool(settings.token_issuer),
    }
    for key in signing_keys():
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                options=options,  # type: ignore[arg-type]
                audience=settings.token_audience,
                issuer=settings.token_issuer,
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.MissingRequiredClaimError as exc:
            raise NotAuthenticated(f"The token lacks the '{exc.claim}' claim.") from None
        except jwt.InvalidAudienceError:
            raise NotAuthenticated("The token is not meant for this service ('aud').") from None
        except jwt.InvalidIssuerError:
            raise NotAuthenticated("The token comes from an unknown issuer ('iss').") from None
        except jwt.InvalidTokenError:
            raise NotAuthenticated("The token is malformed or invalid.") from None
        return check_claims(claims, time.time(), _policy(settings))
    raise NotAuthenticated("The token signature is not valid.")


def from_header(value: str | None) -> str:
    """The user id from an ``Authorization: Bearer <jwt>`` header value."""
    if not value:
        raise NotAuthenticated("A bearer token is required (Authorization header).")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated("The Authorization header must be 'Bearer <token>'.")
    return verify(token.strip())
