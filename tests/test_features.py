"""Feature stage: MediaPipe face tracking and crops on real images, audio features on
tones, noise, silence and synthetic speech (espeak-ng)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import soundfile
from skimage import data as skdata

from monitor.config import AudioConfig, FaceConfig
from monitor.features.audio import (
    AudioFeatureExtractor,
    NoiseFloorTracker,
    compute_audio_features,
)
from monitor.features.face import LIP_INDICES, FaceModels, FaceTracker, create_face_tracker
from monitor.media import AUDIO_RATE, VideoFrame

RATE = AUDIO_RATE

# ---------------------------------------------------------------------------- face


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()  # 512x512 RGB, one frontal face


def test_tracker_finds_the_astronaut(astronaut: np.ndarray) -> None:
    config = FaceConfig()
    tracker = create_face_tracker(config)
    assert isinstance(tracker, FaceTracker)
    try:
        face = tracker.track(VideoFrame(t=0.0, index=0, image=astronaut))
    finally:
        tracker.close()
    assert face is not None
    x0, y0, x1, y1 = face.face_box
    # The face sits around x 180-270, y 70-180 in this image.
    assert 150 < x0 < x1 < 300 and 40 < y0 < y1 < 210
    assert 60 < x1 - x0 < 140 and 70 < y1 - y0 < 150
    assert face.landmarks.shape == (478, 2) and face.landmarks.dtype == np.float32
    assert face.lip_landmarks.shape == (40, 2) and len(set(LIP_INDICES)) == 40
    np.testing.assert_array_equal(face.lip_landmarks, face.landmarks[list(LIP_INDICES)])
    lips = face.lip_landmarks
    assert (lips[:, 0] > x0).all() and (lips[:, 0] < x1).all() and (lips[:, 1] > y0).all()
    # She smiles with her teeth showing: lips parted, a wide mouth.
    assert 0.01 < face.aperture < 0.2
    assert 0.3 < face.mouth_width < 0.8
    assert face.mouth_crop.shape == (*config.mouth_crop_size, 3)
    assert face.face_crop.shape == (config.face_crop_size, config.face_crop_size, 3)
    assert face.mouth_crop.dtype == np.uint8 and face.face_crop.dtype == np.uint8
    # The mouth crop is the lower face: red lips and white teeth in its lower half.
    lower = face.mouth_crop[face.mouth_crop.shape[0] // 3 :].astype(int)
    assert (lower[..., 0] - lower[..., 2] > 40).any(), "no lip red in the mouth crop"


_TRACK_IN_A_FRESH_PROCESS = """
import sys
import numpy as np
from skimage import data
if sys.argv[1] == "whole":
    import mediapipe
from monitor.config import FaceConfig
from monitor.features.face import create_face_tracker
from monitor.media import VideoFrame
tracker = create_face_tracker(FaceConfig())
face = tracker.track(VideoFrame(t=0.0, index=0, image=data.astronaut()))
tracker.close()
np.save(sys.argv[2], face.landmarks)
print(" ".join(m for m in ("mediapipe.python.solutions", "matplotlib") if m in sys.modules))
import mediapipe
assert mediapipe.solutions.face_mesh.FaceMesh and mediapipe.__version__
"""


def test_tracking_starts_without_mediapipes_solutions(tmp_path: Path) -> None:
    """The tracker needs MediaPipe's graph runtime only: the package's solutions (and
    matplotlib with them) stay unloaded until something asks for them, and the landmarks
    equal those of a process that imported the whole package first."""
    found = {}
    for mode in ("runtime", "whole"):
        out = tmp_path / f"{mode}.npy"
        done = subprocess.run(
            [sys.executable, "-c", _TRACK_IN_A_FRESH_PROCESS, mode, str(out)],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        found[mode] = (done.stdout.split(), np.load(out))
    assert found["runtime"][0] == []
    assert "matplotlib" in found["whole"][0]
    np.testing.assert_array_equal(found["runtime"][1], found["whole"][1])


def test_crops_are_rotation_aligned(astronaut: np.ndarray) -> None:
    """Rolling the head by 20 degrees must give (almost) the same upright crops."""
    matrix = cv2.getRotationMatrix2D((225.0, 125.0), 20.0, 1.0)
    rolled = cv2.warpAffine(astronaut, matrix, (512, 512), borderMode=cv2.BORDER_REFLECT)
    crops = []
    for image in (astronaut, rolled):
        tracker = create_face_tracker(FaceConfig())
        face = tracker.track(VideoFrame(0.0, 0, image)) or tracker.track(VideoFrame(0.04, 1, image))
        tracker.close()
        assert face is not None
        crops.append(face)
    upright, tilted = crops
    for a, b in ((upright.mouth_crop, tilted.mouth_crop), (upright.face_crop, tilted.face_crop)):
        difference = np.abs(a.astype(float) - b.astype(float)).mean()
        unrelated = np.abs(a.astype(float) - np.roll(b, b.shape[1] // 3, axis=1)).mean()
        assert difference < 20 and difference < unrelated / 2
    assert tilted.aperture == pytest.approx(upright.aperture, rel=0.3)


def test_tracker_returns_none_without_a_face(astronaut: np.ndarray) -> None:
    tracker = create_face_tracker(FaceConfig())
    try:
        assert tracker.track(VideoFrame(0.0, 0, np.zeros((360, 640, 3), np.uint8))) is None
        assert tracker.track(VideoFrame(0.04, 1, np.full((360, 640, 3), 200, np.uint8))) is None
        # ...and finds one again when a face shows up (tracking state recovers).
        found = tracker.track(VideoFrame(0.08, 2, astronaut))
        found = found or tracker.track(VideoFrame(0.12, 3, astronaut))
        assert found is not None
    finally:
        tracker.close()


def test_large_frames_map_back_to_full_resolution(astronaut: np.ndarray) -> None:
    """Frames over the tracking size are tracked downscaled; landmarks must be full-size."""
    big = cv2.resize(astronaut, (1536, 1536), interpolation=cv2.INTER_LINEAR)
    tracker = create_face_tracker(FaceConfig())
    try:
        small_face = tracker.track(VideoFrame(0.0, 0, astronaut))
        tracker.close()
        tracker = create_face_tracker(FaceConfig())
        big_face = tracker.track(VideoFrame(0.0, 0, big))
    finally:
        tracker.close()
    assert small_face is not None and big_face is not None
    np.testing.assert_allclose(np.array(big_face.face_box) / 3, small_face.face_box, atol=6)
    assert big_face.aperture == pytest.approx(small_face.aperture, abs=0.02)


def test_aspect_ratio_switch_mid_session(astronaut: np.ndarray) -> None:
    """A resolution switch must not carry a stale tracking region into the new frames."""
    tracker = create_face_tracker(FaceConfig())
    try:
        first = tracker.track(VideoFrame(0.0, 0, astronaut))
        cropped = tracker.track(VideoFrame(0.04, 1, np.ascontiguousarray(astronaut[:400])))
    finally:
        tracker.close()
    assert first is not None and cropped is not None
    np.testing.assert_allclose(cropped.face_box, first.face_box, atol=4)


def _side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.hstack([left, right]))


def test_two_faces_get_two_tracks_and_a_returning_face_its_old_id(astronaut: np.ndarray) -> None:
    head = astronaut[0:300, 75:375]  # a face large enough for the short-range detector
    mirrored = head[:, ::-1]
    both = _side_by_side(head, mirrored)
    alone = _side_by_side(head, np.zeros_like(mirrored))
    tracker = create_face_tracker(FaceConfig())
    try:
        seen = []
        for index in range(40):
            image = alone if 10 <= index < 20 else both  # the right face leaves for 0.4 s
            faces = tracker.track_faces(VideoFrame(index * 0.04, index, image))
            seen.append({f.face_box[0] >= 300: f.track_id for f in faces})  # right? -> id
        primary = tracker.track(VideoFrame(1.6, 40, both))
    finally:
        tracker.close()
    left, right = seen[5][False], seen[5][True]
    assert left != right and all(s == seen[5] for s in seen[:10])
    assert all(s == {False: left} for s in seen[11:20])
    # Back within the next search for faces (a quarter second while a face is missing).
    assert all(s == {False: left, True: right} for s in seen[27:])
    assert primary is not None and primary.track_id == min(left, right)  # the oldest track


def test_sessions_on_parallel_threads_share_one_full_range_detector(
    astronaut: np.ndarray,
) -> None:
    """Landmark and short-range graphs: up to one per core; the full-range detector (the
    once-a-second search for further faces): one in all, whatever the concurrency."""
    import threading

    models = FaceModels(FaceConfig().min_detection_confidence)
    small = np.ascontiguousarray(astronaut[::2, ::2])  # 256 px, the face about 60 px
    found: list[int] = []
    start = threading.Barrier(4)

    def session() -> None:
        start.wait()
        for _ in range(5):
            found.append(len(models.detect(small, full_range=True)))
            faces = models.detect(small)
            if faces:
                assert models.landmarks(small, faces[0]) is not None

    threads = [threading.Thread(target=session) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        models.close()
    assert found == [1] * 20
    cores = len(os.sched_getaffinity(0))
    assert models.graphs_made("full_range") == 1
    assert 1 <= models.graphs_made("landmarks") <= min(cores, 4)
    assert 1 <= models.graphs_made("detection") <= min(cores, 4)


def test_flow_between_landmark_frames_follows_a_moving_face(astronaut: np.ndarray) -> None:
    """Every second frame carried by optical flow stays close to running the model."""
    shifts = [(int(round(3 * i)), int(round(1.5 * i))) for i in range(12)]
    frames = [
        VideoFrame(i * 0.04, i, cv2.warpAffine(astronaut, np.float32([[1, 0, dx], [0, 1, dy]]),
                                               (512, 512), borderMode=cv2.BORDER_REFLECT))
        for i, (dx, dy) in enumerate(shifts)
    ]  # fmt: skip
    every, alternate = (create_face_tracker(FaceConfig(landmark_interval=n)) for n in (1, 2))
    try:
        full = [every.track(f) for f in frames]
        carried = [alternate.track(f) for f in frames]
    finally:
        every.close()
        alternate.close()
    assert alternate.flow_frames >= 5 and alternate.landmark_frames + alternate.flow_frames == 12
    for a, b in zip(full, carried, strict=True):
        assert a is not None and b is not None
        error = np.linalg.norm(a.lip_landmarks - b.lip_landmarks, axis=1)
        assert np.median(error) < 2.0 and error.max() < 6.0
        assert abs(a.aperture - b.aperture) < 0.01


# ---------------------------------------------------------------------------- audio


def mel_centre_hz(n_mels: int = 80, fmin: float = 55.0, fmax: float = 7600.0) -> np.ndarray:
    mel = np.linspace(2595 * np.log10(1 + fmin / 700), 2595 * np.log10(1 + fmax / 700), n_mels + 2)
    return (700 * (10 ** (mel / 2595) - 1))[1:-1]


def tone(freq: float, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(seconds * RATE)) / RATE)).astype(
        np.float32
    )


def to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    frame = av.AudioFrame.from_ndarray(
        samples[None, :].astype(np.float32), format="flt", layout="mono"
    )
    frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
    out = resampler.resample(frame) + resampler.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in out])


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    wav = tmp_path_factory.mktemp("speech") / "speech.wav"
    text = "hello world, this is a test of the speech detector"
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, timeout=30)
    samples, rate = soundfile.read(wav, dtype="float32")
    return to_16k(samples, rate)


@pytest.mark.parametrize("freq", [440.0, 2000.0])
def test_tone_peaks_in_its_mel_band(freq: float) -> None:
    features = compute_audio_features(tone(freq, 1.0), t0=0.0, config=AudioConfig())
    assert features.log_mel.shape == (100, 80) and features.log_mel.dtype == np.float32
    peak = int(np.argmax(features.log_mel[5:-5].mean(axis=0)))
    expected = int(np.argmin(np.abs(mel_centre_hz() - freq)))
    assert abs(peak - expected) <= 1
    # RMS of a 0.3 sine is 0.3/sqrt(2): -13.5 dBFS.
    np.testing.assert_allclose(features.loudness_db[2:-2], -13.47, atol=0.3)
    assert not features.voiced.any(), "a steady pure tone is not voice"


def test_silence_and_noise_are_not_voiced() -> None:
    silence = compute_audio_features(np.zeros(RATE, np.float32), 0.0)
    assert not silence.voiced.any()
    assert (silence.loudness_db <= -100).all() and np.isfinite(silence.log_mel).all()
    noise = np.random.default_rng(0).standard_normal(2 * RATE).astype(np.float32) * 0.1
    assert compute_audio_features(noise, 0.0).voiced.mean() < 0.05
    hum = 0.01 * np.random.default_rng(1).standard_normal(RATE).astype(np.float32)
    assert not compute_audio_features(hum, 0.0, noise_floor_db=-90.0).voiced.any(), (
        "-40 dBFS white noise is flat, not speech"
    )


def test_speech_is_mostly_voiced_and_pauses_are_not(speech: np.ndarray) -> None:
    pause = np.zeros(RATE, np.float32)
    noisy = np.concatenate([pause, speech, pause])
    noisy += 0.001 * np.random.default_rng(2).standard_normal(len(noisy)).astype(np.float32)
    features = compute_audio_features(noisy, t0=10.0)
    times = features.times
    during = (times > 10.0 + 1.0) & (times < 10.0 + 1.0 + len(speech) / RATE)
    before = times < 10.0 + 0.9
    after = times > 10.0 + 1.0 + len(speech) / RATE + 0.2
    assert features.voiced[during].mean() > 0.6
    assert not features.voiced[before].any() and not features.voiced[after].any()


def test_time_convention_rows_are_centred_on_t0_plus_i_hop() -> None:
    samples = np.zeros(RATE, np.float32)
    click_at = 4321  # samples
    samples[click_at : click_at + 16] = 0.8
    features = compute_audio_features(samples, t0=5.0)
    assert features.hop_s == pytest.approx(0.01) and len(features) == 100
    loudest = features.times[int(np.argmax(features.loudness_db))]
    assert loudest == pytest.approx(5.0 + click_at / RATE, abs=0.005)
    # Features of a later sub-span equal the whole span's rows at the same times.
    speechlike = np.random.default_rng(3).standard_normal(RATE).astype(np.float32)
    whole = compute_audio_features(speechlike, t0=2.0)
    part = compute_audio_features(speechlike[1600:], t0=2.1)
    assert len(part) == 90 and part.times[0] == pytest.approx(whole.times[10])
    np.testing.assert_allclose(part.log_mel[2:-2], whole.log_mel[12:-2], atol=1e-4)
    # n samples give ceil(n / hop) rows.
    assert len(compute_audio_features(np.zeros(161, np.float32), 0.0)) == 2
    assert len(compute_audio_features(np.zeros(0, np.float32), 0.0)) == 0


def test_noise_floor_tracker_steadies_short_spans(speech: np.ndarray) -> None:
    rng = np.random.default_rng(4)
    background = 0.003 * rng.standard_normal(5 * RATE).astype(np.float32)  # about -50 dBFS
    extractor = AudioFeatureExtractor(AudioConfig())
    extractor.compute(background, 0.0)
    floor = extractor.noise_floor.floor_db
    assert floor is not None and -56 < floor < -44
    # A short span that is nearly all speech: its own 10th percentile is speech itself,
    # so alone it under-detects; with the session floor it is voiced throughout speech.
    burst = speech[: int(0.8 * RATE)] + 0.003 * rng.standard_normal(int(0.8 * RATE)).astype(
        np.float32
    )
    alone = compute_audio_features(burst, 5.0)
    with_floor = extractor.compute(burst, 5.0)
    assert with_floor.voiced.mean() >= alone.voiced.mean()
    assert with_floor.voiced.mean() > 0.5
    # The floor moves slowly: one loud span barely shifts it.
    assert abs(extractor.noise_floor.floor_db - floor) < 3


def test_noise_floor_tracker_forgets_slowly() -> None:
    tracker = NoiseFloorTracker(time_constant_s=5.0)
    assert tracker.floor_db is None
    tracker.update(np.full(1000, -70.0))
    assert tracker.floor_db == pytest.approx(-70, abs=1)
    for _ in range(10):  # 30 s of a louder room
        tracker.update(np.full(300, -40.0))
    assert tracker.floor_db == pytest.approx(-40, abs=1)


def test_features_are_fast_enough() -> None:
    import time

    span = np.random.default_rng(5).standard_normal(int(3.2 * RATE)).astype(np.float32)
    compute_audio_features(span, 0.0)
    start = time.perf_counter()
    for _ in range(10):
        compute_audio_features(span, 0.0)
    per_span_ms = (time.perf_counter() - start) / 10 * 1000
    assert per_span_ms < 25, f"{per_span_ms:.1f} ms for 3.2 s (target 1-2 ms on a quiet core)"


def test_speech_file_fixture_is_real(speech: np.ndarray, tmp_path: Path) -> None:
    """Guard: the espeak fixture is seconds of audible audio, so the tests above mean it."""
    assert 2.0 < len(speech) / RATE < 6.0
    assert np.sqrt(np.mean(speech**2)) > 0.02
