"""The learned lip-sync detector on pipeline windows and on synthetic calls end to end."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from monitor.config import MonitorConfig
from monitor.detectors.base import Evidence
from monitor.sync.checkpoint import ONNX_PATH, WEIGHTS_PATH
from tests.windows_factory import feed_file, window_from_signals

pytestmark = pytest.mark.skipif(
    not (ONNX_PATH.exists() and WEIGHTS_PATH.exists()), reason="sync model not trained yet"
)


@pytest.fixture(scope="module")
def detector_factory():  # noqa: ANN201
    from monitor.detectors.lip_sync_learned import LearnedSyncDetector
    from monitor.sync.backends import shared_runner

    runner = shared_runner("onnx")
    return lambda: LearnedSyncDetector(MonitorConfig(), runner=runner)


class _Recording:
    """Passes windows to the detector and keeps what it said."""

    name = "lip_sync"
    version = "test"

    def __init__(self, inner) -> None:  # noqa: ANN001
        self.inner = inner
        self.evidence: list[Evidence] = []

    def analyze(self, window) -> Evidence:  # noqa: ANN001
        evidence = self.inner.analyze(window)
        self.evidence.append(evidence)
        return evidence

    def summarize(self) -> Evidence | None:
        return self.inner.summarize()


_replays: dict[Path, tuple[list[Evidence], Evidence | None]] = {}


def replay(path: Path, factory) -> tuple[list[Evidence], Evidence | None]:  # noqa: ANN001
    """Run a call through the real pipeline (FileSource, face tracker, audio features)."""
    if path in _replays:
        return _replays[path]
    from monitor.events import validate_event
    from monitor.pipeline import SessionAnalyzer

    recording = _Recording(factory())
    analyzer = SessionAnalyzer(
        MonitorConfig(),
        session="t",
        participant="p",
        emit=validate_event,  # every event the session emits must fit the schema
        detectors={"lip_sync": recording},
    )
    feed_file(analyzer, path)
    _replays[path] = (recording.evidence, recording.inner.summarize())
    return _replays[path]


def _scored(evidence: list[Evidence]) -> list[Evidence]:
    return [e for e in evidence if e.score is not None]


@pytest.mark.parametrize(("call", "truth_ms"), [("plus300", 300.0), ("minus300", -300.0)])
def test_offset_of_a_shifted_synthetic_call_within_one_frame(
    synthetic_calls: dict[str, Path], detector_factory, call: str, truth_ms: float
) -> None:
    evidence, summary = replay(synthetic_calls[call], detector_factory)
    scored = _scored(evidence)
    assert len(scored) >= 3
    offsets = np.array([e.fields["offset_ms"] for e in scored])
    assert abs(np.median(offsets) - truth_ms) <= 40.0
    assert summary is not None and abs(summary.fields["offset_ms"] - truth_ms) <= 40.0
    direction = "audio lags lips" if truth_ms > 0 else "speech leads lips"
    assert direction in summary.rationale
    assert summary.score is not None and summary.score > 0.5


def test_in_sync_call_scores_lower_than_swapped_audio(
    synthetic_calls: dict[str, Path], detector_factory
) -> None:
    genuine, genuine_summary = replay(synthetic_calls["sync"], detector_factory)
    swapped, swapped_summary = replay(synthetic_calls["swap"], detector_factory)
    assert genuine_summary is not None and swapped_summary is not None
    assert abs(genuine_summary.fields["offset_ms"]) <= 40.0
    # Ranked well apart; the calibrated probability of a swap sits near the 0.5 boundary.
    assert genuine_summary.score < 0.2 < swapped_summary.score - genuine_summary.score
    assert np.median([e.score for e in _scored(genuine)]) < np.median(
        [e.score for e in _scored(swapped)]
    )


def test_evidence_fields_and_rationale(detector_factory) -> None:
    detector = detector_factory()
    evidence = detector.analyze(window_from_signals(t_start=12.0))
    assert evidence.detector == "lip_sync" and evidence.score is not None
    fields = evidence.fields
    assert fields["method"] == "learned" and fields["backend"] == "onnx"
    assert len(fields["lag_curve_ms"]) == len(fields["lag_curve"]) == 31
    assert fields["lag_curve_ms"][0] == -600.0 and fields["lag_curve_ms"][-1] == 600.0
    # refined between frames, within half a frame of the best whole-frame lag
    best_lag = fields["lag_curve_ms"][int(np.argmin(fields["lag_curve"]))]
    assert abs(fields["offset_ms"] - best_lag) <= 20.0
    assert 0.0 <= fields["in_sync_probability"] <= 1.0
    assert evidence.score == pytest.approx(1.0 - fields["in_sync_probability"], abs=1e-3)
    curve = np.array(fields["lag_curve"])
    assert fields["confidence"] == pytest.approx(np.median(curve) - curve.min(), abs=1e-2)
    assert "00:12.0-00:14.0" in evidence.rationale and "sync confidence" in evidence.rationale
    evidence.to_json()  # serializable as an event


@pytest.mark.parametrize(
    ("window", "reason"),
    [
        (window_from_signals(face=False), "face visible in 0%"),
        (window_from_signals(voiced=False), "speech in 0%"),
        (dataclasses.replace(window_from_signals(), has_audio_stream=False), "no audio"),
    ],
)
def test_insufficient_evidence(detector_factory, window, reason: str) -> None:  # noqa: ANN001
    evidence = detector_factory().analyze(window)
    assert evidence.score is None and not evidence.sufficient
    assert evidence.rationale.startswith("insufficient evidence:")
    assert reason in evidence.rationale
    assert evidence.fields["offset_ms"] is None and evidence.fields["confidence"] is None
