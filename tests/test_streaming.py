"""Streaming features: every frame's share of the work is done once, and windows built from
stored per-frame results equal the windows computed from scratch."""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from monitor.config import MonitorConfig
from monitor.detectors.base import Evidence
from monitor.detectors.temporal import cues
from monitor.features.store import FrameStore
from monitor.features.types import FaceObservation, FrameFeatures
from monitor.sync.backends import BatchingRunner, OnnxBackend
from monitor.sync.checkpoint import ONNX_PATH, STREAM_PATHS, WEIGHTS_PATH, weights_digest

needs_model = pytest.mark.skipif(
    not (ONNX_PATH.exists() and WEIGHTS_PATH.exists() and all(p.exists() for p in STREAM_PATHS)),
    reason="sync model or its streaming graphs are not installed",
)
# Window results of the streaming detector against the whole-window one (float rounding).
CURVE_TOLERANCE = 2e-4  # lag-curve distances, which span 0..10
SCORE_TOLERANCE = 1e-4


def _frames(times: list[float]) -> list[FrameFeatures]:
    return [FrameFeatures(t, i, (10, 10), None) for i, t in enumerate(times)]


def test_frame_store_computes_each_frame_once_and_stays_bounded() -> None:
    calls: list[list[int]] = []

    def compute(frames: list[FrameFeatures]) -> list[int]:
        calls.append([f.index for f in frames])
        return [f.index * 10 for f in frames]

    store: FrameStore[int] = FrameStore(compute, max_frames=5)
    frames = _frames([0.0, 0.04, 0.08, 0.12])
    assert store.get(frames[:3]) == [0, 10, 20]
    assert store.get(frames[1:] + frames[1:2]) == [10, 20, 30, 10]
    assert calls == [[0, 1, 2], [3]]  # frame 1 twice in a request is computed once too
    store.forget_before(0.1)
    assert len(store) == 1 and frames[3] in store
    store.add(_frames([float(i) for i in range(8)]))  # indexes 0..7, 3 already stored
    assert len(store) == 5 and store.evicted == 3  # oldest first
    assert store.computed == 4 + 7


def test_frame_store_rejects_a_compute_that_loses_frames() -> None:
    store: FrameStore[int] = FrameStore(lambda frames: [1])
    with pytest.raises(ValueError, match="2 frames"):
        store.get(_frames([0.0, 0.04]))


def test_texture_blurred_around_its_squares_equals_the_whole_crop_blurred() -> None:
    rng = np.random.default_rng(3)
    grey = cv2.GaussianBlur(rng.random((256, 256)).astype(np.float32) * 255, (0, 0), 0.8)
    fine_blur = cv2.GaussianBlur(grey, (0, 0), cues.TEXTURE_FINE_SIGMA)
    fine = np.abs(grey - fine_blur)
    mid = np.abs(fine_blur - cv2.GaussianBlur(grey, (0, 0), cues.TEXTURE_MID_SIGMA))
    # Squares inside, overlapping, at the border and off the crop.
    sets = (
        np.array([[128.0, 128.0], [133.0, 131.0], [3.0, 250.0]]),
        np.array([[40.0, 60.0], [255.0, 0.0], [-30.0, 40.0]]),
    )
    got = cues.skin_textures(grey, sets, radius=10)
    want = tuple(_whole_crop_texture(fine, mid, points, 10) for points in sets)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def _whole_crop_texture(
    fine: np.ndarray, mid: np.ndarray, points: np.ndarray, radius: int
) -> float:
    """The definition: log(fine / mid detail) of the whole crop, summed over the squares."""
    mask = np.zeros(fine.shape, bool)
    for x, y in np.round(points).astype(int):
        mask[
            max(y - radius, 0) : max(y + radius + 1, 0), max(x - radius, 0) : max(x + radius + 1, 0)
        ] = True
    fine_sum, mid_sum = float(fine[mask].sum()), float(mid[mask].sum())
    return math.log(fine_sum / mid_sum) if fine_sum > 0 and mid_sum > 0 else math.nan


@needs_model
def test_streaming_graphs_match_the_checkpoint_they_came_from() -> None:
    import torch

    from monitor.sync.checkpoint import load_checkpoint
    from monitor.sync.model import example_inputs

    backend = OnnxBackend()
    assert backend.streaming and backend.calibration is not None
    model, info = load_checkpoint()
    assert backend.calibration == info.calibration
    rng = np.random.default_rng(0)
    crops, lips, mel = (rng.normal(size=t.shape).astype(np.float32) for t in example_inputs(2, 50))
    with torch.no_grad():
        want = model(torch.from_numpy(crops), torch.from_numpy(lips), torch.from_numpy(mel))
    for got, expected in zip(backend.embed(crops, lips, mel), want, strict=True):
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)
    features = backend.embed_frames(crops[0], lips[0])
    assert features.shape == (50, model.config.frame_features)


@needs_model
def test_stale_streaming_graphs_fall_back_to_the_whole_graph(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = tmp_path / "retrained.pt"
    shutil.copy(WEIGHTS_PATH, other)
    with other.open("ab") as handle:
        handle.write(b"\0")  # other bytes: a checkpoint the graphs were not exported from
    assert weights_digest(other) != weights_digest(WEIGHTS_PATH)
    with caplog.at_level(logging.WARNING, logger="monitor.sync.backends"):
        backend = OnnxBackend(weights=other)
    assert not backend.streaming and backend.session is not None
    assert "not exported from" in caplog.text
    rng = np.random.default_rng(1)
    crops = rng.normal(size=(1, 20, 48, 96)).astype(np.float32)
    lips = rng.normal(size=(1, 20, 83)).astype(np.float32)
    mel = rng.normal(size=(1, 4 * 50, 80)).astype(np.float32)
    video, audio = backend.embed(crops, lips, mel)
    assert video.shape[:2] == (1, 20) and audio.shape[:2] == (1, 50)


@needs_model
def test_runner_batches_concurrent_frame_requests() -> None:
    runner = BatchingRunner("onnx", gather_s=0.05)
    backend = OnnxBackend()
    try:
        rng = np.random.default_rng(2)
        requests = [
            (rng.normal(size=(n, 48, 96)).astype(np.float32), rng.normal(size=(n, 83)))
            for n in (3, 12, 1)
        ]
        results: dict[int, np.ndarray] = {}
        barrier = threading.Barrier(len(requests))

        def call(i: int) -> None:
            barrier.wait()
            results[i] = runner.embed_frames(*requests[i])

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert runner.requests_run == 3 and runner.batches_run < 3
        for i, (crops, lips) in enumerate(requests):
            np.testing.assert_allclose(
                results[i], backend.embed_frames(crops, lips.astype(np.float32)), atol=1e-5
            )
    finally:
        runner.close()


class _WholeWindowRunner:
    """The shared runner without its streaming calls: the detector's whole-window path."""

    streaming = False

    def __init__(self, runner: BatchingRunner) -> None:
        self._runner = runner
        self.name = runner.name
        self.calibration = runner.calibration

    def embed(self, *arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._runner.embed(*arrays)


def _windows(path: Path, keep_frame=lambda index: True) -> list:  # noqa: ANN001
    """The pipeline's windows of a call, frames thinned by ``keep_frame(index)``."""
    from monitor.media import VideoFrame
    from monitor.pipeline import SessionAnalyzer
    from monitor.sources.file import FileSource

    windows = []

    class Keep:
        name, version = "keep", "0"

        def analyze(self, window):  # noqa: ANN001, ANN202
            windows.append(window)
            return Evidence("keep", None, "kept")

    config = MonitorConfig()
    config.window.min_frames_fraction = 0.0  # thinned windows too: the detectors are compared
    analyzer = SessionAnalyzer(
        config, session="s", participant="p", emit=lambda e: None, detectors={"k": Keep()}
    )
    with FileSource(path) as source:
        analyzer.start(source.info)
        for item in source:
            if isinstance(item, VideoFrame):
                if keep_frame(item.index):
                    analyzer.add_video(item)
            else:
                analyzer.add_audio(item)
    analyzer.finish()
    return windows


@needs_model
@pytest.mark.slow
@pytest.mark.parametrize(
    ("call", "keep"),
    [
        ("sync", lambda i: True),
        ("plus300", lambda i: True),
        ("sync", lambda i: i % 7 not in (3, 4)),  # dropped frames: steps without a face
    ],
)
def test_streaming_detector_equals_the_whole_window_detector(
    synthetic_calls: dict[str, Path],
    call: str,
    keep,  # noqa: ANN001
) -> None:
    from monitor.detectors.lip_sync_learned import LearnedSyncDetector
    from monitor.sync.backends import shared_runner

    runner = shared_runner("onnx")
    assert runner.streaming
    streaming = LearnedSyncDetector(MonitorConfig(), runner=runner)
    whole = LearnedSyncDetector(MonitorConfig(), runner=_WholeWindowRunner(runner))
    assert streaming._frame_embeddings is not None and whole._frame_embeddings is None
    windows = _windows(synthetic_calls[call], keep)
    scored = 0
    for window in windows:
        got, want = streaming.analyze(window), whole.analyze(window)
        assert got.rationale.split(" (")[0] == want.rationale.split(" (")[0]
        if want.score is None:
            assert got.score is None
            continue
        scored += 1
        assert got.score == pytest.approx(want.score, abs=SCORE_TOLERANCE)
        np.testing.assert_allclose(
            got.fields["lag_curve"], want.fields["lag_curve"], atol=CURVE_TOLERANCE
        )
        assert got.fields["offset_ms"] == want.fields["offset_ms"]
        assert got.fields["scored_frames"] == want.fields["scored_frames"]
    assert scored >= 10
    # Each frame embedded once, although every frame lies in up to four windows.
    store = streaming._frame_embeddings
    face_frames = {f.index for w in windows for f in w.frames if f.face is not None}
    assert store.computed <= len(face_frames)
    assert len(store) <= 2 * 25 * 2  # only the frames of the windows still to come
    summary_got, summary_want = streaming.summarize(), whole.summarize()
    assert summary_got is not None and summary_want is not None
    assert summary_got.score == pytest.approx(summary_want.score, abs=SCORE_TOLERANCE)


def test_runner_runs_submitted_calls_in_order_and_reports_their_failure() -> None:
    from monitor.detectors.runner import DetectorRunner

    runner = DetectorRunner("t")
    seen: list[int] = []
    try:
        for i in range(5):
            runner.submit(lambda i=i: seen.append(i))
        result, _ = runner.call(lambda: list(seen), 5.0)
        assert result == [0, 1, 2, 3, 4]  # every submitted call ran before the waited one
        assert runner.background_seconds >= 0.0

        def fail() -> None:
            raise ValueError("bad frame")

        runner.submit(fail)
        with pytest.raises(ValueError, match="bad frame"):
            runner.call(lambda: None, 5.0)
        assert runner.call(lambda: "fine", 5.0)[0] == "fine"  # reported once
    finally:
        runner.close()


def _session_with(detector):  # noqa: ANN001, ANN202
    """A session whose only detector is ``detector``, its events discarded."""
    from monitor.pipeline import SessionAnalyzer

    return SessionAnalyzer(
        MonitorConfig(), session="s", participant="p", emit=lambda e: None,
        detectors={detector.name: detector},
    )  # fmt: skip


def test_session_hands_every_frame_to_observe_before_its_windows(
    synthetic_calls: dict[str, Path],
) -> None:
    from tests.windows_factory import feed_file

    class Observer:
        name, version = "observer", "0"

        def __init__(self) -> None:
            self.observed: list[int] = []
            self.late: list[int] = []

        def observe(self, frame: FrameFeatures) -> None:
            self.observed.append(frame.index)

        def analyze(self, window):  # noqa: ANN001, ANN202
            seen = set(self.observed)
            self.late += [f.index for f in window.frames if f.index not in seen]
            return Evidence(self.name, None, "watched")

    observer = Observer()
    analyzer = _session_with(observer)
    summary = feed_file(analyzer, synthetic_calls["short"])
    assert observer.observed == list(range(summary["video_frames"]))
    assert observer.late == []


def _face(track_id: int = 0) -> FaceObservation:
    from tests.windows_factory import face_with_aperture

    return dataclasses.replace(face_with_aperture(0.0), track_id=track_id)


def test_frame_buffer_releases_the_face_crops_of_one_face_frames_before_a_time() -> None:
    from monitor.windows import FrameBuffer

    buffer = FrameBuffer()
    two = (_face(1), _face(2))
    for i in range(10):
        faces = two if i == 3 else ()
        buffer.add(FrameFeatures(i * 0.04, i, (10, 10), faces[0] if faces else _face(), faces))
    buffer.add(FrameFeatures(0.4, 10, (10, 10), None))
    buffer.release_face_crops(0.2)  # frames 0-4
    kept = [f.index for f in buffer.select(0.0, 1.0) if f.face and f.face.face_crop is not None]
    assert kept == [3, 5, 6, 7, 8, 9]  # frame 3 has two faces: a later window may pick either
    assert buffer.face_crops_released == 4
    buffer.trim_before(0.1)  # frames 0-2 go
    buffer.release_face_crops(0.3)  # frames 5-7, each once
    buffer.release_face_crops(0.3)
    assert buffer.face_crops_released == 7
    kept = [f.index for f in buffer.select(0.0, 1.0) if f.face and f.face.face_crop is not None]
    assert kept == [3, 8, 9]


def _score_events(
    path: Path, monkeypatch: pytest.MonkeyPatch, *, release: bool
) -> tuple[list[dict], int]:
    from monitor.pipeline import SessionAnalyzer
    from monitor.windows import FrameBuffer
    from tests.windows_factory import feed_file

    events: list[dict] = []
    with monkeypatch.context() as patch:
        if not release:
            patch.setattr(FrameBuffer, "release_face_crops", lambda self, before: None)
        analyzer = SessionAnalyzer(
            MonitorConfig(), session="s", participant="p", emit=events.append
        )
        feed_file(analyzer, path)
    released = analyzer._windower.frames.face_crops_released
    scores = [
        {k: v for k, v in e.items() if k not in ("ts", "inference_ms")}
        for e in events
        if e["type"] == "score"
    ]
    return scores, released


@pytest.mark.slow
@pytest.mark.parametrize("call", ["sync", "plus300"])
def test_sessions_that_release_face_crops_score_every_window_the_same(
    synthetic_calls: dict[str, Path], monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    """The default detectors measure each face crop once, in ``observe``; windows after the
    first holding a frame read their stores, so dropping the crop changes no score."""
    released, count = _score_events(synthetic_calls[call], monkeypatch, release=True)
    kept, none = _score_events(synthetic_calls[call], monkeypatch, release=False)
    assert none == 0 and count > 100
    assert len(released) == len(kept) >= 10
    scored = {item["detector"] for e in kept for item in e["evidence"] if item["score"] is not None}
    assert scored == {"lip_sync", "lip_timing", "temporal", "artifact"}
    for got, want in zip(released, kept, strict=True):
        assert got == want


def test_a_detector_that_reads_window_face_crops_keeps_them_for_the_session(
    synthetic_calls: dict[str, Path],
) -> None:
    from tests.windows_factory import feed_file

    class CropReader:
        name, version = "crop_reader", "0"  # says nothing about face crops: they stay

        def __init__(self) -> None:
            self.frames_without_crop = 0
            self.face_frames = 0

        def analyze(self, window):  # noqa: ANN001, ANN202
            for frame in window.face_frames:
                self.face_frames += 1
                self.frames_without_crop += frame.face.face_crop is None
            return Evidence(self.name, None, "looked")

    reader = CropReader()
    analyzer = _session_with(reader)
    feed_file(analyzer, synthetic_calls["sync"])
    assert reader.face_frames > 300 and reader.frames_without_crop == 0  # in 4 windows each
    assert analyzer._windower.frames.face_crops_released == 0
