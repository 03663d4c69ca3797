"""Sync model inputs: the 25 fps grid, stacks, audio slices, lip geometry, normalization."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from monitor.features.types import AudioFeatures
from monitor.sync.features import (
    FrameTrack,
    build_inputs,
    grid_frames,
    lag_distances,
    lip_geometry,
    normalize_crops,
    window_inputs,
)
from tests.windows_factory import face_with_aperture, window_from_signals


def _track(times: np.ndarray, face: np.ndarray | None = None) -> FrameTrack:
    n = len(times)
    rng = np.random.default_rng(0)
    return FrameTrack(
        times=np.asarray(times, np.float64),
        face=np.ones(n, bool) if face is None else face,
        crops=rng.integers(0, 255, (n, 48, 96), dtype=np.uint8),
        lips=rng.normal(size=(n, 83)).astype(np.float32),
    )


def _audio(t0: float, seconds: float) -> AudioFeatures:
    rows = int(round(seconds / 0.01))
    mel = np.tile(np.arange(rows, dtype=np.float32)[:, None] * 0.02, (1, 80))  # time as value
    return AudioFeatures(t0, 0.01, mel, np.zeros(rows, np.float32), np.ones(rows, bool))


@pytest.mark.parametrize("fps", [15.0, 24.0, 25.0, 30.0])
def test_grid_picks_the_nearest_frame_at_any_rate(fps: float) -> None:
    times = 10.0 + np.arange(int(2.0 * fps)) / fps
    pick = grid_frames(times, 10.0, 50)
    grid = 10.0 + np.arange(50) * 0.04
    assert (pick >= 0).all()
    # Nearest: no other frame is closer to its grid step.
    chosen = np.abs(times[pick] - grid)
    best = np.abs(times[None, :] - grid[:, None]).min(axis=1)
    np.testing.assert_allclose(chosen, best)
    assert chosen.max() <= 0.5 / fps + 1e-9


def test_grid_marks_steps_without_a_near_frame() -> None:
    times = np.r_[np.arange(0, 0.8, 0.04), np.arange(1.2, 2.0, 0.04)]  # 400 ms dropped
    pick = grid_frames(times, 0.0, 50)
    missing = np.flatnonzero(pick < 0)
    # Last frame before the gap at 0.76 s, first after at 1.2 s; 70 ms tolerance.
    grid = np.arange(50) * 0.04
    expected = np.flatnonzero((grid > 0.76 + 0.07 + 1e-9) & (grid < 1.2 - 0.07 - 1e-9))
    np.testing.assert_array_equal(missing, expected)
    assert len(missing) == 8


@pytest.mark.parametrize(
    ("n_frames", "expected_head"), [(0, []), (1, [0, 0, 0]), (2, [0, 0, 1, 1])]
)
def test_grid_with_almost_no_frames(n_frames: int, expected_head: list[int]) -> None:
    """A window holding one frame (drops, a frozen stream) used to raise IndexError and
    disable lip-sync for the rest of the call (issue 16)."""
    times = 1.0 + np.arange(n_frames) * 0.04
    pick = grid_frames(times, 0.96, 50)
    expected = np.full(50, -1)
    expected[: len(expected_head)] = expected_head
    np.testing.assert_array_equal(pick, expected)
    assert build_inputs(_track(times), _audio(0.36, 3.2), 0.96, 2.96) is None


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_build_inputs_shapes_and_audio_alignment(fps: float) -> None:
    t_start = 5.0
    track = _track(t_start + np.arange(int(2 * fps)) / fps)
    audio = _audio(t_start - 0.6, 3.2)
    inputs = build_inputs(track, audio, t_start, t_start + 2.0)
    assert inputs is not None
    assert inputs.crops.shape == (50, 48, 96)
    assert inputs.lips.shape == (50, 83)
    assert inputs.mel.shape == (320, 80)  # 4 rows per step, 50 + 2 * 15 steps
    # Row r of the window's mel is the audio at t_start - 0.6 + r * 10 ms.
    raw = np.arange(320) * 0.02
    np.testing.assert_allclose(inputs.mel[:, 0], (raw - raw.mean()) / raw.std(), atol=1e-4)
    # Steps 2..47 have the 5 frames around them; step k at lag L is audio step k + L + 15.
    np.testing.assert_array_equal(inputs.positions, np.arange(2, 48))
    index = inputs.audio_index()
    assert index.shape == (46, 31)
    assert (index[:, 15] == inputs.positions + 15).all()


def test_steps_need_five_face_frames_around_them() -> None:
    face = np.ones(50, bool)
    face[20] = False
    inputs = build_inputs(_track(np.arange(50) * 0.04, face), _audio(-0.6, 3.2), 0.0, 2.0)
    assert inputs is not None
    assert len(inputs.positions) == 46 - 5
    assert not np.isin(np.arange(18, 23), inputs.positions).any()
    assert not inputs.crops[20].any() and not inputs.lips[20].any()  # no face: zeros
    no_face = _track(np.arange(50) * 0.04, np.zeros(50, bool))
    assert build_inputs(no_face, _audio(-0.6, 3.2), 0.0, 2.0) is None


def test_crop_normalization_per_frame() -> None:
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 255, (6, 48, 96), dtype=np.uint8)
    crops[5] = 100  # flat: contrast is not stretched past MIN_CROP_STD
    out = normalize_crops(crops)
    for frame, normalized in zip(crops, out, strict=True):
        x = frame.astype(np.float64)
        np.testing.assert_allclose(normalized, (x - x.mean()) / max(x.std(), 8.0), atol=1e-4)


def test_lip_geometry_ignores_head_roll_and_position() -> None:
    rng = np.random.default_rng(2)
    face = face_with_aperture(0.05)
    marks = rng.uniform(200, 300, (478, 2)).astype(np.float32)
    marks[33], marks[263] = (210, 200), (290, 200)  # level eyes
    marks[:40] = rng.uniform(230, 270, (40, 2))
    upright = dataclasses.replace(face, landmarks=marks, lip_landmarks=marks[:40].copy())
    angle = math.radians(12)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    turned_marks = ((marks - 250) @ rotation.T + 250 + 30).astype(np.float32)  # rolled and moved
    turned = dataclasses.replace(
        face, landmarks=turned_marks, lip_landmarks=turned_marks[:40].copy()
    )
    np.testing.assert_allclose(lip_geometry(upright), lip_geometry(turned), atol=1e-4)


def test_window_inputs_and_lag_distances_on_a_pipeline_window() -> None:
    window = window_from_signals(fps=30.0)
    inputs = window_inputs(window)
    assert inputs is not None and len(inputs.positions) == 46
    rng = np.random.default_rng(3)
    video = rng.normal(size=(50, 8))
    audio = rng.normal(size=(80, 8))
    # Make every step match its audio exactly 3 steps later: the minimum is at lag +3.
    audio[inputs.positions + 15 + 3] = video[inputs.positions]
    curve = lag_distances(inputs, video, audio).mean(axis=0)
    assert int(inputs.lags[np.argmin(curve)]) == 3


def test_offsets_are_refined_between_frames() -> None:
    from monitor.sync.scoring import refined_minimum, summarize_curve

    lags = np.arange(-15, 16)
    curve = (lags - (-0.45)) ** 2 + 3.0  # true minimum 18 ms early
    summary = summarize_curve(curve, lags)
    assert summary.offset_frames == 0  # the whole-frame lag the calibration reads
    assert summary.offset_ms == pytest.approx(-18.0)
    assert refined_minimum(np.array([0.0, 1.0, 2.0])) == 0.0  # an end stays at the end
    assert refined_minimum(np.array([1.0, 0.0, 1.0])) == 1.0
    assert refined_minimum(np.array([2.0, 1.0, 1.0, 2.0])) == pytest.approx(1.5)
