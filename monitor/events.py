"""Event construction and validation (schema version 1).

Every event carries ``schema``, ``type``, ``session``, ``participant`` and ``ts``;
the same dicts go to JSONL files and to the websocket alert channel. The payloads of
``session_started``, ``score``, ``alert`` and ``summary`` are built here, beside the
schema they must satisfy (``monitor/schema/events.schema.json``), from what the session
decided: the session computes risks and levels, this module words and rounds them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from monitor.detectors.base import format_span

if TYPE_CHECKING:
    from monitor.config import MonitorConfig
    from monitor.detectors.base import Evidence
    from monitor.features.speaker import SpeakerChoice
    from monitor.fusion import LevelChange
    from monitor.media import StreamInfo
    from monitor.windows import AnalysisWindow

SCHEMA_VERSION = 1
EVENT_TYPES = ("session_started", "score", "alert", "summary", "session_ended", "error")

# Where events go: a session's ``emit``, a sink, a fan-out. Takes one event dict.
EventSink = Callable[[dict[str, Any]], None]


def utc_timestamp(now: datetime | None = None) -> str:
    """RFC 3339 UTC with millisecond precision and a ``Z`` suffix."""
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class EventFactory:
    """Stamps events with the fields every event of one session shares."""

    def __init__(self, session: str, participant: str) -> None:
        self.session = session
        self.participant = participant

    def make(self, event_type: str, **fields: Any) -> dict[str, Any]:
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}")
        return {
            "schema": SCHEMA_VERSION,
            "type": event_type,
            "session": self.session,
            "participant": self.participant,
            "ts": utc_timestamp(),
            **fields,
        }

    def session_started(
        self,
        info: StreamInfo,
        config: MonitorConfig,
        detector_versions: Mapping[str, str],
        unavailable: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """``unavailable``: detectors needed to call a window clear that this session
        lacks, and why (then no window can be clear)."""
        return self.make(
            "session_started",
            **info.as_event_fields(),
            config={
                "window_s": config.window.window_s,
                "hop_s": config.window.hop_s,
                "suspicious_threshold": config.fusion.suspicious_threshold,
                "alert_threshold": config.fusion.alert_threshold,
                "detectors": dict(detector_versions),
                "clear_requires": list(config.fusion.clear_requires),
                "min_frames_fraction": config.window.min_frames_fraction,
                "unavailable": dict(unavailable or {}),
            },
        )

    def score(
        self,
        window: AnalysisWindow,
        evidence: Sequence[Evidence],
        *,
        risk: float,
        window_risk: float | None,
        level: str,
        session_level: str,
        dropped_frames: int,
        inference_s: float,
        speaker: SpeakerChoice | None = None,
        caveats: Sequence[str] = (),
    ) -> dict[str, Any]:
        """One window's score; ``window_risk`` None is insufficient evidence. ``speaker``:
        which of several faces was scored (or that none could be), named in the event.
        ``caveats`` (too little media, thinned media, missing detectors) go into the
        rationale."""
        if window_risk is None:
            reasons = [e.rationale for e in evidence]
            if speaker is not None and speaker.track_id is None:
                reasons = [speaker.reason]
            span = format_span(window.t_start, window.t_end)
            because = "; ".join([*caveats, *reasons]) or "no detector ran"
            rationale = f"insufficient evidence over {span}: {because}"
        else:
            rationale = "; ".join([scored_rationale(evidence, strongest_first=True), *caveats])
            if speaker is not None:
                rationale = f"{speaker.reason}; {rationale}"
        quality = window.quality.as_event() if window.quality is not None else None
        extra = {"speaker": speaker.to_json()} if speaker is not None else {}
        return self.make(
            "score",
            window=window.index,
            t_start=round(window.t_start, 3),
            t_end=round(window.t_end, 3),
            risk=round(risk, 4),
            window_risk=None if window_risk is None else round(window_risk, 4),
            level=level,
            session_level=session_level,
            rationale=rationale,
            evidence=[item.to_json() for item in evidence],
            dropped_frames=dropped_frames,
            quality=quality,
            inference_ms=round(inference_s * 1000, 2),
            **extra,
        )

    def alert(
        self, score: dict[str, Any], change: LevelChange, explanation: dict[str, Any]
    ) -> dict[str, Any]:
        """The level change that ``score`` (a score event) brought, with its evidence."""
        return self.make(
            "alert",
            level=change.level,
            previous_level=change.previous_level,
            risk=score["risk"],
            t_start=score["t_start"],
            t_end=score["t_end"],
            rationale=f"level {change.previous_level} -> {change.level}: {score['rationale']}",
            evidence=score["evidence"],
            explanation=explanation,
        )

    def summary(
        self,
        evidence: Sequence[Evidence],
        *,
        risk: float | None,
        level: str,
        final_level: str,
        peak_risk: float,
        mean_window_risk: float | None,
        counts: Mapping[str, Any],
        quality: Mapping[str, Any] | None = None,
        caveats: Sequence[str] = (),
        unavailable: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """The session's verdict from its session-level ``evidence``; ``risk`` None is
        insufficient evidence. ``counts``: windows, frames, drops and alerts of the session;
        ``quality``: its media, frame by frame; ``caveats``: what the verdict rests on."""
        if risk is None:
            rationale = "; ".join(["insufficient evidence", *caveats])
        else:
            scored = scored_rationale(evidence) or f"mean window risk {risk:.2f}"
            rationale = "; ".join([scored, *caveats])
        return self.make(
            "summary",
            risk=round(float(risk or 0.0), 4),
            level=level,
            final_level=final_level,
            peak_risk=round(peak_risk, 4),
            mean_window_risk=None if mean_window_risk is None else round(mean_window_risk, 4),
            **counts,
            quality=dict(quality or {}),
            unavailable_detectors=dict(unavailable or {}),
            rationale=rationale,
            evidence=[item.to_json() for item in evidence],
        )

    def error(self, message: str, **fields: Any) -> dict[str, Any]:
        return self.make("error", message=message, **fields)


def scored_rationale(evidence: Iterable[Evidence], *, strongest_first: bool = False) -> str:
    """``detector 0.83: its rationale; ...`` over the sufficient evidence."""
    scored = [e for e in evidence if e.score is not None]
    if strongest_first:
        scored.sort(key=lambda e: -(e.score or 0.0))
    return "; ".join(f"{e.detector} {e.score:.2f}: {e.rationale}" for e in scored)


@lru_cache(maxsize=1)
def event_schema() -> dict[str, Any]:
    text = resources.files("monitor.schema").joinpath("events.schema.json").read_text()
    return json.loads(text)


def validate_event(event: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` when an event breaks the schema."""
    import jsonschema

    jsonschema.validate(event, event_schema(), format_checker=jsonschema.FormatChecker())


def dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), allow_nan=False)
