"""Turn aiortc's decoded frames into the pipeline's media types.

Video: any PyAV frame -> RGB ``VideoFrame``. Audio: 48 kHz s16 stereo frames (Opus as
aiortc decodes it) -> 16 kHz mono float32 ``AudioChunk``s. Audio times come from a
running sample count from an anchor, not from each frame's pts, because the resampler's
output does not line up with its input frames (the first output is short); gaps in the
input pts (lost packets, frames dropped from a full buffer) are filled with silence so
the count stays on time.
"""

from __future__ import annotations

import av
import numpy as np

from monitor.media import AUDIO_RATE, AudioChunk, VideoFrame

# A gap longer than this restarts the audio timeline instead of filling it with zeros.
MAX_FILLED_GAP_S = 2.0


def frame_seconds(frame: av.AudioFrame | av.VideoFrame) -> float:
    """A frame's pts in seconds on its own track clock."""
    if frame.pts is None or frame.time_base is None:
        raise ValueError("frame has no timestamp")
    return float(frame.pts * frame.time_base)


def to_video_frame(frame: av.VideoFrame, t: float, index: int) -> VideoFrame:
    return VideoFrame(t=t, index=index, image=frame.to_ndarray(format="rgb24"))


class AudioConverter:
    """Resamples one track's audio and keeps its samples on the media clock."""

    def __init__(self) -> None:
        self._resampler: av.AudioResampler | None = None
        self._anchor_t: float | None = None  # media time of output sample 0
        self._samples_out = 0
        self._next_pts_s: float | None = None  # where the next input frame should start
        self.filled_s = 0.0  # silence inserted for gaps
        self._gaps: list[tuple[float, float]] = []  # (media time, seconds) filled

    def _restart(self, t: float) -> None:
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        self._anchor_t = t
        self._samples_out = 0

    def convert(self, frame: av.AudioFrame, pts_s: float, t: float) -> list[AudioChunk]:
        """``pts_s``: the frame's track-clock time; ``t``: the same instant in media time."""
        chunks: list[AudioChunk] = []
        duration_s = frame.samples / frame.sample_rate
        expected = self._next_pts_s
        if self._resampler is None or expected is None:
            self._restart(t)
        else:
            gap_s = pts_s - expected
            if gap_s < -duration_s or gap_s > MAX_FILLED_GAP_S:
                self._restart(t)  # clock went backwards or a long outage: re-anchor
            elif gap_s > duration_s / 2:
                zeros = np.zeros(round(gap_s * AUDIO_RATE), dtype=np.float32)
                chunk = self._emit(zeros)
                chunks.append(chunk)
                self.filled_s += gap_s
                self._gaps.append((chunk.t, gap_s))
        self._next_pts_s = pts_s + duration_s
        assert self._resampler is not None
        for out in self._resampler.resample(frame):
            samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            if len(samples):
                chunks.append(self._emit(samples))
        return chunks

    def take_gaps(self) -> list[tuple[float, float]]:
        """(media time, seconds) of the gaps filled with silence since the last call."""
        gaps, self._gaps = self._gaps, []
        return gaps

    def _emit(self, samples: np.ndarray) -> AudioChunk:
        assert self._anchor_t is not None
        chunk = AudioChunk(t=self._anchor_t + self._samples_out / AUDIO_RATE, samples=samples)
        self._samples_out += len(samples)
        return chunk
