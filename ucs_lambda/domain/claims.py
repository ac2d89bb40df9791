"""The token profile: which JWT claims a bearer token must carry, and their limits.

Plain rules on an already signature-checked claims dict, so they can be tested without keys or
clocks. Why each rule:

* ``exp`` and ``iat`` must be JSON integers of at most 10 digits. PyJWT alone accepts numeric
  strings (``"9999999999"``), booleans and numbers of any length (``int()`` on them), which
  makes "how long is this token valid" depend on a parser's leniency.
* ``iat`` must not lie in the future beyond a small leeway (issuer clocks run a little ahead;
  more than that is a forged or broken issuer).
* ``exp - iat`` is capped: a leaked token is worth at most that long, without rotating keys.
* ``sub`` names the user; ``aud``/``iss`` are checked by the JWT library when configured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import NotAuthenticated

#: NumericDate claims are seconds since the epoch: 10 digits reach the year 2286.
MAX_NUMERIC_DATE = 9_999_999_999


@dataclass(frozen=True)
class TokenPolicy:
    """What the operator configured (``UCS_TOKEN_MAX_TTL``, ``UCS_TOKEN_LEEWAY_SECONDS``)."""

    max_ttl: int
    leeway: int


def _numeric_date(claims: dict[str, Any], name: str) -> int | None:
    """The claim as an integer NumericDate, None when absent; NotAuthenticated when malformed."""
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise NotAuthenticated(f"The token's '{name}' claim must be an integer (seconds).")
    if not 0 <= value <= MAX_NUMERIC_DATE:
        raise NotAuthenticated(f"The token's '{name}' claim is out of range.")
    return value


def check_claims(claims: dict[str, Any], now: float, policy: TokenPolicy) -> str:
    """The user id (``sub``) of a token whose times are acceptable at ``now``.

    Raises :class:`NotAuthenticated` with a reason the caller may see (it names no secret).
    """
    exp = _numeric_date(claims, "exp")
    iat = _numeric_date(claims, "iat")
    nbf = _numeric_date(claims, "nbf")
    if exp is None or iat is None:
        raise NotAuthenticated("The token must carry 'exp' and 'iat' claims.")
    if exp <= now:
        raise NotAuthenticated("The token has expired.")
    if iat > now + policy.leeway:
        raise NotAuthenticated("The token was issued in the future ('iat'); check the clocks.")
    if nbf is not None and nbf > now + policy.leeway:
        raise NotAuthenticated("The token is not valid yet ('nbf').")
    if exp <= iat:
        raise NotAuthenticated("The token expires before it was issued.")
    if exp - iat > policy.max_ttl:
        raise NotAuthenticated(
            f"The token's lifetime (exp - iat) exceeds the maximum of {policy.max_ttl} seconds."
        )
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise NotAuthenticated("The token names no user.")
    return sub
