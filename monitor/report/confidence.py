"""Sync confidence per frame, by re-running a lip-sync model over the whole media.

Events carry one curve per 2 s window; an investigator wants to see *when* lips and
speech part ways. So the report re-runs a model on short pieces:

* learned model: every 40 ms step gets its own distance-vs-lag curve; its confidence is
  SyncNet's (median minus minimum distance) and its offset the curve's argmin, both
  median-filtered over 9 steps as SyncNet does for its per-frame confidence;
* baseline: the training-free detector on 1 s sub-windows every 0.2 s.

Both cut their pieces with the session's windower as the media is decoded, so memory
stays flat on long calls.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitor.config import MonitorConfig
from monitor.features.types import FrameFeatures
from monitor.media import AudioChunk
from monitor.windows import AnalysisWindow, Windower, WindowSchedule

log = logging.getLogger(__name__)

CHUNK_S = 4.0
STACK_MARGIN_S = 0.16  # a chunk also takes the 2 frames either side its steps need
MEDIAN_KERNEL = 9  # SyncNet's per-frame confidence filter, in steps
MIN_STACK_VOICED = 0.3  # a step whose zero-lag audio is quieter than this is not scored
BASELINE_SUBWINDOW_S = 1.0
BASELINE_STEP_S = 0.2


@dataclass
class LearnedSync:
    """The learned sync model as the report uses it: a backend call, maybe the torch module."""

    embed: Any  # EmbedFn: (crops, lips, mel) -> (video, audio) embeddings
    backend: str
    model: Any | None = None  # SyncNetLite for white-box attribution; None: black-box only
    genuine_confidence: float | None = None  # 95 % of genuine windows exceed it


def load_learned_sync(backend: str = "auto") -> tuple[LearnedSync | None, str]:
    """The installed learned model, or None and the reason it cannot be used."""
    try:
        from monitor.sync.backends import create_backend
        from monitor.sync.checkpoint import WEIGHTS_PATH, load_checkpoint
    except ImportError as exc:
        return None, f"the learned sync model is not installed ({exc})"
    from monitor.errors import BackendUnavailableError, ConfigError

    try:
        model, info = load_checkpoint(WEIGHTS_PATH)
    except BackendUnavailableError as exc:
        return None, str(exc)
    genuine = None if info.calibration is None else info.calibration.genuine_confidence
    try:
        runner = create_backend(backend)
        embed, name = runner.embed, runner.name
    except (BackendUnavailableError, ConfigError) as exc:
        from monitor.explain.sync_target import torch_embed

        log.info("sync backend %s unavailable (%s); embedding with torch", backend, exc)
        embed, name = torch_embed(model), "torch"
    return LearnedSync(embed=embed, backend=name, model=model, genuine_confidence=genuine), ""


@dataclass
class FrameConfidence:
    """Confidence and offset over time (NaN where a piece had no face or no speech)."""

    method: str  # "learned" or "baseline"
    times: list[float] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    offset_ms: list[float] = field(default_factory=list)
    genuine_confidence: float | None = None  # confidence genuine speech exceeds

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        times = np.asarray(self.times, dtype=np.float64)
        order = np.argsort(times, kind="stable")
        confidence = np.asarray(self.confidence, dtype=np.float64)[order]
        offsets = np.asarray(self.offset_ms, dtype=np.float64)[order]
        if self.method == "learned":
            confidence = _nan_median_filter(confidence, MEDIAN_KERNEL)
            offsets = _nan_median_filter(offsets, MEDIAN_KERNEL)
        return times[order], confidence, offsets


def _nan_median_filter(values: np.ndarray, kernel: int) -> np.ndarray:
    if len(values) == 0:
        return values
    half = kernel // 2
    padded = np.pad(values, half, mode="constant", constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel)
    out = np.full(len(values), np.nan)
    valid = ~np.isnan(values)
    if valid.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN neighbourhoods
            out[valid] = np.nanmedian(windows[valid], axis=1)
    return out


class ConfidenceTracker:
    """Feed frames and audio in time order; per-piece confidence accumulates in ``result``.

    The pieces are cut by the session's windower (:mod:`monitor.windows`) on schedules
    of their own: 4 s chunks (plus the stacks' margin) for the learned model, 1 s
    sub-windows every 0.2 s for the baseline.
    """

    def __init__(self, config: MonitorConfig, learned: LearnedSync | None) -> None:
        self.config = config
        self.learned = learned
        self.result = FrameConfidence(
            method="learned" if learned is not None else "baseline",
            genuine_confidence=None if learned is None else learned.genuine_confidence,
        )
        self._baseline: Any = None
        context = config.window.max_lag_s  # the lags the detectors search
        if learned is None:
            from monitor.detectors.baseline_sync import BaselineSyncDetector

            self._baseline = BaselineSyncDetector(config)
            schedule = WindowSchedule(BASELINE_SUBWINDOW_S, BASELINE_STEP_S, context)
        else:
            schedule = WindowSchedule(CHUNK_S + STACK_MARGIN_S, CHUNK_S, context, partial_tail=True)
        self._windower = Windower(schedule, config.audio, session="report")

    def add_frame(self, frame: FrameFeatures) -> None:
        self._windower.add_frame(frame)
        self._pump()

    def add_audio(self, chunk: AudioChunk) -> None:
        self._windower.add_audio(chunk)
        self._pump()

    def finish(self) -> FrameConfidence:
        self._windower.end_of_media()
        self._pump()
        return self.result

    def _pump(self) -> None:
        for window in self._windower.windows():
            try:
                if self.learned is not None:
                    self._score_learned(window)
                else:
                    self._score_baseline(window)
            except Exception:  # a report must not die on one bad piece of media
                log.exception(
                    "sync confidence failed for %.1f-%.1f s", window.t_start, window.t_end
                )

    def _score_learned(self, window: AnalysisWindow) -> None:
        from monitor.sync.features import GRID_STEP_S, window_inputs, window_lag_distances

        assert self.learned is not None
        start, end = window.t_start, window.t_start + CHUNK_S
        inputs = window_inputs(window)
        if inputs is None:
            return
        distances = window_lag_distances(inputs, self.learned.embed)  # (K, L)
        centers = start + inputs.positions * GRID_STEP_S
        voiced = inputs.voiced[inputs.audio_index()[:, inputs.max_lag]]
        confidence = np.median(distances, axis=1) - distances.min(axis=1)
        offsets = (np.argmin(distances, axis=1) - inputs.max_lag) * GRID_STEP_S * 1000.0
        for t, conf, offset, speech in zip(centers, confidence, offsets, voiced, strict=True):
            if not start <= t < end:
                continue
            quiet = speech < MIN_STACK_VOICED
            self.result.times.append(float(t))
            self.result.confidence.append(np.nan if quiet else float(conf))
            self.result.offset_ms.append(np.nan if quiet else float(offset))

    def _score_baseline(self, window: AnalysisWindow) -> None:
        evidence = self._baseline.analyze(window)
        confidence = evidence.fields.get("confidence")
        offset = evidence.fields.get("offset_ms")
        self.result.times.append(float((window.t_start + window.t_end) / 2.0))
        self.result.confidence.append(np.nan if confidence is None else float(confidence))
        self.result.offset_ms.append(np.nan if offset is None else float(offset))
