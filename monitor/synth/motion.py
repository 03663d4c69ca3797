"""Slow, seeded head motion and lighting drift, so a synthetic call is not a frozen picture."""

from __future__ import annotations

import numpy as np

from monitor.synth.face import HeadPose


def _wander(rng: np.random.Generator, times: np.ndarray, amplitude: float) -> np.ndarray:
    """A smooth random signal: three sinusoids of 0.05-0.5 Hz, peak about ``amplitude``."""
    freqs = rng.uniform(0.05, 0.5, size=3)
    phases = rng.uniform(0.0, 2.0 * np.pi, size=3)
    weights = rng.uniform(0.5, 1.0, size=3)
    signal = sum(
        w * np.sin(2.0 * np.pi * f * times + p)
        for w, f, p in zip(weights, freqs, phases, strict=True)
    )
    return amplitude * signal / weights.sum()


def head_poses(
    times: np.ndarray, size: tuple[int, int], seed: int, *, enabled: bool = True
) -> list[HeadPose]:
    """One pose per frame time: roll within about 2 degrees, shifts of 2 % of the frame."""
    if not enabled:
        return [HeadPose() for _ in times]
    rng = np.random.default_rng([seed, 1])
    height, width = size
    roll = _wander(rng, times, 2.0)
    shift_x = _wander(rng, times, 0.02 * width)
    shift_y = _wander(rng, times, 0.015 * height)
    zoom = 1.0 + _wander(rng, times, 0.02)
    return [
        HeadPose(float(r), float(x), float(y), float(z))
        for r, x, y, z in zip(roll, shift_x, shift_y, zoom, strict=True)
    ]


def lighting_gains(times: np.ndarray, seed: int, *, enabled: bool = True) -> np.ndarray:
    """Per-frame brightness gain, drifting within about +-6 %."""
    if not enabled:
        return np.ones(len(times))
    rng = np.random.default_rng([seed, 2])
    return 1.0 + _wander(rng, times, 0.06)
