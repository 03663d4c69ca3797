"""The calibration and genuine-call corpus machinery: call encodings, cached sessions,
decision replay, log-likelihood-ratio fits and threshold choice."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest

from monitor.config import load_config
from monitor.decision import EvidenceCalibration, ScoreCalibration, load_calibration
from monitor.evaluation import calibrate, decide, genuine_calls
from monitor.evaluation.calls import CALL_PROFILES, RECORDED, encode_call, scaled_size
from monitor.evaluation.corpus import CorpusClip, call_conditions, pick_donor
from monitor.evaluation.sessions import (
    GENUINE,
    AudioVariant,
    SessionRecord,
    SessionTask,
    decode_audio,
    run_task,
    save_audio,
)
from tests.test_av_timing import EVENTS_S, events, write_clip


@pytest.mark.parametrize("profile", [CALL_PROFILES[0], CALL_PROFILES[1]], ids=lambda p: p.name)
def test_call_encoding_keeps_timing_and_frame_times(tmp_path: Path, profile) -> None:
    source = write_clip(tmp_path / "in.mp4", "mp4", "libx264", "aac", 48000)
    lossless = type(profile)(profile.name, profile.video_codec, 800, 360, 32, 0.0)
    out = encode_call(source, tmp_path / "call.mkv", lossless, seed=0)
    flashes, bursts = events(out)
    np.testing.assert_allclose(flashes, EVENTS_S, atol=1e-3)
    np.testing.assert_allclose(bursts, EVENTS_S, atol=1e-3)
    with av.open(str(out)) as container:
        assert container.streams.audio[0].codec_context.name == "opus"
        codec = container.streams.video[0].codec_context.name
        assert codec == {"libx264": "h264", "libvpx": "vp8"}[profile.video_codec]
    # Lost frames leave gaps; the frames that arrive keep their times.
    lossy = type(profile)(profile.name, profile.video_codec, 300, 360, 16, 0.3)
    out = encode_call(source, tmp_path / "lossy.mkv", lossy, seed=1)
    with av.open(str(out)) as container:
        times = [float(f.pts * f.time_base) for f in container.decode(video=0)]
    assert 25 < len(times) < 45  # of 50, about 30% lost
    assert all(abs(t * 25 - round(t * 25)) < 1e-3 for t in times)


def test_scaled_size_never_upscales_and_keeps_sides_even() -> None:
    assert scaled_size(1280, 720, 360) == (640, 360)
    assert scaled_size(720, 1280, 360) == (360, 640)  # portrait: the short side counts
    assert scaled_size(320, 240, 720) == (320, 240)
    assert all(v % 2 == 0 for v in scaled_size(1001, 563, 360))


def test_call_conditions_are_fixed_by_the_clip() -> None:
    clip = CorpusClip("train/x", "/nowhere/x.mp4", "train", "real", "repo", "", 5.0)
    first = call_conditions(clip, 2)
    assert first[0] == RECORDED and len(first) == 3 and len(set(first)) == 3
    assert call_conditions(clip, 2) == first
    assert call_conditions(clip, 1) == first[:2]


def test_donors_come_from_another_source() -> None:
    clips = [
        CorpusClip(f"dev/{i}", f"/d/{i}.mp4", "dev", "real", group, "", 3.0)
        for i, group in enumerate(["a", "a", "b", "c"])
    ]
    donors = {c.key: "x.npy" for c in clips}
    for clip in clips:
        donor = pick_donor(clip, clips, donors)
        assert donor is not None
        assert next(c for c in clips if c.key == donor).group != clip.group


@pytest.mark.slow
def test_cached_sessions_replay_the_pipeline_decision(
    tmp_path: Path, synthetic_calls: dict[str, Path]
) -> None:
    cache = tmp_path / "cache"
    for name in ("sync", "short"):
        save_audio(cache / f"{name}.npy", *decode_audio(synthetic_calls[name]))
    variants = (GENUINE, AudioVariant("shift", 400), AudioVariant("swap", donor="short"))
    task = SessionTask(
        clip="sync",
        condition=RECORDED,
        media_path=str(synthetic_calls["sync"]),
        audio_path=str(cache / "sync.npy"),
        variants=variants,
        donor_audio={"short": str(cache / "short.npy")},
        config_path=None,
        config_overrides={},
        cache_dir=str(cache),
    )
    genuine, shifted, swapped = run_task(task)
    config = load_config()
    # The decision replayed on the record is the pipeline's own, window by window. (The
    # variants' pipelines ran without the video-only detectors; their records carry the
    # genuine pass's video evidence, so only the genuine session can be compared.)
    replay = decide.trace(
        "sequential",
        decide.record_windows(genuine),
        config,
        load_calibration(config.decision),
        genuine.detectors,
    )
    own = decide.pipeline_trace(genuine)
    assert replay.levels == own.levels
    assert (replay.alerts, replay.suspicious) == (own.alerts, own.suspicious)
    assert len(genuine.windows) == len(shifted.windows) >= 8
    # Video-only detectors ran once; the variants carry the genuine session's evidence.
    for a, b in zip(genuine.windows, shifted.windows, strict=True):
        assert a["evidence"]["temporal"] == b["evidence"]["temporal"]
    lip = [
        np.nanmean([w["evidence"]["lip_sync"]["score"] or np.nan for w in r.windows])
        for r in (genuine, shifted, swapped)
    ]
    assert lip[0] < 0.3 and lip[1] > 0.7 and lip[2] > lip[0]
    offset = genuine_calls.session_offset_ms(shifted)
    assert offset == pytest.approx(400, abs=40)
    # A second run reads the cache.
    assert run_task(task)[1] == shifted


def test_llr_fit_recovers_a_known_likelihood_ratio() -> None:
    rng = np.random.default_rng(0)
    # logit(score) ~ N(-1, 1) for genuine windows and N(+1, 1) for manipulated ones:
    # the log-likelihood ratio is exactly 2 * logit(score).
    x = np.concatenate([rng.normal(-1, 1, 4000), rng.normal(1, 1, 1000)])
    labels = np.r_[np.zeros(4000, bool), np.ones(1000, bool)]
    scores = 1 / (1 + np.exp(-x))
    fitted = calibrate.fit_score_calibration(scores, labels)
    assert fitted.slope == pytest.approx(2.0, abs=0.15)
    assert fitted.intercept == pytest.approx(0.0, abs=0.15)
    assert fitted.llr_max <= math.log(4000) and fitted.llr_min >= -math.log(1000)
    # A score that does not rise with manipulation says nothing.
    flat = calibrate.fit_score_calibration(scores, labels[::-1])
    assert (flat.slope, flat.llr_min, flat.llr_max) == (0.0, 0.0, 0.0)


def test_folds_keep_sources_together() -> None:
    groups = ["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"] * 2 + ["e"]
    folds = calibrate.group_folds(groups, 3)
    for group in set(groups):
        assert len({f for f, g in zip(folds, groups, strict=True) if g == group}) == 1
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 2


def test_rises_count_crossings_with_hysteresis_and_thresholds_follow_the_target() -> None:
    path = [1.0, 1.0, 1.0, -0.5, 1.0, -3.0, -3.0, 1.0, 1.0, 1.0, None, 1.0]
    assert calibrate.count_rises([path], 3.0, 1.0, 0.0, math.inf) == 2
    assert calibrate.count_rises([path], 3.0, 0.4, 0.0, math.inf) == 3
    assert calibrate.count_rises([path], 10.0, 1.0, 0.0, math.inf) == 0

    def rises(h: float) -> int:
        return calibrate.count_rises([path], h, 1.0, 0.0, math.inf)

    grid = [1.0, 2.0, 3.0, 3.5, 4.0]
    # One raise an hour allowed: the lowest threshold, crossed once and never left.
    choice = calibrate.choose_threshold(rises, 1.0, 1.0, grid, "suspicious")
    assert (choice.threshold_nats, choice.raises, choice.capped) == (1.0, 1, False)
    # None allowed in one hour: no grid value qualifies, the largest is taken and flagged.
    choice = calibrate.choose_threshold(rises, 1.0, 0.5, grid, "alert")
    assert (choice.threshold_nats, choice.raises, choice.capped) == (4.0, 1, True)
    choice = calibrate.choose_threshold(rises, 1.0, 0.5, [*grid, 5.0], "alert")
    assert (choice.threshold_nats, choice.raises, choice.capped) == (5.0, 0, False)


def _record(clip: str, scores: list[float | None], manipulated: bool = False) -> SessionRecord:
    windows = [
        {
            "t_start": 0.5 * i,
            "t_end": 0.5 * i + 2.0,
            "evidence": {"lip_sync": {"score": s}},
        }
        for i, s in enumerate(scores)
    ]
    return SessionRecord(
        clip=clip,
        condition=RECORDED,
        variant="shift+400ms" if manipulated else "genuine",
        manipulated=manipulated,
        media_seconds=0.5 * len(scores) + 1.5,
        detectors={"lip_sync": "learned-1"},
        windows=windows,
    )


def test_genuine_figures_and_long_calls_from_records() -> None:
    config = load_config(decision={"suspicious_nats": 2.0, "alert_nats": 4.0, "ceiling_nats": 6.0})
    calibration = EvidenceCalibration(
        {"lip_sync": ScoreCalibration(1.0, 0.0, -4.0, 4.0)}, {"lip_sync": "learned-1"}
    )
    quiet = _record("quiet", [0.1] * 20)
    noisy = _record("noisy", [0.1] * 10 + [0.97] * 8 + [0.1] * 30)
    records = [quiet, noisy]
    traces = genuine_calls.session_traces(records, config, calibration, "sequential")
    figures = genuine_calls.genuine_figures(records, traces)
    assert figures["sessions"] == 2 and figures["reached_alert"] == 0.5
    assert figures["ended_in_alert"] == 0.0 and figures["false_alerts"] == 1
    long = genuine_calls.long_calls(
        records, config, calibration, "sequential", call_minutes=1.0, calls=3
    )
    assert long["calls"] == 3 and long["hours"] >= 3 / 60
    assert long["calls_reaching_alert"] == 3  # each minute-long call holds the noisy clip
    attacked = [quiet, _record("quiet", [0.97] * 20, manipulated=True)]
    table = genuine_calls.attack_figures(attacked, config, calibration, "sequential")
    row = table[RECORDED]["shift+400ms"]
    assert row["auc"] == 1.0 and row["alarmed"] == 1 and row["genuine_n"] == 1


def test_same_speaker_calls_loop_a_session_without_counting_its_start_again() -> None:
    """A speaker whose windows read slightly manipulated (+0.2 nats) never alarms in a short
    clip, nor in mixed long calls beside a clearly genuine speaker, but does in a long call
    of their own; a clearly genuine speaker does not. The loop is continuous: every window
    after the call's first adds a quarter of its evidence, the repetitions' starts too. An
    allowance above the reading keeps that call clear."""
    thresholds = {"suspicious_nats": 2.0, "alert_nats": 4.0, "ceiling_nats": 6.0}
    config = load_config(decision={**thresholds, "drift_allowance_nats": 0.0})
    calibration = EvidenceCalibration(
        {"lip_sync": ScoreCalibration(1.0, 0.0, -4.0, 4.0)}, {"lip_sync": "learned-1"}
    )
    slight = 1 / (1 + math.exp(-0.2))
    drifting = _record("drifting", [slight] * 12)
    quiet = _record("quiet", [0.1] * 12)
    windows = genuine_calls.looped_windows(drifting, 60.0, hop_s=0.5)
    starts = [w[0] for w in windows]
    assert np.allclose(np.diff(starts), 0.5) and starts[-1] >= 60.0 - 7.5
    trace = genuine_calls.session_traces([drifting], config, calibration, "sequential")[0]
    assert trace.peak_level != "suspicious" and trace.peak_level != "alert"
    mixed = genuine_calls.long_calls(
        [drifting, quiet], config, calibration, "sequential", call_minutes=5.0, calls=2
    )
    assert mixed["calls_reaching_suspicious"] == 0
    same = genuine_calls.same_speaker_calls(
        [drifting, quiet], config, calibration, "sequential", call_minutes=5.0
    )
    # first window whole (0.2 nats), then 0.05 a window: 4 nats after 77 windows (38.5 s)
    assert same["calls"] == 2 and same["calls_reaching_alert"] == 1
    assert same["alerting"] == [f"drifting ({RECORDED})"]
    assert same["hours"] == pytest.approx(2 * 5.0 / 60, abs=0.01)
    allowed = load_config(decision={**thresholds, "drift_allowance_nats": 0.25})
    same = genuine_calls.same_speaker_calls(
        [drifting, quiet], allowed, calibration, "sequential", call_minutes=5.0
    )
    assert same["calls_reaching_suspicious"] == 0
    # Choosing the allowance leaves apart a session whose lip-sync evidence reads its audio
    # off the lips (most windows above 0): that is what the product is for.
    choice = genuine_calls.choose_drift_allowance(
        [drifting, quiet], config, calibration, "sequential", call_minutes=5.0
    )
    assert choice["chosen_nats"] == 0.0 and choice["sessions"] == 1
    assert choice["lip_sync_off_sessions"] == [f"drifting ({RECORDED})"]
    face = _record("face", [0.4] * 12)  # lip sync reads genuine (-0.4 nats a window) ...
    for w in face.windows:  # ... and the face a little forged (+0.6): +0.2 nats together
        w["evidence"]["temporal"] = {"score": 1 / (1 + math.exp(-(0.2 + math.log(1.5))))}
    face.detectors["temporal"] = "2"
    both = EvidenceCalibration(
        {
            "lip_sync": ScoreCalibration(1.0, 0.0, -4.0, 4.0),
            "temporal": ScoreCalibration(1.0, 0.0, -4.0, 4.0),
        },
        {"lip_sync": "learned-1", "temporal": "2"},
    )
    joint = load_config(decision={**thresholds, "attack_model": "joint"})
    choice = genuine_calls.choose_drift_allowance(
        [face, quiet], joint, both, "sequential", call_minutes=5.0
    )
    assert choice["chosen_nats"] == 0.25 and choice["sessions"] == 2
    assert [t["allowance_nats"] for t in choice["tried"]] == [0.0, 0.25]


def test_offset_error_is_also_read_from_each_clips_own_offset() -> None:
    """A recording whose audio reads 80 ms early, shifted by +400 ms, reads +320 ms: 80 ms
    off the shift, and exactly the shift from the clip's own reading."""
    config = load_config()
    calibration = EvidenceCalibration(
        {"lip_sync": ScoreCalibration(1.0, 0.0, -4.0, 4.0)}, {"lip_sync": "learned-1"}
    )
    lags_ms = np.arange(-15, 16) * 40.0

    def reading(clip: str, offset_ms: float, manipulated: bool) -> SessionRecord:
        record = _record(clip, [0.9 if manipulated else 0.1] * 6, manipulated)
        curve = list(np.abs(lags_ms - offset_ms) / 40.0)
        for window in record.windows:
            window["evidence"]["lip_sync"]["lag_curve"] = curve
        return record

    records = [reading("early", -80.0, False), reading("early", 320.0, True)]
    assert genuine_calls.session_offset_ms(records[0]) == pytest.approx(-80.0)
    row = genuine_calls.attack_figures(records, config, calibration, "sequential")[RECORDED][
        "shift+400ms"
    ]
    assert row["offset_error_median_ms"] == pytest.approx(80.0)
    assert row["relative_offset_error_median_ms"] == pytest.approx(0.0)


def test_excursion_peaks_and_their_exponential_tail() -> None:
    path = [1.0, 1.0, -5.0, 0.5, None, -1.0, 2.0, 1.5]
    assert calibrate.excursion_peaks([path]) == [2.0, 0.5, 3.5]
    rng = np.random.default_rng(0)
    peaks = list(1.0 + rng.exponential(0.5, 4000))  # decay 2 per nat beyond 1 nat
    tail = calibrate.fit_tail(peaks, hours=100.0)
    assert tail is not None and tail.rate_per_hour == pytest.approx(40.0)
    assert tail.decay_per_nat == pytest.approx(2.0, rel=0.05)
    h = tail.threshold_for(0.1)
    assert tail.rate(h) == pytest.approx(0.1)
    assert h == pytest.approx(1.0 + math.log(400) / tail.decay_per_nat)
    assert calibrate.fit_tail([2.0, 3.0], hours=1.0) is None  # too few to fit


def test_maps_fitted_by_a_detectors_own_tool_are_carried_over_for_its_version() -> None:
    """calibrate_decision refits neither the artifact map (the network trained on the pool's
    fakes) nor lip_timing's (its own tool's identity map and cap): the packaged ones are
    carried over, and only for the version they were fitted on. Every packaged map is
    either refitted or carried, so a refit loses none."""
    from monitor.decision import CALIBRATION_PATH
    from monitor.evaluation.calibration_run import FITTED_ELSEWHERE, TARGETS, _carried_maps

    packaged = EvidenceCalibration.load(CALIBRATION_PATH)
    assert set(packaged.detectors) == set(TARGETS) | set(FITTED_ELSEWHERE)
    assert not set(TARGETS) & set(FITTED_ELSEWHERE)
    version = packaged.versions["artifact"]
    running = {
        "artifact": version,
        "lip_timing": packaged.versions["lip_timing"],
        "lip_sync": "learned-2",
    }
    carried = _carried_maps(packaged, running)
    assert carried == {
        "artifact": packaged.detectors["artifact"],
        "lip_timing": packaged.detectors["lip_timing"],
    }
    assert carried["lip_timing"].llr_max == 1.0
    assert _carried_maps(packaged, {"artifact": version + "-other"}) == {}
    assert _carried_maps(None, {"artifact": version}) == {}


def test_the_calibration_report_shows_every_carried_map() -> None:
    """lip_timing's packaged entry records only how its cap was chosen; the report still
    shows the map it carries (the markdown writer failed on a refit without it)."""
    from monitor.decision import CALIBRATION_PATH
    from monitor.evaluation.calibration_run import _carried_maps, carried_report, markdown

    packaged = EvidenceCalibration.load(CALIBRATION_PATH)
    carried = _carried_maps(packaged, dict(packaged.versions))
    entries = carried_report(packaged, carried)
    assert set(entries) == {"artifact", "lip_timing"}
    assert entries["lip_timing"]["map"]["llr_max"] == 1.0
    assert "fitted_by" in entries["lip_timing"]
    report = {
        "clips": {"real": 1, "fake": 1},
        "folds": 5,
        "calls_per_clip": 1,
        "detectors": entries,
        "genuine_sessions": 2,
        "genuine_hours": 0.01,
        "thresholds": {},
        "attacks": {},
    }
    text = markdown(report)
    assert "| lip_timing | carried over from tools/calibrate_lip_timing.py" in text
    assert "1.00, 0.00, [-1.00, 1.00]" in text


def test_cached_evidence_is_keyed_by_every_calibration_that_shapes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A changed artifact or lip_timing calibration changes every window's score: cached
    evidence from before must not be reused. The decision's calibration does not shape
    evidence (decisions are replayed on it), so changing it keeps the cache."""
    from monitor.config import MonitorConfig
    from monitor.evaluation import sessions

    models = tmp_path / "models"
    models.mkdir()
    (tmp_path / "detectors").mkdir()
    for name in ("sync.onnx", "lip_timing_calibration.json", "decision_calibration.json"):
        (models / name).write_text("1")
    monkeypatch.setattr(sessions, "_PACKAGE", tmp_path)
    config = MonitorConfig()
    before = sessions.evidence_fingerprint(config)
    without_timing = sessions.evidence_fingerprint(
        config, leave_out=("lip_timing_calibration.json",)
    )
    (models / "decision_calibration.json").write_text("2")
    assert sessions.evidence_fingerprint(config) == before
    (models / "lip_timing_calibration.json").write_text("2")
    assert sessions.evidence_fingerprint(config) != before
    # What tools/calibrate_lip_timing.py keys its cache with: not the file it writes.
    assert (
        sessions.evidence_fingerprint(config, leave_out=("lip_timing_calibration.json",))
        == without_timing
    )
