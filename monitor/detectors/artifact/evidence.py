"""The boundary map as evidence: where on the face the seam is, in words and as a small grid.

The map lives on the network's 16x16 grid over the aligned face crop (eye line horizontal,
the landmarks' extent times 1.25, see :func:`monitor.features.face.observe_face`). With it
go the face's key points on the same grid, so a viewer can draw the map over any picture
of the face, and a name for the region the seam encloses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from monitor.detectors.artifact.crops import GRID, INPUT_SIDE
from monitor.detectors.temporal.geometry import FACE_OVAL, LIP_OUTLINE, face_crop_points

# Named points (FaceMesh indices) carried with the map.
POINTS = {
    "eye_left": 33,
    "eye_right": 263,
    "nose_tip": 1,
    "mouth_left": 61,
    "mouth_right": 291,
    "upper_lip": 0,
    "lower_lip": 17,
    "chin": 152,
}
OUTLINE_POINTS = 12  # the face oval, subsampled
LEVELS = 15  # map cells are written as one hex digit each: value * 15, rounded
# Cells within this many cells of the face outline count as "on the outline".
OUTLINE_BAND = 1.5


@dataclass(frozen=True, slots=True)
class FaceGeometry:
    """Key points and the face outline in grid cells (x right, y down; 0..GRID)."""

    points: dict[str, tuple[float, float]]
    outline: np.ndarray  # (len(FACE_OVAL), 2)
    lips: np.ndarray  # (len(LIP_OUTLINE), 2)


def face_geometry(landmarks: np.ndarray) -> FaceGeometry:
    cells = face_crop_points(landmarks, INPUT_SIDE) * (GRID / INPUT_SIDE)
    points = {name: (float(cells[i, 0]), float(cells[i, 1])) for name, i in POINTS.items()}
    return FaceGeometry(points, cells[list(FACE_OVAL)], cells[list(LIP_OUTLINE)])


@dataclass(frozen=True, slots=True)
class Region:
    name: str  # whole_face | mouth | lower_face | face | none
    label: str  # how the rationale names the seam ("lower-face blending seam")
    explanation: str  # what such a seam means


REGIONS = {
    "whole_face": Region("whole_face", "whole-face", "a face pasted over the head (face swap)"),
    "mouth": Region("mouth", "mouth-region", "a pasted region around the mouth"),
    "lower_face": Region("lower_face", "lower-face", "a pasted region below the nose"),
    "face": Region("face", "face", "a seam across the face"),
    "none": Region("none", "face", "no clear seam on the map"),
}


def region_shares(boundary: np.ndarray, geometry: FaceGeometry) -> dict[str, float] | None:
    """How the map's excess over its own median falls: on the face outline, around the
    mouth, below the nose. None when the map is flat."""
    weight = np.maximum(boundary - np.median(boundary), 0.0)
    total = float(weight.sum())
    if total < 0.05:
        return None
    ys, xs = np.mgrid[0:GRID, 0:GRID] + 0.5
    outline = np.round(geometry.outline * 8).astype(np.int32)
    ring = np.zeros((GRID * 8, GRID * 8), np.uint8)
    cv2.polylines(ring, [outline], True, 1, thickness=1)
    distance = cv2.distanceTransform(1 - ring, cv2.DIST_L2, 3) / 8.0
    on_outline = cv2.resize(distance, (GRID, GRID), interpolation=cv2.INTER_AREA) < OUTLINE_BAND
    mouth = geometry.lips.mean(axis=0)
    mouth_width = max(float(np.ptp(geometry.lips[:, 0])), 0.5)
    near_mouth = np.hypot(xs - mouth[0], ys - mouth[1]) < 1.0 * mouth_width
    below_nose = ys > geometry.points["nose_tip"][1]
    return {
        "outline": float(weight[on_outline].sum() / total),
        "mouth": float(weight[near_mouth].sum() / total),
        "below_nose": float(weight[below_nose].sum() / total),
    }


def describe_region(boundary: np.ndarray, geometry: FaceGeometry) -> Region:
    shares = region_shares(boundary, geometry)
    if shares is None:
        return REGIONS["none"]
    if shares["outline"] >= 0.5 and shares["below_nose"] < 0.75:
        return REGIONS["whole_face"]
    if shares["mouth"] >= 0.6:
        return REGIONS["mouth"]
    if shares["below_nose"] >= 0.6:
        return REGIONS["lower_face"]
    return REGIONS["face"]


def _cells(boundary: np.ndarray) -> list[str]:
    digits = np.clip(np.round(boundary * LEVELS), 0, LEVELS).astype(int)
    return ["".join(f"{v:x}" for v in row) for row in digits]


def boundary_map_json(boundary: np.ndarray, geometry: FaceGeometry) -> dict[str, Any]:
    """The map as events carry it: rows of hex digits (0-f = 0-1 of 4·M·(1−M)) over the
    aligned face crop, with the face's key points on the same grid."""
    step = max(1, len(geometry.outline) // OUTLINE_POINTS)
    return {
        "grid": GRID,
        "levels": LEVELS,
        "cells": _cells(boundary),
        "crop": "aligned face crop: eye line horizontal, landmark extent x1.25, grid cells",
        "points": {k: [round(x, 2), round(y, 2)] for k, (x, y) in geometry.points.items()},
        "outline": [[round(float(x), 2), round(float(y), 2)] for x, y in geometry.outline[::step]],
    }


def decode_cells(cells: list[str]) -> np.ndarray:
    """The map back from its rows of hex digits, values in [0, 1]."""
    return np.array([[int(c, 16) for c in row] for row in cells], np.float32) / LEVELS
