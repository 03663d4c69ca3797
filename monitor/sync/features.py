"""Turn an analysis window into the sync model's inputs, on a 25 fps grid.

The model was trained at 25 fps (one step = one frame = 4 log-mel rows), so every
window is first put on a 25 fps grid anchored at ``t_start``: each grid step takes
the frame nearest in time (a 30 fps call drops every sixth frame, a 15 fps call
repeats frames). Feeding other rates unresampled shifts every lag (SyncNet issue #2).

Training (tools/train_sync.py) calls :func:`build_inputs` on the same
:class:`FrameTrack` data, so training and inference inputs are made by one code path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from monitor.features.types import AudioFeatures, FaceObservation, FrameFeatures
from monitor.sync.dims import LIP_FEATURES, MAX_LAG, MEL_ROWS_PER_STEP
from monitor.windows import AnalysisWindow

GRID_STEP_S = 0.04  # 25 fps
MAX_LAG_FRAMES = MAX_LAG  # +-600 ms, SyncNet's search range
STACK_FRAMES = 5  # frames around a step that must show a face for it to be scored
# A grid step whose nearest frame is further away than this has no frame (dropped frames).
MAX_FRAME_DISTANCE_S = 0.07
# Log-mel values more than this far (natural log units, about 43 dB) below the window's
# peak are clamped: digital silence and the codec's noise floor look the same then.
MEL_DYNAMIC_RANGE = 10.0
# Crops with less contrast than this (grey levels) are not stretched further: noise.
MIN_CROP_STD = 8.0

# FaceMesh landmarks at the outer eye corners, to undo head roll in the lip geometry.
_EYE_LEFT, _EYE_RIGHT = 33, 263


@dataclass(frozen=True, slots=True)
class FrameTrack:
    """Per-frame visual features at the native frame rate (what windows and caches hold)."""

    times: np.ndarray  # (n,) float64 media seconds
    face: np.ndarray  # (n,) bool, a face was tracked
    crops: np.ndarray  # (n, 48, 96) uint8 grayscale mouth crops (zeros without a face)
    lips: np.ndarray  # (n, 83) float32 lip geometry (zeros without a face)

    def __len__(self) -> int:
        return len(self.times)

    def select(self, t_start: float, t_end: float) -> FrameTrack:
        """Frames with ``t_start <= t < t_end``, as a window holds them."""
        keep = (self.times >= t_start) & (self.times < t_end)
        return FrameTrack(self.times[keep], self.face[keep], self.crops[keep], self.lips[keep])


class _LagGrid:
    """Reading a window's outputs back into lag curves (needs ``positions``, ``max_lag``)."""

    __slots__ = ()
    positions: np.ndarray
    max_lag: int

    @property
    def lags(self) -> np.ndarray:
        return np.arange(-self.max_lag, self.max_lag + 1)

    def audio_index(self) -> np.ndarray:
        """(K, 2*max_lag+1) audio step for each scored video step and lag."""
        return self.positions[:, None] + self.lags[None, :] + self.max_lag


@dataclass(frozen=True, slots=True)
class SyncInputs(_LagGrid):
    """Model inputs of one window and how to read the outputs back into a lag curve.

    Video step ``k`` is grid frame ``k`` (``t_start + k * 0.04``); audio step ``m``
    summarizes mel rows ``4m .. 4m+3`` of a span starting ``max_lag`` steps before
    ``t_start``, so video step ``k`` at lag ``L`` compares with audio step ``k + L + max_lag``.
    """

    crops: np.ndarray  # (N, 48, 96) float32, normalized per frame (zeros: no face)
    lips: np.ndarray  # (N, 83) float32
    mel: np.ndarray  # (4 * (N + 2 * max_lag), 80) float32, normalized per window
    positions: np.ndarray  # (K,) video steps whose 5 frames around them all show a face
    voiced: np.ndarray  # (N + 2 * max_lag,) voiced fraction of each audio step
    max_lag: int
    t_start: float

    @property
    def steps(self) -> int:
        return len(self.crops)


@dataclass(frozen=True, slots=True)
class StreamInputs(_LagGrid):
    """A window's inputs for a streaming backend, which embeds every frame once.

    The same grid, positions and mel as :class:`SyncInputs`; instead of crops and lips
    it says which of the window's frames each grid step shows, so the frame's stored
    embedding (:func:`frame_model_inputs`, then the backend's ``embed_frames``) is reused.
    """

    frames: np.ndarray  # (N,) index into window.frames per grid step; -1: no face there
    mel: np.ndarray  # (4 * (N + 2 * max_lag), 80) float32, normalized per window
    positions: np.ndarray
    voiced: np.ndarray
    max_lag: int
    t_start: float

    @property
    def steps(self) -> int:
        return len(self.frames)


def lip_geometry(face: FaceObservation) -> np.ndarray:
    """(83,) lip shape: landmarks about their centroid, roll removed, in face heights.

    Scaled so that values are of order one; aperture and mouth width are appended
    because they are the tracker's cleanest measures of opening and spreading, and a
    last 1 says that a face was there (frames without one are all zeros).
    """
    lips = face.lip_landmarks.astype(np.float64)
    x0, y0, x1, y1 = face.face_box
    face_height = max(y1 - y0, 1.0)
    angle = 0.0
    marks = face.landmarks
    if marks.shape[0] > _EYE_RIGHT:
        dx, dy = marks[_EYE_RIGHT] - marks[_EYE_LEFT]
        if abs(dx) + abs(dy) > 1e-6:
            angle = float(np.arctan2(dy, dx))
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.array([[cos, -sin], [sin, cos]])  # row vectors times this undo the roll
    centered = (lips - lips.mean(axis=0)) @ rotation / face_height
    out = np.empty(LIP_FEATURES, np.float32)
    out[:80] = (centered * 4.0).reshape(-1)
    out[80] = face.aperture * 10.0
    out[81] = (face.mouth_width - 0.4) * 5.0
    out[82] = 1.0
    return out


def gray_crop(face: FaceObservation) -> np.ndarray:
    return cv2.cvtColor(face.mouth_crop, cv2.COLOR_RGB2GRAY)


def track_from_frames(frames: Sequence[FrameFeatures]) -> FrameTrack:
    n = len(frames)
    times = np.array([f.t for f in frames], dtype=np.float64)
    face = np.array([f.face is not None for f in frames], dtype=bool)
    crops = np.zeros((n, 48, 96), np.uint8)
    lips = np.zeros((n, LIP_FEATURES), np.float32)
    for i, frame in enumerate(frames):
        if frame.face is not None:
            crops[i] = gray_crop(frame.face)
            lips[i] = lip_geometry(frame.face)
    return FrameTrack(times, face, crops, lips)


def frame_model_inputs(faces: Sequence[FaceObservation]) -> tuple[np.ndarray, np.ndarray]:
    """(n, 48, 96) normalized crops and (n, 83) lips of tracked faces, exactly as
    :func:`build_inputs` feeds them: each frame's inputs depend on that frame alone."""
    if not faces:
        return np.zeros((0, 48, 96), np.float32), np.zeros((0, LIP_FEATURES), np.float32)
    crops = normalize_crops(np.stack([gray_crop(face) for face in faces]))
    return crops, np.stack([lip_geometry(face) for face in faces])


def max_frame_distance(times: np.ndarray) -> float:
    """How far a grid step may be from its frame: half the call's own frame interval
    (a 5 fps frame stands for 0.2 s), at least ``MAX_FRAME_DISTANCE_S``."""
    if len(times) < 2:
        return MAX_FRAME_DISTANCE_S
    interval = float(np.median(np.diff(times)))
    return max(MAX_FRAME_DISTANCE_S, 0.5 * interval + 0.01)


def grid_frames(
    times: np.ndarray, t_start: float, n_grid: int, max_distance: float = MAX_FRAME_DISTANCE_S
) -> np.ndarray:
    """Index of the nearest frame for each 25 fps grid step, -1 where none is close."""
    grid = t_start + np.arange(n_grid) * GRID_STEP_S
    if len(times) == 0:
        return np.full(n_grid, -1)
    # The frames either side of each step (the same one at the ends, or with one frame).
    right = np.clip(np.searchsorted(times, grid), 0, len(times) - 1)
    left = np.maximum(right - 1, 0)
    pick = np.where(np.abs(times[left] - grid) <= np.abs(times[right] - grid), left, right)
    pick[np.abs(times[pick] - grid) > max_distance] = -1
    return pick


def missing_stack_reason(track: FrameTrack, t_start: float, t_end: float) -> str:
    """Why :func:`build_inputs` found no 0.2 s stack: frames missing, or faces missing."""
    n_grid = int(round((t_end - t_start) / GRID_STEP_S))
    pick = grid_frames(track.times, t_start, n_grid, max_frame_distance(track.times))
    framed = pick >= 0
    if n_grid and framed.mean() < 0.5:
        return (
            f"frames missing: {int((~framed).sum())} of {n_grid} 40 ms steps have no frame "
            f"({len(track)} frames in the window)"
        )
    stack_s = STACK_FRAMES * GRID_STEP_S
    return f"no {STACK_FRAMES} consecutive frames ({stack_s:.1f} s) with a tracked face"


def normalize_mel(log_mel: np.ndarray) -> np.ndarray:
    """Clamp the dynamic range, remove each band's mean, scale to unit variance."""
    mel = np.asarray(log_mel, dtype=np.float32)
    if mel.size == 0:
        return mel
    mel = np.maximum(mel, mel.max() - MEL_DYNAMIC_RANGE)
    mel = mel - mel.mean(axis=0, keepdims=True)
    return mel / max(float(mel.std()), 1e-3)


def normalize_crops(crops: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 -> float32 with zero mean and unit contrast per frame."""
    flat = crops.reshape(len(crops), -1).astype(np.float32)
    mean = flat.mean(axis=1, keepdims=True)
    std = np.maximum(flat.std(axis=1, keepdims=True), MIN_CROP_STD)
    return ((flat - mean) / std).reshape(crops.shape)


def _grid(
    times: np.ndarray, face: np.ndarray, t_start: float, t_end: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """(pick, positions): the frame each grid step shows (-1: none, or no face) and the
    steps whose 5 frames around them all show a face; None when there is no such step."""
    n_grid = int(round((t_end - t_start) / GRID_STEP_S))
    if n_grid < STACK_FRAMES:
        return None
    pick = grid_frames(times, t_start, n_grid, max_frame_distance(times))
    has_face = np.zeros(n_grid, bool)
    has_face[pick >= 0] = face[pick[pick >= 0]]
    # A step is scored when the 5 frames centred on it (SyncNet's 0.2 s) all show a face.
    half = STACK_FRAMES // 2
    full = np.lib.stride_tricks.sliding_window_view(has_face, STACK_FRAMES).all(axis=1)
    positions = np.flatnonzero(full) + half
    if len(positions) == 0:
        return None
    return np.where(has_face, pick, -1), positions


def _audio_steps(
    audio: AudioFeatures, t_start: float, n_grid: int, max_lag: int
) -> tuple[np.ndarray, np.ndarray]:
    """The window's normalized mel rows and the voiced fraction of each audio step."""
    n_audio = n_grid + 2 * max_lag
    n_rows = n_audio * MEL_ROWS_PER_STEP
    mel = normalize_mel(audio.log_mel)
    first_row = int(round((t_start - max_lag * GRID_STEP_S - audio.t0) / audio.hop_s))
    rows = first_row + np.arange(n_rows)
    valid_rows = (rows >= 0) & (rows < len(mel))
    n_mels = mel.shape[1] if mel.ndim == 2 else 80
    floor_value = float(mel.min()) if mel.size else 0.0
    gathered = np.full((n_rows, n_mels), floor_value, np.float32)
    gathered[valid_rows] = mel[rows[valid_rows]]
    voiced_rows = np.zeros(n_rows, np.float32)
    voiced_rows[valid_rows] = audio.voiced[rows[valid_rows]]
    return gathered, voiced_rows.reshape(n_audio, MEL_ROWS_PER_STEP).mean(axis=1)


def build_inputs(
    track: FrameTrack,
    audio: AudioFeatures,
    t_start: float,
    t_end: float,
    max_lag: int = MAX_LAG_FRAMES,
) -> SyncInputs | None:
    """Model inputs for the window ``[t_start, t_end)``; None when no 5 consecutive grid
    frames show a face.

    ``audio`` must cover ``[t_start - max_lag * 0.04, t_end + max_lag * 0.04]``; rows
    missing at either end are filled with the window's quietest level.
    """
    grid = _grid(track.times, track.face, t_start, t_end)
    if grid is None:
        return None
    pick, positions = grid
    crops = np.zeros((len(pick), *track.crops.shape[1:]), np.float32)
    lips = np.zeros((len(pick), LIP_FEATURES), np.float32)
    shown = np.flatnonzero(pick >= 0)
    crops[shown] = normalize_crops(track.crops[pick[shown]])
    lips[shown] = track.lips[pick[shown]]
    mel, voiced = _audio_steps(audio, t_start, len(pick), max_lag)
    return SyncInputs(
        crops=crops,
        lips=lips,
        mel=mel,
        positions=positions,
        voiced=voiced,
        max_lag=max_lag,
        t_start=t_start,
    )


def window_max_lag(window: AnalysisWindow) -> int:
    """The lag range a window's audio context allows, at most SyncNet's +-15 steps."""
    return min(MAX_LAG_FRAMES, int(np.floor(window.context_s / GRID_STEP_S + 1e-6)))


def window_inputs(window: AnalysisWindow) -> SyncInputs | None:
    """:func:`build_inputs` for a pipeline window; lags limited by its audio context."""
    return build_inputs(
        track_from_frames(window.frames),
        window.audio,
        window.t_start,
        window.t_end,
        window_max_lag(window),
    )


def stream_inputs(window: AnalysisWindow) -> StreamInputs | None:
    """What :func:`window_inputs` gives, with frame references instead of crops and lips."""
    times = np.array([f.t for f in window.frames], dtype=np.float64)
    face = np.array([f.face is not None for f in window.frames], dtype=bool)
    grid = _grid(times, face, window.t_start, window.t_end)
    if grid is None:
        return None
    pick, positions = grid
    max_lag = window_max_lag(window)
    mel, voiced = _audio_steps(window.audio, window.t_start, len(pick), max_lag)
    return StreamInputs(pick, mel, positions, voiced, max_lag, window.t_start)


def lag_distances(inputs: _LagGrid, video_emb: np.ndarray, audio_emb: np.ndarray) -> np.ndarray:
    """(K, 2*max_lag+1) distance of each scored video step to the audio at each lag."""
    paired = audio_emb[inputs.audio_index()]  # (K, L, D)
    return np.linalg.norm(paired - video_emb[inputs.positions][:, None, :], axis=2)


def window_lag_distances(
    inputs: SyncInputs,
    embed: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> np.ndarray:
    """:func:`lag_distances` of one window, embedded by ``embed`` (any backend's
    ``embed(crops, lips, mel)``) as a batch of one."""
    video, audio = embed(inputs.crops[None], inputs.lips[None], inputs.mel[None])
    return lag_distances(inputs, np.asarray(video[0]), np.asarray(audio[0]))
