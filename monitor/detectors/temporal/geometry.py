"""Where things are in the aligned crops, and head motion removed from landmark tracks.

The face tracker cuts ``face_crop`` and ``mouth_crop`` with one affine warp each, aligned
so the eye line is horizontal (:func:`monitor.features.face.observe_face`). The same warp,
recomputed here from the landmarks, tells where the lips, eyes and skin patches fall in
each crop, so the cues compare named face regions and never look at frame corners.
"""

from __future__ import annotations

import math

import numpy as np

from monitor.features.face import (
    CHEEK_LEFT,
    CHEEK_RIGHT,
    EYE_OUTER_LEFT,
    EYE_OUTER_RIGHT,
    FACE_CROP_MARGIN,
    LIP_INDICES,
    LIP_INNER_LOWER,
    LIP_INNER_UPPER,
    LIP_OUTER_LOWER,
    LIP_OUTER_UPPER,
    MOUTH_CROP_TOP_OFFSET,
    MOUTH_CROP_WIDTH_SCALE,
    NOSE_TIP,
)

# Closed outlines (polygon order) of the lips and the mouth opening.
LIP_OUTLINE = LIP_OUTER_UPPER + LIP_OUTER_LOWER[::-1]
MOUTH_OPENING = LIP_INNER_UPPER + LIP_INNER_LOWER[::-1]
LIPS = LIP_INDICES
# Eye corners, lids and brows: the sharpest genuine detail of the upper face.
LEFT_EYE = (33, 133, 159, 145, 70, 105)
RIGHT_EYE = (263, 362, 386, 374, 300, 334)
# Points that do not move when a person talks: eye corners, nose bridge, forehead, temples.
# Their motion is head motion (and tracker noise), which the lip kinematics are measured against.
STABLE = (33, 133, 263, 362, 168, 6, 10, 151, 127, 356, 1, 234, 454)
# Skin beside the mouth and on the chin (inside a regenerated mouth box) ...
LOWER_SKIN = (214, 434, 200, 199, 57, 287)
# ... and on the upper cheeks and forehead (outside it).
UPPER_SKIN = (50, 280, 151, 9, 117, 346)
# The face outline (MediaPipe's FACEMESH_FACE_OVAL, in order around the face).
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip
# Jaw corners and chin, bounding the region below the lips.
JAW_LEFT, JAW_RIGHT, CHIN, LOWER_LIP_BOTTOM = 172, 397, 152, 17


def upright(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks rotated so the eye line is horizontal (the crops' orientation)."""
    dx, dy = landmarks[EYE_OUTER_RIGHT] - landmarks[EYE_OUTER_LEFT]
    angle = math.atan2(float(dy), float(dx))
    cos, sin = math.cos(angle), math.sin(angle)
    return landmarks.astype(np.float64) @ np.array([[cos, -sin], [sin, cos]])


def face_crop_points(landmarks: np.ndarray, side: int, *, rotated: bool = False) -> np.ndarray:
    """Landmarks in ``face_crop`` pixel coordinates (same geometry as observe_face).

    ``rotated``: ``landmarks`` are :func:`upright` already (computed once per frame)."""
    points = landmarks if rotated else upright(landmarks)
    lo, hi = points.min(axis=0), points.max(axis=0)
    source_side = max(float(max(hi - lo)) * FACE_CROP_MARGIN, 1e-6)
    return (points - (lo + hi) / 2.0) * (side / source_side) + side / 2.0


def mouth_crop_points(
    landmarks: np.ndarray, height: int, width: int, *, rotated: bool = False
) -> np.ndarray:
    """Landmarks in ``mouth_crop`` pixel coordinates (same geometry as observe_face)."""
    points = landmarks if rotated else upright(landmarks)
    crop_w = max(
        abs(float(points[CHEEK_RIGHT, 0] - points[CHEEK_LEFT, 0])) * MOUTH_CROP_WIDTH_SCALE, 1.0
    )
    crop_h = crop_w * height / width
    top = float(points[NOSE_TIP, 1]) - MOUTH_CROP_TOP_OFFSET * crop_w
    center = np.array([(points[CHEEK_LEFT, 0] + points[CHEEK_RIGHT, 0]) / 2.0, top + crop_h / 2.0])
    return (points - center) * (width / crop_w) + np.array([width / 2.0, height / 2.0])


def interocular(landmarks: np.ndarray) -> float:
    """Outer eye-corner distance in pixels: the face size the kinematics are divided by."""
    return float(np.hypot(*(landmarks[EYE_OUTER_RIGHT] - landmarks[EYE_OUTER_LEFT])))


def remove_head_motion(tracks: np.ndarray) -> np.ndarray:
    """Landmark tracks (T, N, 2) with each frame mapped onto the middle frame by a similarity
    fitted on the :data:`STABLE` points, in units of the face size (interocular distance).

    What is left on the lips is articulation plus tracking noise; what is left on the
    stable points is tracking noise alone. The least-squares similarity (rotation, scale,
    shift) of every frame is solved in closed form, all frames at once.
    """
    tracks = tracks.astype(np.float64)
    reference = tracks[len(tracks) // 2]
    stable = list(STABLE)
    source = tracks[:, stable]  # (T, K, 2)
    target = reference[stable]  # (K, 2)
    source_mean = source.mean(axis=1, keepdims=True)
    target_mean = target.mean(axis=0)
    a, b = source - source_mean, target - target_mean
    norm = np.maximum((a * a).sum(axis=(1, 2)), 1e-12)
    cos_s = (a[..., 0] * b[:, 0] + a[..., 1] * b[:, 1]).sum(axis=1) / norm
    sin_s = (a[..., 0] * b[:, 1] - a[..., 1] * b[:, 0]).sum(axis=1) / norm
    centred = tracks - source_mean
    aligned = np.empty_like(tracks)
    aligned[..., 0] = cos_s[:, None] * centred[..., 0] - sin_s[:, None] * centred[..., 1]
    aligned[..., 1] = sin_s[:, None] * centred[..., 0] + cos_s[:, None] * centred[..., 1]
    aligned += target_mean
    return aligned / max(interocular(reference), 1e-6)
