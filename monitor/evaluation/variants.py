"""Manipulated variants of genuine clips, every one (genuine included) re-encoded the same way.

Why re-encode everything: a detector must not tell a variant from the genuine clip by its
codec (the dev clips arrive as mpeg1, hevc, vp9...). Each clip is decoded once through
:class:`~monitor.sources.file.FileSource` (the pipeline's own clock), scaled to fit
``max_size``, and its video is encoded once per video kind with fixed x264 settings:

- ``original``: the clip's frames;
- ``frozen``: one frame held for the whole clip (a frozen camera under live speech);
- ``looped``: the first seconds played over and over (a replayed loop under live speech).

The audio (16 kHz mono, sample 0 at the first frame) is kept as ``.npy``. A variant is then
a video track remuxed (packets copied, so the genuine and the shifted variants carry the
very same video bits) with one audio track encoded by the same AAC settings: the genuine
audio, shifted, shifted from an onset on, another speaker's, or espeak-ng speech.

Everything is cached under a directory named by the source file, its size and mtime and
the settings, and written atomically, so parallel or interrupted runs never see half files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from scipy.signal import resample_poly

from monitor.errors import ConfigError, MissingStreamError
from monitor.media import AUDIO_RATE, AudioChunk, VideoFrame

# Bump when the way variants are made changes, so stale caches are not reused.
FORMAT_VERSION = 1
VIDEO_KINDS = ("original", "frozen", "looped")
AUDIO_KINDS = ("original", "shift", "partial", "swap", "tts")

# Sentences for the TTS dub: neutral call talk, none of them what the clips say.
TTS_TEXTS = (
    "Hello, this is the finance department. Please confirm the transfer before noon today.",
    "I am calling about your account. We noticed an unusual payment and need to verify it.",
    "Can you hear me well? The connection is bad, so I will send the details by mail.",
    "Good morning everyone, let us start the meeting with the quarterly figures.",
)
TTS_VOICES = ("en", "en-us")


@dataclass(frozen=True)
class EncodeSettings:
    """One fixed encoding for every variant: H.264 (x264) + AAC in mp4."""

    video_codec: str = "libx264"
    crf: int = 23
    preset: str = "veryfast"
    pix_fmt: str = "yuv420p"
    # Frames are scaled down (never up) to fit long x short side; sides stay even.
    max_long_side: int = 960
    max_short_side: int = 540
    audio_codec: str = "aac"
    audio_rate: int = 48000
    audio_bit_rate: int = 96000
    # Longer clips are cut here: enough windows per clip, bounded evaluation time.
    max_seconds: float = 12.0
    loop_seconds: float = 2.0

    def describe(self) -> str:
        return (
            f"{self.video_codec} crf {self.crf} preset {self.preset} {self.pix_fmt}, "
            f"fit in {self.max_long_side}x{self.max_short_side}, {self.audio_codec} "
            f"{self.audio_rate} Hz mono {self.audio_bit_rate // 1000} kb/s, mp4, "
            f"at most {self.max_seconds:g} s"
        )


@dataclass(frozen=True)
class PreparedClip:
    """A decoded and re-encoded clip: its video tracks and its aligned 16 kHz audio."""

    name: str
    source: str
    directory: Path
    fps: Fraction
    n_frames: int
    width: int
    height: int
    video_tracks: dict[str, Path] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return float(self.n_frames / self.fps)

    @property
    def n_samples(self) -> int:
        return int(round(self.duration_s * AUDIO_RATE))

    @property
    def audio_file(self) -> Path:
        return self.directory / "audio16k.npy"

    def audio(self) -> np.ndarray:
        return np.load(self.audio_file)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "source": self.source,
            "fps": f"{self.fps.numerator}/{self.fps.denominator}",
            "n_frames": self.n_frames,
            "width": self.width,
            "height": self.height,
            "video_tracks": {kind: path.name for kind, path in self.video_tracks.items()},
        }

    @classmethod
    def from_json(cls, directory: Path, data: dict) -> PreparedClip:
        return cls(
            name=data["name"],
            source=data["source"],
            directory=directory,
            fps=Fraction(data["fps"]),
            n_frames=int(data["n_frames"]),
            width=int(data["width"]),
            height=int(data["height"]),
            video_tracks={k: directory / v for k, v in data["video_tracks"].items()},
        )


@dataclass(frozen=True)
class VariantSpec:
    """What one evaluated clip is: which video, which audio, and the ground truth."""

    category: str  # "genuine", "shift+400ms", "swap", "tts", "frozen", "looped", ...
    clip: str  # name of the PreparedClip whose video is used
    video: str = "original"  # one of VIDEO_KINDS
    audio: str = "original"  # one of AUDIO_KINDS
    shift_ms: int = 0  # shift and partial: positive when the audio is later than the lips
    onset_s: float = 0.0  # media time where the manipulation starts (0: the whole clip)
    donor: str | None = None  # swap: the clip whose audio is used
    text_index: int = 0  # tts: which sentence and voice
    manipulated: bool = True

    @property
    def name(self) -> str:
        parts = [self.clip, self.video, self.audio]
        if self.audio in ("shift", "partial"):
            parts.append(f"{self.shift_ms:+d}ms")
        if self.audio == "partial":
            parts.append(f"at{self.onset_s:.1f}s")
        if self.donor is not None:
            parts.append(f"from-{self.donor}")
        if self.audio == "tts":
            parts.append(f"text{self.text_index}")
        return "__".join(parts)

    @property
    def true_offset_ms(self) -> int | None:
        """The offset a sync detector should find over the whole clip (shifts only)."""
        return self.shift_ms if self.audio == "shift" else None


# ----- audio manipulations (16 kHz mono float32, sample 0 at the first video frame) --------


def shift_audio(samples: np.ndarray, shift_ms: float) -> np.ndarray:
    """Delay (positive) or advance (negative) the audio, keeping its length; gaps are silent."""
    n = len(samples)
    steps = int(round(shift_ms * AUDIO_RATE / 1000))
    out = np.zeros(n, dtype=np.float32)
    if steps >= 0:
        out[steps:] = samples[: max(0, n - steps)]
    else:
        out[: max(0, n + steps)] = samples[-steps:]
    return out


def partial_shift(samples: np.ndarray, shift_ms: float, onset_s: float) -> np.ndarray:
    """In sync before ``onset_s``, shifted by ``shift_ms`` from there on."""
    onset = int(round(onset_s * AUDIO_RATE))
    if not 0 < onset < len(samples):
        raise ConfigError(f"onset {onset_s} s outside the clip")
    out = samples.astype(np.float32, copy=True)
    out[onset:] = shift_audio(samples, shift_ms)[onset:]
    return out


def _rms(samples: np.ndarray) -> float:
    """RMS of the louder half of 20 ms frames: the speech level, not the pauses."""
    frame = AUDIO_RATE // 50
    usable = len(samples) // frame * frame
    if usable == 0:
        return 0.0
    energy = (samples[:usable].reshape(-1, frame).astype(np.float64) ** 2).mean(axis=1)
    loud = np.sort(energy)[len(energy) // 2 :]
    return float(np.sqrt(loud.mean()))


def fit_speech(
    speech: np.ndarray, n_samples: int, level_of: np.ndarray, gap_s: float = 0.3
) -> np.ndarray:
    """``speech`` repeated (with a pause between) to fill ``n_samples``, at the loudness of
    ``level_of``, so a dub or a swap is not given away by its length or level."""
    if len(speech) == 0:
        raise ConfigError("no speech to fit")
    gap = np.zeros(int(gap_s * AUDIO_RATE), dtype=np.float32)
    unit = np.concatenate([speech.astype(np.float32), gap])
    reps = int(np.ceil(n_samples / len(unit)))
    out = np.tile(unit, reps)[:n_samples]
    source_level, target_level = _rms(speech), _rms(level_of)
    if source_level > 1e-6 and target_level > 1e-6:
        out = out * (target_level / source_level)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def tts_speech(text_index: int) -> np.ndarray:
    """espeak-ng speech for the TTS dub (16 kHz), trimmed of its leading and trailing pauses."""
    from monitor.synth.speech import synthesize

    text = TTS_TEXTS[text_index % len(TTS_TEXTS)]
    voice = TTS_VOICES[text_index % len(TTS_VOICES)]
    speech = synthesize(text, voice=voice)
    return speech.trimmed().samples


def variant_audio(spec: VariantSpec, clips: dict[str, PreparedClip]) -> np.ndarray:
    """The audio track of ``spec`` at 16 kHz, as long as its clip."""
    clip = clips[spec.clip]
    own = clip.audio()
    if spec.audio == "original":
        return own
    if spec.audio == "shift":
        return shift_audio(own, spec.shift_ms)
    if spec.audio == "partial":
        return partial_shift(own, spec.shift_ms, spec.onset_s)
    if spec.audio == "swap":
        if spec.donor is None or spec.donor not in clips:
            raise ConfigError(f"swap variant of {spec.clip} needs a prepared donor clip")
        return fit_speech(clips[spec.donor].audio(), len(own), own)
    if spec.audio == "tts":
        return fit_speech(tts_speech(spec.text_index), len(own), own)
    raise ConfigError(f"unknown audio kind {spec.audio!r}")


# ----- encoding ------------------------------------------------------------------------------


def fit_size(width: int, height: int, settings: EncodeSettings) -> tuple[int, int]:
    """Scale down to fit the settings' box (either orientation); even sides for 4:2:0."""
    long_side, short_side = max(width, height), min(width, height)
    scale = min(1.0, settings.max_long_side / long_side, settings.max_short_side / short_side)
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def exact_rate(fps: float) -> Fraction:
    """29.97 means 30000/1001 (and 23.976, 59.94 likewise); others to a small fraction."""
    for ntsc in (24000, 30000, 60000):
        if abs(fps - ntsc / 1001) < 0.005:
            return Fraction(ntsc, 1001)
    return Fraction(fps).limit_denominator(1001)


class _VideoWriter:
    """A video-only mp4 with fixed x264 settings, fed RGB frames (scaled here) or YUV planes."""

    def __init__(self, path: Path, rate: Fraction, size: tuple[int, int], settings: EncodeSettings):
        self.path = path
        self.container = av.open(str(path), "w", format="mp4")
        stream = self.container.add_stream(settings.video_codec, rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = settings.pix_fmt
        stream.codec_context.time_base = 1 / rate
        # Fixed options, one thread: identical bits whatever the machine's load.
        stream.codec_context.thread_count = 1
        stream.options = {"crf": str(settings.crf), "preset": settings.preset}
        self.stream = stream
        self.frames = 0

    def add_rgb(self, image: np.ndarray) -> np.ndarray:
        """Scale and convert in one swscale pass, encode; returns the planar YUV picture."""
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        width, height = self.stream.width, self.stream.height
        frame = frame.reformat(width=width, height=height, format=self.stream.pix_fmt)
        self._encode(frame)
        return frame.to_ndarray()

    def add_yuv(self, planes: np.ndarray) -> None:
        self._encode(av.VideoFrame.from_ndarray(planes, format=self.stream.pix_fmt))

    def _encode(self, frame: av.VideoFrame) -> None:
        frame.pts = self.frames
        frame.time_base = self.stream.codec_context.time_base
        self.container.mux(self.stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def clip_cache_dir(
    cache_root: Path, source: Path, settings: EncodeSettings, kinds: tuple[str, ...]
) -> Path:
    stat = source.stat()
    key = json.dumps(
        [
            FORMAT_VERSION,
            str(source.resolve()),
            stat.st_size,
            stat.st_mtime_ns,
            asdict(settings),
            kinds,
        ]
    )
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return cache_root / f"{source.stem[:60]}-{digest}"


def prepare_clip(
    source: str | os.PathLike[str],
    cache_root: Path,
    settings: EncodeSettings,
    *,
    name: str | None = None,
    kinds: tuple[str, ...] = VIDEO_KINDS,
) -> PreparedClip:
    """Decode ``source`` once and encode its video tracks; reuse the cache when present."""
    source = Path(source)
    directory = clip_cache_dir(cache_root, source, settings, kinds)
    meta_path = directory / "clip.json"
    if meta_path.exists():
        return PreparedClip.from_json(directory, json.loads(meta_path.read_text()))
    directory.mkdir(parents=True, exist_ok=True)
    clip = _encode_clip(source, directory, settings, name or source.stem, kinds)
    tmp = _tmp(meta_path)
    tmp.write_text(json.dumps(clip.to_json(), indent=1))
    os.replace(tmp, meta_path)
    return clip


def _encode_clip(
    source: Path, directory: Path, settings: EncodeSettings, name: str, kinds: tuple[str, ...]
) -> PreparedClip:
    from monitor.sources.file import FileSource

    with FileSource(source) as media:
        info = media.info
        if not info.has_audio:
            raise MissingStreamError(f"{source} has no audio: variants need a soundtrack")
        rate = exact_rate(info.fps or 25.0)
        size = fit_size(info.width or 2, info.height or 2, settings)
        max_frames = int(settings.max_seconds * rate)
        loop_frames = max(1, int(settings.loop_seconds * rate))
        writer = _VideoWriter(_tmp(directory / "original.mp4"), rate, size, settings)
        kept: list[np.ndarray] = []  # first frames (planar YUV): the loop, the frozen picture
        chunks: list[AudioChunk] = []
        first_t: float | None = None
        try:
            for item in _until(media, max_frames):
                if isinstance(item, VideoFrame):
                    if first_t is None:
                        first_t = item.t
                    planes = writer.add_rgb(item.image)
                    if len(kept) < loop_frames:
                        kept.append(planes)
                else:
                    chunks.append(item)
        finally:
            writer.close()
    n_frames = writer.frames
    tracks = {"original": directory / "original.mp4"}
    os.replace(writer.path, tracks["original"])
    # The loop is at most a third of the clip, so it really repeats; the frozen picture
    # is one of its middle frames.
    loop = kept[: max(1, min(len(kept), n_frames // 3))]
    sequences = {"frozen": [kept[len(kept) // 2]], "looped": loop}
    for kind in kinds:
        if kind == "original":
            continue
        tracks[kind] = _write_track(
            directory / f"{kind}.mp4", rate, size, settings, n_frames, sequences[kind]
        )
    audio = _aligned_audio(chunks, first_t or 0.0, int(round(n_frames / rate * AUDIO_RATE)))
    tmp = _tmp(directory / "audio16k.npy")
    with open(tmp, "wb") as handle:
        np.save(handle, audio)
    os.replace(tmp, directory / "audio16k.npy")
    return PreparedClip(name, str(source), directory, rate, n_frames, size[0], size[1], tracks)


def _write_track(
    path: Path,
    rate: Fraction,
    size: tuple[int, int],
    settings: EncodeSettings,
    n_frames: int,
    cycle: list[np.ndarray],
) -> Path:
    """``n_frames`` frames that repeat ``cycle`` (one picture: a frozen video)."""
    writer = _VideoWriter(_tmp(path), rate, size, settings)
    try:
        for i in range(n_frames):
            writer.add_yuv(cycle[i % len(cycle)])
    finally:
        writer.close()
    os.replace(writer.path, path)
    return path


def _until(media: object, max_frames: int) -> Iterator[VideoFrame | AudioChunk]:
    """Media items up to ``max_frames`` video frames and the audio that goes with them."""
    frames = 0
    limit_t: float | None = None
    for item in media:  # type: ignore[attr-defined]
        if isinstance(item, VideoFrame):
            if frames >= max_frames:
                limit_t = item.t if limit_t is None else limit_t
                continue
            frames += 1
        elif limit_t is not None and item.t > limit_t + 1.0:
            break
        yield item


def _aligned_audio(chunks: list[AudioChunk], t0: float, n_samples: int) -> np.ndarray:
    """Samples from media time ``t0`` on, ``n_samples`` long, zeros where nothing was decoded."""
    out = np.zeros(n_samples, dtype=np.float32)
    for chunk in chunks:
        start = int(round((chunk.t - t0) * AUDIO_RATE))
        lo, hi = max(start, 0), min(start + len(chunk.samples), n_samples)
        if hi > lo:
            out[lo:hi] = chunk.samples[lo - start : hi - start]
    return out


def _encode_audio(
    container: av.container.OutputContainer, samples: np.ndarray, settings: EncodeSettings
) -> list[av.Packet]:
    """16 kHz samples resampled (zero-phase polyphase) and encoded as the settings say."""
    stream = container.add_stream(settings.audio_codec, rate=settings.audio_rate, layout="mono")
    stream.bit_rate = settings.audio_bit_rate
    common = int(np.gcd(settings.audio_rate, AUDIO_RATE))
    pcm = resample_poly(
        samples.astype(np.float64), settings.audio_rate // common, AUDIO_RATE // common
    )
    pcm = np.clip(pcm, -1.0, 1.0).astype(np.float32)
    frame_size = stream.codec_context.frame_size or 1024
    time_base = Fraction(1, settings.audio_rate)
    packets: list[av.Packet] = []
    for start in range(0, len(pcm), frame_size):
        block = pcm[start : start + frame_size]
        if len(block) < frame_size:  # pad the last frame: at most one frame of silence
            block = np.concatenate([block, np.zeros(frame_size - len(block), np.float32)])
        frame = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
        frame.sample_rate = settings.audio_rate
        frame.time_base = time_base
        frame.pts = start
        packets.extend(stream.encode(frame))
    packets.extend(stream.encode(None))
    return packets


def mux_variant(
    video_track: Path, samples: np.ndarray, out_path: Path, settings: EncodeSettings
) -> Path:
    """``video_track``'s packets (copied) with ``samples`` (16 kHz) encoded as AAC, interleaved."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(out_path)
    with av.open(str(video_track)) as vin, av.open(str(tmp), "w", format="mp4") as out:
        vstream = out.add_stream_from_template(vin.streams.video[0])
        packets = [(float(p.dts * p.time_base), p) for p in _encode_audio(out, samples, settings)]
        for packet in vin.demux(vin.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = vstream
            packets.append((float(packet.dts * packet.time_base), packet))
        packets.sort(key=lambda item: item[0])
        for _, packet in packets:
            out.mux(packet)
    os.replace(tmp, out_path)
    return out_path


def build_variant(
    spec: VariantSpec, clips: dict[str, PreparedClip], settings: EncodeSettings
) -> Path:
    """The variant's mp4 (cached next to its clip): a video track with its audio.

    The audio is always recomputed (cheap) and its digest names the file, so a change in
    how audio is made (a new espeak-ng, a fixed shift) never reuses a stale variant.
    """
    clip = clips[spec.clip]
    if spec.video not in clip.video_tracks:
        raise ConfigError(f"clip {spec.clip} has no {spec.video} video track")
    samples = variant_audio(spec, clips)
    digest = hashlib.sha1(np.ascontiguousarray(samples, dtype=np.float32).tobytes()).hexdigest()
    out_path = clip.directory / "variants" / f"{spec.name}__{digest[:10]}.mp4"
    if out_path.exists():
        return out_path
    return mux_variant(clip.video_tracks[spec.video], samples, out_path, settings)
