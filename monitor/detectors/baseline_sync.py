"""Training-free lip-sync baseline: cross-correlate lip motion with the audio envelope.

It is the floor the learned model must beat. Mouth opening against loudness correlates
0.4-0.5 for some speakers and about 0 for others, so this detector is weak by nature;
it reports its numbers so a reviewer can judge.

Sign convention: ``offset_ms > 0`` means the audio arrives later than the lips.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from monitor.config import MonitorConfig
from monitor.detectors.base import GENUINE_OFFSET_MS, Evidence, describe_offset, format_span
from monitor.windows import AnalysisWindow

# Each window's curve is blended with the previous ones (EWMA): single 2 s windows of
# syllable-rate speech have side peaks one or two syllables away.
CURVE_MEMORY = 0.6
# Speech is quasi-periodic (syllables), so correlation has side peaks. A lag far from zero
# must beat the near-zero peak by this much per 600 ms of lag before it is believed.
LAG_PRIOR_PER_600MS = 0.1
# Peak correlation above which lips and speech are clearly coupled.
STRONG_COUPLING = 0.35
# Aperture spread (fraction of face height) below which the lips count as still.
STILL_LIPS_STD = 0.004
MOVING_LIPS_STD = 0.02
# Alone this stays below "suspicious": muted participants talk to people in their room.
SILENT_MOTION_SCORE = 0.4
NO_SPEECH = "too little speech in the window"
# Fewer tracked frames than this (dropped frames, a face lost) cannot carry a lag estimate.
MIN_FACE_FRAMES = 8


def _zscore(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return (x - x.mean()) / std if std > 1e-9 else np.zeros_like(x)


def _lagged_correlation(
    lips: np.ndarray, audio: np.ndarray, lag_steps: np.ndarray, lo: int
) -> np.ndarray:
    """corr(lips[t], audio[t + lag]) for each lag; ``lips`` covers audio[lo : lo + len(lips)]."""
    n = len(lips)
    out = np.empty(len(lag_steps))
    for i, lag in enumerate(lag_steps):
        seg = audio[lo + lag : lo + lag + n]
        out[i] = float(np.dot(lips, _zscore(seg)) / n)
    return out


def _best_lag(curve: np.ndarray, lags_ms: np.ndarray) -> int:
    return int(np.argmax(curve - LAG_PRIOR_PER_600MS * np.abs(lags_ms) / 600.0))


def lip_motion_on_audio_clock(window: AnalysisWindow) -> tuple[np.ndarray, np.ndarray] | None:
    """Lip aperture on the audio-feature times inside the window, and that inside-mask."""
    faces = window.face_frames
    if len(faces) < 2:
        return None
    times = np.array([f.t for f in faces])
    aperture = np.array([f.face.aperture for f in faces])  # type: ignore[union-attr]
    audio_times = window.audio.times
    inside = (audio_times >= window.t_start) & (audio_times < window.t_end)
    return np.interp(audio_times[inside], times, aperture), inside


class BaselineSyncDetector:
    """Training-free lip-sync detector (``lip_sync``, method ``baseline``)."""

    name: ClassVar[str] = "lip_sync"
    version: ClassVar[str] = "baseline-1"
    reads_window_face_crops: ClassVar[bool] = False  # mouth crops only

    def __init__(self, config: MonitorConfig) -> None:
        self.window_config = config.window
        self._curve_sum: np.ndarray | None = None
        self._curve_windows = 0
        self._lags_ms: np.ndarray | None = None
        self._span: tuple[float, float] | None = None
        self._recent_curve: np.ndarray | None = None

    def analyze(self, window: AnalysisWindow) -> Evidence:
        span = format_span(window.t_start, window.t_end)
        lacking = self._lacking(window)
        if lacking == NO_SPEECH:
            silent_motion = self._silent_lip_motion(window, span)
            if silent_motion is not None:
                return silent_motion
        if lacking:
            return self._insufficient(f"insufficient evidence: {lacking} over {span}")
        motion = lip_motion_on_audio_clock(window)
        if motion is None or len(motion[0]) < MIN_FACE_FRAMES:
            return self._insufficient(
                f"insufficient evidence: too little lip motion data over {span}"
            )
        aperture, inside = motion
        speech = window.speech_fraction()
        aperture_std = float(aperture.std())
        if aperture_std < STILL_LIPS_STD:
            return Evidence(
                self.name,
                0.8,
                f"speech without lip motion over {span}: {speech:.0%} voiced, lip aperture spread "
                f"{aperture_std:.4f} of face height (moving lips exceed {STILL_LIPS_STD})",
                spans=[(window.t_start, window.t_end)],
                fields=self._fields(None, None, None, None, method_note="still lips"),
            )
        window_curve, lags_ms = self._correlation_curve(window, aperture, inside)
        self._accumulate(window_curve, lags_ms, window)
        curve = self._blend_recent(window_curve)
        best = _best_lag(curve, lags_ms)
        offset_ms = float(lags_ms[best])
        peak = float(curve[best])
        confidence = float(peak - np.median(curve))
        score = self._score(curve, lags_ms, best)
        return Evidence(
            self.name,
            score,
            self._rationale(offset_ms, peak, confidence, span),
            spans=[(window.t_start, window.t_end)],
            fields=self._fields(offset_ms, confidence, peak, (lags_ms, curve)),
        )

    def summarize(self) -> Evidence | None:
        """Session-level evidence from the average correlation curve of all scored windows."""
        if self._curve_sum is None or self._lags_ms is None or self._span is None:
            return None
        curve = self._curve_sum / self._curve_windows
        best = _best_lag(curve, self._lags_ms)
        offset_ms = float(self._lags_ms[best])
        peak = float(curve[best])
        confidence = float(peak - np.median(curve))
        span = format_span(*self._span)
        return Evidence(
            self.name,
            self._score(curve, self._lags_ms, best),
            f"over {self._curve_windows} windows: "
            + self._rationale(offset_ms, peak, confidence, span),
            spans=[self._span],
            fields=self._fields(offset_ms, confidence, peak, (self._lags_ms, curve)),
        )

    def _lacking(self, window: AnalysisWindow) -> str | None:
        if not window.has_audio_stream:
            return "the call has no audio"
        if len(window.face_frames) < MIN_FACE_FRAMES:
            return f"only {len(window.face_frames)} frames with a face"
        if window.face_fraction < self.window_config.min_face_fraction:
            return f"face visible in {window.face_fraction:.0%} of frames"
        if window.speech_fraction() < self.window_config.min_speech_fraction:
            return NO_SPEECH
        return None

    def _silent_lip_motion(self, window: AnalysisWindow, span: str) -> Evidence | None:
        """Lips moving like speech while the audio is silent (muted talkers do this too)."""
        motion = lip_motion_on_audio_clock(window)
        if motion is None or len(motion[0]) < MIN_FACE_FRAMES:
            return None
        spread = float(motion[0].std())
        if spread < MOVING_LIPS_STD:
            return None
        return Evidence(
            self.name,
            SILENT_MOTION_SCORE,
            f"lip motion without speech over {span}: lip aperture spread {spread:.3f} of face "
            f"height (speaking lips exceed {MOVING_LIPS_STD}) with "
            f"{window.speech_fraction():.0%} of the audio voiced",
            spans=[(window.t_start, window.t_end)],
            fields=self._fields(None, None, None, None, method_note="silent lip motion"),
        )

    def _insufficient(self, rationale: str) -> Evidence:
        return Evidence(self.name, None, rationale, fields=self._fields(None, None, None, None))

    def _correlation_curve(
        self, window: AnalysisWindow, aperture: np.ndarray, inside: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        hop_s = window.audio.hop_s
        max_lag = int(round(self.window_config.max_lag_s / hop_s))
        lo = int(np.argmax(inside))
        available = len(window.audio) - (lo + len(aperture))
        max_lag = max(0, min(max_lag, lo, available))
        lag_steps = np.arange(-max_lag, max_lag + 1)
        envelope = np.maximum(window.audio.loudness_db, -60.0)
        envelope = np.convolve(envelope, np.ones(5) / 5, mode="same")
        onsets = np.maximum(np.gradient(envelope), 0.0)
        opening = _zscore(aperture)
        opening_speed = _zscore(np.maximum(np.gradient(aperture), 0.0))
        level_curve = _lagged_correlation(opening, envelope, lag_steps, lo)
        onset_curve = _lagged_correlation(opening_speed, onsets, lag_steps, lo)
        return 0.5 * (level_curve + onset_curve), lag_steps * hop_s * 1000.0

    def _blend_recent(self, curve: np.ndarray) -> np.ndarray:
        previous = self._recent_curve
        if previous is not None and previous.shape == curve.shape:
            curve = CURVE_MEMORY * previous + (1.0 - CURVE_MEMORY) * curve
        self._recent_curve = curve
        return curve

    def _accumulate(self, curve: np.ndarray, lags_ms: np.ndarray, window: AnalysisWindow) -> None:
        if self._curve_sum is None or self._lags_ms is None or len(lags_ms) != len(self._lags_ms):
            if self._curve_sum is not None and len(lags_ms) < len(self._lags_ms or []):
                return  # a truncated edge window; keep the full-range curves
            self._curve_sum, self._curve_windows, self._lags_ms = np.zeros_like(curve), 0, lags_ms
        self._curve_sum += curve
        self._curve_windows += 1
        start = window.t_start if self._span is None else self._span[0]
        self._span = (start, window.t_end)

    @staticmethod
    def _score(curve: np.ndarray, lags_ms: np.ndarray, best: int) -> float:
        offset_ms, peak = float(lags_ms[best]), float(curve[best])
        outside = float(np.clip((abs(offset_ms) - GENUINE_OFFSET_MS) / 200.0, 0.0, 1.0))
        coupling = float(np.clip(peak / STRONG_COUPLING, 0.0, 1.0))
        # How far the chosen peak stands above the best lag genuine speech would show:
        # quasi-periodic speech gives side peaks barely above the true one.
        in_band = np.abs(lags_ms) <= GENUINE_OFFSET_MS
        dominance = peak - float(curve[in_band].max()) if in_band.any() else peak
        credible = float(np.clip(dominance / 0.3, 0.0, 1.0))
        # A dominant peak far from zero is strong evidence; weak coupling is mild evidence.
        return 0.1 + 0.8 * outside * credible + 0.2 * (1.0 - coupling)

    @staticmethod
    def _rationale(offset_ms: float, peak: float, confidence: float, span: str) -> str:
        timing = describe_offset(offset_ms, GENUINE_OFFSET_MS)
        return (
            f"{timing} over {span}; lip-audio correlation {peak:.2f} "
            f"(sync confidence {confidence:.2f}; coupled speech gives > {STRONG_COUPLING})"
        )

    def _fields(
        self,
        offset_ms: float | None,
        confidence: float | None,
        peak: float | None,
        curve: tuple[np.ndarray, np.ndarray] | None,
        method_note: str | None = None,
    ) -> dict[str, object]:
        fields: dict[str, object] = {
            "offset_ms": None if offset_ms is None else round(offset_ms, 1),
            "confidence": None if confidence is None else round(confidence, 3),
            "method": "baseline",
        }
        if peak is not None:
            fields["correlation"] = round(peak, 3)
        if curve is not None:
            lags_ms, values = curve
            fields["lag_curve_ms"] = [round(float(v), 1) for v in lags_ms[::4]]
            fields["lag_curve"] = [round(1.0 - float(v), 4) for v in values[::4]]
        if method_note:
            fields["note"] = method_note
        return fields
