"""Redirect tickets: how a worker admits an offer the gateway already authenticated.

HTTP clients drop ``Authorization`` when a redirect leads to another origin (the
Fetch standard, aiohttp, curl), and a worker is another origin than the gateway. So
the gateway checks the bearer token, then puts a ticket in the ``Location`` it
redirects to: ``EXPIRES.NONCE.MAC``, the MAC an HMAC-SHA256 of the worker id, the
expiry and the nonce under a key derived from the shared token. The worker accepts a
ticket once, before it expires, and only if it names this worker.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

# Nonces remembered against replay; tickets live seconds, so this is never reached in use.
MAX_REMEMBERED = 100_000


def _key(token: str) -> bytes:
    return hashlib.sha256(b"dfmon whip redirect ticket\n" + token.encode()).digest()


def _mac(token: str, worker: str, expires: int, nonce: str) -> str:
    message = f"{worker}\n{expires}\n{nonce}".encode()
    digest = hmac.new(_key(token), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue_ticket(token: str, worker: str, ttl_s: float, *, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + ttl_s)
    nonce = secrets.token_urlsafe(12)
    return f"{expires}.{nonce}.{_mac(token, worker, expires, nonce)}"


class TicketVerifier:
    """A worker's check of the tickets presented to it (single use, unexpired, its own)."""

    def __init__(self, token: str, worker: str) -> None:
        self._token = token
        self._worker = worker
        self._used: dict[str, int] = {}  # nonce -> expiry

    def check(self, ticket: str, *, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        try:
            expires_text, nonce, mac = ticket.split(".")
            expires = int(expires_text)
        except ValueError:
            return False
        expected = _mac(self._token, self._worker, expires, nonce)
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            return False
        if expires < now or nonce in self._used:
            return False
        self._forget_expired(now)
        if len(self._used) >= MAX_REMEMBERED:
            return False
        self._used[nonce] = expires
        return True

    def _forget_expired(self, now: float) -> None:
        for nonce in [n for n, expires in self._used.items() if expires < now]:
            del self._used[nonce]
