"""What the feature stage hands to the windows: face and lip tracking, audio features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class FaceObservation:
    """One tracked face in one frame. Coordinates are pixels of the original frame."""

    face_box: tuple[float, float, float, float]  # x0, y0, x1, y1
    landmarks: np.ndarray  # (N, 2) float32, the tracker's full mesh (478 for FaceMesh)
    lip_landmarks: np.ndarray  # (40, 2) float32
    mouth_crop: np.ndarray  # (48, 96, 3) uint8 RGB, lower face, size-normalized
    # (256, 256, 3) uint8 RGB, whole face, size-normalized. None once a session has
    # measured it and no later window reads it (Windower.release_face_crops).
    face_crop: np.ndarray | None
    aperture: float  # inner-lip gap / face height
    mouth_width: float  # mouth corner distance / face width
    track_id: int = 0  # which of the session's face tracks this is (0: not tracked)


@dataclass(frozen=True, slots=True)
class FrameFeatures:
    t: float
    index: int
    frame_size: tuple[int, int]  # height, width
    face: FaceObservation | None  # the face scored; None: no face (or none chosen)
    # Every face tracked in the frame (``face`` among them), when there are several.
    faces: tuple[FaceObservation, ...] = ()


@dataclass(frozen=True, slots=True)
class AudioFeatures:
    """Audio features at a fixed frame rate (100 Hz by default). Row i is at ``t0 + i * hop_s``."""

    t0: float
    hop_s: float
    log_mel: np.ndarray  # (T, n_mels) float32, natural log of mel power
    loudness_db: np.ndarray  # (T,) float32, RMS level in dBFS
    voiced: np.ndarray  # (T,) bool, voice activity

    def __len__(self) -> int:
        return len(self.loudness_db)

    @property
    def times(self) -> np.ndarray:
        return self.t0 + np.arange(len(self)) * self.hop_s
