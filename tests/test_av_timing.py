"""Audio/video timing through FileSource across codecs and containers, to the millisecond.

Encoders delay their output (AAC primes 1024 samples, Opus 312, MP3 1105); containers
say how much to drop (an mp4 edit list, Matroska's CodecDelay, the packets' skip-samples
side data) and decoders drop it. Any of these handled wrongly moves every lip-sync offset
by 6.5-48 ms, so each case here encodes a white flash and a tone burst at the same
instants and checks that they come out of FileSource within a millisecond of each other.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from monitor.media import AUDIO_RATE, AudioChunk, VideoFrame
from monitor.sources.file import FileSource

FPS = 25
EVENTS_S = (0.52, 1.52)  # flash frames 13 and 38, and tone bursts starting at the same times
DURATION_S = 2.0
SIZE = (64, 48)


def _burst_track(rate: int, start_s: float) -> np.ndarray:
    """The audio from ``start_s`` on: silence with 30 ms 1 kHz bursts at ``EVENTS_S``."""
    samples = np.zeros(int((DURATION_S - start_s) * rate), np.float32)
    n = np.arange(int(0.03 * rate))
    for t in EVENTS_S:
        i = int(round((t - start_s) * rate))
        samples[i : i + len(n)] = 0.8 * np.sin(2 * np.pi * 1000 * n / rate)
    return samples


def write_clip(
    path: Path,
    container_format: str,
    video_codec: str,
    audio_codec: str,
    audio_rate: int,
    audio_start_s: float = 0.0,
) -> Path:
    out = av.open(str(path), "w", format=container_format)
    video = out.add_stream(video_codec, rate=FPS)
    video.width, video.height = SIZE
    video.pix_fmt = "yuv420p"
    video.codec_context.time_base = Fraction(1, FPS)
    audio = out.add_stream(audio_codec, rate=audio_rate, layout="mono")
    packets = []
    frame_size = audio.codec_context.frame_size or 1024
    sample_format = "flt" if audio_codec == "libopus" else audio.codec_context.format.name
    samples = _burst_track(audio_rate, audio_start_s)
    first = int(round(audio_start_s * audio_rate))
    for start in range(0, len(samples), frame_size):
        block = samples[start : start + frame_size]
        block = np.pad(block, (0, frame_size - len(block)))
        if sample_format.startswith("s16"):
            data = (block * 32767).astype(np.int16)[None, :]
        elif sample_format.startswith("s32"):
            data = (block * 2147483647.0).astype(np.int32)[None, :]
        else:
            data = block[None, :]
        frame = av.AudioFrame.from_ndarray(data, format=sample_format, layout="mono")
        frame.sample_rate = audio_rate
        frame.pts = first + start
        frame.time_base = Fraction(1, audio_rate)
        packets += audio.encode(frame)
    packets += audio.encode(None)
    for i in range(int(DURATION_S * FPS)):
        level = 235 if any(round(t * FPS) == i for t in EVENTS_S) else 20
        picture = av.VideoFrame.from_ndarray(
            np.full((SIZE[1], SIZE[0], 3), level, np.uint8), format="rgb24"
        )
        picture.pts = i
        picture.time_base = Fraction(1, FPS)
        packets += video.encode(picture)
    packets += video.encode(None)
    packets.sort(key=lambda p: float(p.dts * p.time_base) if p.dts is not None else 0.0)
    for packet in packets:
        out.mux(packet)
    out.close()
    return path


def events(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(flash times, burst onset times) as FileSource delivers them."""
    frames: list[VideoFrame] = []
    chunks: list[AudioChunk] = []
    with FileSource(path) as source:
        for item in source:
            (frames if isinstance(item, VideoFrame) else chunks).append(item)
    flashes = np.array([f.t for f in frames if f.image.mean() > 128])
    samples = np.concatenate([c.samples for c in chunks])
    loud = np.abs(samples) > 0.2
    onsets = np.flatnonzero(loud[1:] & ~loud[:-1]) + 1
    first_of_burst = [
        i for k, i in enumerate(onsets) if k == 0 or i - onsets[k - 1] > AUDIO_RATE // 4
    ]
    return flashes, chunks[0].t + np.array(first_of_burst) / AUDIO_RATE


CASES = [
    ("mp4", "libx264", "aac", 48000),
    ("mp4", "libx264", "aac", 44100),
    ("mp4", "libx264", "aac", 16000),
    ("mp4", "libx264", "libmp3lame", 44100),
    ("mp4", "libx264", "libopus", 48000),
    ("matroska", "libx264", "aac", 48000),
    ("matroska", "libx264", "libopus", 48000),
    ("matroska", "libx264", "pcm_s16le", 48000),
    ("webm", "libvpx", "libopus", 48000),
]


@pytest.mark.parametrize(("container_format", "video_codec", "audio_codec", "rate"), CASES)
def test_flash_and_burst_come_out_together(
    tmp_path: Path, container_format: str, video_codec: str, audio_codec: str, rate: int
) -> None:
    suffix = {"matroska": ".mkv", "webm": ".webm"}.get(container_format, ".mp4")
    path = write_clip(tmp_path / f"clip{suffix}", container_format, video_codec, audio_codec, rate)
    flashes, bursts = events(path)
    np.testing.assert_allclose(flashes, EVENTS_S, atol=1e-3)
    np.testing.assert_allclose(bursts, EVENTS_S, atol=1e-3)


@pytest.mark.parametrize("container_format", ["mp4", "matroska"])
def test_audio_that_starts_late_stays_late(tmp_path: Path, container_format: str) -> None:
    """An audio track starting 0.3 s into the call (an edit list, a later first block)
    keeps its place: the bursts still land on the flashes."""
    suffix = ".mkv" if container_format == "matroska" else ".mp4"
    path = write_clip(
        tmp_path / f"late{suffix}", container_format, "libx264", "aac", 48000, audio_start_s=0.3
    )
    flashes, bursts = events(path)
    np.testing.assert_allclose(flashes, EVENTS_S, atol=1e-3)
    np.testing.assert_allclose(bursts, EVENTS_S, atol=1e-3)
