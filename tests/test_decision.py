"""The calibrated sequential decision: log-likelihood ratios, the floored sum, honest levels."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from monitor.config import DecisionConfig, load_config
from monitor.decision import (
    EvidenceCalibration,
    FaceClass,
    FaceReadingCalibration,
    ScoreCalibration,
    SequentialDecision,
    evidence_risk,
    logit,
)
from monitor.detectors.base import Evidence
from monitor.errors import ConfigError

# No drift allowance and every detector in the sum, so the arithmetic of the tests below is
# the bare sum (the allowance and attack_model "per_face" have tests of their own).
CONFIG = DecisionConfig(
    suspicious_nats=3.0,
    alert_nats=6.0,
    hysteresis_nats=1.0,
    clear_nats=0.5,
    ceiling_nats=9.0,
    drift_allowance_nats=0.0,
    attack_model="joint",
)
# llr = logit(score): a score of 0.9 gives +2.2 nats, 0.1 gives -2.2, clamped to +-4.
IDENTITY = ScoreCalibration(slope=1.0, intercept=0.0, llr_min=-4.0, llr_max=4.0)
CALIBRATION = EvidenceCalibration(
    {"lip_sync": IDENTITY, "temporal": IDENTITY}, {"lip_sync": "learned-1", "temporal": "2"}
)
VERSIONS = {"lip_sync": "learned-1", "temporal": "2"}


def session(**kwargs: object) -> SequentialDecision:
    options: dict[str, object] = {"window_weight": 0.5, "versions": VERSIONS}
    options.update(kwargs)
    return SequentialDecision(CONFIG, CALIBRATION, **options)  # type: ignore[arg-type]


def window(lip: float | None, temporal: float | None = None) -> list[Evidence]:
    items = [Evidence("lip_sync", lip, "lip")]
    if temporal is not None:
        items.append(Evidence("temporal", temporal, "temporal"))
    return items


def windows_to(
    decision: SequentialDecision,
    level: str,
    evidence: list[Evidence],
    active: set[str] | None = None,
) -> int:
    for n in range(1, 200):
        if decision.update(evidence, active).level == level:
            return n
    raise AssertionError(f"never reached {level}")


def test_score_calibration_is_monotone_and_clamped() -> None:
    calibration = ScoreCalibration(slope=0.8, intercept=-0.5, llr_min=-3.0, llr_max=2.5)
    values = [calibration.llr(s) for s in (0.0, 0.01, 0.2, 0.5, 0.8, 0.99, 1.0)]
    assert values == sorted(values)
    assert values[0] == -3.0 and values[-1] == 2.5
    assert calibration.llr(0.5) == pytest.approx(-0.5)
    assert ScoreCalibration.from_dict(calibration.to_dict()) == calibration
    with pytest.raises(ValueError):
        ScoreCalibration(1.0, 0.0, 1.0, -1.0)


def test_calibration_round_trips_and_is_bound_to_a_detector_version(tmp_path) -> None:
    path = tmp_path / "calibration.json"
    CALIBRATION.save(path)
    loaded = EvidenceCalibration.load(path)
    assert loaded.for_detector("lip_sync", "learned-1") == IDENTITY
    assert loaded.for_detector("lip_sync", "learned-2") is None  # another version's scores
    assert loaded.for_detector("artifact", "1") is None


def test_genuine_windows_stay_at_the_floor_and_clear() -> None:
    decision = session()
    changes = [decision.update(window(0.1, 0.3)) for _ in range(400)]
    assert decision.evidence_nats == CONFIG.floor_nats
    assert decision.level == "clear" and decision.verdict == "clear"
    assert [c.level for c in changes if c.changed] == ["clear"]  # unknown -> clear, once


def test_old_innocence_cannot_hide_a_new_attack() -> None:
    fresh = session()
    at_start = windows_to(fresh, "alert", window(0.95))
    veteran = session()
    for _ in range(2000):  # 1000 s of genuine speech
        veteran.update(window(0.05))
    assert windows_to(veteran, "alert", window(0.95)) == at_start
    # 0.95 is +2.94 nats, half of it per window: 6 nats after 5 windows.
    assert at_start == math.ceil(CONFIG.alert_nats / (0.5 * logit(0.95)))


def test_the_drift_allowance_keeps_a_steady_slight_reading_at_the_floor() -> None:
    """A genuine caller whose every window reads a little manipulated (+0.4 nats) climbs to
    alert over a long call without an allowance; with one above that reading the evidence
    stays at the floor, while a real attack still alarms, a little later."""
    slight = window(1 / (1 + math.exp(-0.4)))  # +0.4 nats a window
    drifting = session()
    assert windows_to(drifting, "alert", slight) == math.ceil(CONFIG.alert_nats / (0.5 * 0.4))
    allowed = SequentialDecision(
        dataclasses.replace(CONFIG, drift_allowance_nats=0.5),
        CALIBRATION,
        window_weight=0.5,
        versions=VERSIONS,
    )
    for _ in range(2000):
        assert allowed.update(slight).level != "alert"
    assert allowed.evidence_nats == CONFIG.floor_nats
    attack = window(0.95)  # +2.94 nats a window
    assert windows_to(allowed, "alert", attack) == math.ceil(
        CONFIG.alert_nats / (0.5 * (logit(0.95) - 0.5))
    )


def test_each_stretch_of_media_counts_once() -> None:
    """2 s windows every 0.5 s: the first window with evidence counts whole, the next ones a
    quarter (the media they add), and the first after a gap counts what no window covered."""
    decision = session(window_weight=0.25)
    spans = [(0.0, 2.0), (0.5, 2.5), (1.0, 3.0), (4.0, 6.0), (5.5, 7.5)]
    llr = logit(0.9)
    weighted = [decision.update(window(0.9), span=span).weighted_llr for span in spans]
    assert weighted == pytest.approx([llr, llr / 4, llr / 4, llr, 0.75 * llr])
    # A window without evidence covers nothing: the next one's media is still uncounted.
    decision = session(window_weight=0.25)
    assert decision.update(window(None), span=(0.0, 2.0)).weighted_llr is None
    assert decision.update(window(0.9), span=(0.5, 2.5)).weighted_llr == pytest.approx(llr)
    # Without spans every window weighs window_weight, as the sum did before.
    decision = session(window_weight=0.25)
    assert decision.update(window(0.9)).weighted_llr == pytest.approx(llr / 4)


def test_levels_rise_with_evidence_and_fall_only_past_the_hysteresis() -> None:
    decision = session()
    decision.update(window(0.1))
    assert decision.level == "clear"
    # just over +1 nat per window (a score of 0.881, weighted by 0.5)
    strong = 1.0 / (1.0 + math.exp(-2.0002))
    levels = [decision.update(window(strong)).level for _ in range(6)]
    # no longer clear from where suspicious would step down (3 - 1 nats)
    assert levels == ["clear", "unknown", "suspicious", "suspicious", "suspicious", "alert"]
    weak = 1.0 / (1.0 + math.exp(1.0))  # -0.5 nats per window
    assert decision.update(window(weak)).level == "alert"  # 5.5: inside alert's band
    assert decision.update(window(weak)).level == "alert"  # 5.0: on the band's edge
    assert decision.update(window(weak)).level == "suspicious"  # 4.5
    levels = [decision.update(window(weak)).level for _ in range(6)]
    assert levels == ["suspicious"] * 5 + ["clear"]  # below 3 - 1 nats
    assert decision.peak_level == "alert" and decision.verdict == "alert"
    assert decision.level == "clear"  # final state, kept apart from the verdict


def test_the_ceiling_bounds_how_long_an_old_attack_counts() -> None:
    decision = session()
    for _ in range(500):
        decision.update(window(0.99))
    assert decision.evidence_nats == CONFIG.ceiling_nats
    recovered = windows_to(decision, "clear", window(0.1))
    # (9 - 2) nats to lose at 1.1 per window, whatever the attack's length
    assert recovered <= math.ceil((CONFIG.ceiling_nats - 2.0) / (0.5 * -logit(0.1))) + 1


def test_no_evidence_never_reads_clear() -> None:
    decision = session()
    for _ in range(50):
        step = decision.update(window(None))
        assert step.llr is None and step.level == "unknown"
    assert decision.verdict == "unknown"
    # A consistent face without speech cannot clear (lip_sync is running but silent) ...
    for _ in range(50):
        decision.update(window(None, 0.05))
    assert decision.level == "unknown"
    # ... but a face that looks manipulated can raise the level without speech.
    assert windows_to(decision, "suspicious", window(None, 0.99)) > 0


def test_clear_expires_without_evidence_but_an_alarm_does_not() -> None:
    decision = session(unknown_after_windows=3)
    decision.update(window(0.1))
    assert decision.level == "clear"
    levels = [decision.update(window(None)).level for _ in range(3)]
    assert levels == ["clear", "clear", "unknown"]
    windows_to(decision, "alert", window(0.99))
    for _ in range(20):  # the face turned away after the alarm
        decision.update(window(None))
    assert decision.level == "alert"


def test_without_a_required_detector_running_the_session_cannot_be_clear() -> None:
    """Issue 16: lip-sync failed, hung or is not enabled; the other detectors must not clear
    the call in its place, but can still raise an alarm."""
    decision = session()
    decision.update(window(0.1, 0.1))
    assert decision.level == "clear"
    for _ in range(20):
        step = decision.update(window(None, 0.05)[1:], active={"temporal"})
        assert step.level == "unknown"
    assert windows_to(decision, "alert", window(None, 0.99)[1:], active={"temporal"}) > 0


def test_uncalibrated_detectors_count_a_little_and_say_so() -> None:
    decision = session(versions={"lip_sync": "learned-9"})  # a version the map was not fit on
    step = decision.update(window(0.999))
    assert step.uncalibrated == ("lip_sync",)
    assert step.contributions["lip_sync"] == pytest.approx(CONFIG.uncalibrated_llr_limit)


def test_weights_scale_and_disable_detectors() -> None:
    decision = session(weights={"temporal": 0.0, "lip_sync": 0.5})
    step = decision.update(window(0.9, 0.99))
    assert set(step.contributions) == {"lip_sync"}
    assert step.contributions["lip_sync"] == pytest.approx(0.5 * logit(0.9))
    assert step.window_risk == pytest.approx(0.9**0.5 / (0.9**0.5 + 0.1**0.5))


def test_evidence_risk_keeps_the_level_thresholds() -> None:
    assert evidence_risk(0.0, CONFIG) == 0.0
    assert evidence_risk(CONFIG.suspicious_nats, CONFIG) == pytest.approx(0.5)
    assert evidence_risk(CONFIG.alert_nats, CONFIG) == pytest.approx(0.7)
    values = [evidence_risk(x / 10, CONFIG) for x in range(0, 300)]
    assert values == sorted(values) and values[-1] < 1.0


@pytest.mark.parametrize(
    "decision",
    [
        {"suspicious_nats": 6.0, "alert_nats": 3.0},
        {"alert_nats": 10.0, "ceiling_nats": 9.0},
        {"hysteresis_nats": 5.0},
        {"target_false_alerts_per_hour": 0.0},
        {"drift_allowance_nats": -0.5},
        {"attack_model": "sum"},
        {"face_horizon_s": 0.0},
    ],
)
def test_config_rejects_inconsistent_thresholds(decision: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        load_config(decision=decision)


# ----- attack_model "per_face" ---------------------------------------------------------------

# Genuine faces read -0.5 nats a window on the face side, forged ones +0.5; faces spread
# 0.3 between one another, windows 1.0 around their face's mean.
FACE_READING = FaceReadingCalibration(
    FaceClass(-0.5, 0.3, 1.0), FaceClass(0.5, 0.3, 1.0), -4.0, 4.0, {"temporal": "2"}
)


def per_face(**decision: object) -> SequentialDecision:
    config = dataclasses.replace(CONFIG, attack_model="per_face", **decision)
    calibration = dataclasses.replace(CALIBRATION, face_reading=FACE_READING)
    return SequentialDecision(
        config, calibration, window_weight=0.25, versions=VERSIONS, face_horizon_windows=40
    )


def test_the_face_reading_saturates_where_a_per_window_sum_would_climb() -> None:
    # Sync genuine (0.2 -> -1.4 nats), the face a little forged every window (+0.7 nats).
    face_score = 1 / (1 + math.exp(-0.7))
    joint, face = session(window_weight=0.25), per_face()
    either = SequentialDecision(
        dataclasses.replace(CONFIG, attack_model="either"),
        CALIBRATION,
        window_weight=0.25,
        versions=VERSIONS,
    )
    for _ in range(2000):
        steps = [d.update(window(0.2, face_score)) for d in (joint, face, either)]
    assert steps[0].evidence_nats == 0.0  # the sync holds a joint sum at the floor
    assert steps[2].level == "alert"  # "either" sums the face's slight reading to an alarm
    reading = steps[1].face
    assert reading is not None and reading.windows == 40
    assert reading.mean_llr == pytest.approx(0.7)
    # 40 windows, 10 independent: the face's mean has variance 0.3^2 + 1/10 each way.
    var = 0.3**2 + 1.0 / 10
    expected = (-((0.7 - 0.5) ** 2) + (0.7 + 0.5) ** 2) / (2 * var)
    assert reading.nats == pytest.approx(expected)
    assert steps[1].evidence_nats == pytest.approx(expected)
    assert steps[1].level == "suspicious" and face.summed_nats == 0.0


def test_a_strongly_forged_face_raises_a_level_and_audio_attacks_still_sum() -> None:
    forged = per_face()
    for _ in range(60):
        step = forged.update(window(0.2, 0.9))  # in sync, the face +2.2 nats a window
    assert step.face is not None and step.face.nats == 4.0  # clipped to the fitted range
    assert step.level == "suspicious" and step.summed_llr == pytest.approx(logit(0.2))
    shifted = per_face()
    for _ in range(40):
        step = shifted.update(window(0.95, 0.3))  # audio off the lips, a genuine face
    assert step.face is not None and step.face.nats < 0
    assert step.level == "alert" and shifted.summed_nats == step.evidence_nats


def test_the_face_reading_reads_only_recent_windows_and_video_without_audio() -> None:
    decision = per_face()
    for _ in range(200):
        decision.update(window(0.1, 0.3))  # a genuine call
    for _ in range(40):
        step = decision.update([Evidence("temporal", 0.9, "a swapped face, no speech")])
    assert step.face is not None and step.face.mean_llr == pytest.approx(logit(0.9))
    assert step.summed_llr is None and step.level == "suspicious"


def test_a_face_reading_fitted_on_other_versions_is_not_used() -> None:
    config = dataclasses.replace(CONFIG, attack_model="per_face")
    stale = dataclasses.replace(FACE_READING, versions={"temporal": "1"})
    decision = SequentialDecision(
        config,
        dataclasses.replace(CALIBRATION, face_reading=stale),
        window_weight=0.25,
        versions=VERSIONS,
    )
    assert decision.update(window(0.2, 0.9)).face is None
    path_data = dataclasses.replace(CALIBRATION, face_reading=FACE_READING).to_dict()
    assert EvidenceCalibration.from_dict(path_data).face_reading == FACE_READING


# ----- in the session pipeline -----------------------------------------------------------


class _Scripted:
    """A detector whose window score follows a script of media time."""

    name = "lip_sync"
    version = "scripted-1"

    def __init__(self, score_at) -> None:  # noqa: ANN001
        self.score_at = score_at

    def analyze(self, window):  # noqa: ANN001, ANN201
        score = self.score_at(window.t_start)
        text = "no speech" if score is None else f"scripted {score:.2f}"
        return Evidence(self.name, score, text, fields={"offset_ms": None, "confidence": None})


class _NoFace:
    def track(self, frame):  # noqa: ANN001, ANN201
        return None

    def close(self) -> None:
        pass


def _session(tmp_path, score_at, seconds: float = 30.0):  # noqa: ANN001, ANN202
    from monitor.events import validate_event
    from monitor.media import AudioChunk, StreamInfo, VideoFrame
    from monitor.pipeline import SessionAnalyzer

    path = tmp_path / "calibration.json"
    EvidenceCalibration({"lip_sync": IDENTITY}, {"lip_sync": "scripted-1"}).save(path)
    config = load_config(decision={"calibration_file": str(path)})
    events: list[dict] = []
    analyzer = SessionAnalyzer(
        config,
        session="s",
        participant="p",
        emit=events.append,
        face_tracker=_NoFace(),
        detectors={"lip_sync": _Scripted(score_at)},
    )
    analyzer.start(StreamInfo("synthetic", 25.0, 64, 48, 16000, seconds))
    image = np.zeros((48, 64, 3), np.uint8)
    for i in range(int(seconds * 25)):
        analyzer.add_audio(AudioChunk(i * 0.04, np.zeros(640, np.float32)))
        analyzer.add_video(VideoFrame(i * 0.04, i, image))
    analyzer.finish(reason="end of input")
    for event in events:
        validate_event(event)
    return events, config


def test_a_brief_attack_is_the_verdict_and_the_end_is_the_final_state(tmp_path) -> None:
    # Genuine speech, an attack from 10 to 16 s, genuine speech again.
    events, config = _session(tmp_path, lambda t: 0.99 if 10.0 <= t < 16.0 else 0.05)
    summary = events[-1]
    assert summary["verdict"] == "alert" and summary["final_level"] == "clear"
    assert summary["risk"] >= config.fusion.alert_threshold > summary["final_risk"]
    assert 10.0 <= summary["peak"]["t_start"] < 16.0
    assert summary["peak"]["evidence_nats"] >= config.decision.alert_nats
    assert "alert: evidence for manipulation reached" in summary["rationale"]
    assert "final state clear" in summary["rationale"]
    scores = [e for e in events if e["type"] == "score"]
    # Level, evidence and risk agree window by window.
    decision = config.decision
    for score in scores:
        nats, level = score["evidence_nats"], score["level"]
        assert (nats >= decision.alert_nats) <= (level == "alert")
        assert (level == "clear") <= (nats < decision.suspicious_nats)
        assert (score["risk"] >= config.fusion.alert_threshold) == (nats >= decision.alert_nats)
    alerts = [e for e in events if e["type"] == "alert"]
    alarms = [a["level"] for a in alerts if a["level"] in ("suspicious", "alert")]
    assert alarms[:2] == ["suspicious", "alert"]
    assert all(e["level"] == "clear" for e in scores[:10])


def test_a_call_without_evidence_never_reads_clear(tmp_path) -> None:
    events, _ = _session(tmp_path, lambda t: None, seconds=8.0)
    summary = events[-1]
    assert summary["verdict"] == "unknown" and summary["final_level"] == "unknown"
    assert summary["peak"] is None and summary["risk"] == 0.0
    assert "insufficient evidence" in summary["rationale"]
    assert all(e["level"] == "unknown" for e in events if e["type"] == "score")
    assert not [e for e in events if e["type"] == "alert"]


def test_the_face_reading_fit_recovers_the_spreads_between_and_within_faces() -> None:
    from monitor.evaluation.calibrate import fit_face_reading

    rng = np.random.default_rng(0)

    def faces(mean: float, between: float, count: int) -> list[list[float]]:
        return [list(rng.normal(rng.normal(mean, between), 0.5, size=400)) for _ in range(count)]

    reading = fit_face_reading(faces(-0.3, 0.6, 120), faces(0.4, 0.3, 60), 0.25, {"t": "2"})
    assert reading.genuine.mean == pytest.approx(-0.3, abs=0.15)
    assert reading.genuine.between_sd == pytest.approx(0.6, rel=0.2)
    assert reading.genuine.within_sd == pytest.approx(0.5, rel=0.05)
    assert reading.forged.between_sd == pytest.approx(0.3, rel=0.3)
    assert (reading.llr_min, reading.llr_max) == (-math.log(60), math.log(120))
    means = np.linspace(-2.0, 3.0, 51)
    values = [reading.llr(m, 100) for m in means]
    assert values == sorted(values) and values[0] < 0 < values[-1]
