"""A/V sync probe: a clip of white flashes and tone bursts at the same instants, and the
measurement of where each lands after the live path.

The content, not the timestamps, is what is compared: the error reported includes
everything between the file and the analyzer (pacing, encoders, network, jitter
buffers, decoders, the Opus look-ahead, resampling and the clock alignment).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from monitor.media import AUDIO_RATE, AudioChunk, VideoFrame

PROBE_RATE = 48000
TONE_HZ = 1000.0
BURST_S = 0.04  # one 25 fps frame


def write_probe_clip(
    path: str | Path,
    *,
    duration_s: float = 4.0,
    events_s: tuple[float, ...] = (1.0, 2.0, 3.0),
    fps: int = 25,
    size: tuple[int, int] = (240, 320),
) -> tuple[float, ...]:
    """Write an .mkv (H.264 + 16-bit PCM, so the file itself adds no audio delay).

    Each event is one white frame at ``t`` and a 1 kHz burst starting at ``t``; between
    them the picture is dark grey and the audio silent. Returns the event times.
    """
    height, width = size
    container = av.open(str(path), mode="w", format="matroska")
    video = container.add_stream("libx264", rate=fps)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.options = {"preset": "ultrafast", "tune": "zerolatency"}
    audio = container.add_stream("pcm_s16le", rate=PROBE_RATE)
    audio.layout = "mono"
    n_frames = round(duration_s * fps)
    flash_frames = {round(t * fps) for t in events_s}
    for index in range(n_frames):
        level = 235 if index in flash_frames else 40
        image = np.full((height, width, 3), level, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = index
        frame.time_base = Fraction(1, fps)
        container.mux(video.encode(frame))
    container.mux(video.encode(None))
    n_samples = round(duration_s * PROBE_RATE)
    samples = np.zeros(n_samples, dtype=np.float32)
    t = np.arange(round(BURST_S * PROBE_RATE)) / PROBE_RATE
    for event in events_s:
        start = round(event * PROBE_RATE)
        samples[start : start + len(t)] = 0.5 * np.sin(2 * np.pi * TONE_HZ * t)
    pcm = (samples * 32767).astype(np.int16)
    block = 1024
    for start in range(0, n_samples, block):
        chunk = pcm[start : start + block].reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
        frame.sample_rate = PROBE_RATE
        frame.pts = start
        frame.time_base = Fraction(1, PROBE_RATE)
        container.mux(audio.encode(frame))
    container.mux(audio.encode(None))
    container.close()
    return tuple(events_s)


@dataclass(frozen=True)
class ProbeResult:
    flashes_s: tuple[float, ...]  # media time of each flash frame as received
    bursts_s: tuple[float, ...]  # media time of each tone onset as received

    @property
    def av_errors_ms(self) -> tuple[float, ...]:
        """Audio minus video per event (0 = perfectly aligned; > 0: audio late)."""
        return tuple(1000.0 * (a - v) for a, v in zip(self.bursts_s, self.flashes_s, strict=True))


def measure_probe(video: list[VideoFrame], audio: list[AudioChunk]) -> ProbeResult:
    """Find the flash frames and the tone onsets in what an analyzer received."""
    brightness = np.array([float(f.image.mean()) for f in video])
    times = np.array([f.t for f in video])
    bright = brightness > 137.0  # halfway between the dark (40) and white (235) frames
    flashes = tuple(float(times[i]) for i in np.flatnonzero(bright[1:] & ~bright[:-1]) + 1)
    if len(bright) and bright[0]:
        flashes = (float(times[0]), *flashes)

    chunks = sorted(audio, key=lambda c: c.t)
    t0 = chunks[0].t if chunks else 0.0
    total = round((chunks[-1].t_end - t0) * AUDIO_RATE) if chunks else 0
    signal = np.zeros(total, dtype=np.float32)
    for chunk in chunks:
        start = round((chunk.t - t0) * AUDIO_RATE)
        part = chunk.samples[: max(0, total - start)]
        signal[start : start + len(part)] = part
    loud = np.abs(signal) > 0.1
    onsets: list[float] = []
    last = -np.inf
    for index in np.flatnonzero(loud):
        t = t0 + index / AUDIO_RATE
        if t - last > 0.5:  # a new burst, not the same one's next cycle
            onsets.append(t)
        last = t
    return ProbeResult(flashes_s=flashes, bursts_s=tuple(onsets))
