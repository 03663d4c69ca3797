"""The learned lip-sync detector: a small two-tower sync model compared across lags.

For each window it embeds every 5-frame mouth stack and every 0.2 s audio slice, takes
the mean distance at each lag of -600..+600 ms (SyncNet's curve), and reads off the
offset (``offset_ms > 0``: audio later than the lips), SyncNet's confidence (median
minus minimum distance) and a calibrated in-sync probability; the score is one minus
that probability. The model, its backends and its calibration live in monitor/sync/.

With a streaming backend each frame's half of the video tower runs once, as the frame
arrives (:meth:`LearnedSyncDetector.observe`, a few frames per call), and is kept in a
per-session :class:`FrameStore` for every window that holds the frame; per window only
the temporal layers and the audio tower run. The result equals the whole-window model's
up to float rounding (tests/test_streaming.py).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import ClassVar

import numpy as np

from monitor.config import MonitorConfig
from monitor.detectors import lip_timing
from monitor.detectors.base import Evidence, describe_offset, format_span
from monitor.errors import BackendUnavailableError, DetectorError
from monitor.features.speaker import TrackScorer
from monitor.features.store import FrameStore
from monitor.features.types import FrameFeatures
from monitor.sync.backends import BatchingRunner, shared_runner
from monitor.sync.checkpoint import WEIGHTS_PATH, Calibration
from monitor.sync.features import (
    GRID_STEP_S,
    frame_model_inputs,
    lag_distances,
    missing_stack_reason,
    stream_inputs,
    track_from_frames,
    window_inputs,
    window_lag_distances,
)
from monitor.sync.scoring import CurveSummary, curve_features, summarize_curve
from monitor.windows import AnalysisWindow

log = logging.getLogger(__name__)

# Arriving frames are embedded in batches of this many (a window asks for the rest).
OBSERVE_BATCH = 5
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


def _track(frame: FrameFeatures) -> int:
    return -1 if frame.face is None else frame.face.track_id


class LearnedSyncDetector:
    """``lip_sync`` with ``method: "learned"``."""

    name: ClassVar[str] = "lip_sync"
    version: ClassVar[str] = "learned-2"
    reads_window_face_crops: ClassVar[bool] = False  # mouth crops only
    # The evidence it returns beside its own, when lip_timing's calibration loads.
    COMPANIONS: ClassVar[dict[str, str]] = {lip_timing.NAME: lip_timing.VERSION}

    def __init__(self, config: MonitorConfig, runner: BatchingRunner | None = None) -> None:
        self.window_config = config.window
        self.runner = runner if runner is not None else shared_runner(config.lip_sync.backend)
        # The model file the backend runs says its own calibration (no torch needed).
        self.calibration = getattr(self.runner, "calibration", None) or load_calibration()
        try:
            self.timing: lip_timing.TimingCalibration | None = lip_timing.load_timing_calibration()
        except DetectorError as exc:
            log.warning("%s; lip_timing evidence left out", exc)
            self.timing = None
        self._frame_embeddings: FrameStore[np.ndarray] | None = (
            FrameStore(self._embed_frames) if getattr(self.runner, "streaming", False) else None
        )
        self._blank: np.ndarray | None = None  # embedding of a grid step without a face
        self._arrived: list[FrameFeatures] = []  # observed, not embedded yet
        self._last_curve: tuple[tuple, tuple[np.ndarray, np.ndarray, int] | None] | None = None
        self._curve_sum: np.ndarray | None = None
        self._lags: np.ndarray | None = None
        self._curve_windows = 0
        self._span: tuple[float, float] | None = None

    @property
    def companion_versions(self) -> dict[str, str]:
        """What this session's detector returns beside its own (none without lip_timing's
        calibration: a session must not list evidence that never comes)."""
        return dict(self.COMPANIONS) if self.timing is not None else {}

    @property
    def backend(self) -> str:
        return self.runner.name

    def observe(self, frame: FrameFeatures) -> None:
        """Embed arriving face frames a few at a time (one backend call per batch)."""
        if self._frame_embeddings is None or frame.face is None:
            return
        self._arrived.append(frame)
        if len(self._arrived) >= OBSERVE_BATCH:
            self._frame_embeddings.add(self._arrived)
            self._arrived = []

    def analyze(self, window: AnalysisWindow) -> Evidence:
        span = format_span(window.t_start, window.t_end)
        lacking = self._lacking(window)
        measured = None
        if lacking is None:
            measured = self._curve(window)
            if measured is None:
                lacking = missing_stack_reason(
                    track_from_frames(window.frames), window.t_start, window.t_end
                )
        if lacking is not None or measured is None:
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
        curve, lags, stacks = measured
        self._accumulate(curve, lags, window)
        return self._evidence(curve, lags, span, (window.t_start, window.t_end), stacks)

    def speaker_scorer(self) -> TrackScorer:
        """Sync confidence of a window's face, for choosing the speaking face among several
        (tools/eval_speaker.py: the speaker's median 3.2, another speaking face's 0.55)."""

        def confidence(window: AnalysisWindow) -> float | None:
            measured = self._curve(window)
            if measured is None:
                return None
            curve, lags, _ = measured
            return summarize_curve(curve, lags).confidence

        return TrackScorer("sync confidence", confidence, min_score=1.0, min_margin=0.5)

    def summarize(self) -> Evidence | None:
        """Session evidence from the mean lag curve of every scored window."""
        if self._curve_sum is None or self._lags is None or self._span is None:
            return None
        curve = self._curve_sum / self._curve_windows
        evidence = self._evidence(curve, self._lags, format_span(*self._span), self._span, None)
        for item in (evidence, *evidence.companions):
            item.rationale = f"over {self._curve_windows} windows: {item.rationale}"
            item.fields["windows"] = self._curve_windows
        return evidence

    # -----------------------------------------------------------------------------------

    def _curve(self, window: AnalysisWindow) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(mean lag curve, lags, scored steps), or None without 5 face frames in a row.

        Kept for the window last asked about: choosing among several faces measures the
        chosen face's curve before the window is analysed on it."""
        key = (window.index, window.t_start, tuple(_track(f) for f in window.frames))
        if self._last_curve is not None and self._last_curve[0] == key:
            return self._last_curve[1]
        measured = self._measure_curve(window)
        self._last_curve = (key, measured)
        return measured

    def _measure_curve(self, window: AnalysisWindow) -> tuple[np.ndarray, np.ndarray, int] | None:
        store = self._frame_embeddings
        if store is None:
            inputs = window_inputs(window)
            if inputs is None:
                return None
            curve = window_lag_distances(inputs, self.runner.embed).mean(axis=0)
            return curve, inputs.lags, len(inputs.positions)
        streamed = stream_inputs(window)
        if streamed is None:
            return None
        shown = streamed.frames >= 0
        stored = store.get([window.frames[i] for i in streamed.frames[shown]])
        steps = np.repeat(self._blank_embedding()[None], streamed.steps, axis=0)
        if stored:
            steps[shown] = np.stack(stored)
        video, audio = self.runner.embed_windows(steps[None], streamed.mel[None])
        # Windows move forward: no later one reads frames before this one's start.
        store.forget_before(window.t_start)
        curve = lag_distances(streamed, video[0], audio[0]).mean(axis=0)
        return curve, streamed.lags, len(streamed.positions)

    def _embed_frames(self, frames: list[FrameFeatures]) -> list[np.ndarray]:
        crops, lips = frame_model_inputs([f.face for f in frames if f.face is not None])
        return list(self.runner.embed_frames(crops, lips))

    def _blank_embedding(self) -> np.ndarray:
        """What a step without a face contributes: the frame half on all-zero inputs."""
        if self._blank is None:
            crops, lips = frame_model_inputs([])
            self._blank = self.runner.embed_frames(
                np.zeros((1, *crops.shape[1:]), np.float32),
                np.zeros((1, lips.shape[1]), np.float32),
            )[0]
        return self._blank

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
        companions = []
        if self.timing is not None:
            companions.append(lip_timing.timing_evidence(curve, span, span_s, self.timing))
        return Evidence(
            self.name,
            1.0 - probability,
            self._rationale(summary, probability, span),
            spans=[span_s],
            fields=fields,
            companions=companions,
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
