"""Delivery that loses nothing it accepted: per-sink queues, retries, a dead-letter file.

A sink's core is one coroutine, ``deliver(payload) -> Outcome``: one attempt, no
queueing, no retries (see :class:`Sink`). Everything around it lives here:

- :func:`deliver_with_retries`: one payload, up to ``max_attempts`` attempts, each with a
  timeout, exponential backoff with jitter between them (a ``Retry-After`` answer is
  honoured up to the backoff cap). Reusable by any consumer, e.g. one that acknowledges
  a message on a bus only once this returns.
- :class:`SinkWorker`: a sink's bounded queue (oldest dropped first when full) fed by
  :meth:`SinkWorker.accept` from any thread, drained one payload at a time (in order) by
  one task; counters ``sent``, ``retried``, ``failed``, ``dropped``.
- :class:`DeliveryService`: one thread with its own event loop running every worker, so
  a slow or dead endpoint never stalls a session, the websocket or another sink.
- :class:`DeadLetter`: what was dropped, given up on, or still queued at exit is appended
  to a JSONL file with the reason, so an outage costs delay, never alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from monitor.config import SinksConfig
from monitor.errors import OutputError
from monitor.events import utc_timestamp
from monitor.sinks.fanout import worth_logging
from monitor.sinks.jsonl import JsonlSink
from monitor.sinks.notices import NoticePolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """The result of one delivery attempt."""

    delivered: bool
    retryable: bool = False
    detail: str = ""
    retry_after_s: float | None = None  # the receiver asked to wait this long

    @classmethod
    def ok(cls, detail: str = "") -> Outcome:
        return cls(True, detail=detail)

    @classmethod
    def retry(cls, detail: str, retry_after_s: float | None = None) -> Outcome:
        return cls(False, retryable=True, detail=detail, retry_after_s=retry_after_s)

    @classmethod
    def reject(cls, detail: str) -> Outcome:
        """A permanent failure (a 4xx answer, a payload the receiver refuses): no retries."""
        return cls(False, detail=detail)


class Sink(Protocol):
    """One destination. ``deliver`` makes one attempt and reports it; it may raise, which
    counts as a retryable failure. ``name`` is ``KIND:TARGET`` without secrets."""

    name: str

    async def deliver(self, payload: dict[str, Any]) -> Outcome: ...

    async def aclose(self) -> None: ...


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from an HTTP ``Retry-After`` (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    timeout_s: float = 5.0

    @classmethod
    def from_config(cls, config: SinksConfig) -> RetryPolicy:
        return cls(config.max_attempts, config.backoff_s, config.backoff_max_s, config.timeout_s)

    def delay(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Seconds before attempt ``attempt + 1``: half of the doubled backoff is fixed,
        half random ("equal jitter"), so retries of many monitors do not line up."""
        ceiling = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
        delay = ceiling / 2 + rng.uniform(0.0, ceiling / 2)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.backoff_max_s))
        return delay


RetryHook = Callable[[int, Outcome, float], None]


async def deliver_with_retries(
    sink: Sink,
    payload: dict[str, Any],
    policy: RetryPolicy,
    *,
    on_retry: RetryHook | None = None,
    rng: random.Random | None = None,
) -> tuple[Outcome, int]:
    """Deliver one payload; return the last outcome and the number of attempts made."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        attempt += 1
        try:
            async with asyncio.timeout(policy.timeout_s):
                outcome = await sink.deliver(payload)
        except TimeoutError:
            outcome = Outcome.retry(f"no answer within {policy.timeout_s:g} s")
        except Exception as exc:  # a transport error the sink did not map, or a bug
            outcome = Outcome.retry(f"{type(exc).__name__}: {exc}")
        if outcome.delivered or not outcome.retryable or attempt >= policy.max_attempts:
            return outcome, attempt
        delay = policy.delay(attempt, outcome.retry_after_s, rng)
        if on_retry is not None:
            on_retry(attempt, outcome, delay)
        await asyncio.sleep(delay)


class DeadLetter:
    """Appends undeliverable payloads to a JSONL file, one record per line:
    ``{dead_lettered_at, sink, reason, attempts, payload}``. Opened at the first record.

    Writing fails only when the disk does; such a payload is counted in ``lost``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir() or not self.path.parent.is_dir():
            raise OutputError(f"cannot write the dead-letter file {self.path}")
        self.written = 0
        self.lost = 0
        self._file: JsonlSink | None = None
        self._lock = threading.Lock()

    def write(self, sink: str, payload: dict[str, Any], reason: str, attempts: int) -> bool:
        record = {
            "dead_lettered_at": utc_timestamp(),
            "sink": sink,
            "reason": reason,
            "attempts": attempts,
            "payload": payload,
        }
        with self._lock:
            try:
                if self._file is None:
                    self._file = JsonlSink(self.path, append=True)
                self._file.write(record)
            except (OSError, ValueError, OutputError) as exc:
                self.lost += 1
                log.error("LOST a notice for %s: cannot dead-letter it: %s", sink, exc)
                return False
            self.written += 1
            written = self.written
        if worth_logging(written):  # the 1st, 10th, 100th, ...: an outage does not flood
            log.warning(
                "dead-lettered a notice for %s to %s (%d so far): %s",
                sink,
                self.path,
                written,
                reason,
            )
        return True

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class SinkWorker:
    """A sink, its notice policy, its bounded queue, its counters, and its delivery task.

    :meth:`accept` may be called from any thread and never waits; :meth:`run` runs on
    the delivery loop (:meth:`bind` first).
    """

    def __init__(
        self,
        sink: Sink,
        policy: NoticePolicy,
        retry: RetryPolicy,
        *,
        queue_size: int,
        dead_letter: DeadLetter,
    ) -> None:
        self.sink = sink
        self.name = sink.name
        self.policy = policy
        self.retry = retry
        self.queue_size = queue_size
        self.dead_letter = dead_letter
        self.sent = self.retried = self.failed = self.dropped = 0
        self._queue: deque[dict[str, Any]] = deque()
        self._in_flight: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._stopping = False
        self._closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called on ``loop`` before :meth:`run`."""
        self._loop = loop
        self._wakeup = asyncio.Event()

    # ----- any thread ---------------------------------------------------------------------

    def accept(self, event: dict[str, Any]) -> None:
        """Queue the notices ``event`` gives rise to; the oldest is dropped when full."""
        payloads = self.policy.process(event)
        if not payloads:
            return
        dropped: list[dict[str, Any]] = []
        with self._lock:
            if self._closed:
                dropped, reason = payloads, "arrived after delivery had stopped"
            else:
                reason = f"queue full ({self.queue_size}): dropped as the oldest"
                for payload in payloads:
                    if len(self._queue) >= self.queue_size:
                        dropped.append(self._queue.popleft())
                        self.dropped += 1
                    self._queue.append(payload)
        for payload in dropped:
            self.dead_letter.write(self.name, payload, reason, 0)
        if not self._closed and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                self._loop.call_soon_threadsafe(self._wake)

    @property
    def queued(self) -> int:
        return len(self._queue) + (self._in_flight is not None)

    def stats(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "retried": self.retried,
            "failed": self.failed,
            "dropped": self.dropped,
            "queued": self.queued,
        }

    # ----- delivery loop ------------------------------------------------------------------

    def _wake(self) -> None:
        assert self._wakeup is not None
        self._wakeup.set()

    def stop(self) -> None:
        """Finish what is queued, then return from :meth:`run` (on the loop)."""
        self._stopping = True
        self._wake()

    def _pop(self) -> dict[str, Any] | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def _count_retry(self, attempt: int, outcome: Outcome, delay: float) -> None:
        self.retried += 1
        if worth_logging(self.retried):
            log.info(
                "%s: attempt %d failed (%s); retrying in %.1f s (%d retries so far)",
                self.name,
                attempt,
                outcome.detail,
                delay,
                self.retried,
            )

    async def run(self) -> None:
        """Deliver in order until stopped and empty; when cancelled, dead-letter the rest."""
        assert self._wakeup is not None, "bind() first"
        try:
            while True:
                payload = self._pop()
                if payload is None:
                    if self._stopping:
                        return
                    self._wakeup.clear()
                    if not self._queue:
                        await self._wakeup.wait()
                    continue
                self._in_flight = payload
                outcome, attempts = await deliver_with_retries(
                    self.sink, payload, self.retry, on_retry=self._count_retry
                )
                self._in_flight = None
                if outcome.delivered:
                    self.sent += 1
                else:
                    self.failed += 1
                    self.dead_letter.write(self.name, payload, outcome.detail, attempts)
        except asyncio.CancelledError:
            self._abandon()
            raise

    def close(self) -> None:
        """Refuse further payloads; dead-letter whatever is still queued."""
        with self._lock:
            self._closed = True
        self._abandon()

    def _abandon(self) -> None:
        with self._lock:
            in_flight, queued = self._in_flight, list(self._queue)
            self._queue.clear()
            self._in_flight = None
        left = [(p, "not delivered before shutdown") for p in queued]
        if in_flight is not None:  # it may have arrived: the receiver dedupes by its id
            left.insert(0, (in_flight, "interrupted at shutdown while being delivered"))
        for payload, reason in left:
            self.failed += 1
            self.dead_letter.write(self.name, payload, reason, 0)


class DeliveryService:
    """Runs every :class:`SinkWorker` on one thread of its own (an asyncio loop).

    ``start()`` before the first event, ``close()`` after the last: it gives queued
    notices up to ``drain_s`` seconds, then dead-letters the rest and closes the sinks.
    """

    def __init__(
        self, workers: list[SinkWorker], *, dead_letter: DeadLetter, drain_s: float
    ) -> None:
        self.workers = workers
        self.dead_letter = dead_letter
        self.drain_s = drain_s
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def receivers(self) -> list[tuple[str, Callable[[dict[str, Any]], None]]]:
        """``(name, accept)`` of each sink, for the event fan-out."""
        return [(worker.name, worker.accept) for worker in self.workers]

    def start(self) -> DeliveryService:
        self._thread = threading.Thread(target=self._main, name="dfmon-sinks", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced by start() or logged
            self._error = exc
            log.exception("alert delivery stopped")
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for worker in self.workers:
            worker.bind(self._loop)
        tasks = [asyncio.create_task(w.run(), name=f"sink {w.name}") for w in self.workers]
        self._ready.set()
        await self._stop.wait()
        for worker in self.workers:
            worker.stop()
        if any(w.queued for w in self.workers):
            queued = sum(w.queued for w in self.workers)
            log.info("delivering %d queued notice(s), waiting up to %g s", queued, self.drain_s)
        _, pending = await asyncio.wait(tasks, timeout=self.drain_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for worker in self.workers:
            try:
                await worker.sink.aclose()
            except Exception:
                log.exception("closing %s failed", worker.name)

    def close(self) -> None:
        """Drain (up to ``drain_s``), stop the thread, and log what each sink did."""
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()
        self._thread = None
        for worker in self.workers:
            worker.close()
            log.info(
                "sink %s: %s", worker.name, ", ".join(f"{v} {k}" for k, v in worker.stats().items())
            )
        self.dead_letter.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def stats(self) -> dict[str, dict[str, int]]:
        return {worker.name: worker.stats() for worker in self.workers}

    def __enter__(self) -> DeliveryService:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
