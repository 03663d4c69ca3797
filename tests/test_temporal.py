"""The temporal detector: each cue on synthetic faces with a known answer, the detector's
evidence, calibration loading, and (when present) a real clip from the shared data."""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from monitor.config import FaceConfig, MonitorConfig
from monitor.detectors.temporal import TemporalDetector, cues, geometry
from monitor.detectors.temporal import calibration as calibration_module
from monitor.detectors.temporal.calibration import (
    DEFAULT_PATH,
    Calibration,
    CueCalibration,
    Stats,
    calibration_file,
    calibration_for,
    load_calibration,
    variant_path,
)
from monitor.errors import DetectorError
from monitor.features.face import (
    LIP_INNER_LOWER,
    LIP_INNER_UPPER,
    LIP_OUTER_LOWER,
    LIP_OUTER_UPPER,
    observe_face,
)
from monitor.features.types import AudioFeatures, FrameFeatures
from monitor.windows import AnalysisWindow

SIDE = 320  # synthetic frame size
CENTER = np.array([160.0, 165.0])
SCALE = 190.0  # pixels per face unit (the face is about 1 unit wide, 1.35 tall)


def template_landmarks(mouth_open: float = 0.04) -> np.ndarray:
    """478 points in FaceMesh numbering, in face units: the indices the tracker and the cues
    use sit where they are on a real face; the rest are spread inside the face outline."""
    rng = np.random.default_rng(7)
    radius = np.sqrt(rng.random(478)) * 0.8
    angle = rng.random(478) * 2 * np.pi
    points = np.stack([0.45 * radius * np.cos(angle), 0.6 * radius * np.sin(angle)], axis=1)
    oval = geometry.FACE_OVAL
    for k, index in enumerate(oval):  # clockwise from the top of the forehead
        theta = -np.pi / 2 + 2 * np.pi * k / len(oval)
        points[index] = (0.5 * np.cos(theta), 0.68 * np.sin(theta))
    fixed = {
        10: (0, -0.66), 151: (0, -0.5), 9: (0, -0.36), 168: (0, -0.26), 6: (0, -0.15),
        152: (0, 0.67), 1: (0, 0.06), 234: (-0.5, 0), 454: (0.5, 0),
        127: (-0.48, -0.17), 356: (0.48, -0.17),
        33: (-0.36, -0.2), 133: (-0.12, -0.2), 159: (-0.24, -0.25), 145: (-0.24, -0.15),
        70: (-0.38, -0.33), 105: (-0.22, -0.36),
        263: (0.36, -0.2), 362: (0.12, -0.2), 386: (0.24, -0.25), 374: (0.24, -0.15),
        300: (0.38, -0.33), 334: (0.22, -0.36),
        214: (-0.27, 0.36), 434: (0.27, 0.36), 57: (-0.24, 0.3), 287: (0.24, 0.3),
        200: (0, 0.53), 199: (0, 0.59), 50: (-0.3, 0.0), 280: (0.3, 0.0),
        117: (-0.36, -0.06), 346: (0.36, -0.06), 172: (-0.4, 0.41), 397: (0.4, 0.41),
    }  # fmt: skip
    for index, xy in fixed.items():
        points[index] = xy
    mouth_y, half_width = 0.3, 0.19

    def arc(indices: tuple[int, ...], offset: float, bulge: float) -> None:
        xs = (
            np.linspace(-half_width, half_width, len(indices) + 2)[1:-1]
            if len(indices) < 11
            else None
        )
        if xs is None:
            xs = np.linspace(-half_width, half_width, len(indices))
        for index, x in zip(indices, xs, strict=True):
            shape = 1 - (x / half_width) ** 2
            points[index] = (x, mouth_y + offset * shape + bulge * shape)

    arc(LIP_OUTER_UPPER, -mouth_open / 2, -0.05)
    arc(LIP_INNER_UPPER, -mouth_open / 2, -0.005)
    arc(LIP_INNER_LOWER, mouth_open / 2, 0.005)
    arc(LIP_OUTER_LOWER, mouth_open / 2, 0.06)
    return points


def to_pixels(
    points: np.ndarray, shift: tuple[float, float] = (0.0, 0.0), angle: float = 0.0
) -> np.ndarray:
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return (points @ rotation.T * SCALE + CENTER + np.array(shift)).astype(np.float32)


@functools.lru_cache(maxsize=64)
def render_face(mouth_open: float = 0.06, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A frame with a textured background, a skin-coloured face, detailed eyes and a mouth
    (dark opening with teeth when open); and its landmarks in pixels. Cached and read-only:
    callers copy before changing it."""
    rng = np.random.default_rng(seed)
    landmarks = to_pixels(template_landmarks(mouth_open))
    image = rng.integers(40, 200, (SIDE, SIDE, 3)).astype(np.uint8)  # sharp busy background
    image = cv2.GaussianBlur(image, (0, 0), 0.6)
    oval = np.round(landmarks[list(geometry.FACE_OVAL)]).astype(np.int32)
    cv2.fillPoly(image, [oval], (200, 150, 120))
    texture = rng.normal(0, 6, (SIDE, SIDE, 1))
    face = np.zeros((SIDE, SIDE), np.uint8)
    cv2.fillPoly(face, [oval], 1)
    image = np.where(face[..., None] > 0, np.clip(image + texture, 0, 255), image).astype(np.uint8)
    for eye in (geometry.LEFT_EYE, geometry.RIGHT_EYE):
        x0, y0 = landmarks[list(eye)].min(axis=0).astype(int)
        x1, y1 = landmarks[list(eye)].max(axis=0).astype(int)
        stripes = (np.indices((y1 - y0, x1 - x0)).sum(axis=0) % 12 < 6) * 200 + 20
        image[y0:y1, x0:x1] = stripes[..., None].astype(np.uint8)
    outline = np.round(landmarks[list(geometry.LIP_OUTLINE)]).astype(np.int32)
    cv2.fillPoly(image, [outline], (170, 60, 70))
    cv2.polylines(image, [outline], True, (90, 20, 30), 2)
    opening = np.round(landmarks[list(geometry.MOUTH_OPENING)]).astype(np.int32)
    cv2.fillPoly(image, [opening], (30, 10, 10))
    if mouth_open > 0.02:
        x0, y0 = opening.min(axis=0)
        x1, y1 = opening.max(axis=0)
        for x in range(x0 + 2, x1 - 2, 5):  # teeth: bright blocks with dark gaps
            image[y0 + 1 : (y0 + y1) // 2, x : x + 3] = 235
    image.setflags(write=False)
    landmarks.setflags(write=False)
    return image, landmarks


def observed(image: np.ndarray, landmarks: np.ndarray):  # noqa: ANN201
    return observe_face(image, landmarks, FaceConfig())


def lower_face_box(landmarks: np.ndarray) -> tuple[slice, slice]:
    """Rows from below the nose to the chin, columns between the jaw corners (a mouth box)."""
    top = int(landmarks[1, 1] + 10)
    bottom = int(landmarks[152, 1] - 8)
    left, right = int(landmarks[172, 0]), int(landmarks[397, 0])
    return slice(top, bottom), slice(left, right)


def frame_measure(image: np.ndarray, landmarks: np.ndarray, t: float = 0.0) -> cues.FrameMeasure:
    return cues.measure_frame(t, round(t * 25), observed(image, landmarks))


# ----- tests: geometry ---------------------------------------------------------------------


def test_percentile_is_numpys_to_the_bit() -> None:
    rng = np.random.default_rng(0)
    for trial in range(300):
        shape = (int(rng.integers(1, 60)), int(rng.integers(1, 60)))
        values = (rng.random(shape) * 255).astype(np.float32)
        if trial % 3 == 0:
            values = np.round(values)  # ties, as flat crops give
        for q in (0, 10, 50, 60, 95, 100):
            assert cues.percentile(values, q) == np.percentile(values, q)


def test_crop_points_match_the_crops() -> None:
    """The lips found by the geometry in the crops are where the red lips are drawn."""
    image, landmarks = render_face(0.06)
    face = observed(image, landmarks)
    for crop, points in (
        (face.face_crop, geometry.face_crop_points(landmarks, face.face_crop.shape[0])),
        (face.mouth_crop, geometry.mouth_crop_points(landmarks, *face.mouth_crop.shape[:2])),
    ):
        x, y = np.round(points[geometry.LOWER_LIP_BOTTOM] - [0, 1.5]).astype(int)
        red, green, _ = crop[y, x].astype(int)
        assert red - green > 60, (crop[y, x], x, y)


def test_head_motion_is_removed() -> None:
    """Moving, turning and scaling the whole head leaves the aligned tracks unchanged."""
    base = template_landmarks(0.05)
    tracks = np.stack(
        [to_pixels(base * (1 + 0.05 * i), shift=(8 * i, -5 * i), angle=0.03 * i) for i in range(6)]
    )
    aligned = geometry.remove_head_motion(tracks)
    assert np.abs(aligned - aligned[3]).max() < 1e-4


# ----- tests: each cue on a known answer ---------------------------------------------------


def test_blurred_mouth_reads_blurrier_than_the_eyes() -> None:
    image, landmarks = render_face(0.06)
    blurred = image.copy()
    rows, cols = lower_face_box(landmarks)
    blurred[rows, cols] = cv2.GaussianBlur(image, (0, 0), 3.0)[rows, cols]
    sharp_m, blur_m = frame_measure(image, landmarks), frame_measure(blurred, landmarks)
    sharp = cues.mouth_blur(np.array([sharp_m.mouth_sharpness]), np.array([sharp_m.eye_sharpness]))
    blurry = cues.mouth_blur(np.array([blur_m.mouth_sharpness]), np.array([blur_m.eye_sharpness]))
    assert blurry < sharp - 0.5
    assert blur_m.eye_sharpness == pytest.approx(sharp_m.eye_sharpness, rel=0.05)


def test_blurred_face_in_a_sharp_head_lowers_face_blur() -> None:
    image, landmarks = render_face(0.04)
    inside = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(inside, [np.round(landmarks[list(geometry.FACE_OVAL)]).astype(np.int32)], 1)
    inside = cv2.erode(inside, np.ones((9, 9), np.uint8)).astype(bool)
    regenerated = image.copy()
    regenerated[inside] = cv2.GaussianBlur(image, (0, 0), 2.5)[inside]
    genuine = frame_measure(image, landmarks).face_blur
    fake = frame_measure(regenerated, landmarks).face_blur
    assert math.isfinite(genuine) and fake < genuine - 0.3


def test_blurred_teeth_lower_mouth_interior() -> None:
    image, landmarks = render_face(0.1)
    smeared = image.copy()
    opening = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(opening, [np.round(landmarks[list(geometry.MOUTH_OPENING)]).astype(np.int32)], 1)
    smeared[opening > 0] = cv2.GaussianBlur(image, (0, 0), 3.0)[opening > 0]
    sharp, blurred = frame_measure(image, landmarks), frame_measure(smeared, landmarks)
    assert math.isfinite(sharp.interior_sharpness)
    eyes = np.full(3, sharp.eye_sharpness)
    assert cues.mouth_interior(np.full(3, blurred.interior_sharpness), eyes) < cues.mouth_interior(
        np.full(3, sharp.interior_sharpness), eyes
    )
    closed = frame_measure(*render_face(0.0))
    assert math.isnan(closed.interior_sharpness)  # nothing to see with the mouth shut


def test_colour_shifted_mouth_box_raises_mouth_colour() -> None:
    image, landmarks = render_face(0.04)
    shifted = image.astype(np.int16)
    rows, cols = lower_face_box(landmarks)
    shifted[rows, cols, 0] += 25  # redder, less blue: a Cr/Cb shift
    shifted[rows, cols, 2] -= 20
    shifted = np.clip(shifted, 0, 255).astype(np.uint8)
    genuine, pasted = frame_measure(image, landmarks), frame_measure(shifted, landmarks)
    offset = cues.mouth_colour(pasted.lower_skin[None], pasted.upper_skin[None])
    baseline = cues.mouth_colour(genuine.lower_skin[None], genuine.upper_skin[None])
    assert offset > baseline + 8


def test_mouth_box_flicker_raises_mouth_flicker() -> None:
    rng = np.random.default_rng(3)
    image, landmarks = render_face(0.04)
    rows, cols = lower_face_box(landmarks)
    steady, flickering = [], []
    for i in range(20):
        steady.append(frame_measure(image, landmarks, i / 25))
        frame = image.astype(np.int16)
        frame[rows, cols] += int(rng.integers(-10, 11))
        flickering.append(frame_measure(np.clip(frame, 0, 255).astype(np.uint8), landmarks, i / 25))

    def flicker(measures: list[cues.FrameMeasure]) -> float:
        return cues.mouth_flicker(
            np.array([m.lower_skin[0] for m in measures]),
            np.array([m.upper_skin[0] for m in measures]),
        )

    assert flicker(flickering) > flicker(steady) + 1.5


def test_mouth_box_detail_coming_and_going_raises_texture_flicker() -> None:
    """A mouth box blurred in every other frame flickers in fine detail; camera noise over
    the whole face, or one steady blur, does not raise the cue."""
    rng = np.random.default_rng(4)
    image, landmarks = render_face(0.04)
    rows, cols = lower_face_box(landmarks)

    def texture_flicker(blur_sigmas: list[float]) -> float:
        measures = []
        for i, sigma in enumerate(blur_sigmas):
            frame = (image + rng.normal(0, 3, image.shape)).clip(0, 255).astype(np.uint8)
            if sigma > 0:
                frame[rows, cols] = cv2.GaussianBlur(frame, (0, 0), sigma)[rows, cols]
            measures.append(frame_measure(frame, landmarks, i / 25))
        return cues.texture_flicker(
            np.array([m.lower_texture for m in measures]),
            np.array([m.upper_texture for m in measures]),
            np.array([m.index for m in measures]),
        )

    steady = texture_flicker([0.0] * 20)
    steady_blur = texture_flicker([1.2] * 20)
    flickering = texture_flicker([0.0, 1.2] * 10)
    assert steady < 0.7 and steady_blur < 0.7
    assert flickering > max(steady, steady_blur) + 1.5
    # Too few consecutive frames: not measurable.
    assert math.isnan(cues.texture_flicker(np.zeros(6), np.zeros(6), np.arange(0, 12, 2)))


def speaking_tracks(
    frames: int = 50, jitter: float = 0.0, head_motion: bool = True, seed: int = 0
) -> np.ndarray:
    """Landmark tracks of a face saying something (mouth opening at ~4 Hz), optionally with
    frame-independent noise on the lips only, and a slowly moving head."""
    rng = np.random.default_rng(seed)
    tracks = []
    lips = list(geometry.LIPS)
    for i in range(frames):
        t = i / 25.0
        points = template_landmarks(0.04 + 0.035 * math.sin(2 * math.pi * 4 * t))
        points[lips] += rng.normal(0, jitter, (len(lips), 2))
        shift = (30 * math.sin(0.8 * t), 12 * math.cos(0.5 * t)) if head_motion else (0.0, 0.0)
        angle = 0.08 * math.sin(0.6 * t) if head_motion else 0.0
        tracks.append(
            to_pixels(points, shift, angle) + rng.normal(0, 0.15, (478, 2))
        )  # tracker noise
    return np.stack(tracks)


def test_jittered_lips_raise_lip_jitter_and_head_motion_does_not() -> None:
    smooth = cues.landmark_kinematics(speaking_tracks(), 25.0)
    jittered = cues.landmark_kinematics(speaking_tracks(jitter=0.01), 25.0)
    assert jittered["lip_jitter"] > smooth["lip_jitter"] + 0.5
    assert jittered["lip_smoothness"] > smooth["lip_smoothness"]
    still_head = cues.landmark_kinematics(speaking_tracks(head_motion=False), 25.0)
    assert still_head["lip_jitter"] == pytest.approx(smooth["lip_jitter"], abs=0.25)


def test_lips_moving_in_a_frozen_head_raise_lip_head_ratio() -> None:
    moving = cues.landmark_kinematics(speaking_tracks(head_motion=True), 25.0)
    frozen = cues.landmark_kinematics(speaking_tracks(head_motion=False), 25.0)
    assert frozen["lip_head_ratio"] > moving["lip_head_ratio"] + 1.0


def test_kinematics_are_rate_independent() -> None:
    """The same motion sampled at 25 and 50 fps reads about the same."""
    at_25 = cues.landmark_kinematics(speaking_tracks(50), 25.0)
    at_50 = cues.landmark_kinematics(speaking_tracks(100)[::1], 25.0)  # same frames, twice as long
    assert at_25["lip_head_ratio"] == pytest.approx(at_50["lip_head_ratio"], abs=0.3)
    assert math.isnan(cues.landmark_kinematics(speaking_tracks(3), 25.0)["lip_jitter"])


def test_pasted_box_edge_raises_boundary_seam() -> None:
    rng = np.random.default_rng(5)
    image, landmarks = render_face(0.04)
    face = observed(image, landmarks)
    points = geometry.face_crop_points(landmarks, face.face_crop.shape[0])
    grey = cv2.cvtColor(face.face_crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    top = int(points[geometry.LOWER_LIP_BOTTOM, 1])
    edge = int(points[geometry.CHIN, 1]) - 4
    pasted, fading = [], []
    fade = np.clip(1 - (np.arange(grey.shape[0]) - top) / 40.0, 0, 1)[:, None]
    for _ in range(12):
        noise = rng.normal(0, 6, grey.shape).astype(np.float32)
        box = grey.copy()
        box[top:edge] += noise[top:edge]  # changes inside the box, nothing below its edge
        pasted.append(box)
        fading.append(grey + noise * fade)  # change fading smoothly down the chin
    seam = cues.boundary_seam(np.stack(pasted), points)
    smooth = cues.boundary_seam(np.stack(fading), points)
    assert seam > smooth + 0.3


# ----- tests: the detector -----------------------------------------------------------------


def unit_calibration(weights: dict[str, float] | None = None) -> Calibration:
    """Every cue with mean 0, std 1, fakes reading high: z equals the raw value."""
    weights = weights or {}
    unit = {"window": Stats(0.0, 1.0), "session": Stats(0.0, 1.0)}
    return Calibration(
        {name: CueCalibration(unit, 1, weights.get(name, 1.0)) for name in cues.CUE_NAMES}
    )


def face_window(
    frames: int = 50,
    fps: float = 25.0,
    with_face: int | None = None,
    t_start: float = 12.0,
    seed: int = 0,
) -> AnalysisWindow:
    """A window of synthetic talking-face frames (first ``with_face`` frames have a face)."""
    with_face = frames if with_face is None else with_face
    tracks = speaking_tracks(frames, seed=seed)
    features = []
    for i in range(frames):
        face = None
        if i < with_face:
            aperture = round(float(np.hypot(*(tracks[i, 13] - tracks[i, 14])) / SCALE), 2)
            image, _ = render_face(aperture, seed=i % 3)
            face = observed(image, tracks[i])
        features.append(
            FrameFeatures(t_start + i / fps, int(t_start * fps) + i, (SIDE, SIDE), face)
        )
    audio = AudioFeatures(
        0.0, 0.01, np.zeros((0, 80), np.float32), np.zeros(0, np.float32), np.zeros(0, bool)
    )
    return AnalysisWindow(
        session="t",
        index=0,
        t_start=t_start,
        t_end=t_start + frames / fps,
        context_s=0.0,
        frames=tuple(features),
        samples=np.zeros(0, np.float32),
        audio=audio,
    )


def test_too_few_face_frames_is_insufficient_evidence() -> None:
    detector = TemporalDetector(MonitorConfig(), calibration=unit_calibration())
    evidence = detector.analyze(face_window(frames=20, with_face=5))
    assert evidence.score is None and "insufficient evidence" in evidence.rationale
    assert "5 face frames" in evidence.rationale
    assert detector.summarize() is None  # nothing scored


def test_evidence_names_the_cue_with_its_value_and_span() -> None:
    window = face_window()
    probe = TemporalDetector(MonitorConfig(), calibration=unit_calibration())
    values = probe.measure_window(window)
    assert values is not None and set(values) == set(cues.CUE_NAMES)
    # Calibrate so that this window's lip jitter sits 3.8 sigma above "genuine", the rest at 0.
    stats = {name: Stats(v if math.isfinite(v) else 0.0, 1.0) for name, v in values.items()}
    stats["lip_jitter"] = Stats(values["lip_jitter"] - 3.8 * 0.1, 0.1)
    calibration = Calibration(
        {name: CueCalibration({"window": s, "session": s}, 1, 1.0) for name, s in stats.items()}
    )
    detector = TemporalDetector(MonitorConfig(), calibration=calibration)
    evidence = detector.analyze(window)
    assert evidence.detector == "temporal" and evidence.score is not None
    assert (
        "perioral landmark jitter 3.8 sigma above genuine speech over 00:12.0-00:14.0"
        in evidence.rationale
    )
    assert evidence.fields["cue_z"]["lip_jitter"] == pytest.approx(3.8, abs=0.01)
    assert set(evidence.fields["cue_z"]) == set(cues.CUE_NAMES)
    json.dumps(evidence.to_json())  # events must serialise

    quiet = TemporalDetector(MonitorConfig(), calibration=Calibration(
        {name: CueCalibration({"window": s, "session": s}, 1, 1.0) for name, s in
         {n: Stats(v if math.isfinite(v) else 0.0, 1.0) for n, v in values.items()}.items()}
    ))  # fmt: skip
    calm = quiet.analyze(window)
    assert calm.score is not None and calm.score < evidence.score
    assert "consistent" in calm.rationale


def test_summarize_gives_session_evidence_with_spans() -> None:
    detector = TemporalDetector(MonitorConfig(), calibration=unit_calibration())
    for k in range(3):
        detector.analyze(face_window(t_start=2.0 * k, seed=k))
    session = detector.summarize()
    assert session is not None and session.score is not None
    assert session.fields["windows"] == 3
    assert set(session.fields["cue_z"]) == set(cues.CUE_NAMES)
    assert 0.0 <= session.score <= 1.0


def test_analyze_is_fast_once_frames_are_measured() -> None:
    """Overlapping windows reuse per-frame measures: a window costs a few ms, far below budget."""
    detector = TemporalDetector(MonitorConfig(), calibration=unit_calibration())
    window = face_window()
    started = time.perf_counter()
    detector.analyze(window)
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(5):
        detector.analyze(window)
    again = (time.perf_counter() - started) / 5
    assert first < MonitorConfig().detectors.time_budget_s / 4
    assert again < 0.05


# ----- tests: calibration ------------------------------------------------------------------


def test_committed_calibration_covers_every_cue_with_its_provenance() -> None:
    calibration = load_calibration()
    assert set(calibration.cues) == set(cues.CUE_NAMES)
    assert any(cue.weight > 0 for cue in calibration.cues.values())
    meta = calibration.meta
    assert meta["created"] and meta["real_clips"] and meta["data"].endswith("train")
    data = json.loads(DEFAULT_PATH.read_text())
    assert DEFAULT_PATH.stat().st_size < 20_000 and data["format"] == 1


def test_tracking_other_than_the_calibrations_is_named_at_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calibration = load_calibration()
    assert calibration.meta["tracking"] == {"landmark_interval": 1, "face_crop_size": 256}
    assert calibration.tracking_mismatch(FaceConfig()) is None
    every_second = FaceConfig(landmark_interval=2)
    assert calibration.tracking_mismatch(every_second) == ("landmark_interval 2 (calibrated at 1)")
    with caplog.at_level("WARNING", logger="monitor.detectors.temporal.detector"):
        TemporalDetector(MonitorConfig(), calibration=calibration)
        assert not caplog.records
        TemporalDetector(MonitorConfig(face=every_second), calibration=calibration)
        TemporalDetector(MonitorConfig(face=every_second), calibration=calibration)
    assert len(caplog.records) == 1  # once per process, not per session
    assert "landmark_interval 2 (calibrated at 1)" in caplog.records[0].getMessage()


def test_both_landmark_intervals_have_a_committed_calibration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    every_second = FaceConfig(landmark_interval=2)
    calibration = calibration_for(every_second)
    assert calibration.meta["tracking"] == {"landmark_interval": 2, "face_crop_size": 256}
    assert set(calibration.cues) == set(cues.CUE_NAMES)
    assert any(cue.weight > 0 for cue in calibration.cues.values())
    with caplog.at_level("WARNING", logger="monitor.detectors.temporal.detector"):
        detector = TemporalDetector(MonitorConfig(face=every_second))
    assert detector.calibration.meta["tracking"]["landmark_interval"] == 2
    assert not caplog.records


def test_the_calibration_measured_under_the_sessions_tracking_is_the_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    committed = json.loads(DEFAULT_PATH.read_text())
    default = tmp_path / DEFAULT_PATH.name
    default.write_text(json.dumps(committed))
    monkeypatch.setattr(calibration_module, "DEFAULT_PATH", default)
    every_second = FaceConfig(landmark_interval=2)
    beside = variant_path(every_second)
    assert beside == tmp_path / "temporal_calibration_landmark_interval_2.json"
    assert variant_path(FaceConfig()) == default
    assert calibration_for(every_second).meta["tracking"]["landmark_interval"] == 1  # none yet
    tracking = {"landmark_interval": 2, "face_crop_size": 256}
    beside.write_text(json.dumps({**committed, "tracking": tracking, "created": "beside"}))
    assert calibration_for(every_second).meta["created"] == "beside"
    assert calibration_for(FaceConfig()).meta["created"] == committed["created"]
    third = calibration_for(FaceConfig(landmark_interval=3))  # never measured: the default
    assert third.meta["created"] == committed["created"]
    assert third.tracking_mismatch(FaceConfig(landmark_interval=3)) is not None


def test_bad_calibration_files_raise_detector_error(tmp_path: Path) -> None:
    with pytest.raises(DetectorError, match="not found"):
        load_calibration(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DetectorError, match="not valid JSON"):
        load_calibration(tmp_path / "bad.json")
    good = json.loads(DEFAULT_PATH.read_text())
    good["cues"]["mouth_blur"]["window"]["std"] = 0
    (tmp_path / "zero.json").write_text(json.dumps(good))
    with pytest.raises(DetectorError, match="malformed"):
        load_calibration(tmp_path / "zero.json")


def test_combined_z_uses_weighted_cues_only() -> None:
    calibration = unit_calibration(
        weights={name: 0.0 for name in cues.CUE_NAMES} | {"lip_jitter": 1.0}
    )
    z = {name: 10.0 for name in cues.CUE_NAMES} | {"lip_jitter": 1.5}
    assert calibration.combine(z, "window") == pytest.approx(1.5)
    assert calibration.combine({"mouth_blur": 3.0}, "window") is None  # no weighted cue measured
    assert calibration.score(calibration.center_z) == pytest.approx(0.5)


# ----- tests: real data --------------------------------------------------------------------

REAL_CLIP = (
    Path(__file__).resolve().parents[1].parent
    / "shared/data/dev/real/rizkiarm_LipNet__evaluation_samples_GRID_bbaf2n.mpg"
)


@pytest.mark.shared_data
def test_genuine_grid_clip_is_not_flagged() -> None:
    if not REAL_CLIP.exists():
        pytest.skip(f"{REAL_CLIP} is absent")
    from monitor.training.faces import iter_windows, track_clip

    config = MonitorConfig()
    detector = TemporalDetector(config)
    scores = [
        e.score for e in map(detector.analyze, iter_windows(track_clip(REAL_CLIP), config.window))
    ]
    assert any(s is not None for s in scores)
    session = detector.summarize()
    assert session is not None and session.score is not None and session.score < 0.5


def test_tracked_faces_are_cached_per_tracking_configuration(tmp_path: Path) -> None:
    """A cache of faces tracked on every frame is never read back for every second frame."""
    from monitor.training.faces import cache_path

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not decoded here")
    every, alternate = (cache_path(tmp_path, clip, FaceConfig(landmark_interval=n)) for n in (1, 2))
    assert every != alternate
    assert cache_path(tmp_path, clip) == cache_path(tmp_path, clip, FaceConfig())


def test_the_decision_calibration_leaves_out_what_the_sessions_temporal_calibration_used() -> None:
    from monitor.evaluation.calibration_run import detector_training_files

    for face in (FaceConfig(), FaceConfig(landmark_interval=2)):
        record = json.loads(calibration_file(face).read_text())
        listed = {f"train/{name}" for name in record["real_clips"] + record["fake_clips"]}
        assert listed <= detector_training_files(face)
    assert calibration_file(FaceConfig()) == DEFAULT_PATH
    assert calibration_file(FaceConfig(landmark_interval=3)) == DEFAULT_PATH  # never measured
