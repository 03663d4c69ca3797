"""The artifact detector's window and session values on genuine video, and the score map.

``tools/train_artifact.py`` scores the real clips of the training pool with the trained
network, as recorded and re-encoded the way a starved call carries them, and writes the
mean and spread of the window value (mean fake logit of a window's scored frames, each
clip weighing the same) and of the session value (a clip's mean window value). A value's
z against these is what the rationale quotes; the score is a logistic of z, 0.5 at
``center_z`` sigma.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.detectors.artifact.backend import MODELS_DIR
from monitor.detectors.base import read_calibration_json
from monitor.detectors.temporal.calibration import Stats
from monitor.errors import DetectorError

DEFAULT_PATH = MODELS_DIR / "artifact_v1.calibration.json"
FORMAT = 1


@dataclass
class ArtifactCalibration:
    window: Stats
    session: Stats
    center_z: float = 3.0
    width_z: float = 0.5
    meta: dict[str, Any] = field(default_factory=dict)

    def score(self, z: float) -> float:
        return 1.0 / (1.0 + math.exp(-(z - self.center_z) / self.width_z))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            **self.meta,
            "score": {"center_z": self.center_z, "width_z": self.width_z},
            "window": vars(self.window),
            "session": vars(self.session),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArtifactCalibration:
        if data.get("format") != FORMAT:
            raise DetectorError(f"artifact calibration format {data.get('format')!r}, expected 1")
        try:
            stats = {}
            for level in ("window", "session"):
                mean, std = float(data[level]["mean"]), float(data[level]["std"])
                if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
                    raise ValueError(f"bad {level} statistics mean={mean} std={std}")
                stats[level] = Stats(mean, std)
            meta = {k: v for k, v in data.items() if k not in {"format", "score", *stats}}
            return cls(
                stats["window"],
                stats["session"],
                float(data["score"]["center_z"]),
                float(data["score"]["width_z"]),
                meta,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DetectorError(f"artifact calibration is malformed: {exc!r}") from exc


def load_calibration(path: str | Path | None = None) -> ArtifactCalibration:
    path = Path(path) if path is not None else DEFAULT_PATH
    return ArtifactCalibration.from_json(
        read_calibration_json(path, "artifact", "run tools/train_artifact.py")
    )
