"""The artifact network's input and target geometry, without torch: what the detector's
ONNX path, the evidence and the training data need (``model`` adds the network).

The network reads the tracker's 256 px aligned face crop and answers on a 16x16 grid."""

from __future__ import annotations

import cv2
import numpy as np

INPUT_SIDE = 256  # the tracker's face crop (FaceConfig.face_crop_size)
GRID = 16  # output grid: one cell per 16x16 input pixels
# The mask is blurred by this much (input pixels) before the boundary is read, so a hard
# edge gives a seam one or two cells wide wherever it falls on the grid.
TARGET_BLUR = 6.0


def boundary_target(mask: np.ndarray) -> np.ndarray:
    """4·M·(1−M) for a unit-peak blend mask of INPUT_SIDE pixels, its maximum per grid cell:
    1 in the cells the mask's edge crosses, falling off over about a cell either side."""
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), TARGET_BLUR)
    seam = 4.0 * soft * (1.0 - soft)
    cell = INPUT_SIDE // GRID
    cells = seam.reshape(GRID, cell, GRID, cell).max(axis=(1, 3))
    return np.clip(cells, 0.0, 1.0).astype(np.float32)


def normalize(crops: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) uint8 RGB -> (N, 3, S, S) float32, each crop standardised on its own
    (mean per channel, one spread), so exposure and contrast do not decide."""
    x = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)
    x -= x.mean(axis=(2, 3), keepdims=True)
    x /= x.reshape(len(x), -1).std(axis=1)[:, None, None, None] + 2.0
    return x


def to_input_side(crop: np.ndarray) -> np.ndarray:
    """A face crop of any size at INPUT_SIDE (the default tracker already cuts it so)."""
    if crop.shape[0] == INPUT_SIDE and crop.shape[1] == INPUT_SIDE:
        return crop
    interpolation = cv2.INTER_AREA if crop.shape[0] > INPUT_SIDE else cv2.INTER_LINEAR
    return cv2.resize(crop, (INPUT_SIDE, INPUT_SIDE), interpolation=interpolation)
