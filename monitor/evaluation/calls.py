"""Genuine clips as a video call carries them: low-bitrate H.264 or VP8, Opus, small
frames, lost frames.

A :class:`CallProfile` is one such condition. :func:`encode_call` writes a clip through
it: decoded once by :class:`~monitor.sources.file.FileSource` (the pipeline's own clock),
scaled down to the profile's height, frames lost at the profile's rate (the survivors keep
their timestamps, as a receiver's jitter buffer delivers them), video encoded with
real-time encoder settings at the profile's bitrate and audio with Opus at 48 kHz, in
Matroska. Every frame keeps its media time, so a variable frame rate survives and audio
and video stay where they were (tests/test_calls.py measures both).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from monitor.media import AUDIO_RATE, AudioChunk, VideoFrame

# Container time base: milliseconds, as WebRTC receivers and Matroska both use.
_TIME_BASE = Fraction(1, 1000)
_OPUS_RATE = 48000
_OPUS_FRAME = 960  # 20 ms, WebRTC's packet size


@dataclass(frozen=True)
class CallProfile:
    """One way a call carries a participant's media."""

    name: str
    video_codec: str  # "libx264" | "libvpx"
    video_kbps: int
    height: int  # frames are scaled down (never up) to at most this many lines
    audio_kbps: int  # Opus
    drop_fraction: float  # share of frames lost in transit

    def describe(self) -> str:
        codec = {"libx264": "H.264", "libvpx": "VP8"}.get(self.video_codec, self.video_codec)
        return (
            f"{codec} {self.video_kbps} kb/s at most {self.height}p, Opus {self.audio_kbps} kb/s, "
            f"{self.drop_fraction:.0%} frames lost"
        )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


# The call conditions: H.264/VP8 at 300-1500 kb/s, Opus, 360p-720p, lost frames.
CALL_PROFILES = (
    CallProfile("h264-360p-300k", "libx264", 300, 360, 24, 0.03),
    CallProfile("vp8-480p-600k", "libvpx", 600, 480, 32, 0.02),
    CallProfile("h264-720p-1500k", "libx264", 1500, 720, 32, 0.0),
    CallProfile("vp8-360p-400k", "libvpx", 400, 360, 16, 0.05),
)
PROFILES_BY_NAME = {p.name: p for p in CALL_PROFILES}
# The condition name of a clip as it was recorded (no call encoding).
RECORDED = "recorded"

_VIDEO_OPTIONS = {
    # What real-time senders use: no look-ahead, no B-frames, a key frame every 3 s.
    "libx264": {"preset": "veryfast", "tune": "zerolatency", "g": "75"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "g": "75"},
}


def scaled_size(width: int, height: int, max_height: int) -> tuple[int, int]:
    """At most ``max_height`` lines (of the shorter side), aspect kept, sides even."""
    short = min(width, height)
    scale = min(1.0, max_height / short) if short else 1.0
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def encode_call(
    source: str | os.PathLike[str],
    dst: Path,
    profile: CallProfile,
    seed: int,
    *,
    max_seconds: float | None = None,
) -> Path:
    """Write ``source`` as ``profile`` delivers it to ``dst`` (Matroska), atomically;
    media from ``max_seconds`` on is left out."""
    from monitor.sources.file import FileSource

    rng = np.random.default_rng(seed)
    frames: list[VideoFrame] = []
    chunks: list[AudioChunk] = []
    with FileSource(source) as media:
        for item in media:
            if max_seconds is not None and item.t >= max_seconds:
                if isinstance(item, VideoFrame):
                    break
                continue
            (frames if isinstance(item, VideoFrame) else chunks).append(item)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.{os.getpid()}.tmp{dst.suffix}")
    height, width = frames[0].image.shape[:2]
    out_w, out_h = scaled_size(width, height, profile.height)
    with av.open(str(tmp), "w", format="matroska") as container:
        video = container.add_stream(profile.video_codec, rate=25)
        video.width, video.height = out_w, out_h
        video.pix_fmt = "yuv420p"
        video.bit_rate = profile.video_kbps * 1000
        video.codec_context.time_base = _TIME_BASE
        video.codec_context.thread_count = 1  # the same bits whatever the load
        video.options = dict(_VIDEO_OPTIONS[profile.video_codec])
        audio = None
        if chunks:
            audio = container.add_stream("libopus", rate=_OPUS_RATE, layout="mono")
            audio.bit_rate = profile.audio_kbps * 1000
            audio.options = {"application": "voip"}
        packets: list[tuple[float, av.Packet]] = []
        if audio is not None:
            packets += _encode_audio(audio, chunks)
        kept = [f for f in frames if rng.random() >= profile.drop_fraction] or frames[:1]
        for frame in kept:
            picture = av.VideoFrame.from_ndarray(frame.image, format="rgb24")
            picture = picture.reformat(width=out_w, height=out_h, format="yuv420p")
            picture.pts = int(round(frame.t * 1000))
            picture.time_base = _TIME_BASE
            packets += _timed(video.encode(picture))
        packets += _timed(video.encode(None))
        packets.sort(key=lambda item: item[0])
        for _, packet in packets:
            container.mux(packet)
    os.replace(tmp, dst)
    return dst


def _timed(packets: list[av.Packet]) -> list[tuple[float, av.Packet]]:
    return [(float(p.dts * p.time_base) if p.dts is not None else 0.0, p) for p in packets]


def _encode_audio(
    stream: av.AudioStream, chunks: list[AudioChunk]
) -> list[tuple[float, av.Packet]]:
    """16 kHz chunks (contiguous, from the first one's time) to Opus at 48 kHz."""
    t0 = chunks[0].t
    samples = np.concatenate([c.samples for c in chunks]).astype(np.float32)
    resampler = av.AudioResampler(
        format="s16", layout="mono", rate=_OPUS_RATE, frame_size=_OPUS_FRAME
    )
    packets: list[tuple[float, av.Packet]] = []
    step = AUDIO_RATE // 10
    start_pts = int(round(t0 * AUDIO_RATE))
    for i in range(0, len(samples), step):
        frame = av.AudioFrame.from_ndarray(samples[None, i : i + step], format="flt", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start_pts + i
        frame.time_base = Fraction(1, AUDIO_RATE)
        for out in resampler.resample(frame):
            packets += _timed(stream.encode(out))
    for out in resampler.resample(None):
        packets += _timed(stream.encode(out))
    packets += _timed(stream.encode(None))
    return packets
