"""AnalysisWindows built from signals, for detector unit tests; a file fed to a session."""

from __future__ import annotations

import numpy as np

from monitor.features.types import AudioFeatures, FaceObservation, FrameFeatures
from monitor.windows import AnalysisWindow


def face_with_aperture(aperture: float) -> FaceObservation:
    return FaceObservation(
        face_box=(100.0, 100.0, 300.0, 340.0),
        landmarks=np.zeros((478, 2), np.float32),
        lip_landmarks=np.zeros((40, 2), np.float32),
        mouth_crop=np.zeros((48, 96, 3), np.uint8),
        face_crop=np.zeros((112, 112, 3), np.uint8),
        aperture=float(aperture),
        mouth_width=0.4,
    )


def speech_like_envelope(seconds: float, hop_s: float = 0.01, seed: int = 0) -> np.ndarray:
    """Syllable-rate (~4 Hz) random loudness in dB, smooth like speech."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds / hop_s))
    raw = rng.random(int(seconds * 5) + 2)
    t = np.arange(n) * hop_s
    return np.interp(t, np.arange(len(raw)) * 0.2, raw) * 30.0 - 45.0


def window_from_signals(
    *,
    audio_lag_s: float = 0.0,
    t_start: float = 10.0,
    window_s: float = 2.0,
    context_s: float = 0.6,
    fps: float = 25.0,
    face: bool = True,
    voiced: bool = True,
    still_lips: bool = False,
    aperture_gain: float = 1.0,
    seed: int = 0,
) -> AnalysisWindow:
    """Lips open with loudness; the audio arrives ``audio_lag_s`` after the lips."""
    hop = 0.01
    t0 = t_start - context_s
    total = window_s + 2 * context_s
    envelope = speech_like_envelope(total + 2.0, hop, seed)
    audio_times = t0 + np.arange(int(round(total / hop))) * hop
    # loudness at time t equals what the lips did at t - lag
    source_times = t0 - 1.0 + np.arange(len(envelope)) * hop
    loudness = np.interp(audio_times - audio_lag_s, source_times, envelope)
    frame_times = np.arange(t_start, t_start + window_s - 1e-9, 1.0 / fps)
    aperture = (np.interp(frame_times, source_times, envelope) + 45.0) / 30.0 * 0.08 * aperture_gain
    if still_lips:
        aperture = np.full_like(aperture, 0.02)
    frames = tuple(
        FrameFeatures(float(t), i, (480, 640), face_with_aperture(a) if face else None)
        for i, (t, a) in enumerate(zip(frame_times, aperture, strict=True))
    )
    audio = AudioFeatures(
        t0=t0,
        hop_s=hop,
        log_mel=np.zeros((len(audio_times), 80), np.float32),
        loudness_db=loudness.astype(np.float32),
        voiced=np.full(len(audio_times), voiced),
    )
    return AnalysisWindow(
        session="test",
        index=0,
        t_start=t_start,
        t_end=t_start + window_s,
        context_s=context_s,
        frames=frames,
        samples=np.zeros(int(round(total * 16000)), np.float32),
        audio=audio,
    )


def feed_file(analyzer, path, reason: str = "end of file") -> dict:  # noqa: ANN001
    """Decode ``path`` into a SessionAnalyzer as replay does (no pacing); its summary."""
    from monitor.sources.file import FileSource

    with FileSource(path) as source:
        analyzer.start(source.info)
        for item in source:
            analyzer.add(item)
    return analyzer.finish(reason)
