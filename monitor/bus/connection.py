"""Connecting to the bus: the ``--bus`` URL, the key names, and the retry pace.

Every process of a deployment names the same keys through :class:`BusKeys`, so the
layout is written down once:

==============================================  ==========================================
``{p}:events``                                  stream of every event (``MAXLEN ~``)
``{p}:events:call:{call}``                      one call's events (when the offer named it)
``{p}:events:participant:{participant}``        one participant's events
``{p}:events:session:{session}``                one session's events
``{p}:workers``                                 set of registered worker ids
``{p}:worker:{id}``                             a worker's load; expires unless refreshed
``{p}:worker:{id}:sessions``                    hash of a worker's open sessions
``{p}:publisher:{id}``                          last event number a publisher wrote
``{p}:lost:{id}``                               a gateway is ending this worker's sessions
``{p}:delivered:{group}:{key}``                 a sink delivered this idempotency key
==============================================  ==========================================

Keyed streams reuse the entry id of the same event in ``{p}:events``.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from urllib.parse import urlsplit

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from monitor.errors import ConfigError

# What a dropped, refused or stalled connection raises (OSError: what redis-py lets through).
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


def raise_if_cancelled() -> None:
    """Call in an ``except REDIS_DOWN`` of a retry loop: a cancellation that reached redis-py
    while its read timeout expired comes out as a timeout (asyncio.timeout in Python 3.11),
    and retrying would swallow the cancel and keep a stopping process alive."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def check_bus_url(url: str) -> str:
    """``redis://HOST:PORT/DB`` (or ``rediss://`` for TLS); anything else is a ConfigError."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigError(f"--bus must be redis://HOST:PORT/DB, not {url!r}")
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        raise ConfigError(f"--bus {url!r}: {exc}") from exc
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ConfigError(f"--bus {url!r}: the database must be a number, not {db!r}")
    return url


def connect(url: str, *, socket_timeout_s: float = 5.0):  # -> redis.asyncio.Redis
    """A client for ``url`` that fails fast instead of retrying on its own.

    The callers retry at their own pace (:class:`Backoff`), knowing what a retry means
    for them (the publisher's retries are idempotent, a reader resumes from its last id).
    """
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return redis.asyncio.Redis.from_url(
        check_bus_url(url),
        decode_responses=True,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=min(socket_timeout_s, 2.0),
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


@dataclass(frozen=True)
class BusKeys:
    prefix: str = "dfmon"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    def call(self, call: str) -> str:
        return f"{self.prefix}:events:call:{call}"

    def participant(self, participant: str) -> str:
        return f"{self.prefix}:events:participant:{participant}"

    def session(self, session: str) -> str:
        return f"{self.prefix}:events:session:{session}"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def worker(self, worker: str) -> str:
        return f"{self.prefix}:worker:{worker}"

    def worker_sessions(self, worker: str) -> str:
        return f"{self.prefix}:worker:{worker}:sessions"

    def publisher(self, publisher: str) -> str:
        return f"{self.prefix}:publisher:{publisher}"

    def lost(self, worker: str) -> str:
        return f"{self.prefix}:lost:{worker}"

    def delivered(self, group: str, key: str) -> str:
        return f"{self.prefix}:delivered:{group}:{key}"


class Backoff:
    """Exponential backoff with full jitter: 0.1 s doubling up to ``cap_s``."""

    def __init__(self, first_s: float = 0.1, cap_s: float = 2.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        ceiling = min(self.cap_s, self.first_s * 2 ** (self.failures - 1))
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0
