"""Sliding analysis windows: what every detector receives."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitor.features.types import AudioFeatures, FrameFeatures
from monitor.media import AUDIO_RATE


@dataclass(frozen=True, slots=True)
class AnalysisWindow:
    """Video frames in ``[t_start, t_end)`` and the audio around them.

    The audio (``samples`` and ``audio``) spans ``[t_start - context_s, t_end + context_s]``
    so that detectors can search lags of up to ``context_s`` either way. Where the call
    has no audio yet (its start, its end) the samples are zeros and ``voiced`` is False.
    """

    session: str
    index: int
    t_start: float
    t_end: float
    context_s: float
    frames: tuple[FrameFeatures, ...]
    samples: np.ndarray  # float32 mono at 16 kHz, first sample at audio_t0
    audio: AudioFeatures  # covers the same span as samples
    has_audio_stream: bool = True

    @property
    def audio_t0(self) -> float:
        return self.t_start - self.context_s

    @property
    def sample_rate(self) -> int:
        return AUDIO_RATE

    @property
    def frame_times(self) -> np.ndarray:
        return np.array([f.t for f in self.frames], dtype=np.float64)

    @property
    def face_frames(self) -> tuple[FrameFeatures, ...]:
        return tuple(f for f in self.frames if f.face is not None)

    @property
    def face_fraction(self) -> float:
        return len(self.face_frames) / len(self.frames) if self.frames else 0.0

    @property
    def fps(self) -> float | None:
        """Frame rate measured from the timestamps (median interval)."""
        times = self.frame_times
        if len(times) < 2:
            return None
        return float(1.0 / np.median(np.diff(times)))

    def speech_fraction(self) -> float:
        """Fraction of the window proper (without context) that is voiced."""
        t = self.audio.times
        inside = (t >= self.t_start) & (t < self.t_end)
        return float(self.audio.voiced[inside].mean()) if inside.any() else 0.0
