"""Tracked faces of recorded clips, cached, and the session's windows over them.

For calibrating and evaluating the temporal detector on recorded clips.

Tracking faces is by far the slowest step (MediaPipe, tens of ms per frame on a CPU), and
cue development means re-scoring the same clips many times. So the face observations of a
clip are extracted once and may be cached as a compressed ``.npz``; a :class:`CachedFaceTracker`
then replays them into a real :class:`~monitor.pipeline.SessionAnalyzer` without tracking.
Nothing here runs in a live session.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from monitor.config import FaceConfig, WindowConfig
from monitor.errors import InputError
from monitor.features.types import FaceObservation, FrameFeatures
from monitor.media import VideoFrame
from monitor.windows import AnalysisWindow, Windower, WindowSchedule

# Bump when the cached arrays change meaning (crop geometry, fields).
CACHE_FORMAT = 2


def cache_path(cache_dir: Path, clip: Path, face_config: FaceConfig | None = None) -> Path:
    """One cache file per clip and tracking configuration, keyed by the clip's path, size
    and mtime and every face setting (the landmark interval changes the landmarks)."""
    stat = clip.stat()
    tracking = json.dumps(dataclasses.asdict(face_config or FaceConfig()), sort_keys=True)
    key = f"{clip.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{CACHE_FORMAT}|{tracking}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return cache_dir / f"{clip.stem[:60]}-{digest}.npz"


def _pack(frames: list[FrameFeatures]) -> dict[str, np.ndarray]:
    n = len(frames)
    crop_h, crop_w = (48, 96)
    face_side = 256
    first = next((f.face for f in frames if f.face is not None), None)
    if first is not None:
        crop_h, crop_w = first.mouth_crop.shape[:2]
        face_side = first.face_crop.shape[0]
    n_points = 478 if first is None else len(first.landmarks)
    arrays = {
        "t": np.array([f.t for f in frames], np.float64),
        "index": np.array([f.index for f in frames], np.int64),
        "frame_size": np.array([f.frame_size for f in frames], np.int32).reshape(n, 2),
        "has_face": np.array([f.face is not None for f in frames], bool),
        "face_box": np.zeros((n, 4), np.float32),
        "landmarks": np.zeros((n, n_points, 2), np.float32),
        "lip_landmarks": np.zeros((n, 40, 2), np.float32),
        "mouth_crop": np.zeros((n, crop_h, crop_w, 3), np.uint8),
        "face_crop": np.zeros((n, face_side, face_side, 3), np.uint8),
        "aperture": np.zeros(n, np.float32),
        "mouth_width": np.zeros(n, np.float32),
    }
    for i, frame in enumerate(frames):
        face = frame.face
        if face is None:
            continue
        arrays["face_box"][i] = face.face_box
        arrays["landmarks"][i] = face.landmarks
        arrays["lip_landmarks"][i] = face.lip_landmarks
        arrays["mouth_crop"][i] = face.mouth_crop
        arrays["face_crop"][i] = face.face_crop
        arrays["aperture"][i] = face.aperture
        arrays["mouth_width"][i] = face.mouth_width
    return arrays


def _unpack(arrays: dict[str, np.ndarray]) -> list[FrameFeatures]:
    frames = []
    for i in range(len(arrays["t"])):
        face = None
        if arrays["has_face"][i]:
            face = FaceObservation(
                face_box=tuple(float(v) for v in arrays["face_box"][i]),  # type: ignore[arg-type]
                landmarks=arrays["landmarks"][i],
                lip_landmarks=arrays["lip_landmarks"][i],
                mouth_crop=arrays["mouth_crop"][i],
                face_crop=arrays["face_crop"][i],
                aperture=float(arrays["aperture"][i]),
                mouth_width=float(arrays["mouth_width"][i]),
            )
        height, width = (int(v) for v in arrays["frame_size"][i])
        frames.append(
            FrameFeatures(float(arrays["t"][i]), int(arrays["index"][i]), (height, width), face)
        )
    return frames


def save_frames(path: Path, frames: list[FrameFeatures]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **_pack(frames))
    tmp.replace(path)


def load_frames(path: Path) -> list[FrameFeatures]:
    with np.load(path) as data:
        return _unpack({key: data[key] for key in data.files})


def track_clip(clip: Path, face_config: FaceConfig | None = None) -> list[FrameFeatures]:
    """Every video frame of ``clip`` with its tracked face (or None), in decode order."""
    from monitor.features.face import create_face_tracker
    from monitor.sources.file import FileSource

    frames: list[FrameFeatures] = []
    tracker = create_face_tracker(face_config or FaceConfig())
    try:
        with FileSource(clip) as source:
            for item in source:
                if isinstance(item, VideoFrame):
                    height, width = item.image.shape[:2]
                    face = tracker.track(item)
                    frames.append(FrameFeatures(item.t, item.index, (height, width), face))
    finally:
        tracker.close()
    if not frames:
        raise InputError(f"{clip} decoded to no video frames")
    return frames


def clip_frames(
    clip: Path, cache_dir: Path | None = None, face_config: FaceConfig | None = None
) -> list[FrameFeatures]:
    """Tracked frames of a clip, from the cache when there, else tracked (and cached)."""
    if cache_dir is not None:
        cached = cache_path(cache_dir, clip, face_config)
        if cached.exists():
            return load_frames(cached)
    frames = track_clip(clip, face_config)
    if cache_dir is not None:
        save_frames(cache_path(cache_dir, clip, face_config), frames)
    return frames


def iter_windows(frames: list[FrameFeatures], window: WindowConfig) -> Iterator[AnalysisWindow]:
    """The session's windows over tracked frames, cut by the session's windower, without
    audio: for detectors that only look at faces."""
    windower = Windower(WindowSchedule.from_config(window), session="offline", has_audio=False)
    for frame in frames:
        windower.add_frame(frame)
        yield from windower.windows()
    windower.end_of_media()
    yield from windower.windows()


class CachedFaceTracker:
    """A FaceTracker that returns observations tracked earlier, matched by frame index."""

    def __init__(self, frames: list[FrameFeatures]) -> None:
        self._by_index = {f.index: f.face for f in frames}

    def track(self, frame: VideoFrame) -> FaceObservation | None:
        return self._by_index.get(frame.index)

    def close(self) -> None:
        pass
