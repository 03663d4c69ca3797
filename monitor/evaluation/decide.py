"""Replay a session's decision from its per-window evidence, with either decision rule.

``legacy``: the fusion of the product before the sequential decision (power mean, EWMA,
two-window raise, hysteresis; :mod:`monitor.evaluation.legacy`). ``sequential``: the
calibrated
sequential decision (:mod:`monitor.decision`). Both read only the window evidence, which
is why one cached pass per clip can be scored by both and composed into long calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.config import MonitorConfig
from monitor.decision import EvidenceCalibration, SequentialDecision
from monitor.detectors.base import Evidence
from monitor.evaluation.legacy import LegacyFusion, RiskState, fuse_evidence, gate_clearing
from monitor.evaluation.sessions import SessionRecord
from monitor.levels import LEVEL_RANK, UNKNOWN

# One recorded window: its media start and end (s) and its evidence.
RecordedWindow = tuple[float, float, list[Evidence]]

RULES = ("legacy", "sequential")


@dataclass
class DecisionTrace:
    """What one decision rule did over one session's windows."""

    rule: str
    levels: list[str] = field(default_factory=list)  # per window, after it
    scores: list[float] = field(default_factory=list)  # per window: risk (legacy) or nats
    alerts: list[float] = field(default_factory=list)  # t_end of each entry into "alert"
    suspicious: list[float] = field(default_factory=list)  # t_end of each rise from below it

    @property
    def peak_level(self) -> str:
        return max(self.levels, key=LEVEL_RANK.__getitem__, default=UNKNOWN)

    @property
    def final_level(self) -> str:
        return self.levels[-1] if self.levels else UNKNOWN

    @property
    def peak_score(self) -> float:
        return max(self.scores, default=0.0)

    def first_alarm_after(self, onset_s: float) -> float | None:
        """t_end of the first rise to suspicious or alert whose window ends after the onset."""
        times = [t for t in self.suspicious + self.alerts if t > onset_s]
        return min(times) if times else None


def _note(trace: DecisionTrace, previous: str, level: str, t_end: float) -> None:
    if level == "alert" and previous != "alert":
        trace.alerts.append(t_end)
    if LEVEL_RANK[level] >= LEVEL_RANK["suspicious"] > LEVEL_RANK[previous]:
        trace.suspicious.append(t_end)


def legacy_trace(windows: Sequence[RecordedWindow], config: MonitorConfig) -> DecisionTrace:
    """The product's former fusion, window by window, as its pipeline ran it."""
    fusion = LegacyFusion()
    weights = dict(fusion.weights)
    windows_per_unknown = max(1, round(2 * config.window.window_s / config.window.hop_s))
    state = RiskState(fusion, unknown_after_windows=windows_per_unknown)
    trace = DecisionTrace("legacy")
    for _, t_end, evidence in windows:
        window_risk = gate_clearing(
            fuse_evidence(evidence, weights), evidence, fusion, {item.detector for item in evidence}
        )
        previous = state.level
        state.update(window_risk)
        _note(trace, previous, state.level, t_end)
        trace.levels.append(state.level)
        trace.scores.append(state.smoothed_risk or 0.0)
    return trace


def sequential_trace(
    windows: Sequence[RecordedWindow],
    config: MonitorConfig,
    calibration: EvidenceCalibration,
    versions: dict[str, str],
) -> DecisionTrace:
    decision = SequentialDecision.for_session(config, versions, calibration)
    trace = DecisionTrace("sequential")
    for t_start, t_end, evidence in windows:
        step = decision.update(evidence, {item.detector for item in evidence}, (t_start, t_end))
        _note(trace, step.previous_level, step.level, t_end)
        trace.levels.append(step.level)
        trace.scores.append(step.evidence_nats)
    return trace


def pipeline_trace(record: SessionRecord, rule: str = "before") -> DecisionTrace:
    """The decision the session's own pipeline made, read from its events."""
    trace = DecisionTrace(rule)
    trace.levels = list(record.pipeline["session_levels"])
    trace.scores = [float(r or 0.0) for r in record.pipeline["risks"]]
    for alert in record.pipeline["alerts"]:
        _note(trace, alert["previous_level"], alert["level"], float(alert["t_end"]))
    return trace


def record_windows(record: SessionRecord, offset_s: float = 0.0) -> list[RecordedWindow]:
    """(t_start, t_end, evidence) per window, times moved by ``offset_s`` (for composed
    calls)."""
    return [
        (float(w["t_start"]) + offset_s, float(w["t_end"]) + offset_s, record.evidence(i))
        for i, w in enumerate(record.windows)
    ]


def trace(
    rule: str,
    windows: Sequence[RecordedWindow],
    config: MonitorConfig,
    calibration: EvidenceCalibration | None = None,
    versions: dict[str, str] | None = None,
) -> DecisionTrace:
    if rule == "legacy":
        return legacy_trace(windows, config)
    if rule == "sequential":
        if calibration is None:
            raise ValueError("the sequential rule needs a calibration")
        return sequential_trace(windows, config, calibration, versions or {})
    raise ValueError(f"unknown decision rule {rule!r}")


def summary_of(t: DecisionTrace) -> dict[str, Any]:
    return {
        "peak_level": t.peak_level,
        "final_level": t.final_level,
        "peak_score": round(t.peak_score, 4),
        "alerts": len(t.alerts),
        "suspicious": len(t.suspicious),
    }
