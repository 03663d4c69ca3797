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

import dataclasses
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from monitor.config import AudioConfig, WindowConfig
from monitor.features.audio import AudioFeatureExtractor
from monitor.features.types import AudioFeatures, FrameFeatures
from monitor.media import AUDIO_RATE, AudioChunk, LostMedia

# Live audio that stalls this far behind the video no longer holds windows back (and,
# with cut_stalled_video, video this far behind the audio: its windows are cut with
# their frames missing).
AUDIO_STALL_S = 3.0
# Audio kept before the next window's context, for chunks that arrive a little late.
AUDIO_SLACK_S = 1.0
# Frame interval assumed until two frames have been seen (25 fps).
DEFAULT_FRAME_INTERVAL_S = 0.04
# Frame intervals measured at the start of the media, for the call's frame rate.
NOMINAL_INTERVALS = 50
# Losses kept for windows not cut yet; beyond this the oldest go (counts stay exact).
MAX_LOSSES = 4096
# What each reason for a lost frame counts as in a window's quality.
_LOSS_FIELDS = {
    "dropped": "frames_dropped",
    "undecodable": "frames_undecodable",
    "damaged_reference": "frames_undecodable",
}


@dataclass(frozen=True, slots=True)
class WindowQuality:
    """How much of a window's media arrived intact: what its verdict can rest on.

    Frames are counted at the call's own frame rate over the part of the window the
    media covers. ``frames_expected = received + dropped + undecodable + missing``:
    dropped by a live analysis that fell behind, undecodable (damaged in the file or
    predicted from a damaged frame), missing (never arrived: lost on the network, a gap
    in the recording, a file cut short).
    """

    frames_expected: int
    frames_received: int
    frames_dropped: int = 0
    frames_undecodable: int = 0
    frames_missing: int = 0
    faces_found: int = 0
    speech_fraction: float = 0.0
    audio_lost_s: float = 0.0  # of the window's audio, lost (undecodable, dropped, gaps)

    @property
    def received_fraction(self) -> float:
        if self.frames_expected <= 0:
            return 1.0 if self.frames_received else 0.0
        return min(1.0, self.frames_received / self.frames_expected)

    @property
    def thinned(self) -> bool:
        """Frames were lost (more than one, or any to drops and damage)."""
        lost = self.frames_dropped + self.frames_undecodable
        return lost > 0 or self.frames_missing > 1

    def losses(self) -> str:
        """``9 dropped by the analysis, 2 undecodable, 1 missing`` (what is not zero)."""
        parts = [
            (self.frames_dropped, "dropped by the analysis"),
            (self.frames_undecodable, "undecodable"),
            (self.frames_missing, "missing"),
        ]
        return ", ".join(f"{n} {what}" for n, what in parts if n) or "none lost"

    def describe(self) -> str:
        """``41 of 50 frames (9 dropped by the analysis)``."""
        return f"{self.frames_received} of {self.frames_expected} frames ({self.losses()})"

    def as_event(self) -> dict[str, int | float]:
        return {
            "frames_expected": self.frames_expected,
            "frames_received": self.frames_received,
            "frames_dropped": self.frames_dropped,
            "frames_undecodable": self.frames_undecodable,
            "frames_missing": self.frames_missing,
            "faces_found": self.faces_found,
            "speech_fraction": round(self.speech_fraction, 3),
            "audio_lost_s": round(self.audio_lost_s, 3),
        }


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
    quality: WindowQuality | None = None  # None: not measured (windows built by hand)

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
    """Frame features in arrival order, the latest time seen and a smoothed frame interval.

    ``nominal_interval`` is the call's own frame interval: the median of the first
    intervals (before drops set in), or the announced rate's when that is shorter
    (a recording with gaps). ``interval`` follows what arrives, drops included.
    """

    def __init__(self) -> None:
        self._frames: deque[FrameFeatures] = deque()
        self.first_t: float | None = None
        self.last_t = -np.inf
        self.interval = DEFAULT_FRAME_INTERVAL_S
        self.announced_interval: float | None = None  # from the stream's frame rate
        self._first_intervals: list[float] = []
        self._released = 0  # the first frames, whose face crops were released
        self.face_crops_released = 0

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, frame: FrameFeatures) -> None:
        if frame.t > self.last_t and np.isfinite(self.last_t):
            step = frame.t - self.last_t
            self.interval = 0.9 * self.interval + 0.1 * step
            if len(self._first_intervals) < NOMINAL_INTERVALS:
                self._first_intervals.append(step)
        if self.first_t is None:
            self.first_t = frame.t
        self.last_t = max(self.last_t, frame.t)
        self._frames.append(frame)

    @property
    def nominal_interval(self) -> float:
        candidates = [i for i in (self.announced_interval,) if i]
        if self._first_intervals:
            candidates.append(float(np.median(self._first_intervals)))
        return min(candidates) if candidates else DEFAULT_FRAME_INTERVAL_S

    def select(self, t_start: float, t_end: float) -> tuple[FrameFeatures, ...]:
        return tuple(f for f in self._frames if t_start <= f.t < t_end)

    def trim_before(self, t: float) -> None:
        while self._frames and self._frames[0].t < t:
            self._frames.popleft()
            self._released = max(0, self._released - 1)

    def release_face_crops(self, before: float) -> None:
        """Keep frames before ``before`` without their face crop (the largest array a
        frame holds), where the frame has one face: windows still to come read what
        their detectors measured on it. Frames with several faces keep theirs, since a
        later window may choose another face to score."""
        while self._released < len(self._frames):
            frame = self._frames[self._released]
            if frame.t >= before:
                return
            if frame.face is not None and frame.face.face_crop is not None and not frame.faces:
                face = dataclasses.replace(frame.face, face_crop=None)
                self._frames[self._released] = dataclasses.replace(frame, face=face)
                self.face_crops_released += 1
            self._released += 1


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
        cut_stalled_video: bool = False,
    ) -> None:
        self.schedule = schedule
        self.session = session
        self.has_audio = has_audio  # False: the media has no audio stream; never wait for it
        # Live only: windows are cut when the video stalls AUDIO_STALL_S behind the audio
        # (a file's video always comes, in whatever order it is fed).
        self.cut_stalled_video = cut_stalled_video
        self.frames = FrameBuffer()
        self.audio = AudioBuffer()
        self._features = AudioFeatureExtractor(audio_config)
        self._losses: deque[LostMedia] = deque(maxlen=MAX_LOSSES)
        self._promised_end = -np.inf  # where a cut file's index says the media ends
        self._audio_lost_s = 0.0
        self._audio_lost_until = -np.inf
        self._audio_start: float | None = None
        self._ended = False
        self._next = 0
        self.audio_feature_seconds = 0.0  # time spent computing audio features

    def set_frame_rate(self, fps: float | None) -> None:
        """The rate the stream announces; frames expected per window are counted at it."""
        self.frames.announced_interval = 1.0 / fps if fps and fps > 0 else None

    def add_frame(self, frame: FrameFeatures) -> None:
        self.frames.add(frame)

    def add_audio(self, chunk: AudioChunk) -> None:
        if self._audio_start is None:
            self._audio_start = chunk.t
        self.audio.add(chunk)

    def note_lost(self, item: LostMedia) -> None:
        """Media that will never arrive; placed in the windows it belongs to."""
        if item.kind == "audio" and item.reason != "truncated" and item.t is not None:
            # A dropped frame also leaves a gap that is filled: count the time once.
            start = max(item.t, self._audio_lost_until)
            end = item.t + (item.duration_s or 0.0)
            self._audio_lost_s += max(0.0, end - start)
            self._audio_lost_until = max(self._audio_lost_until, end)
        if item.reason == "truncated" and item.t is not None:
            lost_s = item.duration_s or item.count * self.frames.nominal_interval
            self._promised_end = max(self._promised_end, item.t + lost_s)
        elif item.t is not None:
            self._losses.append(item)

    def end_of_media(self) -> None:
        """No more media will come: the windows still due are cut with what there is,
        up to where the media should have reached (its audio, a cut file's index)."""
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
        window = AnalysisWindow(
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
        return dataclasses.replace(window, quality=self._quality(window))

    def _quality(self, window: AnalysisWindow) -> WindowQuality:
        interval = self.frames.nominal_interval
        starts = [t for t in (self.frames.first_t, self._audio_start) if t is not None]
        covered_from = max(window.t_start, min(starts)) if starts else window.t_start
        covered_to = min(window.t_end, self._media_end()) if self._ended else window.t_end
        expected = max(0, round((covered_to - covered_from) / interval))
        counts = {"frames_dropped": 0, "frames_undecodable": 0}
        audio_spans = []
        for item in self._losses:
            assert item.t is not None
            if item.kind == "video" and window.t_start <= item.t < window.t_end:
                field_name = _LOSS_FIELDS.get(item.reason)
                if field_name is not None:
                    counts[field_name] += item.count
            elif item.kind == "audio":
                lost_to = min(item.t + (item.duration_s or 0.0), window.t_end)
                if lost_to > max(item.t, window.t_start):
                    audio_spans.append((max(item.t, window.t_start), lost_to))
        audio_lost, until = 0.0, window.t_start
        for start, end in sorted(audio_spans):  # the union: drops also leave filled gaps
            audio_lost += max(0.0, end - max(start, until))
            until = max(until, end)
        received = len(window.frames)
        expected = max(expected, received + sum(counts.values()))
        return WindowQuality(
            frames_expected=expected,
            frames_received=received,
            frames_missing=expected - received - sum(counts.values()),
            faces_found=len(window.face_frames),
            speech_fraction=window.speech_fraction(),
            audio_lost_s=audio_lost,
            **counts,
        )

    def advance(self) -> None:
        """Move past the current window and drop what the next one does not need."""
        self._next += 1
        following = self.schedule.span(self._next)
        self.frames.trim_before(following.t_start)
        self.audio.trim_before(following.audio_start - AUDIO_SLACK_S)
        while self._losses and (self._losses[0].t or 0.0) < following.audio_start:
            self._losses.popleft()

    @property
    def truncated_s(self) -> float:
        """How far short of its index the media's data ends (0: it does not)."""
        ends = [self.frames.last_t + self.frames.interval]
        if self.has_audio:
            ends.append(self.audio.t_end)
        data_end = max(ends)
        if not (np.isfinite(data_end) and np.isfinite(self._promised_end)):
            return 0.0
        return max(0.0, self._promised_end - data_end)

    def media_quality(self, *, received: int, dropped: int, undecodable: int) -> WindowQuality:
        """The whole media's quality, from the session's frame counts."""
        starts = [t for t in (self.frames.first_t, self._audio_start) if t is not None]
        span = self._media_end() - min(starts) if starts else 0.0
        expected = max(round(span / self.frames.nominal_interval), received + dropped + undecodable)
        return WindowQuality(
            frames_expected=expected,
            frames_received=received,
            frames_dropped=dropped,
            frames_undecodable=undecodable,
            frames_missing=expected - received - dropped - undecodable,
            audio_lost_s=self._audio_lost_s,
        )

    def _media_end(self) -> float:
        """Where the media ends (or should have): video, audio, or a cut file's index."""
        ends = [self.frames.last_t + self.frames.interval, self._promised_end]
        if self.has_audio:
            ends.append(self.audio.t_end)
        return max(ends)

    def _ready(self, span: WindowSpan) -> bool:
        last_t = self.frames.last_t
        if self._ended:
            if self.schedule.partial_tail:
                return span.t_start <= last_t
            return self._media_end() >= span.t_end
        if last_t < span.t_end:
            # Live video that stalled while the audio goes on (a camera gone): the window
            # is cut on the audio and reports its frames missing, instead of waiting.
            audio_end = self.audio.t_end
            return (
                self.cut_stalled_video
                and self.has_audio
                and audio_end >= span.audio_end
                and audio_end - last_t > AUDIO_STALL_S
            )
        if not self.has_audio:
            return True
        return self.audio.t_end >= span.audio_end or last_t - self.audio.t_end > AUDIO_STALL_S
