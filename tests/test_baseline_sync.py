import dataclasses

import pytest

from monitor.config import MonitorConfig
from monitor.detectors.baseline_sync import BaselineSyncDetector
from tests.windows_factory import window_from_signals


@pytest.mark.parametrize("lag_s", [0.0, 0.3, -0.3, 0.2])
def test_offset_follows_the_true_audio_lag(lag_s: float) -> None:
    detector = BaselineSyncDetector(MonitorConfig())
    evidence = detector.analyze(window_from_signals(audio_lag_s=lag_s))
    assert evidence.score is not None
    assert evidence.fields["offset_ms"] == pytest.approx(lag_s * 1000, abs=40)
    assert "ms" in evidence.rationale and "00:10.0-00:12.0" in evidence.rationale


def test_shifted_audio_scores_higher_than_aligned() -> None:
    aligned = BaselineSyncDetector(MonitorConfig()).analyze(window_from_signals())
    shifted = BaselineSyncDetector(MonitorConfig()).analyze(window_from_signals(audio_lag_s=0.4))
    assert aligned.score is not None and shifted.score is not None
    assert aligned.score < 0.5 <= shifted.score
    assert "audio lags lips by" in shifted.rationale


def test_no_face_or_no_speech_is_insufficient_not_clear() -> None:
    detector = BaselineSyncDetector(MonitorConfig())
    for window in (window_from_signals(face=False), window_from_signals(voiced=False)):
        evidence = detector.analyze(window)
        assert evidence.score is None
        assert evidence.rationale.startswith("insufficient evidence")
        assert evidence.fields["offset_ms"] is None


def test_speech_without_lip_motion_is_flagged() -> None:
    evidence = BaselineSyncDetector(MonitorConfig()).analyze(window_from_signals(still_lips=True))
    assert evidence.score is not None and evidence.score >= 0.7
    assert "speech without lip motion" in evidence.rationale


def test_session_summary_averages_window_curves() -> None:
    detector = BaselineSyncDetector(MonitorConfig())
    for seed in range(4):
        detector.analyze(window_from_signals(audio_lag_s=-0.28, seed=seed))
    summary = detector.summarize()
    assert summary is not None and summary.score is not None
    assert summary.fields["offset_ms"] == pytest.approx(-280, abs=40)
    assert "speech leads lips by" in summary.rationale
    assert len(summary.fields["lag_curve"]) == len(summary.fields["lag_curve_ms"])


def test_lip_motion_without_speech_is_mild_evidence() -> None:
    window = window_from_signals(voiced=False, aperture_gain=2.0)
    evidence = BaselineSyncDetector(MonitorConfig()).analyze(window)
    assert evidence.score is not None and evidence.score < 0.5
    assert "lip motion without speech" in evidence.rationale


def test_few_tracked_frames_are_insufficient() -> None:
    window = window_from_signals()
    sparse = dataclasses.replace(window, frames=window.frames[:1])
    evidence = BaselineSyncDetector(MonitorConfig()).analyze(sparse)
    assert evidence.score is None
