"""The artifact detector: pseudo-fake synthesis and call rendering with known answers, the
boundary target and its description, the detector's per-frame cache and evidence, and
the committed network (files, size, ONNX against PyTorch, calibration)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from monitor.config import MonitorConfig
from monitor.detectors.artifact.calibration import (
    ArtifactCalibration,
    load_calibration,
)
from monitor.detectors.artifact.detector import ArtifactDetector, frame_stride
from monitor.detectors.artifact.evidence import (
    boundary_map_json,
    decode_cells,
    describe_region,
    face_geometry,
)
from monitor.detectors.artifact.model import GRID, INPUT_SIDE, ArtifactNet, boundary_target
from monitor.detectors.temporal.calibration import Stats
from monitor.errors import DetectorError
from monitor.training import artifact_data
from monitor.training.artifact_data import BlendParams, Chunk
from tests.factories import alert_event
from tests.test_temporal import SIDE, face_window, render_face

# ----- pseudo-fakes ------------------------------------------------------------------------


def params(**changes: object) -> BlendParams:
    base = dict(
        region="lower_rect",
        source="same",
        shift=6,
        resample_side=None,
        box_scale=1.05,
        sharpen=0.0,
        smooth=0.0,
        colour=(0.0, 0.0, 0.0),
        contrast=1.0,
        jpeg_quality=None,
        misalign=(0.0, 0.0, 1.0),
        feather=0.0,
        grow=0.0,
        ratio=1.0,
    )
    base.update(changes)
    return BlendParams(**base)  # type: ignore[arg-type]


def synthetic_chunk() -> Chunk:
    frames, landmarks = [], []
    span = artifact_data.CHUNK_FRAMES + artifact_data.DONOR_FRAMES
    for i in range(span):
        image, points = render_face(0.02 + 0.04 * (i % 4) / 3, seed=i % 3)
        frames.append(np.array(image))
        landmarks.append(np.array(points))
    return Chunk("synthetic", 0, 25.0, frames, landmarks, SIDE, 1.0)


def test_region_masks_cover_what_each_generator_replaces() -> None:
    image, landmarks = render_face()
    shape = image.shape[:2]
    box = artifact_data._face_box(landmarks, 1.05)
    eye = tuple(np.round(landmarks[33]).astype(int))
    mouth = tuple(np.round(landmarks[[13, 14]].mean(0)).astype(int))
    forehead = tuple(np.round(landmarks[151]).astype(int))
    masks = {
        region: artifact_data.region_mask(params(region=region), landmarks, box, shape)
        for region in artifact_data.REGIONS
    }
    for region, mask in masks.items():
        assert mask.dtype == np.float32 and mask.max() == pytest.approx(1.0), region
        assert mask[mouth[1], mouth[0]] == pytest.approx(1.0), region  # every region: the mouth
    for region in ("lower_rect", "jaw_hull", "mouth_hull"):
        assert masks[region][eye[1], eye[0]] == 0.0, region  # ... but not the eyes
    assert masks["face_hull"][eye[1], eye[0]] == 1.0 and masks["face_rect"][eye[1], eye[0]] == 1.0
    assert masks["face_hull"][forehead[1], forehead[0]] == 1.0
    assert masks["mouth_hull"].sum() < masks["jaw_hull"].sum() < masks["face_hull"].sum()
    # A rectangle is axis-aligned and hard; a feathered hull has a soft edge.
    rect = masks["lower_rect"]
    assert set(np.unique(rect)) == {0.0, 1.0}
    soft = artifact_data.region_mask(params(region="jaw_hull", feather=0.06), landmarks, box, shape)
    assert ((soft > 0.05) & (soft < 0.95)).sum() > 200


def test_blend_pastes_altered_content_inside_the_mask_only() -> None:
    chunk = synthetic_chunk()
    recipe = params(region="lower_rect", resample_side=96, colour=(10.0, -5.0, 0.0))
    frames, masks = artifact_data.blend_chunk(chunk, recipe)
    assert len(frames) == len(masks) == artifact_data.CHUNK_FRAMES
    for frame, mask, original in zip(frames, masks, chunk.frames, strict=False):
        diff = np.abs(frame.astype(int) - original.astype(int)).sum(axis=2)
        assert diff[mask == 0].max() == 0  # untouched outside
        assert diff[mask == 1].mean() > 5  # changed inside
    # Another moment: the pasted mouth follows another frame, not this one.
    moved, masks = artifact_data.blend_chunk(chunk, params(region="mouth_hull", source="reversed"))
    inside = masks[0] > 0.5
    assert np.abs(moved[0].astype(int) - chunk.frames[0].astype(int))[inside].mean() > 3


def test_recipes_are_drawn_once_per_chunk_and_always_alter_something() -> None:
    rng = np.random.default_rng(0)
    regions = set()
    for _ in range(200):
        recipe = artifact_data.draw_blend(rng)
        regions.add(recipe.region)
        altered = (
            recipe.source != "same"
            or recipe.resample_side
            or recipe.sharpen
            or recipe.smooth
            or recipe.jpeg_quality
            or recipe.colour != (0.0, 0.0, 0.0)
        )
        assert altered
        assert 0.95 <= recipe.box_scale <= 1.2  # the box edge stays inside the detector's crop
        json.loads(recipe.describe())
    assert regions == set(artifact_data.REGIONS)


@pytest.mark.parametrize("codec", ["libx264", "libvpx"])
def test_call_rendering_encodes_scales_and_drops_frames(codec: str) -> None:
    frames = synthetic_chunk().frames[: artifact_data.CHUNK_FRAMES]
    conditions = artifact_data.CallConditions(
        codec=codec,
        short_side=240,
        fps=15,
        bits_per_pixel=0.08,
        crf=None,
        light_gain=0.5,
        noise_sigma=4.0,
        seed=1,
    )
    indices, decoded, scale = artifact_data.render_call(frames, SIDE, 1.0, 25.0, conditions)
    assert indices == artifact_data.kept_frames(len(frames), 25.0, 15)
    assert len(decoded) == len(indices) < len(frames)  # 15 of 25 fps
    assert scale == pytest.approx(240 / SIDE, abs=0.01)
    assert decoded[0].shape == (240, 240, 3)
    # Low light darkens; the codec keeps the picture (not a blank or a different frame).
    original = cv2.resize(frames[indices[-1]], (240, 240), interpolation=cv2.INTER_AREA)
    assert decoded[-1].mean() == pytest.approx(original.mean() * 0.5, rel=0.15)
    correlation = np.corrcoef(decoded[-1].ravel(), original.ravel())[0, 1]
    assert correlation > 0.8


def test_kept_frames_keep_the_cadence() -> None:
    assert artifact_data.kept_frames(12, 25.0, 30) == list(range(12))
    assert artifact_data.kept_frames(12, 30.0, 15) == [0, 2, 4, 6, 8, 10]


def test_chunks_never_share_rendered_frames() -> None:
    rng = np.random.default_rng(3)
    starts = artifact_data.chunk_starts(200, 30, rng)
    assert len(starts) == (200 - artifact_data.DONOR_FRAMES) // artifact_data.CHUNK_FRAMES
    assert all(
        b - a >= artifact_data.CHUNK_FRAMES for a, b in zip(starts, starts[1:], strict=False)
    )
    span = artifact_data.CHUNK_FRAMES + artifact_data.DONOR_FRAMES
    assert starts[-1] + span <= 200
    assert artifact_data.chunk_starts(20, 5, rng) == []


def test_fake_kinds_from_manifest_notes() -> None:
    assert artifact_data.fake_kind("LIPSYNC-FAKE (Wav2Lip): ...") == "lipsync"
    assert artifact_data.fake_kind("FACESWAP (DFDC; ...)") == "faceswap"
    assert artifact_data.fake_kind("TALKING-HEAD (Loopy): ...") == "talking_head"
    assert artifact_data.fake_kind("JoyGen lip-sync on real video: ...") == "lipsync"
    assert artifact_data.fake_kind("EDTalk one-shot audio-driven talking head") == "talking_head"


# ----- boundary target and its description -------------------------------------------------


def test_boundary_target_marks_the_edge_of_the_mask() -> None:
    mask = np.zeros((INPUT_SIDE, INPUT_SIDE), np.float32)
    mask[128:, :] = 1.0  # the lower half pasted
    target = boundary_target(mask)
    assert target.shape == (GRID, GRID)
    assert target[7:9].min() > 0.9  # the seam rows
    assert target[:5].max() < 0.05 and target[11:].max() < 0.05  # far from it: nothing
    assert boundary_target(np.zeros_like(mask)).max() == 0.0


def crop_geometry():  # noqa: ANN201
    _, landmarks = render_face()
    return face_geometry(np.array(landmarks))


def painted(geometry, what: str) -> np.ndarray:  # noqa: ANN001
    """A boundary map that lights the cells of one region."""
    canvas = np.zeros((GRID * 8, GRID * 8), np.uint8)
    if what == "outline":
        cv2.polylines(canvas, [np.round(geometry.outline * 8).astype(np.int32)], True, 1, 8)
    elif what == "mouth":
        cv2.polylines(canvas, [np.round(geometry.lips * 8).astype(np.int32)], True, 1, 8)
    else:  # a band below the nose
        y = int(geometry.points["nose_tip"][1] * 8) + 6
        x0, x1 = (int(v * 8) for v in (geometry.outline[:, 0].min(), geometry.outline[:, 0].max()))
        cv2.line(canvas, (x0, y), (x1, y), 1, 8)
    return cv2.resize(canvas.astype(np.float32), (GRID, GRID), interpolation=cv2.INTER_AREA)


def test_regions_are_named_from_where_the_seam_runs() -> None:
    geometry = crop_geometry()
    assert describe_region(painted(geometry, "outline"), geometry).name == "whole_face"
    assert describe_region(painted(geometry, "mouth"), geometry).name == "mouth"
    assert describe_region(painted(geometry, "band"), geometry).name == "lower_face"
    assert describe_region(np.zeros((GRID, GRID)), geometry).name == "none"


def test_boundary_map_json_is_small_and_round_trips() -> None:
    geometry = crop_geometry()
    boundary = painted(geometry, "band")
    data = boundary_map_json(boundary, geometry)
    assert len(data["cells"]) == GRID and all(len(row) == GRID for row in data["cells"])
    np.testing.assert_allclose(decode_cells(data["cells"]), boundary, atol=0.5 / 15 + 1e-6)
    assert set(data["points"]) >= {"eye_left", "eye_right", "nose_tip", "chin"}
    assert all(0 <= v <= GRID for x, y in data["points"].values() for v in (x, y))
    assert len(json.dumps(data)) < 1100


# ----- the detector ------------------------------------------------------------------------


class CountingBackend:
    """Stands in for the network: a logit that grows with the mouth crop's redness, and a
    flat map; counts the crops it was asked to score."""

    name = "counting"

    def __init__(self, logit: float = 0.0) -> None:
        self.logit = logit
        self.scored: list[int] = []

    def score(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.scored.append(len(crops))
        maps = np.zeros((len(crops), GRID, GRID), np.float32)
        maps[:, 9, 1:15] = 0.9  # a seam below the nose, across the face
        return np.full(len(crops), self.logit, np.float32), maps


def unit_calibration() -> ArtifactCalibration:
    return ArtifactCalibration(Stats(0.0, 1.0), Stats(0.0, 1.0), center_z=3.0, width_z=0.5)


def test_each_frame_is_scored_once_across_overlapping_windows() -> None:
    backend = CountingBackend(logit=1.0)
    detector = ArtifactDetector(MonitorConfig(), backend=backend, calibration=unit_calibration())
    window = face_window(frames=100, t_start=0.0)
    stride = frame_stride(window.fps)
    assert stride == 2
    hop = 12  # frames per 0.5 s hop at 25 fps
    for k in range(5):
        frames = window.frames[k * hop : k * hop + 50]
        sub = type(window)(
            session="t",
            index=k,
            t_start=frames[0].t,
            t_end=frames[0].t + 2.0,
            context_s=0.0,
            frames=frames,
            samples=window.samples,
            audio=window.audio,
            has_audio_stream=False,  # no soundtrack: still scored
        )
        evidence = detector.analyze(sub)
        assert evidence.score is not None
        assert evidence.fields["frames_scored"] == 25
    distinct = {f.index for f in window.frames[: 4 * hop + 50] if f.index % stride == 0}
    assert sum(backend.scored) == len(distinct)  # never rescored
    assert len(detector._scores) <= 25  # frames before the last window's start are dropped


def test_frames_scored_on_arrival_are_not_scored_again_by_windows() -> None:
    backend = CountingBackend(logit=1.0)
    detector = ArtifactDetector(MonitorConfig(), backend=backend, calibration=unit_calibration())
    window = face_window()
    for frame in window.frames:  # the session hands every frame to observe first
        detector.observe(frame)
    observed = sum(backend.scored)
    assert observed == len([f for f in window.face_frames if f.index % 2 == 0])
    evidence = detector.analyze(window)
    assert evidence.score is not None and evidence.fields["frames_scored"] == observed
    assert sum(backend.scored) == observed  # the window read the stored scores


def test_strong_evidence_names_region_sigma_and_span() -> None:
    detector = ArtifactDetector(
        MonitorConfig(), backend=CountingBackend(logit=4.2), calibration=unit_calibration()
    )
    evidence = detector.analyze(face_window())
    assert evidence.score is not None and evidence.score > 0.9
    assert evidence.rationale.startswith("lower-face blending seam 4.2 sigma above genuine video")
    assert "00:12.0-00:14.0" in evidence.rationale and "below the nose" in evidence.rationale
    assert evidence.fields["region"] == "lower_face"
    assert len(evidence.fields["boundary_map"]["cells"]) == GRID
    assert evidence.spans == [(12.0, 14.0)]
    detector.analyze(face_window(t_start=12.5))
    summary = detector.summarize()
    assert summary is not None and summary.score is not None and summary.score > 0.9
    assert "session mean: lower-face blending seam 4.2 sigma" in summary.rationale
    assert summary.fields["windows"] == 2 and summary.spans == [(12.0, 14.5)]


def test_genuine_looking_window_is_clear_and_few_faces_are_insufficient() -> None:
    detector = ArtifactDetector(
        MonitorConfig(), backend=CountingBackend(logit=0.3), calibration=unit_calibration()
    )
    evidence = detector.analyze(face_window())
    assert evidence.score is not None and evidence.score < 0.01
    assert "no blending seam stands out" in evidence.rationale and evidence.spans == []
    few = detector.analyze(face_window(frames=20, with_face=10))
    assert few.score is None and "insufficient evidence" in few.rationale
    assert detector.summarize() is not None
    empty = ArtifactDetector(
        MonitorConfig(), backend=CountingBackend(), calibration=unit_calibration()
    )
    assert empty.summarize() is None


def test_bad_calibration_files_raise_detector_error(tmp_path: Path) -> None:
    with pytest.raises(DetectorError, match="not found"):
        load_calibration(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(DetectorError, match="not valid JSON"):
        load_calibration(bad)
    bad.write_text(json.dumps({"format": 1, "window": {"mean": 0, "std": 0}}))
    with pytest.raises(DetectorError, match="malformed"):
        load_calibration(bad)
    good = unit_calibration()
    path = tmp_path / "good.json"
    path.write_text(json.dumps(good.to_json()))
    assert load_calibration(path).window == good.window


def test_network_shapes_and_size() -> None:
    import torch

    model = ArtifactNet().eval()
    logits, boundary = model(torch.zeros(2, 3, INPUT_SIDE, INPUT_SIDE))
    assert logits.shape == (2,) and boundary.shape == (2, GRID, GRID)
    assert sum(p.numel() for p in model.parameters()) <= 3_000_000


def test_alert_explanation_carries_the_seam_map() -> None:
    from monitor.events import validate_event
    from monitor.explain.live import compact_explanation

    window = face_window()
    detector = ArtifactDetector(
        MonitorConfig(), backend=CountingBackend(logit=4.2), calibration=unit_calibration()
    )
    evidence = [detector.analyze(window)]
    explanation = compact_explanation(window, evidence, {"artifact": 1.0})
    seam = explanation["boundary_map"]
    assert seam["region"] == "lower_face" and seam["z"] == pytest.approx(4.2)
    assert len(seam["cells"]) == GRID and "nose_tip" in seam["points"]
    assert "blend seam at the lower face, 4.2 sigma above genuine video" in explanation["summary"]
    assert len(json.dumps(explanation, allow_nan=False)) < 2048
    event = alert_event(window, evidence, explanation)
    validate_event(event)
    quiet = ArtifactDetector(
        MonitorConfig(), backend=CountingBackend(), calibration=unit_calibration()
    )
    insufficient = [quiet.analyze(face_window(frames=20, with_face=5))]
    assert compact_explanation(window, insufficient)["boundary_map"] is None


def test_committed_model_files_load_agree_and_stay_small() -> None:
    """The shipped weights: under 3 M parameters and 8 MB, ONNX and PyTorch give the same
    answers, the calibration is the out-of-fold one with its score at 0.5 from 4 sigma, and
    the detector built from the registry's defaults scores a window with its seam map."""
    from monitor.detectors.artifact.backend import (
        ONNX_PATH,
        WEIGHTS_PATH,
        OnnxArtifactBackend,
        TorchArtifactBackend,
    )
    from monitor.detectors.artifact.model import load_model, parameter_count

    model, checkpoint = load_model(WEIGHTS_PATH)
    assert parameter_count(model) <= 3_000_000
    assert WEIGHTS_PATH.stat().st_size < 8e6 and ONNX_PATH.stat().st_size < 8e6
    record = checkpoint["training"]
    assert (
        record["heldout_sources"] and record["history"][-1]["step"] == record["settings"]["steps"]
    )
    window = face_window()
    crops = np.stack([f.face.face_crop for f in window.face_frames[:4]])
    onnx_logits, onnx_maps = OnnxArtifactBackend().score(crops)
    torch_logits, torch_maps = TorchArtifactBackend().score(crops)
    assert np.allclose(onnx_logits, torch_logits, atol=1e-3)
    assert np.allclose(onnx_maps, torch_maps, atol=1e-3)
    assert onnx_maps.shape == (4, GRID, GRID) and 0 <= onnx_maps.min() <= onnx_maps.max() <= 1
    calibration = load_calibration()
    assert calibration.center_z == 4.0 and calibration.score(calibration.center_z) == 0.5
    assert set(calibration.meta["real_clips"]) and calibration.meta["pool_report"]["call"]
    evidence = ArtifactDetector(MonitorConfig()).analyze(window)
    assert evidence.score is not None and np.isfinite(evidence.fields["z"])
    assert len(evidence.fields["boundary_map"]["cells"]) == GRID


def test_out_of_fold_clips_are_held_out_groups_and_untrained_fakes() -> None:
    from monitor.training.artifact import out_of_fold
    from monitor.training.artifact_data import PoolClip

    real_held = PoolClip(Path("a.mp4"), "real", "held", "real")
    real_trained = PoolClip(Path("b.mp4"), "real", "other", "real")
    fake = PoolClip(Path("c.mp4"), "fake", "other", "lipsync")
    held = {"held"}
    assert out_of_fold(real_held, held, train_on_fakes=True)
    assert not out_of_fold(real_trained, held, train_on_fakes=True)
    assert not out_of_fold(fake, held, train_on_fakes=True)  # trained on as a positive
    assert out_of_fold(fake, held, train_on_fakes=False)  # no pool fake was trained on
    assert not out_of_fold(real_trained, held, train_on_fakes=False)
