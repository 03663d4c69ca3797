"""Two calls side by side, with the first call's audio: a second face in the frame.

The same composite as issue 16's ffmpeg command (``[0:v]scale=-2:320[a];
[1:v]scale=320:320,fps=25[b];[a][b]hstack=shortest=1``, the audio of the first input):
the speaker's video scaled to 320 px high, the other face to 320x320, side by side,
ending with the shorter. ``still`` freezes the other face on its first frame (a photo
beside the speaker); ``speaker_left=False`` puts the speaker on the right.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

HEIGHT = 320


def _frames(path: Path) -> tuple[list[tuple[float, np.ndarray]], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or Fraction(25)
        frames = [
            (float(frame.time), frame.to_ndarray(format="rgb24"))
            for frame in container.decode(stream)
            if frame.time is not None
        ]
    return frames, Fraction(rate)


def _scaled(image: np.ndarray, width: int | None = None) -> np.ndarray:
    height, w = image.shape[:2]
    out_w = width or max(2, int(round(w * HEIGHT / height / 2)) * 2)
    return cv2.resize(image, (out_w, HEIGHT), interpolation=cv2.INTER_AREA)


def side_by_side(
    speaker: str | Path,
    other: str | Path,
    out: str | Path,
    *,
    speaker_left: bool = True,
    still: bool = False,
    max_seconds: float | None = None,
) -> Path:
    """Write the composite (H.264 + AAC .mp4) and return its path; ``max_seconds`` cuts it."""
    speaker, other, out = Path(speaker), Path(other), Path(out)
    a_frames, rate = _frames(speaker)
    b_frames, _ = _frames(other)
    if not a_frames or not b_frames:
        raise ValueError("both inputs need video frames")
    b_times = np.array([t for t, _ in b_frames])
    end = min(a_frames[-1][0], b_frames[-1][0] if not still else a_frames[-1][0])
    if max_seconds is not None:
        end = min(end, max_seconds)
    pictures = []
    for t, image in a_frames:
        if t > end + 1e-6:
            break
        b_image = b_frames[0][1] if still else b_frames[int(np.argmin(np.abs(b_times - t)))][1]
        left, right = _scaled(image), _scaled(b_image, HEIGHT)
        if not speaker_left:
            left, right = right, left
        pictures.append(np.ascontiguousarray(np.hstack([left, right])))
    with av.open(str(out), "w") as container:
        video = container.add_stream("libx264", rate=rate)
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "veryfast", "crf": "20"}
        video.width, video.height = pictures[0].shape[1], pictures[0].shape[0]
        audio = None
        with av.open(str(speaker)) as source:
            has_audio = bool(source.streams.audio)
        if has_audio:
            audio = container.add_stream("aac", rate=16000)
            audio.layout = "mono"
        for index, picture in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = index
            frame.time_base = 1 / rate
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if audio is not None:
            _copy_audio(speaker, container, audio, end)
    return out


def _copy_audio(path: Path, container: av.container.OutputContainer, audio: av.AudioStream,
                end: float) -> None:  # fmt: skip
    """The speaker's audio (re-encoded to AAC 16 kHz mono) up to ``end`` plus one frame."""
    with av.open(str(path)) as source:
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=16000)
        samples = 0
        for frame in source.decode(source.streams.audio[0]):
            if frame.time is not None and frame.time > end + 0.04:
                break
            for chunk in resampler.resample(frame):
                chunk.pts = samples
                samples += chunk.samples
                container.mux(audio.encode(chunk))
        for chunk in resampler.resample(None):
            chunk.pts = samples
            samples += chunk.samples
            container.mux(audio.encode(chunk))
        container.mux(audio.encode())
