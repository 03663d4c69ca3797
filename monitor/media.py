"""Timestamped media on one clock: what every source produces and every later stage consumes.

Times are media seconds from the start of the call. Video keeps its native rate
and per-frame timestamps (never assume 25 fps); audio is 16 kHz mono float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

AUDIO_RATE = 16000


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """One decoded picture. ``image`` is HxWx3 uint8 RGB."""

    t: float
    index: int
    image: np.ndarray


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Contiguous mono float32 samples at 16 kHz; ``t`` is the time of the first sample."""

    t: float
    samples: np.ndarray

    @property
    def t_end(self) -> float:
        return self.t + len(self.samples) / AUDIO_RATE


@dataclass(frozen=True, slots=True)
class LostMedia:
    """Frames that were in the input but never reach the analysis, and why.

    ``reason``: ``"undecodable"`` (the packet failed to decode, or decoded with errors the
    decoder flagged), ``"damaged_reference"`` (a video frame predicted from a damaged one,
    up to the next keyframe), ``"truncated"`` (the file ends before its header says; ``t``
    is where the data stops, ``count`` the frames missing from there), ``"dropped"`` (live:
    the analysis fell behind), ``"missing"`` (live audio that never arrived, filled with
    silence). ``t`` is media time, None when unknown.
    """

    kind: str  # "video" | "audio"
    reason: str
    count: int = 1
    t: float | None = None
    duration_s: float | None = None  # audio: the seconds lost (video: count frames)


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a session's input is, as announced in ``session_started``."""

    source: str
    fps: float | None
    width: int | None
    height: int | None
    sample_rate: int | None  # of the original audio, before resampling; None: no audio
    duration_s: float | None
    video_codec: str | None = None
    audio_codec: str | None = None

    @property
    def has_audio(self) -> bool:
        return self.sample_rate is not None

    def as_event_fields(self) -> dict[str, object]:
        return {
            "source": self.source,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "sample_rate": self.sample_rate,
            "duration_s": self.duration_s,
            "has_audio": self.has_audio,
            "video_codec": self.video_codec,
            "audio_codec": self.audio_codec,
        }


def contiguous_samples(chunks: Sequence[AudioChunk]) -> tuple[np.ndarray, float]:
    """Chunks as one array placed by their times (gaps zero): (samples, time of sample 0)."""
    if not chunks:
        return np.zeros(0, np.float32), 0.0
    t0 = chunks[0].t
    end = max(int(round((c.t - t0) * AUDIO_RATE)) + len(c.samples) for c in chunks)
    samples = np.zeros(end, np.float32)
    for chunk in chunks:
        start = int(round((chunk.t - t0) * AUDIO_RATE))
        samples[start : start + len(chunk.samples)] = chunk.samples
    return samples, t0
