"""Synthetic video calls with a known audio-visual offset: the ground truth for tests,
the demo and training.

The lips follow the phonemes of ``text``; the audio is the same speech moved by
``audio_shift_s`` (positive: the audio arrives later than the lips), or another
utterance altogether (``swap_text``, a dubbing attack). The clip's length is set by
the lip speech; shifted audio is padded with silence or trimmed to fit it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

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
    "Please send the figures before our meeting."
)


class _Format(NamedTuple):
    video_codec: str
    audio_codec: str
    audio_rate: int  # the audio is encoded at this rate


_FORMATS: dict[str, _Format] = {
    ".mp4": _Format("libx264", "aac", AUDIO_RATE),
    ".mkv": _Format("libvpx", "libopus", 48000),
    ".webm": _Format("libvpx", "libopus", 48000),
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
    voice: str
    rate: int  # words per minute
    pitch: int
    lead_s: float  # silence before the lips start speaking
    seconds_to_make: float  # wall time spent generating and encoding

    @property
    def n_frames(self) -> int:
        return len(self.frame_times)

    @property
    def in_sync(self) -> bool:
        """The audio track (written or, for video-only calls, not) matches the lips."""
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
    (after shift or swap) as a 16 kHz wav, also for ``video_only`` calls. The clip
    lasts ``lead_s`` + the lip speech + ``tail_s``, rounded up to whole frames.
    """
    started = time.perf_counter()
    path = Path(path)
    container_format = _container_format(path)
    if size[0] % 2 or size[1] % 2:
        raise ConfigError(f"frame size {size} must be even for yuv420p")
    if lead_s < 0 or tail_s < 0:
        raise ConfigError("lead_s and tail_s must not be negative")
    rate_exact = fps_fraction(fps)

    lips = synthesize(text, voice=voice, rate=rate, pitch=pitch).trimmed()
    n_frames = int(np.ceil((lead_s + lips.duration + tail_s) * rate_exact))
    duration = float(n_frames / rate_exact)
    frame_times = np.arange(n_frames, dtype=np.float64) / float(rate_exact)
    lip_phonemes = tuple(p.shifted(round(lead_s * AUDIO_RATE) / AUDIO_RATE) for p in lips.phonemes)
    aperture, width = mouth_tracks(lip_phonemes, frame_times)

    animator = FaceAnimator(portrait, size)
    poses = head_poses(frame_times, animator.size, seed, enabled=head_motion)
    gains = lighting_gains(frame_times, seed, enabled=lighting)
    frames = (
        animator.render(float(a), float(w), pose, float(g))
        for a, w, pose, g in zip(aperture, width, poses, gains, strict=True)
    )
    call = SyntheticCall(
        path=path,
        duration=duration,
        fps=float(rate_exact),
        audio_shift_s=0.0,
        phonemes=lip_phonemes,
        audio_phonemes=(),
        frame_times=frame_times,
        aperture=aperture,
        mouth_width=width,
        audio=np.zeros(0, np.float32),
        text=text,
        audio_text=text,
        has_audio=not video_only,
        audio_path=None,
        size=animator.size,
        seed=seed,
        voice=voice,
        rate=rate,
        pitch=pitch,
        lead_s=lead_s,
        seconds_to_make=0.0,
    )
    call = _with_audio(call, audio_shift_s, swap_text, swap_voice, video_only, audio_path)
    with _open_output(path) as container:
        video = container.add_stream(container_format.video_codec, rate=rate_exact)
        video.width, video.height = animator.size[1], animator.size[0]
        video.pix_fmt = "yuv420p"
        video.codec_context.time_base = 1 / rate_exact
        video.codec_context.thread_count = 1
        video.options = dict(_VIDEO_OPTIONS[container_format.video_codec])
        sound = None if video_only else _AudioWriter(container, container_format, call.audio)
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            frame.time_base = video.codec_context.time_base
            container.mux(video.encode(frame))
            if sound is not None:
                sound.write_until((index + 1) / rate_exact)
        container.mux(video.encode(None))
        if sound is not None:
            sound.finish()
    return replace(call, seconds_to_make=time.perf_counter() - started)


def derive_call(
    source: SyntheticCall,
    path: str | Path,
    *,
    audio_shift_s: float = 0.0,
    swap_text: str | None = None,
    swap_voice: str | None = None,
    video_only: bool = False,
    audio_path: str | Path | None = None,
) -> SyntheticCall:
    """The same video as ``source`` (its encoded packets copied, not re-encoded) with
    other audio: shifted, another utterance, or none.

    Much cheaper than :func:`make_call`; for sets and training data where only the
    audio varies. ``path`` must use the same kind of container as ``source``.
    """
    started = time.perf_counter()
    path = Path(path)
    container_format = _container_format(path)
    if container_format.video_codec != _container_format(source.path).video_codec:
        raise ConfigError(f"{path.name} cannot take the video of {source.path.name}")
    if path.resolve() == source.path.resolve():
        raise ConfigError("a derived call needs its own file")
    call = _with_audio(
        replace(source, path=path, has_audio=not video_only),
        audio_shift_s,
        swap_text,
        swap_voice,
        video_only,
        audio_path,
    )
    with av.open(str(source.path)) as original, _open_output(path) as container:
        template = original.streams.video[0]
        video = container.add_stream_from_template(template)
        sound = None if video_only else _AudioWriter(container, container_format, call.audio)
        for packet in original.demux(template):
            if packet.dts is None:  # the demuxer's final empty packet
                continue
            end = None if packet.pts is None else (packet.pts + packet.duration) * packet.time_base
            packet.stream = video
            container.mux(packet)
            if sound is not None and end is not None:
                sound.write_until(end)
        if sound is not None:
            sound.finish()
    return replace(call, seconds_to_make=time.perf_counter() - started)


def _with_audio(
    call: SyntheticCall,
    audio_shift_s: float,
    swap_text: str | None,
    swap_voice: str | None,
    video_only: bool,
    audio_path: str | Path | None,
) -> SyntheticCall:
    """``call`` with its audio track built (and written as wav when asked)."""
    if abs(audio_shift_s) >= call.duration:
        raise ConfigError(
            f"audio shift {audio_shift_s} s leaves nothing of a {call.duration} s call"
        )
    if swap_text is None:
        heard = synthesize(call.text, voice=call.voice, rate=call.rate, pitch=call.pitch)
    else:
        voice = swap_voice or call.voice
        heard = synthesize(swap_text, voice=voice, rate=call.rate, pitch=call.pitch)
    heard = heard.trimmed()
    shift_samples = round(audio_shift_s * AUDIO_RATE)
    start = round(call.lead_s * AUDIO_RATE) + shift_samples
    audio = place_audio(heard.samples, round(call.duration * AUDIO_RATE), start)
    if audio_path is not None:
        audio_path = Path(audio_path)
        try:
            sf.write(audio_path, audio, AUDIO_RATE, subtype="PCM_16")
        except (OSError, sf.LibsndfileError) as exc:
            raise OutputError(f"cannot write {audio_path}: {exc}") from exc
    return replace(
        call,
        audio_shift_s=shift_samples / AUDIO_RATE,
        audio_phonemes=_phonemes_in(heard, start / AUDIO_RATE, call.duration),
        audio=audio,
        audio_text=call.text if swap_text is None else swap_text,
        has_audio=not video_only,
        audio_path=audio_path,
    )


def _phonemes_in(speech: Speech, offset: float, duration: float) -> tuple[PhonemeSegment, ...]:
    """The speech's phonemes moved by ``offset`` and clipped to ``[0, duration]``."""
    moved = (p.shifted(offset) for p in speech.phonemes)
    return tuple(
        PhonemeSegment(max(p.t_start, 0.0), min(p.t_end, duration), p.phoneme)
        for p in moved
        if p.t_end > 0.0 and p.t_start < duration
    )


def _container_format(path: Path) -> _Format:
    container_format = _FORMATS.get(path.suffix.lower())
    if container_format is None:
        raise ConfigError(f"unsupported container {path.suffix!r}; use one of {sorted(_FORMATS)}")
    return container_format


def _open_output(path: Path) -> av.container.OutputContainer:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return av.open(str(path), mode="w")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc}") from exc


class _AudioWriter:
    """Encodes a 16 kHz track in codec-sized frames, as far as the video has got."""

    def __init__(
        self, container: av.container.OutputContainer, container_format: _Format, audio: np.ndarray
    ) -> None:
        codec, self.rate = container_format.audio_codec, container_format.audio_rate
        self.container = container
        self.stream = container.add_stream(codec, rate=self.rate, layout="mono")
        self.stream.codec_context.thread_count = 1
        if self.rate == AUDIO_RATE:
            self.samples = audio
        else:
            self.samples = resample_poly(audio, self.rate // AUDIO_RATE, 1).astype(np.float32)
        self.chunk = _AUDIO_FRAME_SIZE[codec]
        self.sent = 0

    def write_until(self, t: float | Fraction) -> None:
        """Encode whole codec frames up to media time ``t``."""
        until = min(round(t * self.rate), len(self.samples))
        while self.sent + self.chunk <= until:
            self._send(self.samples[self.sent : self.sent + self.chunk])

    def finish(self) -> None:
        self.write_until(len(self.samples) / self.rate)
        if self.sent < len(self.samples):
            self._send(self.samples[self.sent :])
        self.container.mux(self.stream.encode(None))

    def _send(self, block: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(block[None, :]), format="fltp", layout="mono"
        )
        frame.sample_rate = self.rate
        frame.pts = self.sent
        frame.time_base = Fraction(1, self.rate)
        self.container.mux(self.stream.encode(frame))
        self.sent += len(block)
