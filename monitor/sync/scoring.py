"""From a distance-vs-lag curve to offset, confidence and the calibration features.

SyncNet's conventions, so the figures compare: the offset is the lag of the smallest
mean distance, the confidence is the curve's median minus its minimum. Our lag sign:
a positive lag pairs the lips with later audio, so ``offset_ms > 0`` means the audio
arrives later than the lips.

Lags are whole frames (40 ms), but a real offset is not: a genuine clip 20 ms off reads
0 or -40 ms from window to window, a +400 ms shift of it +360 or +400. So ``offset_ms``
is refined between frames, at the vertex of the parabola through the minimum and its
two neighbours; the calibration features keep the whole-frame lag.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitor.sync.features import GRID_STEP_S

# Lags within this many frames of zero count as "in sync" for the near-zero confidence
# (genuine recordings and calls carry small constant offsets from encoding and buffers).
NEAR_ZERO_FRAMES = 2
# |offset| is capped here as a calibration feature: beyond it, "clearly off" is enough.
OFFSET_CAP_FRAMES = 8


@dataclass(frozen=True, slots=True)
class CurveSummary:
    offset_frames: int
    offset_ms: float
    confidence: float  # median - min (SyncNet)
    near_zero_confidence: float  # median - min over |lag| <= NEAR_ZERO_FRAMES
    min_distance: float


def refined_minimum(curve: np.ndarray) -> float:
    """The index of the curve's minimum, refined to a fraction of a step (within +-0.5):
    the vertex of the parabola through the minimum and its neighbours; an end stays put."""
    curve = np.asarray(curve, dtype=np.float64)
    best = int(np.argmin(curve))
    if best == 0 or best == len(curve) - 1:
        return float(best)
    left, middle, right = curve[best - 1], curve[best], curve[best + 1]
    bend = left - 2.0 * middle + right
    if bend <= 0:
        return float(best)
    return best + float(np.clip(0.5 * (left - right) / bend, -0.5, 0.5))


def summarize_curve(curve: np.ndarray, lags: np.ndarray) -> CurveSummary:
    curve = np.asarray(curve, dtype=np.float64)
    best = int(np.argmin(curve))
    median = float(np.median(curve))
    near = np.abs(lags) <= NEAR_ZERO_FRAMES
    offset = int(lags[best])
    refined = lags[0] + refined_minimum(curve) * (lags[1] - lags[0]) if len(lags) > 1 else offset
    return CurveSummary(
        offset_frames=offset,
        offset_ms=float(refined) * GRID_STEP_S * 1000.0,
        confidence=median - float(curve[best]),
        near_zero_confidence=median - float(curve[near].min()),
        min_distance=float(curve[best]),
    )


def curve_features(curve: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """(confidence, near-zero confidence, capped |offset| in frames): what calibration sees."""
    summary = summarize_curve(curve, lags)
    return np.array(
        [
            summary.confidence,
            summary.near_zero_confidence,
            float(min(abs(summary.offset_frames), OFFSET_CAP_FRAMES)),
        ]
    )


# The dip's sides are read this many lags (80 ms) either side of the minimum.
DIP_SIDE_FRAMES = 2


def dip_sharpness(curve: np.ndarray) -> float:
    """How sharply the best alignment stands out: the mean distance DIP_SIDE_FRAMES either
    side of the minimum above the minimum, in units of the curve's spread.

    Genuine lips are timed by the articulators and meet the speech at one lag; generated
    heads move their lips as a smoothed function of the audio, so every lag near the best
    fits almost as well (docs/LIP_TIMING.md)."""
    curve = np.asarray(curve, dtype=np.float64)
    best = int(np.argmin(curve))
    sides = [
        curve[i] for i in (best - DIP_SIDE_FRAMES, best + DIP_SIDE_FRAMES) if 0 <= i < len(curve)
    ]
    spread = float(curve.std())
    if not sides or spread <= 0:
        return 0.0
    return (float(np.mean(sides)) - float(curve[best])) / spread
