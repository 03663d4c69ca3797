"""Small real objects several test files build the same way."""

from __future__ import annotations

from typing import Any

from monitor.detectors.base import Evidence
from monitor.events import EventFactory
from monitor.sync.model import SyncModelConfig
from monitor.windows import AnalysisWindow

# The sync network's real architecture, narrow enough that a test runs it in milliseconds.
NARROW_SYNC = SyncModelConfig(
    crop_channels=(8, 8, 8, 8, 8, 8),
    crop_features=16,
    lip_features=16,
    frame_features=32,
    audio_channels=(16, 16, 16),
    temporal_channels=32,
    embedding=16,
)


def alert_event(
    window: AnalysisWindow, evidence: list[Evidence], explanation: dict[str, Any]
) -> dict[str, Any]:
    """An ``alert`` event for ``window`` carrying ``evidence`` and its ``explanation``."""
    return EventFactory("s1", "alice").make(
        "alert",
        level="alert",
        previous_level="suspicious",
        risk=0.9,
        evidence_nats=7.0,
        t_start=window.t_start,
        t_end=window.t_end,
        rationale="level suspicious -> alert: test",
        evidence=[e.to_json() for e in evidence],
        explanation=explanation,
    )
