"""Whether one more WHIP session may start: limits, per-token quotas and measured load.

A session the server can only serve by dropping everyone's frames is worse than a
refusal: thinned windows are scored worse than none (issue 16). So a new offer is
answered 503 with ``Retry-After`` when the open sessions' analysis, plus one more
session's, would use more than ``max_utilization`` of the cores, or while any session is
dropping frames because its analysis fell behind.

Load is measured, not guessed: each session's worker records how much of the wall time
it spends analysing (:class:`BusyMeter`); a session keeps up only while that stays
below 1. Until a session has run long enough to be measured it counts at the cost
measured on finished sessions (or ``session_cost_cores`` before any finished).

The decision is a pure function of what it is given, so it is tested without a network.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass

from monitor.config import LiveConfig

# Seconds of analysis over which a session's busy fraction is measured.
BUSY_HORIZON_S = 5.0
# A session must have run this long before its own busy fraction is trusted.
MIN_MEASURED_S = 3.0
# Finished sessions' costs kept to estimate the next one's.
COST_HISTORY = 16


class BusyMeter:
    """Fraction of the recent wall time one session's worker spent analysing.

    The worker thread calls :meth:`add`; the event loop reads :meth:`fraction`.
    """

    def __init__(self, now: float | None = None) -> None:
        self._lock = threading.Lock()
        self._started = time.monotonic() if now is None else now
        self._busy_total = 0.0
        self._marks: deque[tuple[float, float]] = deque()  # (time, busy_total so far)
        self._marks.append((self._started, 0.0))

    def add(self, busy_s: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._busy_total += busy_s
            if now - self._marks[-1][0] >= 0.5:
                self._marks.append((now, self._busy_total))
            # Keep one mark older than the horizon, so the span always covers it.
            while len(self._marks) > 2 and now - self._marks[1][0] >= BUSY_HORIZON_S:
                self._marks.popleft()

    def fraction(self, now: float | None = None) -> float | None:
        """Busy fraction over the last ~5 s, or None before ``MIN_MEASURED_S`` of running."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if now - self._started < MIN_MEASURED_S:
                return None
            since, busy_then = self._marks[0]
            span = now - since
            return (self._busy_total - busy_then) / span if span > 0 else None

    def lifetime_fraction(self, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        with self._lock:
            span = now - self._started
            return self._busy_total / span if span >= MIN_MEASURED_S else None


@dataclass(frozen=True)
class SessionLoad:
    """What admission needs to know about one open session."""

    key: str  # the quota it counts against (token, or client address)
    has_media: bool
    busy: float | None  # BusyMeter.fraction(); None: not measured yet
    dropped_recently: bool


@dataclass(frozen=True)
class Refusal:
    status: int  # 503 (capacity) or 429 (quota)
    title: str
    detail: str
    retry_after_s: int


def available_cores() -> float:
    try:
        return float(len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return float(os.cpu_count() or 1)


class Admission:
    """The server's admission policy; :meth:`decide` per offer, :meth:`learn` per ended session."""

    def __init__(self, live: LiveConfig) -> None:
        self.live = live
        self.cores = live.admission_cores or available_cores()
        self._costs: deque[float] = deque(maxlen=COST_HISTORY)

    @property
    def session_cost(self) -> float:
        """Cores one session's analysis takes: measured on ended sessions, else configured."""
        return statistics.median(self._costs) if self._costs else self.live.session_cost_cores

    def learn(self, busy: float | None) -> None:
        """Record what an ended session cost over its life (None: too short to say)."""
        if busy is not None and busy > 0:
            self._costs.append(busy)

    def decide(
        self,
        key: str,
        sessions: list[SessionLoad],
        negotiating: int,
        rss_mb: float | None = None,
    ) -> Refusal | None:
        """None to admit; otherwise why not. ``negotiating``: offers being answered now;
        ``rss_mb``: the server's resident memory now."""
        live, retry = self.live, self.live.retry_after_s
        if len(sessions) + negotiating >= live.max_sessions:
            return Refusal(
                503,
                "Service Unavailable",
                f"the server is at its limit of {live.max_sessions} sessions",
                retry,
            )
        own = [s for s in sessions if s.key == key]
        if len(own) >= live.max_sessions_per_token:
            return Refusal(
                429,
                "Too Many Requests",
                f"this token already holds {len(own)} sessions, its quota "
                f"(max_sessions_per_token {live.max_sessions_per_token})",
                retry,
            )
        waiting = sum(not s.has_media for s in own)
        if waiting >= live.max_pending_per_token:
            return Refusal(
                429,
                "Too Many Requests",
                f"{waiting} sessions of this token have sent no media yet "
                f"(max_pending_per_token {live.max_pending_per_token}); "
                "they end after connect_timeout_s",
                retry,
            )
        if live.max_memory_mb and rss_mb is not None:
            needed = rss_mb + (negotiating + 1) * live.session_memory_mb
            if needed > live.max_memory_mb:
                return Refusal(
                    503,
                    "Service Unavailable",
                    f"out of memory for another session: {rss_mb:.0f} MiB in use, one more "
                    f"needs about {live.session_memory_mb:.0f} (max_memory_mb "
                    f"{live.max_memory_mb:.0f})",
                    retry,
                )
        if not live.load_admission:
            return None
        dropping = sum(s.dropped_recently for s in sessions)
        if dropping:
            return Refusal(
                503,
                "Service Unavailable",
                f"{dropping} of {len(sessions)} sessions are dropping frames now: the "
                "analysis is at capacity",
                retry,
            )
        cost = self.session_cost
        used = sum(cost if s.busy is None else s.busy for s in sessions) + negotiating * cost
        budget = live.max_utilization * self.cores
        if sessions and used + cost > budget:
            return Refusal(
                503,
                "Service Unavailable",
                f"at capacity: {len(sessions)} sessions use {used:.2f} of {budget:.2f} "
                f"cores for analysis ({self.cores:g} cores x {live.max_utilization:g}); "
                f"one more needs about {cost:.2f}",
                retry,
            )
        return None
