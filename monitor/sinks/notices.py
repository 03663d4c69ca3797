"""What one alert sink is told, and how often: selection, throttling, idempotency keys.

A session emits an ``alert`` event on every level change, and a noisy call can change
level every few seconds. A fraud team's SIEM, a chat channel and Microsoft Graph (one
report per participant per minute) want at most one notice per participant per
``interval_s``. :class:`NoticePolicy` turns the event stream into those notices:

- The first ``suspicious`` or ``alert`` of a participant goes out at once.
- Later level changes within ``interval_s`` of the last notice are held. When the
  interval is over, one notice goes out: the most severe alert held if it is above the
  level last reported, otherwise the latest level if it differs from the one reported.
  Returning to ``clear`` after an elevated notice is such a change: the clear-again notice.
- ``unknown`` (insufficient evidence) is not news: it neither notifies nor resets.
- A change still held when the session's summary arrives is not sent; the summary (when
  selected) carries the final and peak levels.

Time is the participant's media clock (``t_end`` of scores and alerts), so a fast replay
throttles exactly as the live call would, and re-reading the same events (a restarted
consumer) yields the same notices. Each notice carries ``id``, an idempotency key derived
from the event's content alone (a name-based UUID): every retry, every sink and every
re-run over the same stored events use the same key, so receivers can drop repeats.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from monitor.levels import LEVEL_RANK

# Fixed namespace of dfmon's name-based (version 5) notice ids.
ID_NAMESPACE = uuid.UUID("5f6c2c1e-4e0b-5d0a-9d7e-6466d6f6e017")
STREAM_FIELDS = ("source", "fps", "sample_rate", "has_audio", "video_codec", "audio_codec")
LIVE_SOURCE = "whip"
TRANSPORT_FIELDS = frozenset({"worker", "seq"})  # stamped by the bus's publisher


def idempotency_key(event: dict[str, Any]) -> str:
    """A UUID that depends only on the event's content (canonical JSON).

    The bus's stamps (``worker``, ``seq``: how the event travelled, not what it says) are
    left out, so a notice sent in-process by ``dfmon serve --sink`` and one sent by
    ``dfmon sinks`` from the bus carry the same key, and a receiver drops the second.
    """
    content = {k: v for k, v in event.items() if k not in TRANSPORT_FIELDS}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return str(uuid.uuid5(ID_NAMESPACE, canonical))


def notice_level(notice: dict[str, Any]) -> str:
    """The level a notice reports: an alert's new level, a summary's verdict."""
    if notice.get("type") == "summary":
        return str(notice.get("verdict", notice.get("level", "unknown")))
    return str(notice.get("level", "unknown"))


@dataclass
class _Participant:
    reported_level: str = "clear"  # what this sink last told the receiver
    reported_at: float | None = None  # media time of that notice
    current_level: str = "clear"
    latest: dict[str, Any] | None = None  # latest alert event with a known level
    peak: dict[str, Any] | None = None  # most severe alert above reported_level, held
    held: int = 0  # alert events since the last notice
    stream: dict[str, Any] = field(default_factory=dict)


class NoticePolicy:
    """Selects, throttles and keys the events one sink delivers. Thread-safe.

    ``events`` are the event types to deliver (``alert`` notices are throttled; other
    types pass as they come, with an ``id``). ``interval_s`` 0 disables throttling.
    """

    def __init__(
        self, events: Iterable[str], interval_s: float, *, max_participants: int = 4096
    ) -> None:
        self.events = frozenset(events)
        self.interval_s = interval_s
        self.max_participants = max_participants
        self._alerts_seen = 0
        self._alerts_noticed = 0
        self._participants: OrderedDict[tuple[str, str], _Participant] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def throttled(self) -> int:
        """Alert events that did not go out as a notice of their own."""
        return self._alerts_seen - self._alerts_noticed

    def process(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The payloads to deliver for ``event`` (often none), in order."""
        with self._lock:
            return self._process(event)

    def _process(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        key = (str(event.get("session")), str(event.get("participant")))
        state = self._state(key)
        if kind == "session_started":
            state.stream = {name: event.get(name) for name in STREAM_FIELDS}
            state.stream["live"] = event.get("source") == LIVE_SOURCE
        elif kind == "score":
            state.stream["dropped_frames"] = event.get("dropped_frames", 0)
        notices: list[dict[str, Any]] = []
        if "alert" in self.events:
            if kind == "alert":
                self._hold(state, event)
            t = event.get("t_end")
            if isinstance(t, int | float):
                notice = self._release(state, float(t))
                if notice is not None:
                    notices.append(notice)
        if kind != "alert" and kind in self.events:
            notices.append(self._payload(event, state))
        if kind == "summary":
            self._participants.pop(key, None)
        return notices

    def _state(self, key: tuple[str, str]) -> _Participant:
        state = self._participants.get(key)
        if state is None:
            state = self._participants[key] = _Participant()
            if len(self._participants) > self.max_participants:
                self._participants.popitem(last=False)  # the longest-silent session
        else:
            self._participants.move_to_end(key)
        return state

    def _hold(self, state: _Participant, event: dict[str, Any]) -> None:
        level = event.get("level")
        if level not in LEVEL_RANK or level == "unknown":
            return
        self._alerts_seen += 1
        state.current_level = level
        state.latest = event
        state.held += 1
        above_reported = LEVEL_RANK[level] > LEVEL_RANK[state.reported_level]
        if above_reported and (
            state.peak is None or LEVEL_RANK[level] >= LEVEL_RANK[state.peak["level"]]
        ):
            state.peak = event

    def _release(self, state: _Participant, t: float) -> dict[str, Any] | None:
        if state.reported_at is not None and t - state.reported_at < self.interval_s:
            return None
        if state.peak is not None and (
            LEVEL_RANK[state.peak["level"]] > LEVEL_RANK[state.reported_level]
        ):
            chosen = state.peak
        elif state.latest is not None and state.current_level != state.reported_level:
            chosen = state.latest
        else:
            return None
        notice = self._payload(chosen, state)
        notice["notice"] = {
            "previous_level": state.reported_level,  # as last reported to this receiver
            "held_back": state.held - 1,  # level changes folded into this notice
            "at_s": t,  # the participant's media time when this notice was issued
            "interval_s": self.interval_s,
        }
        self._alerts_noticed += 1
        state.reported_level = chosen["level"]
        state.reported_at = t
        state.peak = None
        state.held = 0
        return notice

    @staticmethod
    def _payload(event: dict[str, Any], state: _Participant) -> dict[str, Any]:
        payload = {**event, "id": idempotency_key(event)}
        if state.stream:
            payload["stream"] = dict(state.stream)
        return payload
