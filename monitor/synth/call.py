"""Synthetic video calls with a known audio-visual offset: the ground truth for tests,
the demo and training.

The lips follow the phonemes of ``text``; the audio is the same speech moved by
``audio_shift_s`` (positive: the audio arrives later than the lips), or another
utterance altogether (``swap_text``, a dubbing attack). The clip's length is set by
the lip speech; shifted audio is padded with silence or trimmed to fit it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from monitor.errors import ConfigError, OutputError
from monitor.media import AUDIO_RATE
from monitor.synth.face import FaceAnimator, Portrait
from monitor.synth.motion import head_poses, lighting_gains
from monitor.synth.speech import PhonemeSegment, Speech, synthesize
from monitor.synth.visemes import mouth_tracks

DEFAULT_TEXT = (
    "Hello, can you hear me? I am calling about the budget for next year. "
    "Please send me the figures before our meeting on Monday morning."
)

# Container extension -> (video codec, audio codec, audio encoding rate).
_FORMATS: dict[str, tuple[str, str, int]] = {
    ".mp4": ("libx264", "aac", AUDIO_RATE),
    ".mkv": ("libvpx", "libopus", 48000),
    ".webm": ("libvpx", "libopus", 48000),
}
_AUDIO_FRAME_SIZE = {"aac": 1024, "libopus": 960}
_VIDEO_OPTIONS = {
    "libx264": {"preset": "veryfast", "crf": "20"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8", "b": "1500k"},
}


@dataclass(frozen=True)
class SyntheticCall:
    """A written synthetic call and its ground truth, all on the call's media clock."""

    path: Path
    duration: float  # seconds, = n_frames / fps
    fps: float
    audio_shift_s: float  # true offset: positive when the audio is later than the lips
    phonemes: tuple[PhonemeSegment, ...]  # what the lips articulate
    audio_phonemes: tuple[PhonemeSegment, ...]  # what the audio says (shift applied)
    frame_times: np.ndarray  # (n_frames,) seconds
    aperture: np.ndarray  # (n_frames,) rendered mouth opening, 0 closed .. 1 wide
    mouth_width: np.ndarray  # (n_frames,) rendered width relative to rest
    audio: np.ndarray  # the audio track, float32 16 kHz, even when not written
    text: str
    audio_text: str  # what the audio says: text, or swap_text
    has_audio: bool  # whether the container has an audio stream
    audio_path: Path | None
    size: tuple[int, int]  # height, width
    seed: int
    seconds_to_make: float  # wall time spent generating and encoding

    @property
    def n_frames(self) -> int:
        return len(self.frame_times)

    @property
    def in_sync(self) -> bool:
        """Audio and lips say the same thing at the same time."""
        return self.audio_text == self.text and self.audio_shift_s == 0.0


def fps_fraction(fps: float) -> Fraction:
    """Exact frame rate: 29.97 means 30000/1001 (and 23.976, 59.94 likewise)."""
    if not 1.0 <= fps <= 120.0:
        raise ConfigError(f"frame rate {fps} outside 1-120 fps")
    for ntsc in (24000, 30000, 60000):
        if abs(fps - ntsc / 1001) < 0.005:
            return Fraction(ntsc, 1001)
    return Fraction(fps).limit_denominator(1000)


def place_audio(samples: np.ndarray, n_total: int, start: int) -> np.ndarray:
    """``samples`` starting at sample ``start`` (may be negative) of a silent track."""
    track = np.zeros(n_total, dtype=np.float32)
    first, last = max(start, 0), min(start + len(samples), n_total)
    if last > first:
        track[first:last] = samples[first - start : last - start]
    return track


def make_call(
    path: str | Path,
    *,
    text: str = DEFAULT_TEXT,
    fps: float = 25.0,
    audio_shift_s: float = 0.0,
    swap_text: str | None = None,
    voice: str = "en",
    swap_voice: str | None = None,
    rate: int = 160,
    pitch: int = 50,
    seed: int = 0,
    size: tuple[int, int] = (480, 640),
    video_only: bool = False,
    audio_path: str | Path | None = None,
    portrait: Portrait | None = None,
    head_motion: bool = True,
    lighting: bool = True,
    lead_s: float = 0.3,
    tail_s: float = 0.3,
) -> SyntheticCall:
    """Write a synthetic call to ``path`` (.mp4: H.264 + AAC; .mkv/.webm: VP8 + Opus).

    ``size`` is (height, width), both even. ``audio_path`` also writes the audio track
    (after shift or swap) as a 16 kHz wav, also for ``video_only`` calls.
    """
    started = time.perf_counter()
    path = Path(path)
    container_format = _FORMATS.get(path.suffix.lower())
    if container_format is None:
        raise ConfigError(f"unsupported container {path.suffix!r}; use one of {sorted(_FORMATS)}")
    if size[0] % 2 or size[1] % 2:
        raise ConfigError(f"frame size {size} must be even for yuv420p")
    if lead_s < 0 or tail_s < 0:
        raise ConfigError("lead_s and tail_s must not be negative")
    rate_exact = fps_fraction(fps)

    lips = synthesize(text, voice=voice, rate=rate, pitch=pitch).trimmed()
    if swap_text is None:
        heard = lips
    else:
        heard = synthesize(swap_text, voice=swap_voice or voice, rate=rate, pitch=pitch).trimmed()
    n_frames = int(np.ceil((lead_s + lips.duration + tail_s) * rate_exact))
    duration = float(n_frames / rate_exact)
    frame_times = np.arange(n_frames, dtype=np.float64) / float(rate_exact)

    lead_samples = round(lead_s * AUDIO_RATE)
    shift_samples = round(audio_shift_s * AUDIO_RATE)
    n_audio = round(duration * AUDIO_RATE)
    audio = place_audio(heard.samples, n_audio, lead_samples + shift_samples)
    true_shift = shift_samples / AUDIO_RATE
    lip_phonemes = tuple(p.shifted(lead_samples / AUDIO_RATE) for p in lips.phonemes)
    audio_phonemes = _phonemes_in(heard, (lead_samples + shift_samples) / AUDIO_RATE, duration)

    aperture, width = mouth_tracks(lip_phonemes, frame_times)
    animator = FaceAnimator(portrait, size)
    poses = head_poses(frame_times, animator.size, seed, enabled=head_motion)
    gains = lighting_gains(frame_times, seed, enabled=lighting)
    frames = (
        animator.render(float(a), float(w), pose, float(g))
        for a, w, pose, g in zip(aperture, width, poses, gains, strict=True)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    _encode(path, frames, rate_exact, None if video_only else audio, container_format, size)
    if audio_path is not None:
        audio_path = Path(audio_path)
        try:
            sf.write(audio_path, audio, AUDIO_RATE, subtype="PCM_16")
        except (OSError, sf.LibsndfileError) as exc:
            raise OutputError(f"cannot write {audio_path}: {exc}") from exc

    return SyntheticCall(
        path=path,
        duration=duration,
        fps=float(rate_exact),
        audio_shift_s=true_shift,
        phonemes=lip_phonemes,
        audio_phonemes=audio_phonemes,
        frame_times=frame_times,
        aperture=aperture,
        mouth_width=width,
        audio=audio,
        text=text,
        audio_text=text if swap_text is None else swap_text,
        has_audio=not video_only,
        audio_path=audio_path,
        size=animator.size,
        seed=seed,
        seconds_to_make=time.perf_counter() - started,
    )


def _phonemes_in(speech: Speech, offset: float, duration: float) -> tuple[PhonemeSegment, ...]:
    """The speech's phonemes moved by ``offset`` and clipped to ``[0, duration]``."""
    moved = (p.shifted(offset) for p in speech.phonemes)
    return tuple(
        PhonemeSegment(max(p.t_start, 0.0), min(p.t_end, duration), p.phoneme)
        for p in moved
        if p.t_end > 0.0 and p.t_start < duration
    )


def _encode(
    path: Path,
    frames: Iterator[np.ndarray],
    rate: Fraction,
    audio: np.ndarray | None,
    container_format: tuple[str, str, int],
    size: tuple[int, int],
) -> None:
    """Mux frames (and audio) into ``path``, interleaved in time order."""
    video_codec, audio_codec, audio_rate = container_format
    try:
        container = av.open(str(path), mode="w")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc}") from exc
    with container:
        video = container.add_stream(video_codec, rate=rate)
        video.width, video.height = size[1], size[0]
        video.pix_fmt = "yuv420p"
        video.codec_context.time_base = 1 / rate
        video.codec_context.thread_count = 1
        video.options = dict(_VIDEO_OPTIONS[video_codec])
        encoded_audio: np.ndarray | None = None
        if audio is not None:
            sound = container.add_stream(audio_codec, rate=audio_rate, layout="mono")
            sound.codec_context.thread_count = 1
            if audio_rate == AUDIO_RATE:
                encoded_audio = audio
            else:
                encoded_audio = resample_poly(audio, audio_rate // AUDIO_RATE, 1).astype(np.float32)
            chunk = _AUDIO_FRAME_SIZE[audio_codec]
        audio_sent = 0
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            frame.time_base = video.codec_context.time_base
            container.mux(video.encode(frame))
            if encoded_audio is None:
                continue
            # Audio up to the end of this video frame.
            until = min(round((index + 1) / rate * audio_rate), len(encoded_audio))
            while audio_sent + chunk <= until or (until == len(encoded_audio) > audio_sent):
                block = encoded_audio[audio_sent : audio_sent + chunk]
                sound_frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(block[None, :]), format="fltp", layout="mono"
                )
                sound_frame.sample_rate = audio_rate
                sound_frame.pts = audio_sent
                sound_frame.time_base = Fraction(1, audio_rate)
                container.mux(sound.encode(sound_frame))
                audio_sent += len(block)
        container.mux(video.encode(None))
        if encoded_audio is not None:
            container.mux(sound.encode(None))
