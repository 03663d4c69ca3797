"""The one windower: its schedule, readiness and trimming, and that every consumer of a
file (the live/replay session, the report, the training data) cuts the same windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monitor.config import MonitorConfig
from monitor.detectors.base import Evidence
from monitor.features.types import FrameFeatures
from monitor.media import AUDIO_RATE, AudioChunk
from monitor.pipeline import SessionAnalyzer
from monitor.windows import AUDIO_STALL_S, AnalysisWindow, Windower, WindowSchedule
from tests.windows_factory import feed_file


def frame(t: float, index: int = 0) -> FrameFeatures:
    return FrameFeatures(t, index, (48, 64), None)


def tone(t: float, seconds: float) -> AudioChunk:
    n = int(round(seconds * AUDIO_RATE))
    return AudioChunk(t, (0.1 * np.sin(np.arange(n) * 0.05)).astype(np.float32))


def feed_video(windower: Windower, until_s: float, fps: float = 25.0) -> list[AnalysisWindow]:
    out = []
    for i in range(int(round(until_s * fps)) + 1):
        windower.add_frame(frame(i / fps, i))
        out += windower.windows()
    return out


def test_windows_lie_at_multiples_of_the_hop_whatever_the_first_frame() -> None:
    windower = Windower(WindowSchedule(2.0, 0.5, 0.6), has_audio=False)
    windows = []
    for i in range(13, 200):  # video starts at 0.52 s
        windower.add_frame(frame(i / 25.0, i))
        windows += windower.windows()
    assert [w.t_start for w in windows[:3]] == [0.0, 0.5, 1.0]
    assert all(w.t_end - w.t_start == 2.0 for w in windows)
    first = windows[0]
    assert first.frames[0].t == pytest.approx(0.52) and first.frames[-1].t < 2.0
    assert len(first.samples) == int(3.2 * AUDIO_RATE) and not first.samples.any()


def test_a_window_waits_for_its_audio_context_unless_the_audio_stalls() -> None:
    windower = Windower(WindowSchedule(2.0, 0.5, 0.6))
    windower.add_audio(tone(0.0, 2.5))  # short of 2.0 + 0.6
    assert feed_video(windower, 2.2) == []
    windower.add_audio(tone(2.5, 0.1))
    assert [w.t_start for w in windower.windows()] == [0.0]
    # No more audio: once the video runs AUDIO_STALL_S ahead, windows go on without it.
    later = feed_video(windower, 2.6 + AUDIO_STALL_S + 1.0)
    assert later and later[0].t_start == 0.5


def test_the_end_of_media_cuts_the_last_window_within_one_frame() -> None:
    windower = Windower(WindowSchedule(2.0, 0.5, 0.6), has_audio=False)
    windows = feed_video(windower, 3.96)  # last frame at 3.96, so [2, 4) is complete
    windower.end_of_media()
    windows += windower.windows()
    assert [w.t_start for w in windows] == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_a_partial_tail_covers_the_media_to_its_last_frame() -> None:
    windower = Windower(WindowSchedule(4.16, 4.0, 0.6, partial_tail=True), has_audio=False)
    windows = feed_video(windower, 9.0)
    windower.end_of_media()
    windows += windower.windows()
    assert [w.t_start for w in windows] == [0.0, 4.0, 8.0]
    assert windows[-1].frames[-1].t == pytest.approx(9.0)


def test_buffers_are_trimmed_behind_each_window() -> None:
    windower = Windower(WindowSchedule(2.0, 0.5, 0.6))
    for i in range(25 * 60):
        t = i / 25.0
        windower.add_audio(tone(t, 0.04))
        windower.add_frame(frame(t, i))
        list(windower.windows())
    assert len(windower.frames) <= 2.0 * 25 + 20  # one window plus what is not due yet
    assert len(windower.audio.samples) <= (2.0 + 2 * 0.6 + 1.0 + 1.0) * AUDIO_RATE


def test_the_noise_floor_is_shared_across_windows() -> None:
    """Windows after the first judge voicing against the session's floor, not their own."""
    windower = Windower(WindowSchedule(2.0, 0.5, 0.6))
    windower.add_audio(tone(0.0, 12.0))
    windows = feed_video(windower, 10.0)
    assert windower._features.noise_floor.floor_db is not None
    assert len(windows) > 5


# ----- one file, three consumers, identical windows ----------------------------------------


class _Recorder:
    """A detector that keeps every window the session gives it."""

    name = "recorder"
    version = "1"

    def __init__(self) -> None:
        self.windows: list[AnalysisWindow] = []

    def analyze(self, window: AnalysisWindow) -> Evidence:
        self.windows.append(window)
        return Evidence(self.name, None, "recording only")


def _session_windows(path: Path, config: MonitorConfig) -> list[AnalysisWindow]:
    recorder = _Recorder()
    analyzer = SessionAnalyzer(
        config, session="s", participant="p", emit=lambda e: None, detectors={"rec": recorder}
    )
    feed_file(analyzer, path)
    return recorder.windows


def _training_windows(path: Path) -> list[AnalysisWindow]:
    from monitor.training.sync_data import CachedClip, clip_windows, extract_clip

    return list(clip_windows(CachedClip(path.stem, "test", "file", extract_clip(path))))


def _report_windows(path: Path, config: MonitorConfig, spans) -> list[AnalysisWindow | None]:  # noqa: ANN001
    from monitor.report.media import trace_media

    trace = trace_media(
        path, audio_path=None, config=config, detail_spans=spans, still_times=[], learned=None
    )
    return trace.details


def _assert_same_cut(a: AnalysisWindow, b: AnalysisWindow) -> None:
    assert (a.index, a.t_start, a.t_end, a.context_s) == (b.index, b.t_start, b.t_end, b.context_s)
    assert [f.t for f in a.frames] == [f.t for f in b.frames]
    assert [f.face is None for f in a.frames] == [f.face is None for f in b.frames]
    for fa, fb in zip(a.frames, b.frames, strict=True):
        if fa.face is not None and fb.face is not None:
            np.testing.assert_array_equal(fa.face.lip_landmarks, fb.face.lip_landmarks)
            assert fa.face.aperture == pytest.approx(fb.face.aperture, abs=1e-6)
    np.testing.assert_array_equal(a.samples, b.samples)
    np.testing.assert_array_equal(a.audio.log_mel, b.audio.log_mel)
    np.testing.assert_array_equal(a.audio.voiced, b.audio.voiced)


def test_training_data_report_and_session_cut_identical_windows(
    synthetic_calls: dict[str, Path],
) -> None:
    path = synthetic_calls["sync"]
    config = MonitorConfig()
    session = _session_windows(path, config)
    assert len(session) >= 3
    training = _training_windows(path)
    report = _report_windows(path, config, [(w.t_start, w.t_end) for w in session])
    assert len(training) == len(session) == len(report)
    for live, train, rep in zip(session, training, report, strict=True):
        assert rep is not None
        _assert_same_cut(live, train)
        _assert_same_cut(live, rep)
