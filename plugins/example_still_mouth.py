"""Example detector plugin: lips that stay still while speech is heard.

Drop a file like this into ``plugins/`` and it is discovered (``dfmon detectors`` lists it);
enable it in the config to run it:

    [detectors]
    enabled = ["lip_sync", "temporal", "still_mouth"]
    [detectors.weights]
    still_mouth = 0.5

It is deliberately simple: it shows the contract, not a state-of-the-art cue.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from monitor.config import MonitorConfig
from monitor.detectors.base import Evidence, format_span
from monitor.windows import AnalysisWindow

# Lip aperture spread (fraction of face height) under which the lips count as still.
STILL_APERTURE_STD = 0.003


class StillMouthDetector:
    """Scores a window where someone is clearly speaking but the tracked lips do not move."""

    name: ClassVar[str] = "still_mouth"
    version: ClassVar[str] = "example-1"

    def __init__(self, config: MonitorConfig) -> None:
        self.min_speech = config.window.min_speech_fraction

    def analyze(self, window: AnalysisWindow) -> Evidence:
        span = format_span(window.t_start, window.t_end)
        faces = window.face_frames
        speech = window.speech_fraction()
        if len(faces) < 5 or speech < self.min_speech:
            return Evidence(
                self.name, None, f"insufficient evidence: no face or no speech over {span}"
            )
        aperture_std = float(np.std([f.face.aperture for f in faces]))  # type: ignore[union-attr]
        still = aperture_std < STILL_APERTURE_STD
        score = 0.6 if still else 0.0
        state = "still" if still else "moving"
        return Evidence(
            self.name,
            score,
            f"lips {state} (aperture spread {aperture_std:.4f}) "
            f"with {speech:.0%} speech over {span}",
            spans=[(window.t_start, window.t_end)] if still else [],
            fields={"aperture_std": round(aperture_std, 5)},
        )


# What this file exports; without it, every detector class defined here would be loaded.
DETECTORS = [StillMouthDetector]
