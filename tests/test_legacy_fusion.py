"""The former decision rule (kept to measure against): power-mean fusion, EWMA, levels."""

import pytest

from monitor.detectors.base import Evidence
from monitor.evaluation.legacy import LegacyFusion, RiskState, fuse_evidence, gate_clearing


def test_fuse_ignores_insufficient_and_weights_scores() -> None:
    evidence = [Evidence("a", 0.9, "x"), Evidence("b", None, "y"), Evidence("c", 0.1, "z")]
    risk = fuse_evidence(evidence, {"a": 1.0, "c": 1.0})
    assert risk is not None
    # the power mean of 0.9 and 0.1 leans to the max without reaching it
    assert 0.7 < risk < 0.9
    weak = fuse_evidence([Evidence("a", 0.3, "x"), Evidence("c", 0.3, "z")], {})
    assert weak == pytest.approx(0.3)  # weak scores do not add up
    assert fuse_evidence(evidence, {"a": 0.0, "c": 0.0}) is None
    assert fuse_evidence([Evidence("b", None, "y")], {}) is None


def test_levels_need_consecutive_windows_to_rise_and_hysteresis_to_fall() -> None:
    state = RiskState(LegacyFusion(ewma_alpha=1.0, min_windows_to_raise=2, hysteresis=0.1))
    assert state.update(0.1) is not None  # unknown -> clear
    assert state.level == "clear"
    assert state.update(0.9) is None  # one window is not enough
    change = state.update(0.9)
    assert change is not None and (change.previous_level, change.level) == ("clear", "alert")
    assert state.update(0.65) is None  # inside the hysteresis band of alert (0.7 - 0.1)
    assert state.level == "alert"
    change = state.update(0.55)
    assert change is not None and change.level == "suspicious"
    state.update(0.1)
    assert state.level == "clear"
    assert state.peak_level == "alert"


def test_insufficient_windows_lead_to_unknown_after_a_while() -> None:
    state = RiskState(LegacyFusion(), unknown_after_windows=3)
    state.update(0.2)
    assert state.level == "clear"
    state.update(None)
    state.update(None)
    assert state.level == "clear"
    change = state.update(None)
    assert change is not None and change.level == "unknown"


def test_clearing_needs_the_required_detector_but_alarms_do_not() -> None:
    fusion = LegacyFusion()
    active = {"lip_sync", "temporal"}
    no_speech = [Evidence("lip_sync", None, "no speech"), Evidence("temporal", 0.1, "fine")]
    assert gate_clearing(0.1, no_speech, fusion, active) is None
    assert gate_clearing(0.8, no_speech, fusion, active) == 0.8
    both = [Evidence("lip_sync", 0.1, "in sync"), Evidence("temporal", 0.1, "fine")]
    assert gate_clearing(0.1, both, fusion, active) == 0.1
    assert gate_clearing(0.1, no_speech[1:], fusion, {"temporal"}) == 0.1
