"""The ``artifact`` detector: was part of this face pasted in?

Lip-sync generators regenerate the mouth or the lower face of genuine footage and paste it
back; face swaps paste a whole face. Both are in sync with the speech by design, so the
lip-sync detector cannot see them; the paste can. A small network
(:mod:`monitor.detectors.artifact.model`, trained on self-blended pseudo-fakes of real
clips, see ``monitor/models/ARTIFACT_MODEL_CARD.md``) scores every second or third face
frame and draws where it sees a blend boundary. A window's value is the mean fake logit
of its scored frames, compared with genuine video (real clips as recorded and as a
starved call carries them): the rationale says how many sigma above genuine video it
stands, over which span, and where on the face the seam is.

It reads only the tracked face crop, never the rest of the frame (no corners, logos,
captions, insets) and nothing from the container or the audio: a video without a
soundtrack is scored like any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import numpy as np

from monitor.config import MonitorConfig
from monitor.detectors.artifact.backend import ArtifactBackend, shared_backend
from monitor.detectors.artifact.calibration import ArtifactCalibration, load_calibration
from monitor.detectors.artifact.crops import to_input_side
from monitor.detectors.artifact.evidence import (
    FaceGeometry,
    boundary_map_json,
    describe_region,
    face_geometry,
)
from monitor.detectors.base import (
    SPAN_SCORE,
    Evidence,
    format_span,
    merge_spans,
    too_few_windows,
)
from monitor.features.store import FrameStore, has_face_crop
from monitor.features.types import FrameFeatures
from monitor.windows import AnalysisWindow

log = logging.getLogger(__name__)

# Frames scored per second of video (every 2nd frame at 25-30 fps, every frame at 15).
SCORED_PER_SECOND = 12.5
# Fewer scored face frames than this in a window: insufficient evidence.
MIN_SCORED_FRAMES = 6
# The rationale names the seam from this many sigma above genuine video.
NOTABLE_Z = 2.0


@dataclass(frozen=True, slots=True)
class FrameScore:
    """What one scored face frame contributes (computed once, reused by every window)."""

    t: float
    index: int
    logit: float
    boundary: np.ndarray  # (GRID, GRID) in [0, 1]
    geometry: FaceGeometry


def frame_stride(fps: float | None) -> int:
    """Score every n-th frame so that about SCORED_PER_SECOND frames a second are scored."""
    return max(1, int(round((fps or 25.0) / SCORED_PER_SECOND)))


def score_frames(backend: ArtifactBackend, frames: list[FrameFeatures]) -> list[FrameScore]:
    """Per-frame scoring of face frames, in one batch (the session's FrameStore calls it)."""
    if not frames:
        return []
    crops = np.stack([to_input_side(f.face.face_crop) for f in frames])
    logits, maps = backend.score(crops)
    return [
        FrameScore(f.t, f.index, float(logit), boundary, face_geometry(f.face.landmarks))
        for f, logit, boundary in zip(frames, logits, maps, strict=True)
    ]


class ArtifactDetector:
    """Per-session state: scored frames by (frame, face track), so overlapping windows never
    rescore a frame, and each window's value for the session summary."""

    name: ClassVar[str] = "artifact"
    version: ClassVar[str] = "1"
    reads_window_face_crops: ClassVar[bool] = False  # scored in observe

    def __init__(
        self,
        config: MonitorConfig,
        backend: ArtifactBackend | None = None,
        calibration: ArtifactCalibration | None = None,
    ) -> None:
        self.window_config = config.window
        self.backend = backend if backend is not None else shared_backend()
        self.calibration = calibration if calibration is not None else load_calibration()
        self._scores: FrameStore[FrameScore] = FrameStore(partial(score_frames, self.backend))
        # Every n-th frame is scored; known from the first window's frame rate (25-30 fps
        # gives 2, what observe assumes until then).
        self._stride = 2
        self._windows: list[tuple[float, float, float, float]] = []  # t0, t1, value, score
        self._strongest: tuple[float, np.ndarray, FaceGeometry, float, float] | None = None

    # ----- measurement --------------------------------------------------------------------

    def observe(self, frame: FrameFeatures) -> None:
        """Score each frame to be scored as it arrives (every window holding it reuses that)."""
        if frame.face is not None and frame.index % self._stride == 0:
            self._scores.add([frame])

    def frame_scores(self, window: AnalysisWindow) -> list[FrameScore]:
        """The window's scored frames, scoring only those not scored before."""
        self._stride = frame_stride(window.fps)
        chosen = [f for f in window.face_frames if f.index % self._stride == 0]
        # A frame scored before keeps no crop; one never scored needs its crop.
        scores = self._scores.get(self._scores.obtainable(chosen, has_face_crop))
        # Windows move forward: frames before this one's start are not needed again.
        self._scores.forget_before(window.t_start)
        return scores

    def insufficiency(self, window: AnalysisWindow, scored: int | None = None) -> str | None:
        if window.face_fraction < self.window_config.min_face_fraction:
            return f"face visible in only {window.face_fraction:.0%} of frames"
        if scored is not None and scored < MIN_SCORED_FRAMES:
            return f"only {scored} face frames scored"
        return None

    # ----- detector protocol --------------------------------------------------------------

    def analyze(self, window: AnalysisWindow) -> Evidence:
        span = format_span(window.t_start, window.t_end)
        lacking = self.insufficiency(window)
        if lacking is not None:
            return Evidence(self.name, None, f"insufficient evidence: {lacking} over {span}")
        scores = self.frame_scores(window)
        lacking = self.insufficiency(window, len(scores))
        if lacking is not None:
            return Evidence(self.name, None, f"insufficient evidence: {lacking} over {span}")
        value = float(np.mean([s.logit for s in scores]))
        z = self.calibration.window.z(value)
        score = self.calibration.score(z)
        boundary = np.mean([s.boundary for s in scores], axis=0)
        geometry = scores[len(scores) // 2].geometry
        region = describe_region(boundary, geometry)
        self._windows.append((window.t_start, window.t_end, value, score))
        if self._strongest is None or z > self._strongest[0]:
            self._strongest = (z, boundary, geometry, window.t_start, window.t_end)
        if z >= NOTABLE_Z:
            rationale = (
                f"{region.label} blending seam {z:.1f} sigma above genuine video over {span} "
                f"({region.explanation})"
            )
        else:
            rationale = (
                f"no blending seam stands out over {span} ({z:+.1f} sigma against genuine video)"
            )
        fields: dict[str, Any] = {
            "z": round(z, 3),
            "logit": round(value, 4),
            "frames_scored": len(scores),
            "region": region.name,
            "boundary_map": boundary_map_json(boundary, geometry),
        }
        spans = [(window.t_start, window.t_end)] if score >= SPAN_SCORE else []
        return Evidence(self.name, score, rationale, spans=spans, fields=fields)

    def summarize(self) -> Evidence | None:
        """Session evidence: the mean window value against genuine sessions."""
        if not self._windows:
            return None
        if short := too_few_windows(self.name, len(self._windows)):
            return short
        values = np.array([w[2] for w in self._windows])
        value = float(values.mean())
        z = self.calibration.session.z(value)
        score = self.calibration.score(z)
        spans = merge_spans([(t0, t1) for t0, t1, _, s in self._windows if s >= SPAN_SCORE])
        whole = format_span(self._windows[0][0], self._windows[-1][1])
        fields: dict[str, Any] = {
            "z": round(z, 3),
            "logit": round(value, 4),
            "windows": len(self._windows),
            "windows_flagged": int(sum(s >= SPAN_SCORE for *_, s in self._windows)),
        }
        assert self._strongest is not None
        strongest_z, boundary, geometry, t0, t1 = self._strongest
        region = describe_region(boundary, geometry)
        fields["region"] = region.name
        fields["boundary_map"] = boundary_map_json(boundary, geometry)
        fields["strongest_window"] = [round(t0, 3), round(t1, 3), round(strongest_z, 3)]
        if z >= NOTABLE_Z:
            rationale = (
                f"session mean: {region.label} blending seam {z:.1f} sigma above genuine video "
                f"over {whole} ({region.explanation}; strongest {format_span(t0, t1)})"
            )
        else:
            rationale = (
                f"session mean: no blending seam stands out over {whole} "
                f"({z:+.1f} sigma against genuine video)"
            )
        return Evidence(self.name, score, rationale, spans=spans, fields=fields)


def create_artifact_detector(config: MonitorConfig) -> ArtifactDetector:
    """Factory for the registry and the ``dfmon.detectors`` entry point."""
    return ArtifactDetector(config)
