"""Attribution, faithfulness and live explanations, on models whose answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from monitor.config import MonitorConfig
from monitor.detectors.baseline_sync import BaselineSyncDetector
from monitor.errors import InputError
from monitor.events import validate_event
from monitor.explain.attribution import gradient_x_input, integrated_gradients, torch_score_fn
from monitor.explain.explainer import explain_example
from monitor.explain.faithfulness import deletion_test
from monitor.explain.inputs import AVExample, region_units, swapped, time_units
from monitor.explain.live import compact_explanation, summarize_curve
from tests.factories import NARROW_SYNC, alert_event
from tests.windows_factory import window_from_signals

# The known evidence: video frames 10-14 and audio rows 120-139 (one 0.2 s unit each),
# inside them only the lower-middle mouth region and the lowest mel bands.
VIDEO_SEGMENT = slice(10, 15)
AUDIO_SEGMENT = slice(120, 140)
MOUTH_ROWS, MOUTH_COLS = slice(32, 48), slice(24, 48)
MEL_BANDS = slice(0, 10)


class KnownSegmentModel(nn.Module):
    """Scores lip motion in one segment and region times audio energy in one segment and band.

    Everything else in the input is ignored, so a faithful attribution must find exactly
    these units, and both the lips and the audio unit must matter (a product)."""

    def forward(
        self, mouth: torch.Tensor, mel: torch.Tensor, lips: torch.Tensor | None
    ) -> torch.Tensor:
        region = mouth[:, VIDEO_SEGMENT, MOUTH_ROWS, MOUTH_COLS]
        motion = (region - region.mean(dim=1, keepdim=True)).square().mean(dim=(1, 2, 3))
        energy = mel[:, AUDIO_SEGMENT, MEL_BANDS].exp().mean(dim=(1, 2))
        return torch.sqrt(motion + 1e-6) * energy


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The test machine is shared: one thread is much faster than two fighting threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_example(seed: int = 0) -> AVExample:
    rng = np.random.default_rng(seed)
    mouth = rng.uniform(40, 200, size=(50, 48, 96)).astype(np.float32)  # moves everywhere
    mel = rng.uniform(-2.0, 1.0, size=(320, 80)).astype(np.float32)  # loud everywhere
    lips = rng.normal(size=(50, 82)).astype(np.float32)
    return AVExample.build(
        mouth, mel, lips=lips, video_t0=10.0, video_step=0.04, audio_t0=9.4, audio_step=0.01
    )


def unit_index(units, modality: str, start: int) -> int:
    return next(
        i for i, u in enumerate(units) if u.modality == modality and u.index[0].start == start
    )


def test_units_cover_the_window_in_time_segments_and_regions() -> None:
    example = make_example()
    units = time_units(example)
    video = [u for u in units if u.modality == "video"]
    audio = [u for u in units if u.modality == "audio"]
    assert len(video) == 10 and len(audio) == 16  # 2 s of lips, 3.2 s of audio, 0.2 s each
    assert video[0].t0 == pytest.approx(10.0) and audio[-1].t1 == pytest.approx(12.6)
    regions = region_units(example)
    assert sum(u.modality == "video" for u in regions) == 12
    assert sum(u.modality == "audio" for u in regions) == 8


def test_both_methods_rank_the_known_segment_and_region_first() -> None:
    model = KnownSegmentModel()
    example = make_example()
    result = explain_example(example, torch_score_fn(model), white_box=model, n_random=4)
    units = result.units["time"]
    expected_time = {
        unit_index(units, "video", VIDEO_SEGMENT.start),
        unit_index(units, "audio", AUDIO_SEGMENT.start),
    }
    regions = result.units["region"]
    expected_region = {
        next(
            i
            for i, u in enumerate(regions)
            if u.modality == "video" and u.index[1] == MOUTH_ROWS and u.index[2] == MOUTH_COLS
        ),
        next(i for i, u in enumerate(regions) if u.modality == "audio" and u.index[1].start == 0),
    }
    for kind in ("white-box", "black-box"):
        method = result.method(kind)
        assert method is not None
        top_time = set(np.argsort(-method.units["time"])[:2].tolist())
        top_region = set(np.argsort(-method.units["region"])[:2].tolist())
        assert top_time == expected_time, kind
        assert top_region == expected_region, kind
        # Units the model ignores get (next to) nothing.
        others = np.delete(method.units["time"], list(expected_time))
        assert np.abs(others).max() < 1e-3 * method.units["time"].max()


def test_faithful_rankings_beat_random_deletion_and_wrong_ones_do_not() -> None:
    model = KnownSegmentModel()
    example = make_example()
    score_fn = torch_score_fn(model)
    result = explain_example(example, score_fn, white_box=model, n_random=4)
    for kind in ("white-box", "black-box"):
        deletion = result.method(kind).deletion["time"]  # type: ignore[union-attr]
        # Removing the top 10% (3 units, including both known ones) removes the whole score.
        assert deletion.removed_by_method[0] == pytest.approx(1.0, abs=1e-3)
        assert deletion.removed_by_random[0] < 0.5
        assert deletion.faithfulness > 0.3
    # The reversed ranking deletes the ignored units first: no better than random.
    units = result.units["time"]
    reversed_ranking = -result.method("black-box").units["time"]  # type: ignore[union-attr]
    wrong = deletion_test(score_fn, example, units, reversed_ranking, family="time", n_random=4)
    assert wrong.faithfulness < 0.05
    assert result.agreement("time") is not None and result.agreement("time") > 0


def test_integrated_gradients_add_up_to_the_score_change() -> None:
    model = KnownSegmentModel()
    example = make_example()
    maps = integrated_gradients(model, example, steps=64)
    assert maps.score > maps.baseline_score
    assert maps.completeness_gap < 0.02 * (maps.score - maps.baseline_score)
    first_order = gradient_x_input(model, example)
    assert first_order.mouth.shape == example.mouth.shape and first_order.mel.shape == (320, 80)
    assert first_order.lips is not None and not first_order.lips.any()  # the model ignores lips


def test_bad_evidence_is_an_input_error() -> None:
    with pytest.raises(InputError):
        AVExample.build(
            np.zeros((0, 48, 96)),
            np.zeros((10, 80)),
            video_t0=0,
            video_step=0.04,
            audio_t0=0,
            audio_step=0.01,
        )
    with pytest.raises(InputError):
        AVExample.build(
            np.zeros((5, 48, 96)),
            np.zeros((10, 80)),
            lips=np.zeros((4, 82)),
            video_t0=0,
            video_step=0.04,
            audio_t0=0,
            audio_step=0.01,
        )
    with pytest.raises(InputError):
        AVExample.build(
            np.zeros((5, 48, 96)),
            np.zeros((10, 80)),
            has_face=np.zeros(5, bool),
            video_t0=0,
            video_step=0.04,
            audio_t0=0,
            audio_step=0.01,
        )


def test_sync_model_scores_agree_between_white_box_and_black_box_paths() -> None:
    """The torch module (gradients) and the numpy scorer (any backend) compute one score,
    and it is the detector's own distance curve read at lag 0 and at the offset."""
    from monitor.explain.sync_target import (
        SyncMismatchScorer,
        distance_curve_fn,
        prepare_target,
        sync_mismatch_module,
        torch_embed,
    )
    from monitor.features.types import AudioFeatures
    from monitor.sync.features import FrameTrack
    from monitor.sync.model import LIP_FEATURES, SyncNetLite

    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    n = 50
    track = FrameTrack(
        times=10.0 + np.arange(n) * 0.04,
        face=np.ones(n, bool),
        crops=rng.integers(0, 255, (n, 48, 96)).astype(np.uint8),
        lips=rng.normal(size=(n, LIP_FEATURES)).astype(np.float32),
    )
    audio = AudioFeatures(
        t0=9.4,
        hop_s=0.01,
        log_mel=(rng.normal(size=(320, 80)) - 5).astype(np.float32),
        loudness_db=np.zeros(320, np.float32),
        voiced=np.ones(320, bool),
    )
    model = SyncNetLite(NARROW_SYNC).eval()
    embed = torch_embed(model)
    curve_fn = distance_curve_fn(embed)
    target = prepare_target(track, audio, 10.0, 12.0, curve_fn, offset_ms=400.0)
    assert target.mode == "offset" and target.offset_ms == pytest.approx(400.0)
    ex = target.example
    black = SyncMismatchScorer(target, embed)(ex.mouth[None], ex.mel[None], ex.lips[None])
    white = torch_score_fn(sync_mismatch_module(model, target))(  # type: ignore[arg-type]
        ex.mouth[None], ex.mel[None], ex.lips[None]
    )
    curve = curve_fn(target.inputs)
    expected = (curve[:, target.lag0] - curve[:, target.lag_best]).mean()
    assert black[0] == pytest.approx(expected, abs=1e-5)
    assert white[0] == pytest.approx(expected, abs=1e-4)
    # Perturbed windows go to the backend as one batch and agree with the torch module.
    occluded_mouth = ex.mouth.copy()
    occluded_mouth[20:25] = ex.mouth_baseline
    occluded_mel = ex.mel.copy()
    occluded_mel[100:200] = ex.mel_baseline
    scorer = SyncMismatchScorer(target, embed)
    a = scorer(
        np.stack([occluded_mouth] * 3), np.stack([occluded_mel] * 3), np.stack([ex.lips] * 3)
    )
    assert scorer.windows_embedded == 3 and np.allclose(a, a[0])
    b = torch_score_fn(sync_mismatch_module(model, target))(  # type: ignore[arg-type]
        occluded_mouth[None], occluded_mel[None], ex.lips[None]
    )
    assert a[0] == pytest.approx(b[0], abs=1e-4) and abs(a[0] - black[0]) > 1e-5
    # Integrated at the input layer, attributions add up to the score change (completeness)
    # and fold back onto frames, mel rows and lip geometry.
    maps = integrated_gradients(sync_mismatch_module(model, target), ex, steps=16)  # type: ignore[arg-type]
    assert maps.mouth.shape == ex.mouth.shape and maps.mel.shape == ex.mel.shape
    assert maps.lips is not None and maps.lips.shape == ex.lips.shape  # type: ignore[union-attr]
    change = maps.score - maps.baseline_score
    assert maps.score == pytest.approx(expected, abs=1e-4)
    assert maps.completeness_gap < 0.05 * abs(change)


def test_live_explanation_of_a_desynced_window_names_the_offset_and_segments() -> None:
    window = window_from_signals(audio_lag_s=0.4, seed=3)
    evidence = [BaselineSyncDetector(MonitorConfig()).analyze(window)]
    explanation = compact_explanation(window, evidence, {"lip_sync": 2.5})
    curve = explanation["offset_curve"]
    assert curve is not None and curve["best_lag_ms"] == pytest.approx(400, abs=40)
    assert curve["in_genuine_band"] is False and curve["zero_lag_excess"] > 0
    assert 1 <= len(explanation["top_segments"]) <= 3
    assert all(s["support"] > 0 for s in explanation["top_segments"])
    assert explanation["contributions"][0] == {
        "detector": "lip_sync",
        "score": pytest.approx(evidence[0].score, abs=1e-3),
        "llr": 2.5,
        "share": 1.0,
    }
    assert "carries 100% of the evidence (+2.5 nats)" in explanation["summary"]
    assert "+400 ms" in explanation["summary"] and "outside" in explanation["summary"]
    text = json.dumps(explanation, allow_nan=False)
    assert len(text) < 2048
    validate_event(alert_event(window, evidence, explanation))


def test_live_explanation_of_an_in_sync_window_and_of_missing_evidence() -> None:
    window = window_from_signals(audio_lag_s=0.0, seed=4)
    evidence = [BaselineSyncDetector(MonitorConfig()).analyze(window)]
    explanation = compact_explanation(window, evidence)
    assert explanation["offset_curve"]["in_genuine_band"] is True
    no_face = window_from_signals(face=False)
    evidence = [BaselineSyncDetector(MonitorConfig()).analyze(no_face)]
    explanation = compact_explanation(no_face, evidence)
    assert explanation["offset_curve"] is None and explanation["top_segments"] == []
    assert explanation["contributions"][0]["share"] == 0.0
    validate_event(alert_event(no_face, evidence, explanation))


def test_curve_summary_rejects_unusable_curves() -> None:
    assert summarize_curve([0, 40], [0.1, 0.2]) is None
    assert summarize_curve([-40, 0, 40], [0.1, float("nan"), 0.2]) is None
    flat = summarize_curve([-40, 0, 40], [1.0, 1.0, 1.0])
    assert flat is not None and flat["shape"] == "flat"


def test_swapped_units_take_real_content_from_half_a_window_away() -> None:
    example = make_example()
    units = time_units(example)
    video = next(u for u in units if u.modality == "video" and u.index[0].start == 10)
    audio = next(u for u in units if u.modality == "audio" and u.index[0].start == 120)
    mouth, mel, lips = swapped(example, [video, audio])
    assert np.array_equal(mouth[10:15], example.mouth[35:40])
    assert np.array_equal(lips[10:15], example.lips[35:40])  # type: ignore[index]
    assert np.array_equal(mel[120:140], example.mel[280:300])
    assert np.array_equal(mouth[:10], example.mouth[:10]) and np.array_equal(
        mel[:120], example.mel[:120]
    )
    with pytest.raises(ValueError):
        swapped(example, region_units(example)[:1])


def test_swap_deletion_finds_the_segment_whose_content_matters() -> None:
    """Only the known segment's lips are bright; swapping them for other lips removes the score."""
    model = KnownSegmentModel()
    example = make_example()
    mouth = example.mouth.copy()
    mouth[VIDEO_SEGMENT] = np.where(np.arange(5)[:, None, None] % 2, 250.0, 5.0)
    bright = AVExample.build(
        mouth,
        example.mel,
        lips=example.lips,
        video_t0=10.0,
        video_step=0.04,
        audio_t0=9.4,
        audio_step=0.01,
    )
    result = explain_example(bright, torch_score_fn(model), white_box=model, n_random=4)
    for kind in ("white-box", "black-box"):
        deletion = result.method(kind).deletion["time-swap"]  # type: ignore[union-attr]
        assert deletion.operator == "swap"
        assert deletion.faithfulness is not None and deletion.faithfulness > 0.3


def test_live_explanation_survives_malformed_lip_sync_fields() -> None:
    from monitor.detectors.base import Evidence

    window = window_from_signals(audio_lag_s=0.4)
    odd = Evidence(
        "lip_sync",
        0.9,
        "a plugin",
        fields={"lag_curve_ms": ["a", "b", "c"], "lag_curve": [1, 2], "offset_ms": "late"},
    )
    explanation = compact_explanation(window, [odd], {"lip_sync": 1.0})
    assert explanation["offset_curve"] is None
    assert explanation["contributions"][0]["share"] == 1.0
