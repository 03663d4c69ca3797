"""Sliding analysis windows: the one place where media is cut into what detectors receive.

A :class:`Windower` takes one session's frame features and audio chunks in arrival
order and hands out :class:`AnalysisWindow` objects on the schedule
``[k * hop, k * hop + window)`` as soon as the media they need has arrived. Every
consumer cuts its windows here, so the windows a model is trained and evaluated on are
the windows the product scores: the session (:mod:`monitor.pipeline`), the report's
confidence trace and attribution (:mod:`monitor.report`), the temporal detector's
offline calibration and the sync model's training data (:mod:`monitor.training`).

The windower works in three steps, each its own method, so that per-frame stores can
hook in without re-cutting windows: :meth:`Windower.ready_spans` decides *which* window
is due (:class:`WindowSpan`: its bounds and audio span), :meth:`Windower.build` reads
that span out of the buffers, and :meth:`Windower.advance` trims what no later window
needs. A store of per-frame or per-stack quantities computed once on arrival can be
read by the same spans and trimmed by the same ``advance``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from monitor.config import AudioConfig, WindowConfig
from monitor.features.audio import AudioFeatureExtractor
from monitor.features.types import AudioFeatures, FrameFeatures
from monitor.media import AUDIO_RATE, AudioChunk

# Live audio that stalls this far behind the video no longer holds windows back.
AUDIO_STALL_S = 3.0
# Audio kept before the next window's context, for chunks that arrive a little late.
AUDIO_SLACK_S = 1.0
# Frame interval assumed until two frames have been seen (25 fps).
DEFAULT_FRAME_INTERVAL_S = 0.04


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


@dataclass(frozen=True, slots=True)
class WindowSpan:
    """Where window ``index`` lies: video in ``[t_start, t_end)``, audio ``context_s`` wider."""

    index: int
    t_start: float
    t_end: float
    context_s: float

    @property
    def audio_start(self) -> float:
        return self.t_start - self.context_s

    @property
    def audio_end(self) -> float:
        return self.t_end + self.context_s


@dataclass(frozen=True, slots=True)
class WindowSchedule:
    """Windows of ``window_s`` every ``hop_s`` from media time 0, ``context_s`` of audio each side.

    At the end of the media a window is cut when the video reaches its end (within one
    frame); with ``partial_tail`` also when the video only reaches into it (its start),
    for consumers that must cover the media's last seconds with long windows.
    """

    window_s: float
    hop_s: float
    context_s: float
    partial_tail: bool = False

    @classmethod
    def from_config(cls, config: WindowConfig) -> WindowSchedule:
        """The session's schedule: what detectors see live and in replay."""
        return cls(config.window_s, config.hop_s, config.max_lag_s)

    def span(self, index: int) -> WindowSpan:
        t_start = index * self.hop_s
        return WindowSpan(index, t_start, t_start + self.window_s, self.context_s)


class AudioBuffer:
    """Mono 16 kHz samples placed by timestamp; gaps are zeros, old samples are trimmed."""

    def __init__(self) -> None:
        self.t0: float | None = None  # time of samples[0]
        self.samples = np.zeros(0, dtype=np.float32)

    @property
    def t_end(self) -> float:
        return -np.inf if self.t0 is None else self.t0 + len(self.samples) / AUDIO_RATE

    def add(self, chunk: AudioChunk) -> None:
        if self.t0 is None:
            self.t0 = chunk.t
        start = int(round((chunk.t - self.t0) * AUDIO_RATE))
        data = chunk.samples.astype(np.float32, copy=False)
        if start < 0:  # before the kept span: keep only what is new
            data, start = data[-start:], 0
        end = start + len(data)
        if end > len(self.samples):
            self.samples = np.concatenate(
                [self.samples, np.zeros(end - len(self.samples), np.float32)]
            )
        self.samples[start:end] = data

    def span(self, t_from: float, t_to: float) -> np.ndarray:
        """Samples in [t_from, t_to), zero-filled where nothing was received."""
        n = int(round((t_to - t_from) * AUDIO_RATE))
        out = np.zeros(n, dtype=np.float32)
        if self.t0 is None:
            return out
        src = int(round((t_from - self.t0) * AUDIO_RATE))
        lo, hi = max(src, 0), min(src + n, len(self.samples))
        if hi > lo:
            out[lo - src : hi - src] = self.samples[lo:hi]
        return out

    def trim_before(self, t: float) -> None:
        if self.t0 is None:
            return
        drop = int((t - self.t0) * AUDIO_RATE)
        if drop > 0:
            self.samples = self.samples[drop:]
            self.t0 += drop / AUDIO_RATE


class FrameBuffer:
    """Frame features in arrival order, the latest time seen and a smoothed frame interval."""

    def __init__(self) -> None:
        self._frames: deque[FrameFeatures] = deque()
        self.last_t = -np.inf
        self.interval = DEFAULT_FRAME_INTERVAL_S

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, frame: FrameFeatures) -> None:
        if frame.t > self.last_t and np.isfinite(self.last_t):
            self.interval = 0.9 * self.interval + 0.1 * (frame.t - self.last_t)
        self.last_t = max(self.last_t, frame.t)
        self._frames.append(frame)

    def select(self, t_start: float, t_end: float) -> tuple[FrameFeatures, ...]:
        return tuple(f for f in self._frames if t_start <= f.t < t_end)

    def trim_before(self, t: float) -> None:
        while self._frames and self._frames[0].t < t:
            self._frames.popleft()


class Windower:
    """Cuts one session's media into :class:`AnalysisWindow` objects on a schedule.

    Feed frames and audio as they arrive; :meth:`windows` yields every window that is
    due, in order, and trims the buffers behind it, so memory stays bounded by one
    window plus the audio context. Audio features of successive windows share one
    session noise floor, so windows must be cut in order by one windower.
    """

    def __init__(
        self,
        schedule: WindowSchedule,
        audio_config: AudioConfig | None = None,
        *,
        session: str = "",
        has_audio: bool = True,
    ) -> None:
        self.schedule = schedule
        self.session = session
        self.has_audio = has_audio  # False: the media has no audio stream; never wait for it
        self.frames = FrameBuffer()
        self.audio = AudioBuffer()
        self._features = AudioFeatureExtractor(audio_config)
        self._ended = False
        self._next = 0
        self.audio_feature_seconds = 0.0  # time spent computing audio features

    def add_frame(self, frame: FrameFeatures) -> None:
        self.frames.add(frame)

    def add_audio(self, chunk: AudioChunk) -> None:
        self.audio.add(chunk)

    def end_of_media(self) -> None:
        """No more media will come: the windows still due are cut with what there is."""
        self._ended = True

    def windows(self) -> Iterator[AnalysisWindow]:
        """Every window that is due now, in order; the buffers are trimmed behind each."""
        for span in self.ready_spans():
            window = self.build(span)
            self.advance()
            yield window

    def ready_spans(self) -> Iterator[WindowSpan]:
        """The next window's span while its media is complete (call :meth:`advance` after each)."""
        while True:
            span = self.schedule.span(self._next)
            if not self._ready(span):
                return
            yield span

    def build(self, span: WindowSpan) -> AnalysisWindow:
        samples = self.audio.span(span.audio_start, span.audio_end)
        started = time.perf_counter()
        audio = self._features.compute(samples, span.audio_start)
        self.audio_feature_seconds += time.perf_counter() - started
        return AnalysisWindow(
            session=self.session,
            index=span.index,
            t_start=span.t_start,
            t_end=span.t_end,
            context_s=span.context_s,
            frames=self.frames.select(span.t_start, span.t_end),
            samples=samples,
            audio=audio,
            has_audio_stream=self.has_audio,
        )

    def advance(self) -> None:
        """Move past the current window and drop what the next one does not need."""
        self._next += 1
        following = self.schedule.span(self._next)
        self.frames.trim_before(following.t_start)
        self.audio.trim_before(following.audio_start - AUDIO_SLACK_S)

    def _ready(self, span: WindowSpan) -> bool:
        last_t = self.frames.last_t
        if self._ended:
            if self.schedule.partial_tail:
                return span.t_start <= last_t
            return last_t + self.frames.interval >= span.t_end
        if last_t < span.t_end:
            return False
        if not self.has_audio:
            return True
        return self.audio.t_end >= span.audio_end or last_t - self.audio.t_end > AUDIO_STALL_S
