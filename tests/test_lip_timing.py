"""lip_timing: how sharply the lips meet the speech, and the decision that lets a forged
face in sync with its audio be seen past the sync detector's genuine reading."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from monitor.config import DecisionConfig, load_config
from monitor.decision import EvidenceCalibration, SequentialDecision
from monitor.detectors.lip_timing import (
    TimingCalibration,
    load_timing_calibration,
    timing_evidence,
)
from monitor.errors import ConfigError
from monitor.sync.scoring import dip_sharpness
from tests.test_replay import replay_events

LAGS = np.arange(-15, 16)


def test_a_sharp_dip_reads_sharper_than_a_blunt_one() -> None:
    sharp = 6.0 - 2.0 * np.exp(-(LAGS**2) / 2.0)  # one lag stands out
    blunt = 6.0 - 2.0 * np.exp(-(LAGS**2) / 50.0)  # its neighbours fit almost as well
    assert dip_sharpness(sharp) > 2.0 > dip_sharpness(blunt) > 0.0
    assert dip_sharpness(np.full(31, 5.0)) == 0.0  # no dip at all


def test_the_log_likelihood_ratio_favours_the_nearer_class_within_its_range() -> None:
    calibration = TimingCalibration(2.3, 0.9, 1.6, 0.6, -1.0, 1.0)
    assert calibration.llr(2.3) < 0 < calibration.llr(1.6)
    assert calibration.llr(9.0) == -1.0
    grid = [calibration.llr(value) for value in np.linspace(5.0, 0.0, 51)]
    assert grid == sorted(grid)  # the blunter, never the less suspicious
    # The committed calibration is read the same way.
    committed = load_timing_calibration()
    assert committed.llr(committed.generated_mean) > 0 > committed.llr(committed.genuine_mean)


def test_the_rationale_names_the_sharpness_against_genuine_speech() -> None:
    calibration = TimingCalibration(2.3, 0.9, 1.6, 0.6, -1.0, 1.0)
    blunt = 6.0 - 2.0 * np.exp(-(LAGS**2) / 50.0)
    evidence = timing_evidence(blunt, "00:04.0-00:06.0", (4.0, 6.0), calibration)
    value = dip_sharpness(blunt)
    assert evidence.detector == "lip_timing"
    assert evidence.score == pytest.approx(1 / (1 + math.exp(-calibration.llr(value))))
    assert evidence.fields["dip_sharpness"] == pytest.approx(value, abs=1e-3)
    assert "loosely" in evidence.rationale and "00:04.0-00:06.0" in evidence.rationale
    assert f"{value:.1f}" in evidence.rationale and "2.3 +- 0.9" in evidence.rationale


def test_either_attack_keeps_genuine_looking_sync_from_cancelling_a_forged_face() -> None:
    contributions = {"lip_sync": -2.9, "artifact": 1.0, "lip_timing": 1.0}
    joint = SequentialDecision(
        DecisionConfig(attack_model="joint"), EvidenceCalibration(), window_weight=0.25
    )
    either = SequentialDecision(
        DecisionConfig(attack_model="either"), EvidenceCalibration(), window_weight=0.25
    )
    assert joint.combine(contributions) == pytest.approx(-0.9)
    assert either.combine(contributions) == pytest.approx(
        math.log(0.5 * math.exp(-2.9) + 0.5 * math.exp(2.0))
    )
    # Shifted audio with a genuine face is still read as an attack, a little less strongly.
    assert either.combine({"lip_sync": 3.5, "temporal": -0.5}) == pytest.approx(
        math.log(0.5 * math.exp(3.5) + 0.5 * math.exp(-0.5))
    )
    # With one side silent (no audio: no lip_sync), the other side's evidence is all there is.
    assert either.combine({"artifact": 0.7, "temporal": 0.2}) == pytest.approx(0.9)


def test_an_unknown_attack_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="attack_model"):
        load_config(decision={"attack_model": "product"})


def test_replay_reports_lip_timing_beside_lip_sync(synthetic_calls: dict[str, Path]) -> None:
    events = replay_events(synthetic_calls["sync"])
    started = events[0]
    assert started["config"]["detectors"]["lip_timing"] == "1"
    assert "lip_timing" in started["config"]["decision"]["calibrated"]
    scored = [e for e in events if e["type"] == "score"]
    with_sync = [
        e
        for e in scored
        if any(ev["detector"] == "lip_sync" and ev["score"] is not None for ev in e["evidence"])
    ]
    assert with_sync
    for event in with_sync:
        (timing,) = [ev for ev in event["evidence"] if ev["detector"] == "lip_timing"]
        assert timing["dip_sharpness"] > 0 and "genuine speech gives" in timing["rationale"]
        assert "llr" in timing and -1.0 <= timing["llr"] <= 1.0
    summary = events[-2] if events[-1]["type"] == "session_ended" else events[-1]
    (session,) = [ev for ev in summary["evidence"] if ev["detector"] == "lip_timing"]
    assert session["rationale"].startswith("over ")


def test_dfmon_detectors_lists_lip_timing_with_the_lip_sync_detector(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from monitor.cli import main as cli_main

    assert cli_main(["detectors"]) == 0
    (line,) = [row for row in capsys.readouterr().out.splitlines() if row.startswith("lip_timing")]
    assert line.split()[1:3] == ["1", "yes"] and line.endswith("with lip_sync")


def test_the_window_rationale_names_both_readings_of_either_attack(
    synthetic_calls: dict[str, Path],
) -> None:
    events = replay_events(synthetic_calls["sync"], decision={"attack_model": "either"})
    texts = [e["rationale"] for e in events if e["type"] == "score" and e["window_llr"] is not None]
    assert any("either attack: audio off the lips" in text for text in texts)


def test_without_its_calibration_a_session_lists_no_lip_timing(
    synthetic_calls: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing or broken calibration leaves lip_timing out, and says so: the session's
    start lists only what will come."""
    import monitor.detectors.lip_sync_learned as learned
    from monitor.errors import DetectorError

    def unusable() -> TimingCalibration:
        raise DetectorError("lip-timing calibration unusable: test")

    monkeypatch.setattr(learned.lip_timing, "load_timing_calibration", unusable)
    events = replay_events(synthetic_calls["short"])
    assert "lip_timing" not in events[0]["config"]["detectors"]
    assert all(
        ev["detector"] != "lip_timing"
        for e in events
        if e["type"] == "score"
        for ev in e["evidence"]
    )
