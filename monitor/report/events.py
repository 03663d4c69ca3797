"""Read a session's events (a JSONL file or the list a replay collected) for the report."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.config import WindowConfig
from monitor.errors import EventsError

# Event schemas a report reads: 2 (the current one) and 1 (files written before it).
READABLE_SCHEMAS = (1, 2)


@dataclass
class EventLog:
    """One session's events, sorted by kind."""

    started: dict[str, Any] | None
    scores: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    summary: dict[str, Any] | None
    errors: list[dict[str, Any]] = field(default_factory=list)
    source: str = "events"

    @property
    def session(self) -> str | None:
        for event in (self.started, self.summary, *self.scores):
            if event is not None:
                return str(event.get("session"))
        return None

    @property
    def participant(self) -> str | None:
        for event in (self.started, self.summary, *self.scores):
            if event is not None:
                return str(event.get("participant"))
        return None

    @property
    def window_s(self) -> float:
        config = (self.started or {}).get("config") or {}
        if "window_s" in config:
            return float(config["window_s"])
        if self.scores:
            return float(self.scores[0]["t_end"] - self.scores[0]["t_start"])
        return WindowConfig().window_s

    @property
    def hop_s(self) -> float:
        config = (self.started or {}).get("config") or {}
        if "hop_s" in config:
            return float(config["hop_s"])
        if len(self.scores) > 1:
            return float(self.scores[1]["t_start"] - self.scores[0]["t_start"])
        return WindowConfig().hop_s

    @property
    def detector_versions(self) -> dict[str, str]:
        config = (self.started or {}).get("config") or {}
        return {str(k): str(v) for k, v in (config.get("detectors") or {}).items()}

    @property
    def verdict(self) -> str:
        """The session's verdict (schema 2), its level (schema 1), or the highest window
        level when the session did not finish."""
        from monitor.levels import UNKNOWN, level_rank

        summary = self.summary or {}
        if "verdict" in summary or "level" in summary:
            return str(summary.get("verdict", summary.get("level")))
        return max((e.get("level", UNKNOWN) for e in self.scores), key=level_rank, default=UNKNOWN)

    def last_time(self) -> float:
        return max((float(e["t_end"]) for e in self.scores), default=0.0)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise EventsError(f"events file not found: {path}")
    if path.is_dir():
        raise EventsError(f"{path} is a directory, not an events file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EventsError(f"events file {path} cannot be read: {exc}") from exc
    events = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EventsError(f"{path}:{number} is not JSON: {exc.msg}") from exc
        if not isinstance(event, dict):
            raise EventsError(f"{path}:{number} is not an event object")
        events.append(event)
    return events


def load_events(events: str | Path | Iterable[dict[str, Any]]) -> EventLog:
    """Sort events by type; :class:`EventsError` when they are not one dfmon session."""
    if isinstance(events, str | Path):
        source = str(events)
        items = _read_jsonl(Path(events))
    else:
        source = "replay"
        items = list(events)
    started = None
    summary = None
    scores: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    sessions = set()
    for index, event in enumerate(items):
        kind = event.get("type")
        if event.get("schema") not in READABLE_SCHEMAS or kind is None:
            raise EventsError(f"{source}: event {index + 1} is not a dfmon event (schema 1 or 2)")
        sessions.add(event.get("session"))
        try:
            if kind == "session_started":
                started = event
            elif kind == "score":
                _check_times(event)
                scores.append(event)
            elif kind == "alert":
                _check_times(event)
                alerts.append(event)
            elif kind == "summary":
                summary = event
            elif kind == "error":
                errors.append(event)
        except (KeyError, TypeError, ValueError) as exc:
            raise EventsError(f"{source}: {kind} event {index + 1} is malformed: {exc}") from exc
    if len(sessions) > 1:
        raise EventsError(
            f"{source} holds {len(sessions)} sessions; a report covers one (split the file)"
        )
    if not scores:
        raise EventsError(f"{source} has no score events: nothing to report")
    scores.sort(key=lambda e: float(e["t_start"]))
    alerts.sort(key=lambda e: float(e["t_start"]))
    return EventLog(started, scores, alerts, summary, errors, source)


def _check_times(event: dict[str, Any]) -> None:
    t_start, t_end = float(event["t_start"]), float(event["t_end"])
    if not (0 <= t_start < t_end):
        raise ValueError(f"bad window times {t_start}-{t_end}")
    if not isinstance(event.get("evidence", []), list):
        raise TypeError("evidence is not a list")


def lip_sync_evidence(event: dict[str, Any]) -> dict[str, Any] | None:
    return next((e for e in event.get("evidence", []) if e.get("detector") == "lip_sync"), None)


def artifact_evidence(event: dict[str, Any]) -> dict[str, Any] | None:
    return next((e for e in event.get("evidence", []) if e.get("detector") == "artifact"), None)
