"""``lip_timing``: do the lips meet the speech as sharply as genuine lips do?

Evidence that comes with the learned lip-sync detector's, read from the same lag curve
(no model of its own, nothing computed twice). Genuine lips are timed by the articulators:
the sync model's distance has one clear dip at the lag where lips and speech meet. Heads
generated from one photo (audio-driven diffusion and its kin) move the lips as a smoothed
function of the audio, so lags either side of the best fit almost as well and the dip is
blunt, while the offset stays in sync and the sync detector reads the call as genuine.
On the training pool the dip is 2.24 +- 0.90 (in units of the curve's spread) on genuine
windows, recorded and as calls, and 1.64 +- 0.61 on generated heads
(``tools/calibrate_lip_timing.py``, docs/LIP_TIMING.md).

The window's log-likelihood ratio is that of the two Gaussians (generated head against
genuine), clipped to the calibration's range; the score is its logistic, so the
decision's map for it is the identity. Lip-sync edits of real video trained against a
SyncNet-style expert (Wav2Lip and kin) have sharp dips, if anything: this evidence is not
for them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from monitor.detectors.base import Evidence
from monitor.errors import DetectorError
from monitor.sync.features import GRID_STEP_S
from monitor.sync.scoring import DIP_SIDE_FRAMES, dip_sharpness

NAME = "lip_timing"
VERSION = "1"
CALIBRATION_PATH = Path(__file__).resolve().parents[1] / "models" / "lip_timing_calibration.json"
# From this many genuine standard deviations blunter, the rationale calls the timing loose.
LOOSE_SIGMA = 1.0


@dataclass(frozen=True)
class TimingCalibration:
    """Window dip sharpness on genuine speech and on generated heads (Gaussian each)."""

    genuine_mean: float
    genuine_sd: float
    generated_mean: float
    generated_sd: float
    llr_min: float
    llr_max: float

    def llr(self, sharpness: float) -> float:
        """log N(s; generated) - log N(s; genuine), clipped to [llr_min, llr_max], and never
        falling as the dip gets blunter: with the genuine spread the wider, the two
        Gaussians' ratio would turn back towards "genuine" below its peak."""
        sharpness = max(sharpness, self._peak())
        generated = -0.5 * ((sharpness - self.generated_mean) / self.generated_sd) ** 2
        genuine = -0.5 * ((sharpness - self.genuine_mean) / self.genuine_sd) ** 2
        value = generated - genuine + math.log(self.genuine_sd / self.generated_sd)
        return min(self.llr_max, max(self.llr_min, value))

    def _peak(self) -> float:
        """Where the ratio of the two Gaussians peaks (-inf when it never turns back)."""
        wide, narrow = 1.0 / self.genuine_sd**2, 1.0 / self.generated_sd**2
        if narrow <= wide:
            return -math.inf
        return (self.generated_mean * narrow - self.genuine_mean * wide) / (narrow - wide)

    def sigma_blunter(self, sharpness: float) -> float:
        return (self.genuine_mean - sharpness) / self.genuine_sd

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TimingCalibration:
        keys = ("genuine_mean", "genuine_sd", "generated_mean", "generated_sd")
        return cls(*(float(data[key]) for key in (*keys, "llr_min", "llr_max")))


@lru_cache(maxsize=1)
def load_timing_calibration(path: Path = CALIBRATION_PATH) -> TimingCalibration:
    try:
        return TimingCalibration.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError) as exc:
        raise DetectorError(f"lip-timing calibration {path} unusable: {exc}") from exc


def timing_evidence(
    curve: np.ndarray, span: str, span_s: tuple[float, float], calibration: TimingCalibration
) -> Evidence:
    sharpness = dip_sharpness(curve)
    llr = calibration.llr(sharpness)
    blunter = calibration.sigma_blunter(sharpness)
    genuine = f"genuine speech gives {calibration.genuine_mean:.1f} +- {calibration.genuine_sd:.1f}"
    if blunter >= LOOSE_SIGMA:
        rationale = (
            f"lips meet the speech loosely: the best alignment stands out {sharpness:.1f} "
            f"from lags {DIP_SIDE_FRAMES * GRID_STEP_S * 1000:.0f} ms either side where {genuine} "
            f"({blunter:.1f} sigma blunter) over {span}"
        )
    else:
        rationale = (
            f"lips meet the speech as sharply as genuine speech ({sharpness:.1f}; {genuine}) "
            f"over {span}"
        )
    return Evidence(
        NAME,
        1.0 / (1.0 + math.exp(-llr)),
        rationale,
        spans=[span_s],
        fields={"dip_sharpness": round(sharpness, 3), "sigma_blunter": round(blunter, 2)},
    )
