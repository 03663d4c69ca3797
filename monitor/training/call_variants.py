"""A recorded clip re-encoded as a call would deliver it: lower frame rate and size, call
bitrates (H.264 or VP8, Opus), dropped frames, low light, background noise.

Every condition is drawn from a seed (:meth:`CallVariant.random`), so a training set is
reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class CallVariant:
    """How one re-encoded copy of a clip degrades it (all chosen from a seed)."""

    name: str
    fps: float
    max_side: int
    video_codec: str  # "libx264" | "libvpx"
    video_kbps: int
    audio_kbps: int
    drop_prob: float  # chance that a frame is lost
    darkness: float  # 0: unchanged; 1: very dark
    noise_snr_db: float | None  # None: no added noise

    @staticmethod
    def random(seed: int, name: str) -> CallVariant:
        rng = np.random.default_rng(seed)
        return CallVariant(
            name=name,
            fps=float(rng.choice([15.0, 20.0, 24.0, 25.0, 30.0])),
            max_side=int(rng.choice([240, 320, 360, 480, 640])),
            video_codec=str(rng.choice(["libx264", "libvpx"])),
            video_kbps=int(rng.choice([150, 250, 400, 700])),
            audio_kbps=int(rng.choice([12, 16, 24, 32])),
            drop_prob=float(rng.choice([0.0, 0.0, 0.03, 0.08])),
            darkness=float(rng.choice([0.0, 0.0, 0.5, 0.8])),
            noise_snr_db=None if rng.random() < 0.4 else float(rng.uniform(5.0, 25.0)),
        )


def _darken(image: np.ndarray, darkness: float, rng: np.random.Generator) -> np.ndarray:
    """Low light: crushed, dimmer picture with sensor noise."""
    if darkness <= 0:
        return image
    x = image.astype(np.float32) / 255.0
    x = np.power(x, 1.0 + darkness) * (1.0 - 0.6 * darkness)
    x = x * 255.0 + rng.normal(0.0, 2.0 + 6.0 * darkness, size=x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


def _add_noise(samples: np.ndarray, snr_db: float | None, rng: np.random.Generator) -> np.ndarray:
    if snr_db is None or not len(samples):
        return samples
    level = float(np.sqrt(np.mean(samples**2)) + 1e-9)
    # Pink-ish noise (white noise through a one-pole low-pass), as rooms and fans sound.
    from scipy.signal import lfilter

    white = rng.normal(0.0, 1.0, len(samples))
    pink = lfilter([0.05], [1.0, -0.95], white).astype(np.float32)
    pink *= level / (float(np.sqrt(np.mean(pink**2))) + 1e-9) * 10 ** (-snr_db / 20.0)
    return np.clip(samples + pink, -1.0, 1.0).astype(np.float32)


def nearest_frames(times: np.ndarray, ticks: np.ndarray) -> np.ndarray:
    """For each tick, the index of the frame whose time is nearest (earlier on a tie)."""
    right = np.clip(np.searchsorted(times, ticks), 1, max(len(times) - 1, 1))
    left = right - 1
    pick = np.where(np.abs(times[left] - ticks) <= np.abs(times[right] - ticks), left, right)
    return np.clip(pick, 0, len(times) - 1)


def reencode_call(src: Path, dst: Path, variant: CallVariant, seed: int) -> None:
    """Write ``src`` as a call would deliver it: resampled fps, small size, lossy codecs."""
    import av
    import cv2

    from monitor.media import AUDIO_RATE, AudioChunk, VideoFrame
    from monitor.sources.file import FileSource

    rng = np.random.default_rng(seed)
    frames: list[VideoFrame] = []
    chunks: list[AudioChunk] = []
    with FileSource(src) as source:
        for item in source:
            (frames if isinstance(item, VideoFrame) else chunks).append(item)
    if not frames:
        raise RuntimeError(f"{src} has no frames")
    height, width = frames[0].image.shape[:2]
    scale = min(1.0, variant.max_side / max(height, width))
    out_w, out_h = max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)

    container = av.open(str(dst), "w", format="matroska")
    try:
        vstream = container.add_stream(variant.video_codec, rate=int(round(variant.fps)))
        vstream.width, vstream.height = out_w, out_h
        vstream.pix_fmt = "yuv420p"
        vstream.bit_rate = variant.video_kbps * 1000
        vstream.codec_context.time_base = Fraction(1, 1000)
        if variant.video_codec == "libx264":
            vstream.options = {"preset": "veryfast", "tune": "zerolatency"}
        else:
            vstream.options = {"deadline": "realtime", "cpu-used": "8"}
        astream = container.add_stream("libopus", rate=48000, layout="mono")
        astream.bit_rate = variant.audio_kbps * 1000

        # Audio: contiguous samples from the first chunk, noise added, Opus at 48 kHz.
        t_audio = chunks[0].t if chunks else 0.0
        if chunks:
            samples = np.concatenate([c.samples for c in chunks]).astype(np.float32)
            samples = _add_noise(samples, variant.noise_snr_db, rng)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=48000, frame_size=960)
            step = AUDIO_RATE // 10
            for i in range(0, len(samples), step):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(samples[None, i : i + step]), format="flt", layout="mono"
                )
                frame.sample_rate = AUDIO_RATE
                frame.pts = int(round(t_audio * AUDIO_RATE)) + i
                frame.time_base = Fraction(1, AUDIO_RATE)
                for out in resampler.resample(frame):
                    for packet in astream.encode(out):
                        container.mux(packet)
            for out in resampler.resample(None):
                for packet in astream.encode(out):
                    container.mux(packet)
            for packet in astream.encode(None):
                container.mux(packet)

        # Video: a camera at the new rate captures, at each tick, what is there then: the
        # source frame nearest in time. (The latest frame before the tick would put the
        # picture up to one source frame late, 13-30 ms on average: a bias the model
        # would learn as "in sync".)
        times = np.array([f.t for f in frames])
        t0, t1 = times[0], times[-1]
        ticks = np.arange(t0, t1 + 1e-6, 1.0 / variant.fps)
        picks = nearest_frames(times, ticks)
        for tick, pick in zip(ticks, picks, strict=True):
            if variant.drop_prob and rng.random() < variant.drop_prob:
                continue
            image = frames[pick].image
            if scale < 1.0:
                image = cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_AREA)
            elif image.shape[:2] != (out_h, out_w):
                image = image[:out_h, :out_w]
            image = _darken(np.ascontiguousarray(image), variant.darkness, rng)
            vframe = av.VideoFrame.from_ndarray(image, format="rgb24")
            vframe.pts = int(round(tick * 1000))
            vframe.time_base = Fraction(1, 1000)
            for packet in vstream.encode(vframe):
                container.mux(packet)
        for packet in vstream.encode(None):
            container.mux(packet)
    finally:
        container.close()
