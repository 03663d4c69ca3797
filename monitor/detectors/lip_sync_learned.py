"""The learned lip-sync detector: a small two-tower sync model compared across lags.

For each window it embeds every 5-frame mouth stack and every 0.2 s audio slice, takes
the mean distance at each lag of -600..+600 ms (SyncNet's curve), and reads off the
offset (``offset_ms > 0``: audio later than the lips), SyncNet's confidence (median
minus minimum distance) and a calibrated in-sync probability; the score is one minus
that probability. The model, its backends and its calibration live in monitor/sync/.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import ClassVar

import numpy as np

from monitor.config import MonitorConfig
from monitor.detectors.base import Evidence, describe_offset, format_span
from monitor.errors import BackendUnavailableError
from monitor.sync.backends import BatchingRunner, shared_runner
from monitor.sync.checkpoint import WEIGHTS_PATH, Calibration
from monitor.sync.features import (
    GRID_STEP_S,
    missing_stack_reason,
    track_from_frames,
    window_inputs,
    window_lag_distances,
)
from monitor.sync.scoring import CurveSummary, curve_features, summarize_curve
from monitor.windows import AnalysisWindow

log = logging.getLogger(__name__)

# |offset| up to this counts as aligned in rationales (codec and jitter-buffer delays).
ALIGNED_MS = 80.0
# Lowest frame rate scored. Frames are held on the model's 25 fps grid; measured on dev
# clips re-encoded at 5/10/15/25 fps (docs/LIVE.md), 300 ms shifts are still found at
# 5 fps, with sync confidence at 60-70% of its 25 fps value. Below it, syllables (4-5
# a second) fall between frames.
MIN_FPS = 5.0


@lru_cache(maxsize=1)
def load_calibration() -> Calibration:
    from monitor.sync.checkpoint import load_checkpoint

    _, info = load_checkpoint(WEIGHTS_PATH)
    if info.calibration is None:
        raise BackendUnavailableError(f"{WEIGHTS_PATH} carries no calibration")
    return info.calibration


class LearnedSyncDetector:
    """``lip_sync`` with ``method: "learned"``."""

    name: ClassVar[str] = "lip_sync"
    version: ClassVar[str] = "learned-1"

    def __init__(self, config: MonitorConfig, runner: BatchingRunner | None = None) -> None:
        self.window_config = config.window
        self.calibration = load_calibration()
        self.runner = runner if runner is not None else shared_runner(config.lip_sync.backend)
        self._curve_sum: np.ndarray | None = None
        self._lags: np.ndarray | None = None
        self._curve_windows = 0
        self._span: tuple[float, float] | None = None

    @property
    def backend(self) -> str:
        return self.runner.name

    def analyze(self, window: AnalysisWindow) -> Evidence:
        span = format_span(window.t_start, window.t_end)
        lacking = self._lacking(window)
        if lacking is None:
            inputs = window_inputs(window)
            if inputs is None:
                lacking = missing_stack_reason(
                    track_from_frames(window.frames), window.t_start, window.t_end
                )
        if lacking is not None:
            return Evidence(
                self.name,
                None,
                f"insufficient evidence: {lacking} over {span}",
                # The event schema wants both keys on every lip_sync evidence.
                fields={
                    "offset_ms": None,
                    "confidence": None,
                    "method": "learned",
                    "backend": self.backend,
                },
            )
        assert inputs is not None
        curve = window_lag_distances(inputs, self.runner.embed).mean(axis=0)
        lags = inputs.lags
        self._accumulate(curve, lags, window)
        return self._evidence(
            curve, lags, span, (window.t_start, window.t_end), len(inputs.positions)
        )

    def summarize(self) -> Evidence | None:
        """Session evidence from the mean lag curve of every scored window."""
        if self._curve_sum is None or self._lags is None or self._span is None:
            return None
        curve = self._curve_sum / self._curve_windows
        evidence = self._evidence(curve, self._lags, format_span(*self._span), self._span, None)
        evidence.rationale = f"over {self._curve_windows} windows: {evidence.rationale}"
        evidence.fields["windows"] = self._curve_windows
        return evidence

    # -----------------------------------------------------------------------------------

    def _lacking(self, window: AnalysisWindow) -> str | None:
        if not window.has_audio_stream:
            return "the call has no audio"
        fps = window.fps
        if fps is not None and fps < MIN_FPS * 0.9:
            return (
                f"the video runs at {fps:.1f} fps; lip-sync needs at least {MIN_FPS:g} fps "
                "to see each syllable's lip movement"
            )
        if window.face_fraction < self.window_config.min_face_fraction:
            return f"face visible in {window.face_fraction:.0%} of frames"
        speech = window.speech_fraction()
        if speech < self.window_config.min_speech_fraction:
            return f"speech in {speech:.0%} of the window"
        return None

    def _evidence(
        self,
        curve: np.ndarray,
        lags: np.ndarray,
        span: str,
        span_s: tuple[float, float],
        stacks: int | None,
    ) -> Evidence:
        summary = summarize_curve(curve, lags)
        probability = self.calibration.probability(curve_features(curve, lags))
        fields: dict[str, object] = {
            "offset_ms": round(summary.offset_ms, 1),
            "confidence": round(summary.confidence, 3),
            "in_sync_probability": round(probability, 4),
            "lag_curve_ms": [round(float(lag) * GRID_STEP_S * 1000.0, 1) for lag in lags],
            "lag_curve": [round(float(d), 4) for d in curve],
            "method": "learned",
            "backend": self.backend,
        }
        if stacks is not None:
            fields["scored_frames"] = stacks
        return Evidence(
            self.name,
            1.0 - probability,
            self._rationale(summary, probability, span),
            spans=[span_s],
            fields=fields,
        )

    def _rationale(self, summary: CurveSummary, probability: float, span: str) -> str:
        offset = summary.offset_ms
        timing = describe_offset(offset, ALIGNED_MS)
        genuine = self.calibration.genuine_confidence
        if summary.confidence < genuine:
            timing = f"no clear audio-lip match (best at {offset:+.0f} ms)"
        return (
            f"{timing} (sync confidence {summary.confidence:.1f}, genuine speech gives "
            f"> {genuine:.1f}; in-sync probability {probability:.2f}) over {span}"
        )

    def _accumulate(self, curve: np.ndarray, lags: np.ndarray, window: AnalysisWindow) -> None:
        if self._lags is not None and len(lags) != len(self._lags):
            return  # a window with a shorter audio context; keep full-range curves
        if self._curve_sum is None:
            self._curve_sum, self._lags = np.zeros_like(curve), lags
        self._curve_sum += curve
        self._curve_windows += 1
        start = window.t_start if self._span is None else self._span[0]
        self._span = (start, window.t_end)
