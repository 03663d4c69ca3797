"""Bearer tokens (RFC 6750), the one implementation both servers use.

The WHIP ingest (:mod:`monitor.live.whip`) and the alert websocket
(:mod:`monitor.sinks.websocket`) read ``Authorization: Bearer TOKEN`` the same way and
compare it in constant time, so a token accepted by one is accepted by the other.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

REALM = "dfmon"


def bearer_token(authorization: str | None) -> str | None:
    """The credentials of an ``Authorization: Bearer TOKEN`` header value, or None.

    The scheme is case-insensitive (RFC 7235); an empty token counts as none.
    """
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


def matching_token(presented: Iterable[str | None], accepted: Iterable[str]) -> str | None:
    """The accepted token that one of ``presented`` equals (constant-time), or None."""
    candidates = [p.encode() for p in presented if p]
    for token in accepted:
        expected = token.encode()
        # Compare against every candidate, so timing does not tell which one matched.
        if any([hmac.compare_digest(c, expected) for c in candidates]):
            return token
    return None


def bearer_challenge(*, invalid: bool) -> str:
    """The ``WWW-Authenticate`` value of a 401: ``invalid`` when a wrong token was sent."""
    return f'Bearer realm="{REALM}"' + (', error="invalid_token"' if invalid else "")
