"""The ``temporal`` detector: is the mouth consistent with the face it sits in, over time?

It targets what the sync detector cannot see: generated and lip-synced mouths that are in
sync by design. It only looks at the tracked face (aligned face and mouth crops, landmarks),
never at the rest of the frame, so watermarks, insets and subtitles cannot decide.
Each cue is a z-score against genuine speech (see :mod:`.calibration`); the rationale names
the cues that stand out, with their values and the time span.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import numpy as np

from monitor.config import MonitorConfig
from monitor.detectors.base import (
    SPAN_SCORE,
    Evidence,
    format_span,
    merge_spans,
    too_few_windows,
)
from monitor.detectors.temporal.calibration import Calibration, calibration_for
from monitor.detectors.temporal.cues import CUE_LABELS, FrameMeasure, measure_frame, window_cues
from monitor.features.store import FrameStore, has_face_crop
from monitor.features.types import FrameFeatures
from monitor.windows import AnalysisWindow

log = logging.getLogger(__name__)
_warned: set[str] = set()  # tracking mismatches already logged by this process

# Fewer face frames than this in a window: insufficient evidence, whatever the fraction.
MIN_FACE_FRAMES = 8
# A cue is named in the rationale from this many sigma in its suspicious direction.
NOTABLE_Z = 2.0


def describe_cues(z_scores: dict[str, float], calibration: Calibration, span: str) -> list[str]:
    """Rationale phrases for the cues at least NOTABLE_Z sigma towards 'fake', strongest first."""
    notable = []
    for name, z in z_scores.items():
        cue = calibration.cues[name]
        if math.isfinite(z) and cue.weight > 0 and cue.direction * z >= NOTABLE_Z:
            side = "above" if z > 0 else "below"
            notable.append(
                (
                    cue.direction * z,
                    f"{CUE_LABELS[name]} {abs(z):.1f} sigma {side} genuine speech over {span}",
                )
            )
    return [text for _, text in sorted(notable, reverse=True)]


def _rounded(values: dict[str, float]) -> dict[str, float | None]:
    return {k: (round(v, 3) if math.isfinite(v) else None) for k, v in values.items()}


class TemporalDetector:
    """Per-session state: per-frame measures (reused by overlapping windows) and window cues."""

    name: ClassVar[str] = "temporal"
    version: ClassVar[str] = "2"
    reads_window_face_crops: ClassVar[bool] = False  # measured in observe

    def __init__(self, config: MonitorConfig, calibration: Calibration | None = None) -> None:
        self.window_config = config.window
        self.calibration = calibration if calibration is not None else calibration_for(config.face)
        mismatch = self.calibration.tracking_mismatch(config.face)
        if mismatch is not None and mismatch not in _warned:
            _warned.add(mismatch)
            log.warning(
                "temporal detector: face tracking runs with %s; its cues move with the "
                "tracking, so its z-scores are off their calibration (docs/RESULTS.md). "
                "Recalibrate with tools/calibrate_temporal.py under the same [face] settings.",
                mismatch,
            )
        self._measures: FrameStore[FrameMeasure] = FrameStore(_measure_frames)
        self._windows: list[
            tuple[float, float, dict[str, float], float]
        ] = []  # t0, t1, cues, score

    # ----- measurement --------------------------------------------------------------------

    def observe(self, frame: FrameFeatures) -> None:
        """Measure each face frame as it arrives (every window holding it reuses that)."""
        if frame.face is not None:
            self._measures.add([frame])

    def _frame_measures(self, window: AnalysisWindow) -> list[FrameMeasure]:
        # A frame measured before keeps no crop; one never measured needs its crop.
        frames = self._measures.obtainable(window.face_frames, has_face_crop)
        measures = self._measures.get(frames)
        # Windows move forward: frames before this one's start are not needed again.
        self._measures.forget_before(window.t_start)
        return measures

    def insufficiency(self, window: AnalysisWindow) -> str | None:
        """Why this window cannot be judged, or None."""
        faces = len(window.face_frames)
        if faces < MIN_FACE_FRAMES:
            return f"only {faces} face frames"
        if window.face_fraction < self.window_config.min_face_fraction:
            return f"face visible in only {window.face_fraction:.0%} of frames"
        return None

    def measure_window(self, window: AnalysisWindow) -> dict[str, float] | None:
        """Raw cue values of a window (nan: not measurable), or None when it is insufficient."""
        if self.insufficiency(window) is not None:
            return None
        fps = window.fps or 25.0
        return window_cues(self._frame_measures(window), fps)

    # ----- detector protocol --------------------------------------------------------------

    def analyze(self, window: AnalysisWindow) -> Evidence:
        span = format_span(window.t_start, window.t_end)
        lacking = self.insufficiency(window)
        if lacking is not None:
            return Evidence(self.name, None, f"insufficient evidence: {lacking} over {span}")
        cues = self.measure_window(window)
        assert cues is not None
        z_scores = self.calibration.z_scores(cues, "window")
        combined = self.calibration.combine(z_scores, "window")
        fields: dict[str, Any] = {
            "cues": _rounded(cues),
            "cue_z": _rounded(z_scores),
            "face_frames": len(window.face_frames),
        }
        if combined is None:
            return Evidence(
                self.name,
                None,
                f"insufficient evidence: no cue measurable over {span}",
                fields=fields,
            )
        score = self.calibration.score(combined)
        self._windows.append((window.t_start, window.t_end, cues, score))
        fields["combined_z"] = round(combined, 3)
        notable = describe_cues(z_scores, self.calibration, span)
        if notable:
            rationale = "; ".join(notable)
        else:
            rationale = (
                f"mouth consistent with the face over {span} (combined {combined:+.1f} sigma)"
            )
        spans = [(window.t_start, window.t_end)] if score >= SPAN_SCORE else []
        return Evidence(self.name, score, rationale, spans=spans, fields=fields)

    def summarize(self) -> Evidence | None:
        """Session evidence: each cue's median over the scored windows, against genuine sessions."""
        if not self._windows:
            return None
        if short := too_few_windows(self.name, len(self._windows)):
            return short
        medians = {}
        for name in self.calibration.cues:
            values = np.array([cues.get(name, math.nan) for _, _, cues, _ in self._windows])
            values = values[np.isfinite(values)]
            medians[name] = float(np.median(values)) if len(values) else math.nan
        z_scores = self.calibration.z_scores(medians, "session")
        combined = self.calibration.combine(z_scores, "session")
        if combined is None:
            return Evidence(
                self.name, None, "insufficient evidence: no cue measurable in the session"
            )
        score = self.calibration.score(combined)
        spans = merge_spans([(t0, t1) for t0, t1, _, s in self._windows if s >= SPAN_SCORE])
        whole = format_span(self._windows[0][0], self._windows[-1][1])
        notable = describe_cues(z_scores, self.calibration, whole)
        if notable:
            rationale = "session median: " + "; ".join(notable)
        else:
            rationale = (
                "session median cues consistent with genuine speech "
                f"(combined {combined:+.1f} sigma)"
            )
        fields = {
            "cues": _rounded(medians),
            "cue_z": _rounded(z_scores),
            "combined_z": round(combined, 3),
            "windows": len(self._windows),
        }
        return Evidence(self.name, score, rationale, spans=spans, fields=fields)


def _measure_frames(frames: list[FrameFeatures]) -> list[FrameMeasure]:
    return [measure_frame(f.t, f.index, f.face) for f in frames if f.face is not None]


def create_temporal_detector(config: MonitorConfig) -> TemporalDetector:
    """Factory for the registry and the ``dfmon.detectors`` entry point."""
    return TemporalDetector(config)
