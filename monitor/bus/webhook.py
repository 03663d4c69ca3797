"""A minimal webhook sink for ``dfmon sinks`` until monitor/sinks/ (issue 17) has its own.

The interface :mod:`monitor.bus.consumer` needs is :class:`BusSink`: a name, which
events it wants, and ``deliver(event, key)`` that returns once the receiver took the
event or raises :class:`DeliveryFailed`. Queueing and retries are the consumer's; the
sink only makes one attempt. The POST carries the idempotency key as ``webhook-id``
(Standard Webhooks), signed when ``DFMON_WEBHOOK_SECRET`` (``whsec_`` + base64) is set.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from monitor.errors import ConfigError, MonitorError
from monitor.events import dumps

SECRET_ENV = "DFMON_WEBHOOK_SECRET"
TIMEOUT_S = 10.0


class DeliveryFailed(MonitorError):
    """One delivery attempt failed; ``retryable`` says whether trying again can help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class BusSink(Protocol):
    name: str

    def wants(self, event: dict[str, Any]) -> bool: ...
    async def deliver(self, event: dict[str, Any], key: str) -> None: ...
    async def aclose(self) -> None: ...


def _secret_key(secret: str) -> bytes:
    if not secret.startswith("whsec_"):
        raise ConfigError(f"{SECRET_ENV} must be whsec_ followed by base64")
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError as exc:
        raise ConfigError(f"{SECRET_ENV} is not valid base64 after whsec_") from exc


class WebhookSink:
    """POSTs each wanted event as JSON to ``url``."""

    def __init__(self, url: str, *, events: list[str], secret: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"webhook target must be http(s)://..., not {url!r}")
        self.url = url
        self.name = f"webhook:{url}"
        self.events = set(events)
        self._key = _secret_key(secret) if secret else None
        self._http: aiohttp.ClientSession | None = None

    def wants(self, event: dict[str, Any]) -> bool:
        return "*" in self.events or event.get("type") in self.events

    def _headers(self, key: str, body: bytes) -> dict[str, str]:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "webhook-id": key,
            "webhook-timestamp": timestamp,
        }
        if self._key is not None:
            signed = f"{key}.{timestamp}.".encode() + body
            mac = hmac.new(self._key, signed, hashlib.sha256).digest()
            headers["webhook-signature"] = "v1," + base64.b64encode(mac).decode()
        return headers

    async def deliver(self, event: dict[str, Any], key: str) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        body = dumps(event).encode()
        try:
            async with self._http.post(
                self.url, data=body, headers=self._headers(key, body)
            ) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise DeliveryFailed(f"{self.url}: {reason}", retryable=True) from exc
        if 200 <= status < 300:
            return
        retryable = status >= 500 or status in (408, 429)
        raise DeliveryFailed(f"{self.url} answered {status}", retryable=retryable)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


def parse_sink(spec: str, *, events: list[str]) -> BusSink:
    """``webhook:URL`` (the ``--sink KIND:TARGET`` form of issue 17)."""
    kind, _, target = spec.partition(":")
    if kind != "webhook" or not target:
        raise ConfigError(f"--sink {spec!r}: only webhook:URL is available to dfmon sinks yet")
    return WebhookSink(target, events=events, secret=os.environ.get(SECRET_ENV) or None)
