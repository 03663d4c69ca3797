"""Standard Webhooks signatures (https://www.standardwebhooks.com/), both sides.

A delivery carries three headers: ``webhook-id`` (the idempotency key: the same for every
retry of one message), ``webhook-timestamp`` (integer Unix seconds) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256>`` entries, space-separated, of
``"{id}.{timestamp}.{body}"``). The secret is written ``whsec_<base64>``; the HMAC key is
the decoded bytes. A receiver recomputes the HMAC over the *raw* body, compares in
constant time, and rejects timestamps more than five minutes from its clock, so a
captured delivery cannot be replayed later.

Receivers can copy :func:`verify_webhook`; ``dfmon verify-webhook`` wraps it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

from monitor.errors import ConfigError, InputError

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
TOLERANCE_S = 5 * 60
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


class WebhookVerificationError(InputError):
    """A delivery whose headers, timestamp or signature do not check out (answer 401)."""


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise ConfigError(f"a webhook secret must look like {SECRET_PREFIX}<base64>")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error as exc:
        raise ConfigError(f"the webhook secret after {SECRET_PREFIX} is not base64") from exc
    if len(key) < 16:
        raise ConfigError("the webhook secret is too short (at least 16 bytes of key)")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one message."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signed_headers(
    key: bytes, msg_id: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(key, msg_id, timestamp, body),
    }


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance_s: float = TOLERANCE_S,
) -> str:
    """Check one delivery; return its ``webhook-id`` or raise :class:`WebhookVerificationError`.

    ``headers`` is looked up by lower-case name (aiohttp's and most frameworks' header
    objects are case-insensitive already); ``body`` is the raw request body.
    """
    key = decode_secret(secret)
    lowered = {k.lower(): v for k, v in headers.items()}
    missing = [h for h in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER) if not lowered.get(h)]
    if missing:
        raise WebhookVerificationError(f"missing header {', '.join(missing)}")
    msg_id, stamp = lowered[ID_HEADER], lowered[TIMESTAMP_HEADER]
    if not stamp.isdigit():
        raise WebhookVerificationError(f"{TIMESTAMP_HEADER} {stamp!r} is not Unix seconds")
    skew = (time.time() if now is None else now) - int(stamp)
    if abs(skew) > tolerance_s:
        when = "old" if skew > 0 else "in the future"
        raise WebhookVerificationError(
            f"{TIMESTAMP_HEADER} is {abs(skew):.0f} s {when} (tolerance {tolerance_s:.0f} s)"
        )
    expected = sign(key, msg_id, int(stamp), body).encode()
    presented = lowered[SIGNATURE_HEADER].split()
    if not any(hmac.compare_digest(candidate.encode(), expected) for candidate in presented):
        raise WebhookVerificationError("no signature matches the body and the secret")
    return msg_id
