"""``dfmon sinks``: the alert sinks as Redis consumer groups on the stream of every event.

Each sink has its own group (``{sink_group}:{sink name}``), so a slow or dead receiver
holds back only itself. An entry is acknowledged (``XACK``) only once its sink took it;
until then it stays pending in the group. So a sinks process that crashes resumes where
it stopped: under the same consumer name it first re-reads its own pending entries;
pending entries of consumers that stay away longer than ``claim_idle_s`` are taken over
with ``XAUTOCLAIM``.

Nothing is delivered twice under the same idempotency key (``SESSION.SEQ``, the event's
place in its session, else the entry id): a delivered key is recorded in Redis together
with the ``XACK``, atomically, and a key found there is acknowledged without delivery.
The one remaining gap is a crash after the receiver answered and before that record:
the event is delivered again with the same key, which a receiver drops (the key is
Standard Webhooks' ``webhook-id``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from typing import Any

from redis.exceptions import ResponseError

from monitor.bus.connection import REDIS_DOWN, Backoff, BusKeys, raise_if_cancelled
from monitor.bus.webhook import BusSink, DeliveryFailed
from monitor.config import BusConfig

log = logging.getLogger(__name__)

READ_COUNT = 100
BLOCK_MS = 1000


def idempotency_key(event: dict[str, Any], entry_id: str) -> str:
    session, seq = event.get("session"), event.get("seq")
    if isinstance(session, str) and isinstance(seq, int):
        return f"{session}.{seq}"
    return entry_id


class SinkConsumer:
    """Feeds one sink from its consumer group until cancelled."""

    def __init__(self, redis: Any, config: BusConfig, sink: BusSink, *, consumer: str) -> None:
        self.redis = redis
        self.config = config
        self.sink = sink
        self.consumer = consumer
        self.keys = BusKeys(config.prefix)
        self.group = f"{config.sink_group}:{sink.name}"
        self.counts: Counter[str] = Counter()

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self._ensure_group()
                await self._consume(backoff)
            except REDIS_DOWN as exc:
                raise_if_cancelled()
                self.counts["bus_errors"] += 1
                log.warning("sink %s: Redis unreachable (%s); retrying", self.sink.name, exc)
                await asyncio.sleep(backoff.next_delay())

    async def _ensure_group(self) -> None:
        try:  # a new group starts at the end: history is not alerted again
            await self.redis.xgroup_create(self.keys.events, self.group, id="$", mkstream=True)
            log.info("sink %s: created consumer group %s", self.sink.name, self.group)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _consume(self, backoff: Backoff) -> None:
        # What this consumer read and did not acknowledge before (a crash), first.
        while entries := await self._read("0"):
            await self._handle_all(entries)
        backoff.reset()
        loop = asyncio.get_running_loop()
        next_claim = loop.time()
        while True:
            if loop.time() >= next_claim:
                await self._claim_abandoned()
                next_claim = loop.time() + self.config.claim_idle_s / 2
            await self._handle_all(await self._read(">", block_ms=BLOCK_MS))

    async def _read(self, start: str, *, block_ms: int | None = None) -> list[tuple[str, dict]]:
        reply = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            {self.keys.events: start},
            count=READ_COUNT,
            block=block_ms,
        )
        return [entry for _, entries in reply or [] for entry in entries]

    async def _claim_abandoned(self) -> None:
        start = "0-0"
        idle_ms = int(self.config.claim_idle_s * 1000)
        while True:
            next_start, entries, *_ = await self.redis.xautoclaim(
                self.keys.events, self.group, self.consumer, idle_ms, start, count=READ_COUNT
            )
            if entries:
                self.counts["claimed"] += len(entries)
                log.info("sink %s: took over %d pending entries", self.sink.name, len(entries))
                await self._handle_all(entries)
            if next_start == "0-0":
                return
            start = next_start

    async def _handle_all(self, entries: list[tuple[str, dict]]) -> None:
        for entry_id, fields in entries:
            await self._handle(entry_id, fields)

    async def _handle(self, entry_id: str, fields: dict | None) -> None:
        try:
            event = json.loads(fields["event"]) if fields else None
        except (KeyError, ValueError):
            event = None
        if not isinstance(event, dict) or not self.sink.wants(event):
            await self.redis.xack(self.keys.events, self.group, entry_id)  # trimmed or unwanted
            return
        key = idempotency_key(event, entry_id)
        marker = self.keys.delivered(self.group, key)
        if await self.redis.exists(marker):
            self.counts["repeats_skipped"] += 1
        else:
            await self._deliver(event, key)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(marker, entry_id, ex=int(self.config.delivered_ttl_s))
            pipe.xack(self.keys.events, self.group, entry_id)
            await pipe.execute()

    async def _deliver(self, event: dict[str, Any], key: str) -> None:
        """Try until the sink takes it; a permanent refusal is logged and counted."""
        backoff = Backoff(first_s=0.2, cap_s=30.0)
        while True:
            try:
                await self.sink.deliver(event, key)
                self.counts["delivered"] += 1
                return
            except DeliveryFailed as exc:
                raise_if_cancelled()  # aiohttp, too, may turn a cancel into a timeout
                if not exc.retryable:
                    self.counts["rejected"] += 1
                    log.error("sink %s refused %s for good: %s", self.sink.name, key, exc)
                    return
                self.counts["retries"] += 1
                if backoff.failures == 0:
                    log.warning("sink %s: %s; retrying %s", self.sink.name, exc, key)
                await asyncio.sleep(backoff.next_delay())
