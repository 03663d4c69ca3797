"""The sync model's training data: call re-encodes keep the picture on time; the splits."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from monitor.media import VideoFrame
from monitor.sources.file import FileSource
from monitor.training.call_variants import CallVariant, nearest_frames, reencode_call

FPS = 25
N_FRAMES = 28
STEP = 8  # grey levels per frame: coarse enough to survive YUV rounding


def write_ramp(path: Path) -> Path:
    """Frame i is uniformly grey at level 20 + STEP * i: its picture tells its source time."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height = 64, 48
        video.pix_fmt = "yuv420p"
        video.codec_context.time_base = Fraction(1, FPS)
        video.options = {"crf": "0"}
        audio = out.add_stream("aac", rate=48000, layout="mono")
        for i in range(N_FRAMES):
            frame = av.VideoFrame.from_ndarray(
                np.full((48, 64, 3), 20 + STEP * i, np.uint8), "rgb24"
            )
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        silence = np.zeros((1, 1024), np.float32)
        for start in range(0, 48000 * N_FRAMES // FPS, 1024):
            frame = av.AudioFrame.from_ndarray(silence, format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 48000, start, Fraction(1, 48000)
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    return path


def test_nearest_frames() -> None:
    times = np.arange(10) / 25
    np.testing.assert_array_equal(
        nearest_frames(times, np.array([0.0, 0.03, 0.05, 0.39])), [0, 1, 1, 9]
    )
    assert nearest_frames(times, np.array([0.02]))[0] == 0  # a tie goes to the earlier frame


@pytest.mark.parametrize("fps", [15.0, 20.0, 30.0])
def test_call_reencode_shows_each_tick_the_picture_of_its_time(tmp_path: Path, fps: float) -> None:
    source = write_ramp(tmp_path / "ramp.mp4")
    variant = CallVariant("t", fps, 64, "libx264", 700, 24, 0.0, 0.0, None)
    out = tmp_path / "call.mkv"
    reencode_call(source, out, variant, seed=0)
    errors = []
    with FileSource(out) as media:
        for item in media:
            if isinstance(item, VideoFrame):
                shown = (float(item.image.mean()) - 20) / STEP / FPS  # source time of the picture
                errors.append(shown - item.t)
    errors = np.array(errors[1:-1])
    # Nearest frame: within half a source frame (plus a quarter frame of reading noise from
    # the lossy encode), and no lag on average (the latest frame before each tick would be
    # 13-20 ms late on average at these rates).
    assert np.abs(errors).max() <= 0.75 / FPS + 0.002
    assert abs(errors.mean()) < 0.006
