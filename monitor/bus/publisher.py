"""Publishing events to the bus: a bounded buffer in front of one idempotent Redis script.

:meth:`EventPublisher.publish` is a sink (called on the event loop, never waits): it
stamps the event with ``worker`` and its number within the session (``seq``, from 0),
and appends it to a bounded buffer. One task drains the buffer in batches through
:data:`PUBLISH_SCRIPT`, which writes each event to the stream of every event and to its
call's, participant's and session's streams under one entry id, and keeps the worker's
table of open sessions, all in one atomic step.

Redis going away is expected (a restart, a failover, a network blip). The batch that
failed is retried with backoff until Redis answers, while new events wait in the
buffer; when the buffer is full the oldest are dropped and counted (``dropped``), so
memory stays bounded and the freshest risk is what survives. A retry can repeat a
batch that Redis did apply before the connection broke (the reply was lost): the script
skips every event whose publisher number it has already written, so a retry never
writes an event twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from monitor.bus.connection import REDIS_DOWN, Backoff, BusKeys, raise_if_cancelled
from monitor.config import BusConfig
from monitor.events import dumps

log = logging.getLogger(__name__)

# KEYS[1]: the publisher's state hash; KEYS[2]: the stream of every event.
# ARGV[1..4]: key prefix, MAXLEN of KEYS[2], MAXLEN of keyed streams, their idle expiry (ms);
# then 7 per event: publisher number, session, participant, call ("" for none), type,
# event JSON, the hash of open sessions it belongs to.
PUBLISH_SCRIPT = """
local last = tonumber(redis.call('HGET', KEYS[1], 'n') or '-1')
local prefix = ARGV[1]
local written = 0
for i = 5, #ARGV, 7 do
  local n = tonumber(ARGV[i])
  if n > last then
    local session, participant, call = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    local kind, data, open = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
    local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', data)
    local keyed = {prefix .. ':events:session:' .. session,
                   prefix .. ':events:participant:' .. participant}
    if call ~= '' then keyed[#keyed + 1] = prefix .. ':events:call:' .. call end
    for _, key in ipairs(keyed) do
      redis.call('XADD', key, 'MAXLEN', '~', ARGV[3], id, 'event', data)
      redis.call('PEXPIRE', key, ARGV[4])
    end
    if kind == 'session_started' then
      redis.call('HSET', open, session, data)
    elseif kind == 'session_ended' then
      redis.call('HDEL', open, session)
    end
    last = n
    written = written + 1
  end
end
redis.call('HSET', KEYS[1], 'n', last)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return written
"""

# Sessions whose next ``seq`` is remembered; an ended session is forgotten at its summary.
MAX_TRACKED_SESSIONS = 100_000


@dataclass(slots=True)
class _Pending:
    n: int
    session: str
    participant: str
    call: str
    kind: str
    text: str
    open_sessions_key: str

    def args(self) -> list[Any]:
        return [
            self.n,
            self.session,
            self.participant,
            self.call,
            self.kind,
            self.text,
            self.open_sessions_key,
        ]


class EventPublisher:
    """Publishes events of one worker (or a gateway) to the bus; see the module doc.

    ``publisher_id`` names the numbering that makes retries idempotent (one per process);
    ``worker`` is stamped on every event that has none; ``open_sessions_key`` is the hash
    of open sessions that ``session_started`` and ``session_ended`` maintain.
    """

    def __init__(
        self,
        redis: Any,
        config: BusConfig,
        *,
        publisher_id: str,
        worker: str | None,
        open_sessions_key: str,
    ) -> None:
        self._redis = redis
        self._config = config
        self.keys = BusKeys(config.prefix)
        self.publisher_id = publisher_id
        self.worker = worker
        self.open_sessions_key = open_sessions_key
        self._script = redis.register_script(PUBLISH_SCRIPT)
        self._buffer: deque[_Pending] = deque(maxlen=config.buffer_events)
        self._in_flight: list[_Pending] = []
        self._next_n = 0
        self._next_seq: OrderedDict[str, int] = OrderedDict()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task | None = None
        self._closing = False
        self.published = 0
        self.dropped = 0
        self.failures = 0  # round trips that failed (each is retried)
        self.connected = True

    # ----- the sink ---------------------------------------------------------------------

    def publish(self, event: dict[str, Any], *, open_sessions_key: str | None = None) -> None:
        """Stamp and queue ``event``; never waits. Call on the publisher's event loop.

        ``open_sessions_key`` overrides whose table of open sessions the event updates
        (the gateway ends the sessions of a lost worker).
        """
        event = dict(event)
        if self.worker is not None:
            event.setdefault("worker", self.worker)
        session = str(event.get("session", ""))
        if "seq" not in event:
            event["seq"] = self._take_seq(session)
        if event.get("type") == "summary":
            self._next_seq.pop(session, None)
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1  # the deque discards the oldest on append
        self._buffer.append(
            _Pending(
                n=self._next_n,
                session=session,
                participant=str(event.get("participant", "")),
                call=str(event.get("call") or ""),
                kind=str(event.get("type", "")),
                text=dumps(event),
                open_sessions_key=open_sessions_key or self.open_sessions_key,
            )
        )
        self._next_n += 1
        self._idle.clear()
        self._wakeup.set()

    def _take_seq(self, session: str) -> int:
        seq = self._next_seq.pop(session, 0)
        self._next_seq[session] = seq + 1  # most recent last
        if len(self._next_seq) > MAX_TRACKED_SESSIONS:
            self._next_seq.popitem(last=False)
        return seq

    @property
    def buffered(self) -> int:
        return len(self._buffer) + len(self._in_flight)

    def stats(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "dropped": self.dropped,
            "buffered": self.buffered,
            "failures": self.failures,
            "connected": self.connected,
        }

    # ----- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Resume the numbering where an earlier publisher of this id stopped, then run."""
        with contextlib.suppress(*REDIS_DOWN):
            last = await self._redis.hget(self.keys.publisher(self.publisher_id), "n")
            if last is not None:
                self._next_n = max(self._next_n, int(last) + 1)
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"bus-publish {self.publisher_id}"
        )

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything queued so far is in Redis; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout_s: float) -> bool:
        """Publish what is queued (for up to ``timeout_s``), then stop; True if all went."""
        self._closing = True
        self._wakeup.set()
        if self._task is None:
            return not self.buffered
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            log.warning(
                "bus: %d event(s) not published before shutdown (Redis unreachable)",
                self.buffered,
            )
            return False
        return True

    # ----- the drain task ---------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff()
        while True:
            if not self._in_flight:
                if not self._buffer:
                    self._idle.set()
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                batch = min(self._config.batch_events, len(self._buffer))
                self._in_flight = [self._buffer.popleft() for _ in range(batch)]
            try:
                await self._write(self._in_flight)
            except REDIS_DOWN as exc:
                raise_if_cancelled()
                self.failures += 1
                if self.connected:
                    self.connected = False
                    log.warning(
                        "bus: Redis unreachable (%s); holding up to %d events",
                        exc,
                        self._config.buffer_events,
                    )
                await asyncio.sleep(backoff.next_delay())
                continue
            except ResponseError:  # a script error would repeat forever: drop the batch
                log.exception("bus: Redis refused %d event(s); dropped", len(self._in_flight))
                self.dropped += len(self._in_flight)
                self._in_flight = []
                continue
            self.published += len(self._in_flight)
            self._in_flight = []
            backoff.reset()
            if not self.connected:
                self.connected = True
                log.info(
                    "bus: Redis reachable again (%d dropped so far, %d waiting)",
                    self.dropped,
                    len(self._buffer),
                )

    async def _write(self, batch: list[_Pending]) -> None:
        c = self._config
        args: list[Any] = [
            c.prefix,
            c.stream_maxlen,
            c.keyed_stream_maxlen,
            int(c.keyed_stream_idle_s * 1000),
        ]
        for item in batch:
            args.extend(item.args())
        keys = [self.keys.publisher(self.publisher_id), self.keys.events]
        await self._script(keys=keys, args=args)
