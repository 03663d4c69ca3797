"""``dfmon sinks``: the alert sinks of :mod:`monitor.sinks` as Redis consumer groups.

Every sink (``--sink KIND:TARGET`` or ``[sinks] targets``, built by
:func:`monitor.sinks.build.build_sinks`) reads the stream of every event in a group of its
own, ``{sink_group}:{sink name}``, so a slow or dead receiver holds back only itself.
For each entry:

1. **Notices.** The event gives rise to exactly the notices that ``dfmon serve --sink``
   sends for it in-process (:class:`~monitor.sinks.notices.NoticePolicy`: the selected
   types, one alert per participant per ``throttle_s``, the clear-again notice, the
   idempotency key ``id``). That policy's state is a function of the session's events in
   order, so :class:`SessionNotices` derives it from the stream: it feeds the events of
   each session as it reads them, and where it has not seen a session's earlier events
   (after a restart, for an entry taken over from another consumer, or for entries that
   another consumer of the group read) it reads them from the session's own stream
   (``{p}:events:session:{session}``, the same entry ids). The throttling is the same
   whichever consumer reads which entry, and across crashes.
2. **Delivery.** Each notice goes to the sink's ``deliver`` through
   :func:`~monitor.sinks.delivery.deliver_with_retries` (timeout per attempt, exponential
   backoff with jitter, ``Retry-After``). A retryable failure is never given up: the
   entry stays pending and the attempts go on, as the stream is the durable queue. A
   permanent refusal (a 4xx) goes to the dead-letter file, as in-process.
3. **Acknowledgement.** A delivered notice's id is recorded in Redis
   (``{p}:delivered:{group}:{id}``, kept ``delivered_ttl_s``), and a notice whose id is
   recorded is not sent again. An entry is acknowledged (``XACK``) only once every notice
   it gave rise to is delivered (or dead-lettered).

A process that crashed resumes where it stopped: under the same consumer name it first
re-reads its own pending entries; entries pending for a consumer that has been silent
for ``claim_idle_s`` are taken over with ``XAUTOCLAIM``. A live consumer keeps claiming
the entries it holds (``XCLAIM`` to itself), so a long retry does not make them look
abandoned.

The one gap: a kill after the receiver took a notice and before its id was recorded sends
that notice again when the entry is re-read, under the same id, which the receiver
drops (it is the ``webhook-id``, the CEF ``externalId``, the Graph report's ``id``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from monitor.bus.connection import REDIS_DOWN, Backoff, BusKeys, raise_if_cancelled
from monitor.config import MonitorConfig
from monitor.sinks.delivery import (
    DeadLetter,
    Outcome,
    RetryPolicy,
    Sink,
    deliver_with_retries,
)
from monitor.sinks.fanout import worth_logging
from monitor.sinks.notices import NoticePolicy

log = logging.getLogger(__name__)

READ_COUNT = 100
BLOCK_MS = 1000
RANGE_COUNT = 500  # entries per XRANGE while catching up on a session
MAX_SESSIONS = 4096  # sessions whose notice state is kept in memory (least recent dropped)


def parse_entry(fields: dict[str, str] | None) -> dict[str, Any] | None:
    """The event of a stream entry; None for a trimmed entry or one that holds no event."""
    try:
        event = json.loads(fields["event"]) if fields else None
    except (KeyError, TypeError, ValueError):
        return None
    return event if isinstance(event, dict) else None


@dataclass
class _Cursor:
    """A notice policy fed with a session's events up to (and including) ``last_id``."""

    policy: NoticePolicy
    last_id: str
    next_seq: int


class SessionNotices:
    """The notices of each entry, as one :class:`NoticePolicy` fed with the entry's whole
    session in order gives them, whichever entries of the session this process reads.

    A session's events carry ``seq`` (0, 1, ... on the bus). An entry whose ``seq`` is the
    next one of a cursor is fed to it; a gap is read from the session's stream first; an
    entry behind every cursor (taken over from another consumer) gets a cursor of its
    own, rebuilt from the start of the session's stream. A session keeps two cursors at
    most: the furthest, and the one used last.
    """

    def __init__(
        self,
        redis: Any,
        keys: BusKeys,
        events: Iterable[str],
        interval_s: float,
        *,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.events = tuple(events)
        self.interval_s = interval_s
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, list[_Cursor]] = OrderedDict()
        self.caught_up = 0  # entries read from session streams to rebuild or fill gaps
        self.incomplete = 0  # sessions whose stream no longer held their first events

    def forget(self) -> None:
        """Drop every cursor (e.g. after a lost connection: entries will be re-read)."""
        self._sessions.clear()

    async def notices(self, entry_id: str, event: dict[str, Any]) -> list[dict[str, Any]]:
        seq = event.get("seq")
        if not isinstance(seq, int):  # not written by a dfmon publisher: no session order
            return NoticePolicy(self.events, self.interval_s).process(event)
        session = str(event.get("session", ""))
        cursors = self._sessions.pop(session, [])
        usable = [c for c in cursors if c.next_seq <= seq]
        if usable:
            cursor = max(usable, key=lambda c: c.next_seq)
            if cursor.next_seq < seq:  # entries another consumer read: read them too
                await self._feed(cursor, session, "(" + cursor.last_id, "(" + entry_id)
        else:  # a session new to this process, or an entry behind it: from the start
            cursor = _Cursor(NoticePolicy(self.events, self.interval_s), "0-0", 0)
            if seq > 0 and await self._feed(cursor, session, "-", "(" + entry_id) != 0:
                self.incomplete += 1
                log.warning(
                    "session %s: its stream no longer holds its first events (trimmed or "
                    "expired); its notices are throttled from what the stream still holds",
                    session,
                )
            cursors.append(cursor)
        notices = cursor.policy.process(event)
        cursor.last_id, cursor.next_seq = entry_id, seq + 1
        if event.get("type") != "summary":  # a summary ends the session's notices
            furthest = max(cursors, key=lambda c: c.next_seq)
            self._sessions[session] = [furthest] if furthest is cursor else [furthest, cursor]
            if len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return notices

    async def _feed(self, cursor: _Cursor, session: str, start: str, end: str) -> int | None:
        """Feed ``cursor`` the session's entries from ``start`` to ``end`` (XRANGE bounds);
        return the ``seq`` of the first event read (None: none)."""
        key = self.keys.session(session)
        first: int | None = None
        while True:
            entries = await self.redis.xrange(key, min=start, max=end, count=RANGE_COUNT)
            for entry_id, fields in entries:
                event = parse_entry(fields)
                seq = event.get("seq") if event is not None else None
                if event is None or not isinstance(seq, int):
                    continue
                if first is None:
                    first = seq
                cursor.policy.process(event)
                cursor.last_id, cursor.next_seq = entry_id, seq + 1
                self.caught_up += 1
            if len(entries) < RANGE_COUNT:
                return first
            start = "(" + entries[-1][0]


class SinkConsumer:
    """Feeds one sink from its consumer group until cancelled (see the module doc)."""

    def __init__(
        self,
        redis: Any,
        config: MonitorConfig,
        sink: Sink,
        *,
        consumer: str,
        dead_letter: DeadLetter,
    ) -> None:
        self.redis = redis
        self.bus = config.bus
        self.sink = sink
        self.consumer = consumer
        self.dead_letter = dead_letter
        self.keys = BusKeys(self.bus.prefix)
        self.group = f"{self.bus.sink_group}:{sink.name}"
        self.retry = RetryPolicy.from_config(config.sinks)
        self.notices = SessionNotices(
            redis, self.keys, config.sinks.events, config.sinks.throttle_s
        )
        self.counts: Counter[str] = Counter()
        self._held: set[str] = set()  # entries read and not yet acknowledged
        self._rng = random.Random()

    async def run(self) -> None:
        keeper = asyncio.create_task(self._keep_held(), name=f"sink-keep {self.sink.name}")
        backoff = Backoff()
        try:
            while True:
                try:
                    await self._ensure_group()
                    await self._consume(backoff)
                except REDIS_DOWN as exc:
                    raise_if_cancelled()
                    self.counts["bus_errors"] += 1
                    log.warning("sink %s: Redis unreachable (%s); retrying", self.sink.name, exc)
                    await asyncio.sleep(backoff.next_delay())
                except ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    log.warning("sink %s: group %s is gone; creating it", self.sink.name, exc)
        finally:
            keeper.cancel()

    def stats(self) -> dict[str, int]:
        return {
            **self.counts,
            "caught_up": self.notices.caught_up,
            "incomplete_sessions": self.notices.incomplete,
        }

    async def _ensure_group(self) -> None:
        try:  # a new group starts at the end: history is not alerted again
            await self.redis.xgroup_create(self.keys.events, self.group, id="$", mkstream=True)
            log.info("sink %s: created consumer group %s", self.sink.name, self.group)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _consume(self, backoff: Backoff) -> None:
        # What this consumer read and did not acknowledge before (a crash), first.
        self._held.clear()
        self.notices.forget()
        while entries := await self._read("0"):
            await self._handle_all(entries)
        backoff.reset()
        loop = asyncio.get_running_loop()
        next_claim = loop.time()
        while True:
            if loop.time() >= next_claim:
                await self._claim_abandoned()
                next_claim = loop.time() + self.bus.claim_idle_s / 2
            await self._handle_all(await self._read(">", block_ms=BLOCK_MS))

    async def _read(self, start: str, *, block_ms: int | None = None) -> list[tuple[str, Any]]:
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
        idle_ms = int(self.bus.claim_idle_s * 1000)
        while True:
            next_start, entries, *rest = await self.redis.xautoclaim(
                self.keys.events, self.group, self.consumer, idle_ms, start, count=READ_COUNT
            )
            gone = rest[0] if rest else []  # trimmed while pending (Redis 7 drops them)
            if gone:
                self._count_trimmed(len(gone))
            if entries:
                self.counts["claimed"] += len(entries)
                log.info("sink %s: took over %d pending entries", self.sink.name, len(entries))
                await self._handle_all(entries)
            if next_start == "0-0":
                return
            start = next_start

    async def _keep_held(self) -> None:
        """Claim what this consumer holds to itself again and again (its idle time back to
        0), so that no other consumer takes it over while a delivery is retried."""
        while True:
            await asyncio.sleep(self.bus.claim_idle_s / 3)
            if not self._held:
                continue
            try:
                await self.redis.xclaim(
                    self.keys.events, self.group, self.consumer, 0, list(self._held), justid=True
                )
            except (*REDIS_DOWN, ResponseError):
                raise_if_cancelled()

    async def _handle_all(self, entries: list[tuple[str, Any]]) -> None:
        ids = [entry_id for entry_id, _ in entries]
        self._held.update(ids)
        for entry_id, fields in entries:
            event = parse_entry(fields)
            if event is None:
                if fields is None:
                    self._count_trimmed(1)
                continue
            for notice in await self.notices.notices(entry_id, event):
                await self._deliver(notice)
        if ids:
            await self.redis.xack(self.keys.events, self.group, *ids)
        self._held.difference_update(ids)

    def _count_trimmed(self, count: int) -> None:
        self.counts["trimmed"] += count
        log.error(
            "sink %s: %d pending entries were trimmed from the stream before delivery "
            "(bus.stream_maxlen); their notices, if any, are LOST",
            self.sink.name,
            count,
        )

    async def _deliver(self, notice: dict[str, Any]) -> None:
        """Until the sink takes it (or refuses it for good); the entry stays pending."""
        marker = self.keys.delivered(self.group, notice["id"])
        if await self.redis.exists(marker):
            self.counts["already_delivered"] += 1
            return
        while True:
            outcome, attempts = await deliver_with_retries(
                self.sink, notice, self.retry, on_retry=self._on_retry, rng=self._rng
            )
            raise_if_cancelled()  # the last attempt may have turned a cancel into a failure
            if outcome.delivered or not outcome.retryable:
                break
            delay = self.retry.delay(self.retry.max_attempts, outcome.retry_after_s, self._rng)
            self._on_retry(attempts, outcome, delay)
            await asyncio.sleep(delay)
        if outcome.delivered:
            self.counts["delivered"] += 1
        else:
            self.counts["dead_lettered"] += 1
            self.dead_letter.write(self.sink.name, notice, outcome.detail, attempts)
        await self.redis.set(marker, self.consumer, ex=int(self.bus.delivered_ttl_s))

    def _on_retry(self, attempt: int, outcome: Outcome, delay: float) -> None:
        raise_if_cancelled()  # aiohttp may turn a cancel into a timeout: stop, do not retry
        self.counts["retried"] += 1
        if worth_logging(self.counts["retried"]):
            log.warning(
                "sink %s: attempt %d failed (%s); retrying in %.1f s; the entry stays "
                "pending (%d retries so far)",
                self.sink.name,
                attempt,
                outcome.detail,
                delay,
                self.counts["retried"],
            )
