"""Event construction and validation (schema version 2).

Every event carries ``schema``, ``type``, ``session``, ``participant`` and ``ts``;
the same dicts go to JSONL files and to the websocket alert channel. The payloads of
``session_started``, ``score``, ``alert`` and ``summary`` are built here, beside the
schema they must satisfy (``monitor/schema/events.schema.json``), from what the session
decided (:mod:`monitor.decision`): the session accumulates evidence and sets levels, this
module words and rounds them.

Version 2 (the sequential decision): ``level`` is always the session's level after the
event (a window without evidence no longer reads ``unknown`` while the session stays
``clear``); ``risk`` is the session's accumulated evidence on the risk scale; score
events add ``evidence_nats``, ``window_llr`` and ``window_weight`` (the share of the
window's LLR added to the session: its media no earlier window counted), each evidence
item its ``llr``; the summary reports ``verdict``, ``peak`` and ``final_level`` instead of
one ``level``.
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
    from monitor.decision import FaceReading, WindowDecision
    from monitor.detectors.base import Evidence
    from monitor.features.speaker import SpeakerChoice
    from monitor.media import StreamInfo
    from monitor.windows import AnalysisWindow

SCHEMA_VERSION = 2
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
        calibrated: Iterable[str] = (),
        unavailable: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """``calibrated``: the detectors the decision has a calibration for; ``unavailable``:
        detectors needed to call a window clear that this session lacks, and why (then no
        window can be clear)."""
        decision = config.decision
        return self.make(
            "session_started",
            **info.as_event_fields(),
            config={
                "window_s": config.window.window_s,
                "hop_s": config.window.hop_s,
                # Where the levels start on the risk scale.
                "suspicious_threshold": config.fusion.suspicious_threshold,
                "alert_threshold": config.fusion.alert_threshold,
                "decision": {
                    "suspicious_nats": decision.suspicious_nats,
                    "alert_nats": decision.alert_nats,
                    "target_false_alerts_per_hour": decision.target_false_alerts_per_hour,
                    # Each window adds window_weight * (window_llr, or its audio side under
                    # per_face, - drift_allowance_nats) to summed_nats.
                    "drift_allowance_nats": decision.drift_allowance_nats,
                    "attack_model": decision.attack_model,
                    "face_horizon_s": decision.face_horizon_s,
                    "calibrated": sorted(calibrated),
                },
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
        step: WindowDecision,
        *,
        risk: float,
        dropped_frames: int,
        inference_s: float,
        speaker: SpeakerChoice | None = None,
        caveats: Sequence[str] = (),
    ) -> dict[str, Any]:
        """One window's score: what its evidence added (``step``) and where the session is.
        ``speaker``: which of several faces was scored (or that none could be), named in the
        event. ``caveats`` (too little media, thinned media, missing detectors) go into the
        rationale."""
        span = format_span(window.t_start, window.t_end)
        if step.llr is None:
            reasons = [e.rationale for e in evidence]
            if speaker is not None and speaker.track_id is None:
                reasons = [speaker.reason]
            because = "; ".join([*caveats, *reasons]) or "no detector ran"
            rationale = f"insufficient evidence over {span}: {because}"
        else:
            rationale = "; ".join(
                [
                    f"{step.llr:+.1f} nats over {span}{sides_text(step)}: "
                    + window_rationale(evidence, step),
                    *([face_text(step.face)] if step.face is not None else []),
                    *caveats,
                ]
            )
            if speaker is not None:
                rationale = f"{speaker.reason}; {rationale}"
        items = []
        for item in evidence:
            data = item.to_json()
            if item.detector in step.contributions:
                data["llr"] = round(step.contributions[item.detector], 3)
            items.append(data)
        quality = window.quality.as_event() if window.quality is not None else None
        extra = {"speaker": speaker.to_json()} if speaker is not None else {}
        return self.make(
            "score",
            window=window.index,
            t_start=round(window.t_start, 3),
            t_end=round(window.t_end, 3),
            risk=round(risk, 4),
            window_risk=None if step.window_risk is None else round(step.window_risk, 4),
            level=step.level,
            evidence_nats=round(step.evidence_nats, 3),
            summed_nats=round(step.summed_nats, 3),
            face_reading=None
            if step.face is None
            else {
                "nats": round(step.face.nats, 3),
                "mean_llr": round(step.face.mean_llr, 3),
                "windows": step.face.windows,
            },
            window_llr=None if step.llr is None else round(step.llr, 3),
            window_weight=None if step.weight is None else round(step.weight, 3),
            rationale=rationale,
            evidence=items,
            dropped_frames=dropped_frames,
            quality=quality,
            inference_ms=round(inference_s * 1000, 2),
            **extra,
        )

    def alert(
        self,
        score: dict[str, Any],
        previous_level: str,
        config: MonitorConfig,
        explanation: dict[str, Any],
    ) -> dict[str, Any]:
        """The level change that ``score`` (a score event) brought, with its evidence."""
        level = score["level"]
        reason = level_reason(level, score["evidence_nats"], config)
        return self.make(
            "alert",
            level=level,
            previous_level=previous_level,
            risk=score["risk"],
            evidence_nats=score["evidence_nats"],
            t_start=score["t_start"],
            t_end=score["t_end"],
            rationale=f"level {previous_level} -> {level}: {reason}; {score['rationale']}",
            evidence=score["evidence"],
            explanation=explanation,
        )

    def summary(
        self,
        evidence: Sequence[Evidence],
        *,
        verdict: str,
        risk: float,
        peak: Mapping[str, Any] | None,
        final_level: str,
        final_risk: float,
        evidence_nats: float,
        config: MonitorConfig,
        counts: Mapping[str, Any],
        quality: Mapping[str, Any] | None = None,
        caveats: Sequence[str] = (),
        unavailable: Mapping[str, str] | None = None,
        clearing_windows: int | None = None,
    ) -> dict[str, Any]:
        """The session's verdict, its peak moment and its final state, as separate fields.

        ``verdict`` is the highest level the session's evidence reached (``unknown``: it
        never had evidence enough to clear), ``risk`` that peak on the risk scale, ``peak``
        where it was, ``final_level`` and ``final_risk`` where the session ended.
        ``evidence``: each detector's session-level evidence (explains, does not decide).
        ``counts``: windows, frames, drops and alerts of the session; ``quality``: its
        media, frame by frame; ``caveats``: what the verdict rests on.
        """
        decision = config.decision
        if peak is None:
            head = "insufficient evidence: no window had enough face and speech to clear the call"
        elif verdict == "unknown":
            needs = "/".join(config.fusion.clear_requires)
            why_not_clear = (
                f"no window had the {needs} evidence (a face and speech) that clearing needs"
                if clearing_windows == 0
                else "it never looked genuine enough to clear the call"
            )
            head = (
                f"insufficient evidence: {why_not_clear}; the evidence for manipulation "
                f"peaked at {peak['evidence_nats']:.1f} nats over "
                f"{format_span(peak['t_start'], peak['t_end'])}, below the suspicious level "
                f"({decision.suspicious_nats:g} nats)"
            )
        elif verdict == "clear":
            head = (
                f"clear: the evidence for manipulation peaked at {peak['evidence_nats']:.1f} "
                f"nats over {format_span(peak['t_start'], peak['t_end'])}, below the "
                f"suspicious level ({decision.suspicious_nats:g} nats)"
            )
        else:
            head = (
                f"{verdict}: "
                + level_reason(verdict, peak["evidence_nats"], config)
                + f" over {format_span(peak['t_start'], peak['t_end'])} ({peak['rationale']})"
            )
        if verdict != final_level:
            head += f"; final state {final_level} ({evidence_nats:.1f} nats)"
        head = "; ".join([head, *caveats])
        details = scored_rationale(evidence)
        return self.make(
            "summary",
            verdict=verdict,
            risk=round(risk, 4),
            peak=None
            if peak is None
            else {
                "level": peak["level"],
                "risk": round(peak["risk"], 4),
                "evidence_nats": round(peak["evidence_nats"], 3),
                "t_start": round(peak["t_start"], 3),
                "t_end": round(peak["t_end"], 3),
            },
            final_level=final_level,
            final_risk=round(final_risk, 4),
            evidence_nats=round(evidence_nats, 3),
            **counts,
            quality=dict(quality or {}),
            unavailable_detectors=dict(unavailable or {}),
            rationale=head + (f". Session evidence: {details}" if details else ""),
            evidence=[item.to_json() for item in evidence],
        )

    def error(self, message: str, **fields: Any) -> dict[str, Any]:
        return self.make("error", message=message, **fields)


def sides_text(step: WindowDecision) -> str:
    """The window's two readings, where the decision reads them apart."""
    if step.sides is None:
        return ""
    audio, face = step.sides
    if step.attack_model == "either":
        return f" (either attack: audio off the lips {audio:+.1f}, a forged face {face:+.1f})"
    return f" (audio off the lips {audio:+.1f}, the face {face:+.1f})"


def face_text(face: FaceReading) -> str:
    """attack_model "per_face": what the face of the recent windows reads as one face."""
    return (
        f"the face over its last {face.windows} windows reads {face.nats:+.1f} nats "
        f"(a forged face against a genuine one): {face.mean_llr:+.2f} nats a window where "
        f"genuine faces give {face.genuine_mean:+.2f} +- {face.genuine_between_sd:.2f}"
    )


def level_reason(level: str, evidence_nats: float, config: MonitorConfig) -> str:
    """Why the session is at ``level``, in its own numbers."""
    decision = config.decision
    if level == "alert":
        return (
            f"evidence for manipulation reached {evidence_nats:.1f} nats "
            f"(alert from {decision.alert_nats:g})"
        )
    if level == "suspicious":
        return (
            f"evidence for manipulation at {evidence_nats:.1f} nats "
            f"(suspicious from {decision.suspicious_nats:g}, alert from {decision.alert_nats:g})"
        )
    if level == "clear":
        return (
            f"evidence for manipulation down to {evidence_nats:.1f} nats, speech matches the lips"
        )
    return "no evidence to clear the call (no face or no speech)"


def window_rationale(evidence: Iterable[Evidence], step: WindowDecision) -> str:
    """``detector +1.2 nats (score 0.83): its rationale; ...``, strongest evidence first,
    then the detectors without evidence and why (``lip_sync: insufficient evidence: ...``)."""
    evidence = list(evidence)
    scored = [e for e in evidence if e.score is not None]
    scored.sort(key=lambda e: -step.contributions.get(e.detector, 0.0))
    parts = []
    for e in scored:
        llr = step.contributions.get(e.detector)
        weight = "not counted" if llr is None else f"{llr:+.1f} nats"
        parts.append(f"{e.detector} {weight} (score {e.score:.2f}): {e.rationale}")
    parts += [f"{e.detector}: {e.rationale}" for e in evidence if e.score is None]
    return "; ".join(parts)


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
