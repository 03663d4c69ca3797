"""Re-read the media for what events cannot carry: lips, audio, mouth crops, per-frame sync.

One decoding pass (FileSource + the face tracker, as the pipeline runs them) collects:

* per frame: time, face found, lip aperture;
* per 10 ms of audio: loudness, voice activity, waveform min/max; a log-mel overview
  averaged down to at most ``MAX_MEL_COLUMNS`` columns;
* per-frame sync confidence (:mod:`monitor.report.confidence`);
* the session's own windows (:mod:`monitor.windows`) only where attribution explains
  an alert, and mouth stills with lip landmarks only at filmstrip times.

So memory and the report's size stay bounded however long the call is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from monitor.config import FaceConfig, MonitorConfig
from monitor.features.audio import compute_audio_features
from monitor.features.face import create_face_tracker, mouth_crop_matrix
from monitor.features.types import FaceObservation, FrameFeatures
from monitor.media import AUDIO_RATE, AudioChunk, StreamInfo, VideoFrame
from monitor.report.confidence import ConfidenceTracker, FrameConfidence, LearnedSync
from monitor.windows import AnalysisWindow, AudioBuffer, Windower, WindowSchedule

ROW_S = 0.01  # audio overview rows: 100 Hz, as the features
OVERVIEW_BLOCK_S = 10.0
MAX_MEL_COLUMNS = 1600
STILL_SCALE = 2  # filmstrip crops are drawn at twice the model's 48x96


@dataclass
class Still:
    """One filmstrip picture: the mouth crop (scaled) with the lip landmarks drawn."""

    group: int  # which flagged moment it belongs to
    t: float
    image: np.ndarray | None  # (96, 192, 3) RGB; None: no face in that frame
    aperture: float | None
    face_crop: np.ndarray | None = None  # the aligned face crop the artifact detector reads


class SessionWindows:
    """The session's own windows at the given spans (those that get attribution).

    They are cut by the session's windower on the session's schedule, every window in
    order so the noise floor is the session's too: attribution explains exactly the
    window that was scored. Only the wanted ones are kept.
    """

    def __init__(
        self, config: MonitorConfig, spans: Sequence[tuple[float, float]], has_audio: bool
    ) -> None:
        self._keys = [_span_key(a, b) for a, b in spans]
        self._found: dict[tuple[float, float], AnalysisWindow] = {}
        self._windower = Windower(
            WindowSchedule.from_config(config.window),
            config.audio,
            session="report",
            has_audio=has_audio,
        )

    def add_frame(self, frame: FrameFeatures) -> None:
        if self._keys:
            self._windower.add_frame(frame)
            self._pump()

    def add_audio(self, chunk: AudioChunk) -> None:
        if self._keys:
            self._windower.add_audio(chunk)
            self._pump()

    def finish(self) -> list[AnalysisWindow | None]:
        """The windows in the order of the spans; None where the media has no such window."""
        if self._keys:
            self._windower.end_of_media()
            self._pump()
        return [self._found.get(key) for key in self._keys]

    def _pump(self) -> None:
        for window in self._windower.windows():
            key = _span_key(window.t_start, window.t_end)
            if key in self._keys:
                self._found[key] = window


def _span_key(t_start: float, t_end: float) -> tuple[float, float]:
    return round(t_start, 3), round(t_end, 3)  # as events carry them


@dataclass
class MediaTrace:
    info: StreamInfo
    frame_times: np.ndarray
    has_face: np.ndarray
    aperture: np.ndarray  # NaN without a face
    loudness_db: np.ndarray  # 100 Hz from t = 0
    voiced: np.ndarray
    wave_min: np.ndarray  # per 10 ms row
    wave_max: np.ndarray
    mel: np.ndarray  # (columns, 80) log-mel overview
    mel_column_s: float
    confidence: FrameConfidence
    details: list[AnalysisWindow | None]  # the session's windows at the detail spans
    stills: list[Still]
    seconds: float  # wall time of the pass

    @property
    def duration(self) -> float:
        ends = [len(self.loudness_db) * ROW_S]
        if len(self.frame_times):
            ends.append(float(self.frame_times[-1]))
        return max(ends)


def draw_mouth_still(image: np.ndarray, face: FaceObservation, config: FaceConfig) -> np.ndarray:
    """The mouth crop at ``STILL_SCALE`` with the outer and inner lip contours drawn."""
    matrix, size = mouth_crop_matrix(face.landmarks, config, STILL_SCALE)
    crop = cv2.warpAffine(
        image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    lips = face.lip_landmarks.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]
    # Outer: upper 0..10 (corner to corner), lower 11..19; inner: upper 20..30, lower 31..39.
    outer = np.vstack([lips[0:11], lips[11:20][::-1]])
    inner = np.vstack([lips[20:31], lips[31:40][::-1]])
    canvas = np.ascontiguousarray(crop)
    for contour, colour in ((outer, (0, 230, 90)), (inner, (255, 200, 0))):
        points = np.round(contour * 4).astype(np.int32)  # 2 bits of sub-pixel precision
        cv2.polylines(canvas, [points], True, colour, 1, cv2.LINE_AA, shift=2)
    for x, y in lips:
        cv2.circle(
            canvas,
            (int(round(x * 4)), int(round(y * 4))),
            4,
            (255, 60, 60),
            -1,
            cv2.LINE_AA,
            shift=2,
        )
    return canvas


class AudioOverview:
    """Loudness, voicing, waveform extremes per 10 ms and a down-sampled log-mel."""

    def __init__(self, config: MonitorConfig, duration_hint: float | None) -> None:
        self.config = config
        rows = max(1.0, (duration_hint or 600.0) / ROW_S)
        self.mel_rows_per_column = max(1, math.ceil(rows / MAX_MEL_COLUMNS))
        self._buffer = AudioBuffer()
        self._next_block = 0
        self.loudness: list[np.ndarray] = []
        self.voiced: list[np.ndarray] = []
        self.wave_min: list[np.ndarray] = []
        self.wave_max: list[np.ndarray] = []
        self.mel: list[np.ndarray] = []
        self._mel_carry = np.zeros((0, config.audio.n_mels), np.float32)

    def add(self, chunk: AudioChunk) -> None:
        self._buffer.add(chunk)
        self._pump(final=False)

    def finish(self) -> None:
        self._pump(final=True)

    def _pump(self, final: bool) -> None:
        while True:
            start = self._next_block * OVERVIEW_BLOCK_S
            end = start + OVERVIEW_BLOCK_S
            available = self._buffer.t_end
            if available <= start or (available < end and not final):
                return
            end = min(end, available)
            samples = self._buffer.span(start, end)
            n_rows = int(round((end - start) / ROW_S))
            if n_rows > 0:
                self._block(samples, start, n_rows)
            self._next_block += 1
            self._buffer.trim_before(self._next_block * OVERVIEW_BLOCK_S)
            if end < start + OVERVIEW_BLOCK_S:
                return

    def _block(self, samples: np.ndarray, start: float, n_rows: int) -> None:
        features = compute_audio_features(samples, start, self.config.audio)
        self.loudness.append(features.loudness_db[:n_rows])
        self.voiced.append(features.voiced[:n_rows])
        hop = int(round(ROW_S * AUDIO_RATE))
        padded = np.zeros(n_rows * hop, np.float32)
        padded[: min(len(samples), len(padded))] = samples[: len(padded)]
        rows = padded.reshape(n_rows, hop)
        self.wave_min.append(rows.min(axis=1))
        self.wave_max.append(rows.max(axis=1))
        mel = np.vstack([self._mel_carry, features.log_mel[:n_rows]])
        per = self.mel_rows_per_column
        whole = len(mel) // per * per
        if whole:
            self.mel.append(mel[:whole].reshape(-1, per, mel.shape[1]).mean(axis=1))
        self._mel_carry = mel[whole:]

    def arrays(self) -> dict[str, np.ndarray]:
        def joined(parts: list[np.ndarray], dtype: type) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        mel_parts = list(self.mel)
        if len(self._mel_carry):
            mel_parts.append(self._mel_carry.mean(axis=0, keepdims=True))
        n_mels = self.config.audio.n_mels
        return {
            "loudness_db": joined(self.loudness, np.float32),
            "voiced": joined(self.voiced, bool),
            "wave_min": joined(self.wave_min, np.float32),
            "wave_max": joined(self.wave_max, np.float32),
            "mel": np.vstack(mel_parts) if mel_parts else np.zeros((0, n_mels), np.float32),
        }


def trace_media(
    media_path: str | Path,
    *,
    audio_path: str | Path | None,
    config: MonitorConfig,
    detail_spans: Sequence[tuple[float, float]],
    still_times: Sequence[tuple[int, float]],
    learned: LearnedSync | None,
) -> MediaTrace:
    """Decode the media once and collect what the report draws (see the module doc)."""
    from monitor.sources.file import FileSource

    started = time.perf_counter()
    pending_stills = sorted(still_times, key=lambda item: item[1])
    stills: list[Still] = []
    times: list[float] = []
    faces: list[bool] = []
    apertures: list[float] = []
    with FileSource(media_path, audio_path=audio_path) as source:
        info = source.info
        overview = AudioOverview(config, info.duration_s)
        confidence = ConfidenceTracker(config, learned if info.has_audio else None)
        details = SessionWindows(config, detail_spans, info.has_audio)
        tracker = create_face_tracker(config.face)
        half_frame = 0.5 / (info.fps or 25.0)
        try:
            for item in source:
                if isinstance(item, AudioChunk):
                    overview.add(item)
                    confidence.add_audio(item)
                    details.add_audio(item)
                    continue
                assert isinstance(item, VideoFrame)
                face = tracker.track(item)
                times.append(item.t)
                faces.append(face is not None)
                apertures.append(np.nan if face is None else face.aperture)
                frame = FrameFeatures(item.t, item.index, item.image.shape[:2], face)
                confidence.add_frame(frame)
                details.add_frame(frame)
                while pending_stills and pending_stills[0][1] <= item.t + half_frame:
                    group, _ = pending_stills.pop(0)
                    image = (
                        None if face is None else draw_mouth_still(item.image, face, config.face)
                    )
                    aperture = None if face is None else float(face.aperture)
                    crop = None if face is None else face.face_crop
                    stills.append(Still(group, item.t, image, aperture, crop))
        finally:
            tracker.close()
        overview.finish()
        frame_confidence = confidence.finish()
        detail_windows = details.finish()
    audio = overview.arrays()
    return MediaTrace(
        info=info,
        frame_times=np.asarray(times, dtype=np.float64),
        has_face=np.asarray(faces, dtype=bool),
        aperture=np.asarray(apertures, dtype=np.float64),
        loudness_db=audio["loudness_db"],
        voiced=audio["voiced"],
        wave_min=audio["wave_min"],
        wave_max=audio["wave_max"],
        mel=audio["mel"],
        mel_column_s=overview.mel_rows_per_column * ROW_S,
        confidence=frame_confidence,
        details=detail_windows,
        stills=stills,
        seconds=time.perf_counter() - started,
    )
