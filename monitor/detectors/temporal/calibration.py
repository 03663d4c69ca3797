"""Cue statistics of genuine speech, and how cue values become z-scores and one score.

``tools/calibrate_temporal.py`` measures every cue on the real clips of the training pool
and writes ``monitor/detectors/temporal_calibration.json``: per cue the mean and standard
deviation over windows (``window``) and over clips' medians (``session``), the direction
in which fakes of the pool deviate, and a weight (0 for cues that did not separate real
from fake in the pool: they are still reported, never fused).

Fusion: each cue's z is turned towards its suspicious direction and clipped (a cue that
looks very genuine may cancel a little, never a lot; one broken measurement cannot
dominate), the weighted sum is divided by the root of the summed squared weights, and that
combined value is standardised once more against genuine speech. The score is a logistic
of this combined z, 0.5 at ``center_z`` sigma.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.config import FaceConfig
from monitor.detectors.base import read_calibration_json
from monitor.errors import DetectorError

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "temporal_calibration.json"
LEVELS = ("window", "session")
FORMAT = 1
# Directional z is clipped to this range before it is summed.
Z_CLIP = (-1.0, 4.0)
# The face-tracking settings the cues move with (landmarks carried by flow between model
# frames jitter differently; texture is read at the crop's size): recorded in the file.
TRACKING_KEYS = ("landmark_interval", "face_crop_size")


@dataclass(frozen=True)
class Stats:
    mean: float
    std: float

    def z(self, value: float) -> float:
        return (value - self.mean) / self.std


@dataclass(frozen=True)
class CueCalibration:
    stats: dict[str, Stats]  # by level
    direction: int  # +1: fakes read high; -1: fakes read low
    weight: float


@dataclass
class Calibration:
    cues: dict[str, CueCalibration]
    combined: dict[str, Stats] = field(
        default_factory=lambda: {level: Stats(0.0, 1.0) for level in LEVELS}
    )
    center_z: float = 2.5
    width_z: float = 0.5
    meta: dict[str, Any] = field(default_factory=dict)

    def z_scores(self, values: dict[str, float], level: str) -> dict[str, float]:
        """Each calibrated cue's z (nan where the value is nan)."""
        out = {}
        for name, cue in self.cues.items():
            value = values.get(name, math.nan)
            out[name] = cue.stats[level].z(value) if math.isfinite(value) else math.nan
        return out

    def combine(self, z_scores: dict[str, float], level: str) -> float | None:
        """Standardised combined z of the weighted cues; None when no weighted cue was measured."""
        total = 0.0
        squared_weights = 0.0
        for name, cue in self.cues.items():
            z = z_scores.get(name, math.nan)
            if cue.weight <= 0 or not math.isfinite(z):
                continue
            directed = min(max(cue.direction * z, Z_CLIP[0]), Z_CLIP[1])
            total += cue.weight * directed
            squared_weights += cue.weight**2
        if squared_weights == 0:
            return None
        return self.combined[level].z(total / math.sqrt(squared_weights))

    def score(self, combined_z: float) -> float:
        return 1.0 / (1.0 + math.exp(-(combined_z - self.center_z) / self.width_z))

    def tracking_mismatch(self, face: FaceConfig) -> str | None:
        """How ``face`` differs from the tracking the statistics were measured with, or
        None (also when the file does not say)."""
        recorded = self.meta.get("tracking") or {}
        differences = [
            f"{key} {getattr(face, key)} (calibrated at {recorded[key]})"
            for key in TRACKING_KEYS
            if key in recorded and recorded[key] != getattr(face, key)
        ]
        return ", ".join(differences) or None

    # ----- JSON ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            **self.meta,
            "score": {"center_z": self.center_z, "width_z": self.width_z},
            "combined": {level: vars(stats) for level, stats in self.combined.items()},
            "cues": {
                name: {
                    "direction": cue.direction,
                    "weight": cue.weight,
                    **{level: vars(stats) for level, stats in cue.stats.items()},
                }
                for name, cue in self.cues.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        if data.get("format") != FORMAT:
            raise DetectorError(
                f"temporal calibration format {data.get('format')!r}, expected {FORMAT}"
            )
        try:
            cues = {
                name: CueCalibration(
                    stats={level: _stats(entry[level]) for level in LEVELS},
                    direction=1 if entry["direction"] >= 0 else -1,
                    weight=float(entry["weight"]),
                )
                for name, entry in data["cues"].items()
            }
            combined = {level: _stats(data["combined"][level]) for level in LEVELS}
            score = data["score"]
            meta = {
                k: v for k, v in data.items() if k not in {"format", "cues", "combined", "score"}
            }
            return cls(cues, combined, float(score["center_z"]), float(score["width_z"]), meta)
        except (KeyError, TypeError, ValueError) as exc:
            raise DetectorError(f"temporal calibration is malformed: {exc!r}") from exc


def _stats(entry: dict[str, Any]) -> Stats:
    mean, std = float(entry["mean"]), float(entry["std"])
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ValueError(f"bad cue statistics mean={mean} std={std}")
    return Stats(mean, std)


def load_calibration(path: str | Path | None = None) -> Calibration:
    """The committed calibration (or another file); :class:`DetectorError` if unusable."""
    path = Path(path) if path is not None else DEFAULT_PATH
    return Calibration.from_json(
        read_calibration_json(path, "temporal", "run tools/calibrate_temporal.py")
    )


def calibration_for(face: FaceConfig) -> Calibration:
    """The committed calibration measured under ``face``'s tracking settings (the file
    :func:`variant_path` names); the default one when none was measured so (the detector
    then says so)."""
    return load_calibration(calibration_file(face))


def calibration_file(face: FaceConfig) -> Path:
    """The committed file :func:`calibration_for` reads under ``face``'s tracking."""
    path = variant_path(face)
    return path if path.exists() else DEFAULT_PATH


def variant_path(face: FaceConfig) -> Path:
    """Where tools/calibrate_temporal.py writes the calibration for ``face``'s tracking:
    the default file for the product's settings, else one named by what differs."""
    differing = [
        f"{key}_{getattr(face, key)}"
        for key in TRACKING_KEYS
        if getattr(face, key) != getattr(FaceConfig, key)
    ]
    if not differing:
        return DEFAULT_PATH
    return DEFAULT_PATH.with_name(f"{DEFAULT_PATH.stem}_{'_'.join(differing)}.json")
