"""The decision rule dfmon used before the calibrated sequential decision, kept to measure
against (``legacy`` in ``tools/eval_calls.py``): per-window evidence -> power-mean risk ->
EWMA -> level with a two-window raise and hysteresis.

It is not used by any session. ``tools/eval_calls.py --before`` checks that replaying it
on a former checkout's evidence gives that checkout's own levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from monitor.detectors.base import Evidence
from monitor.levels import LEVEL_RANK, RISK_LEVELS, UNKNOWN


@dataclass(frozen=True)
class LegacyFusion:
    """The former ``[fusion]`` defaults."""

    ewma_alpha: float = 0.5
    suspicious_threshold: float = 0.5
    alert_threshold: float = 0.7
    hysteresis: float = 0.1
    min_windows_to_raise: int = 2
    clear_requires: tuple[str, ...] = ("lip_sync",)
    weights: tuple[tuple[str, float], ...] = (("lip_sync", 1.0), ("temporal", 0.5))


POWER = 4.0


def fuse_evidence(evidence: Sequence[Evidence], weights: dict[str, float]) -> float | None:
    """Weighted power mean of the sufficient scores; None when none is sufficient."""
    total_weight = 0.0
    total = 0.0
    for item in evidence:
        if item.score is None:
            continue
        weight = weights.get(item.detector, 1.0)
        if weight <= 0:
            continue
        total_weight += weight
        total += weight * item.score**POWER
    if total_weight == 0:
        return None
    return (total / total_weight) ** (1.0 / POWER)


def gate_clearing(
    risk: float | None, evidence: Sequence[Evidence], config: LegacyFusion, active: set[str]
) -> float | None:
    """None (insufficient) when a detector required to clear has no evidence and risk is low.

    Absence of speech must not read as "clear" just because the face looks consistent;
    it may still raise the level on what the other detectors do see.
    """
    if risk is None or risk >= config.suspicious_threshold:
        return risk
    sufficient = {item.detector for item in evidence if item.score is not None}
    missing = [name for name in config.clear_requires if name in active and name not in sufficient]
    return None if missing else risk


@dataclass
class LevelChange:
    previous_level: str
    level: str


@dataclass
class RiskState:
    """Smoothed risk and level of one session; feed it one window at a time."""

    config: LegacyFusion
    # Consecutive insufficient windows after which the session level becomes unknown.
    unknown_after_windows: int = 8
    smoothed_risk: float | None = None
    level: str = UNKNOWN
    peak_level: str = UNKNOWN
    peak_risk: float = 0.0
    window_risks: list[float] = field(default_factory=list)
    _raise_streak: int = 0
    _insufficient_streak: int = 0

    def _threshold(self, level: str) -> float:
        return {
            "clear": 0.0,
            "suspicious": self.config.suspicious_threshold,
            "alert": self.config.alert_threshold,
        }[level]

    def level_for(self, risk: float) -> str:
        if risk >= self.config.alert_threshold:
            return "alert"
        if risk >= self.config.suspicious_threshold:
            return "suspicious"
        return "clear"

    def update(self, window_risk: float | None) -> LevelChange | None:
        """Advance by one window; return the level change, if any."""
        previous = self.level
        if window_risk is None:
            self._insufficient_streak += 1
            self._raise_streak = 0
            if self.level != "unknown" and self._insufficient_streak >= self.unknown_after_windows:
                self.level = "unknown"
                self.smoothed_risk = None
        else:
            self._insufficient_streak = 0
            self.window_risks.append(window_risk)
            alpha = self.config.ewma_alpha
            if self.smoothed_risk is None:
                self.smoothed_risk = window_risk
            else:
                self.smoothed_risk = alpha * window_risk + (1 - alpha) * self.smoothed_risk
            self.peak_risk = max(self.peak_risk, self.smoothed_risk)
            self._step_level(self.smoothed_risk)
        if LEVEL_RANK[self.level] > LEVEL_RANK[self.peak_level]:
            self.peak_level = self.level
        if self.level == previous:
            return None
        return LevelChange(previous_level=previous, level=self.level)

    def _step_level(self, risk: float) -> None:
        target = self.level_for(risk)
        if self.level == "unknown":
            # First sufficient evidence: start clear, and climb like any other session.
            self.level = "clear"
        if LEVEL_RANK[target] > LEVEL_RANK[self.level]:
            self._raise_streak += 1
            if self._raise_streak >= self.config.min_windows_to_raise:
                self.level = target
                self._raise_streak = 0
            return
        self._raise_streak = 0
        # Step down one level at a time, only past the hysteresis band.
        while self.level != "clear" and risk < self._threshold(self.level) - self.config.hysteresis:
            self.level = RISK_LEVELS[RISK_LEVELS.index(self.level) - 1]

    @property
    def mean_window_risk(self) -> float | None:
        if not self.window_risks:
            return None
        return sum(self.window_risks) / len(self.window_risks)
