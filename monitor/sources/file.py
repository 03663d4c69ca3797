"""Decode a media file (optionally with a separate audio file) into timestamped media.

Everything lands on one media clock whose origin is the earliest start among the
streams used, so a container's real audio/video offset (an mp4 edit list, the
0.5 s preload of MPEG-PS) survives while both streams still start near zero.
Audio is resampled to 16 kHz mono float32 and timed by counting samples from the
first audio timestamp, which keeps chunks contiguous instead of accumulating
per-frame rounding.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import av.logging
import numpy as np

from monitor.errors import CorruptMediaError, MediaNotFoundError, MissingStreamError
from monitor.media import AUDIO_RATE, AudioChunk, LostMedia, StreamInfo, VideoFrame

log = logging.getLogger(__name__)

MediaItem = VideoFrame | AudioChunk

# Formats read with soundfile (exact sample counts, no container quirks); the rest via PyAV.
_SOUNDFILE_SUFFIXES = {".wav", ".flac"}
_SOUNDFILE_BLOCK_S = 1.0
# An input audio timestamp further than this from the sample count is a real gap: fill it.
# (Smaller offsets are timestamp jitter: some files' audio pts wander by +-20 ms.)
_AUDIO_GAP_S = 0.1


# Containers whose stream durations come from an index (not estimated from the bitrate),
# so data ending well before them means the file was cut short.
_INDEXED_FORMATS = ("mp4", "mov", "matroska", "webm")
# Kept for a consumer to take; beyond this the oldest go (the counts stay exact).
_MAX_PENDING_LOST = 4096

# (kind, reason, time in the stream's own seconds or None, seconds lost or None) per frame
LostFn = Callable[[str, str, float | None, float | None], None]


@dataclass
class MediaDamage:
    """What of a file could not be used, found while decoding it.

    ``lost`` counts frames by (kind, reason), see :class:`~monitor.media.LostMedia`; each
    loss is also queued, with its media time, for the analysis to take
    (:meth:`take_lost`) and place in its windows.
    """

    lost: Counter[tuple[str, str]] = field(default_factory=Counter)
    truncated_s: dict[str, float] = field(default_factory=dict)  # kind -> seconds missing
    demux_error: str | None = None  # why reading stopped before the end, if it did
    _pending: deque[LostMedia] = field(default_factory=lambda: deque(maxlen=_MAX_PENDING_LOST))

    def record(self, item: LostMedia) -> None:
        self.lost[item.kind, item.reason] += item.count
        self._pending.append(item)

    def take_lost(self) -> list[LostMedia]:
        """The losses recorded since the last call, oldest first."""
        items = list(self._pending)
        self._pending.clear()
        return items

    @property
    def any(self) -> bool:
        return bool(self.lost) or self.demux_error is not None


@contextlib.contextmanager
def _decoder_errors() -> Iterator[list[tuple[int, str, str]]]:
    """The error messages FFmpeg logs during the block (from any thread).

    Decoders conceal most damage instead of failing: H.264 logs "error while decoding
    MB" and shows a frame anyway, unflagged. Their log is the only sign.
    """
    previous, skipping = av.logging.get_level(), av.logging.get_skip_repeated()
    if previous is None or previous < av.logging.ERROR:
        av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)  # an error like the last one logged is news here
    try:
        with av.logging.Capture(local=False) as logs:
            errors: list[tuple[int, str, str]] = []
            yield errors
            errors.extend(item for item in logs if item[0] <= av.logging.ERROR)
    finally:
        av.logging.set_level(previous)
        av.logging.set_skip_repeated(skipping)


def decode_frames(
    container: Any, streams: list[Any], on_lost: LostFn, on_stopped: Callable[[str], None]
) -> Iterator[av.VideoFrame | av.AudioFrame]:
    """Frames of ``streams`` in demux order; damage is skipped and reported to ``on_lost``.

    A packet that fails to decode, a frame the decoder flags corrupt, and what comes out
    of a decode the decoder logged errors for are "undecodable". Video frames after
    them, up to the next keyframe, are predicted from a damaged picture (smeared blocks
    where the face was) and are "damaged_reference": scoring them would turn damage into
    evidence. Damage the decoder does not notice (bit flips that still decode, which
    happens) cannot be found here. When the demuxer cannot go on (a cut file),
    ``on_stopped`` gets why, the decoders are flushed and the iteration ends.
    """
    damaged_video = False
    suspect_video = 0  # frames still in the decoder's threads when it logged an error

    def usable(frame: Any, suspect: bool) -> bool:
        nonlocal damaged_video, suspect_video
        kind = "video" if isinstance(frame, av.VideoFrame) else "audio"
        t = _seconds(frame.pts, frame.time_base)
        if kind == "video" and suspect_video > 0:
            suspect_video -= 1
            suspect = True
        if frame.is_corrupt or suspect:
            damaged_video |= kind == "video"
            duration = frame.samples / frame.sample_rate if kind == "audio" else None
            on_lost(kind, "undecodable", t, duration)
            return False
        if kind == "video" and damaged_video:
            if not frame.key_frame:
                on_lost(kind, "damaged_reference", t, None)
                return False
            damaged_video = False
        return True

    def decoded(source: Any, flush: bool = False) -> list[Any]:
        """Decode one packet (or flush a stream's decoder), judging what comes out."""
        nonlocal suspect_video
        with _decoder_errors() as errors:
            frames = list(source.codec_context.decode(None) if flush else source.decode())
        if errors and not flush and source.stream.type == "video":
            # With frame threads the damaged frame may come out of one of the next decodes.
            context = source.stream.codec_context
            frame_threads = bool(context.thread_type & av.codec.context.ThreadType.FRAME)
            suspect_video = 1 + (context.thread_count if frame_threads else 0)
            errors.clear()
        return [f for f in frames if usable(f, bool(errors))]

    packets = container.demux(*streams)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError as exc:
            on_stopped(str(exc))
            for stream in streams:
                with contextlib.suppress(av.error.FFmpegError, ValueError):
                    yield from decoded(stream, flush=True)
            return
        try:
            frames = decoded(packet)
        except (av.error.FFmpegError, ValueError) as exc:
            kind = packet.stream.type
            log.debug("skipped a bad %s packet: %s", kind, exc)
            damaged_video |= kind == "video"
            t = _seconds(packet.pts, packet.time_base)
            duration = _seconds(packet.duration, packet.time_base) if kind == "audio" else None
            on_lost(kind, "undecodable", t, duration)
            continue
        yield from frames


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise MediaNotFoundError(f"media file not found: {path}")
    if path.is_dir():
        raise MediaNotFoundError(f"{path} is a directory, not a media file")
    if not os.access(path, os.R_OK):
        raise MediaNotFoundError(f"media file {path} cannot be read (permission denied)")


def _open_container(path: Path) -> Any:
    try:
        return av.open(str(path))
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise MediaNotFoundError(f"media file {path} cannot be opened: {exc}") from exc
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise CorruptMediaError(f"{path} is not a readable media container: {exc}") from exc


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


class _AudioClock:
    """Resamples to 16 kHz mono float32 and stamps chunks by sample count."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        self._t0: float | None = None  # media time of the first output sample
        self._out_samples = 0  # 16 kHz samples emitted so far (including gap fill)
        self._input_end: float | None = None  # media time where the last input frame ended

    def feed(
        self, frame: av.AudioFrame | None, t: float | None, *, lost_s: float = 0.0
    ) -> list[AudioChunk]:
        """One decoded frame (at media time ``t``), or None to flush at the end.

        ``lost_s``: audio known lost just before this frame (packets that did not
        decode). Its gap is filled even when shorter than ``_AUDIO_GAP_S``, which only
        guards against timestamp jitter: one lost AAC frame (21-64 ms) left unfilled
        would pull all later audio early.
        """
        chunks: list[AudioChunk] = []
        if frame is not None:
            if self._t0 is None:
                self._t0 = t if t is not None else 0.0
            elif t is not None:
                if lost_s > 0 and self._input_end is not None:
                    # Known lost: the hole is where the last frame ended to this one.
                    gap, threshold = t - self._input_end, lost_s / 2
                else:
                    gap, threshold = t - self._next_t(), _AUDIO_GAP_S
                if gap > threshold:
                    # A hole in the input: keep the clock honest with silence.
                    chunks.append(self._chunk(np.zeros(round(gap * AUDIO_RATE), np.float32)))
            start = t if t is not None else self._input_end
            if start is not None and frame.sample_rate:
                self._input_end = start + frame.samples / frame.sample_rate
        if self._t0 is None:
            return chunks
        try:
            resampled = self._resampler.resample(frame)
        except ValueError:
            # The input's rate or layout changed mid-stream: drain, then start a new resampler.
            resampled = self._resampler.resample(None)
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
            resampled += self._resampler.resample(frame)
        for out in resampled:
            samples = np.ascontiguousarray(out.to_ndarray().reshape(-1), dtype=np.float32)
            if len(samples):
                chunks.append(self._chunk(samples.copy()))
        return chunks

    @property
    def end_t(self) -> float | None:
        """Media time where the audio fed so far ends."""
        return self._input_end

    def _next_t(self) -> float:
        assert self._t0 is not None
        return self._t0 + self._out_samples / AUDIO_RATE

    def _chunk(self, samples: np.ndarray) -> AudioChunk:
        chunk = AudioChunk(t=self._next_t(), samples=samples)
        self._out_samples += len(samples)
        return chunk


class FileSource:
    """Iterable of :class:`VideoFrame` and :class:`AudioChunk` from a file, in time order.

    ``info`` is ready right after construction (the file is opened and probed then).
    ``audio_path`` pairs a separate audio file with the video; it replaces any audio
    track in ``path``, starts at media time 0, and is interleaved with video by time.
    A file without audio is fine (``info.sample_rate is None``); one without video is not.
    Damage (packets that fail to decode, frames decoded from damaged ones, a file cut
    short) is skipped, never analysed, and recorded in ``damage``.
    """

    def __init__(
        self, path: str | os.PathLike[str], audio_path: str | os.PathLike[str] | None = None
    ):
        self.path = Path(path)
        self.audio_path = Path(audio_path) if audio_path is not None else None
        self.damage = MediaDamage()
        self._last_seen: dict[str, float] = {}  # kind -> latest frame time, lost ones too
        self._audio_lost_s = 0.0  # audio lost since the last audio frame decoded
        self._closed = False
        self._iterating = False
        _check_readable(self.path)
        if self.audio_path is not None:
            _check_readable(self.audio_path)
        self._container = _open_container(self.path)
        self._audio_container: Any = None
        try:
            self._probe()
        except BaseException:
            self.close()
            raise

    # -- probing -----------------------------------------------------------------------

    def _probe(self) -> None:
        container = self._container
        if not container.streams.video and not container.streams.audio:
            raise CorruptMediaError(
                f"{self.path} has no audio or video stream (not a media file, or truncated)"
            )
        if not container.streams.video:
            raise MissingStreamError(f"{self.path} has no video stream")
        video = container.streams.video[0]
        if video.codec_context is None:
            raise CorruptMediaError(
                f"{self.path}: the video stream cannot be decoded (damaged or unknown codec)"
            )
        # Slice threads, not frame threads: a decoder's errors are then logged during the
        # decode of the damaged frame, where decode_frames can tie them to it (frame
        # threads log later, from their own threads). Measured cost: 2.4 -> 3.2 ms per
        # 720p H.264 frame, 0.9 -> 1.4-1.9 ms at 512x512 (2 busy cores).
        video.thread_type = "SLICE"
        self._video = video
        self._audio = None
        if self.audio_path is None and container.streams.audio:
            self._audio = container.streams.audio[0]
            if self._audio.codec_context is None:
                raise CorruptMediaError(
                    f"{self.path}: the audio stream cannot be decoded (damaged or unknown codec)"
                )

        rate = video.average_rate or video.guessed_rate or video.base_rate
        fps = float(rate) if rate else None
        self._fallback_step = 1.0 / fps if fps else 1.0 / 25.0  # only for frames with no pts

        duration = _seconds(container.duration, Fraction(1, av.time_base))
        if duration is None:
            duration = _seconds(video.duration, video.time_base)

        sample_rate: int | None = None
        audio_codec: str | None = None
        if self._audio is not None:
            sample_rate = (
                int(self._audio.codec_context.sample_rate or self._audio.rate or 0) or None
            )
            audio_codec = self._audio.codec_context.name
        elif self.audio_path is not None:
            sample_rate, audio_codec = self._probe_audio_file(self.audio_path)

        self.info = StreamInfo(
            source=str(self.path),
            fps=fps,
            width=video.codec_context.width or None,
            height=video.codec_context.height or None,
            sample_rate=sample_rate,
            duration_s=duration,
            video_codec=video.codec_context.name,
            audio_codec=audio_codec,
        )

        starts = [
            _seconds(s.start_time, s.time_base) for s in (video, self._audio) if s is not None
        ]
        known = [s for s in starts if s is not None]
        if known:
            self._origin: float | None = min(known)
        elif container.start_time is not None:
            self._origin = container.start_time / av.time_base
        else:
            self._origin = None  # decided by the first decoded timestamp

    def _probe_audio_file(self, path: Path) -> tuple[int, str]:
        if path.suffix.lower() in _SOUNDFILE_SUFFIXES:
            import soundfile

            try:
                sf_info = soundfile.info(str(path))
            except (RuntimeError, soundfile.LibsndfileError) as exc:
                raise CorruptMediaError(f"{path} is not a readable audio file: {exc}") from exc
            return int(sf_info.samplerate), f"{sf_info.format}/{sf_info.subtype}".lower()
        self._audio_container = _open_container(path)
        if not self._audio_container.streams.audio:
            raise MissingStreamError(f"{path} has no audio stream")
        stream = self._audio_container.streams.audio[0]
        return int(stream.codec_context.sample_rate or stream.rate), stream.codec_context.name

    # -- iteration -----------------------------------------------------------------------

    def __iter__(self) -> Iterator[MediaItem]:
        if self._closed:
            raise ValueError("FileSource is closed")
        if self._iterating:
            raise ValueError("FileSource can be iterated only once")
        self._iterating = True
        if self.audio_path is None:
            yield from self._decode_container()
            return
        external = (
            self._soundfile_audio(self.audio_path)
            if self._audio_container is None
            else self._pyav_audio(self._audio_container)
        )
        yield from heapq.merge(self._decode_container(), external, key=lambda item: item.t)

    def _media_time(self, t: float) -> float:
        if self._origin is None:
            self._origin = t
        return t - self._origin

    def _lost(self, kind: str, reason: str, t: float | None, duration_s: float | None) -> None:
        if kind == "audio":
            self._audio_lost_s += duration_s or 0.0
        media_t = None if t is None else self._media_time(t)
        if media_t is not None:
            self._last_seen[kind] = max(self._last_seen.get(kind, media_t), media_t)
        self.damage.record(LostMedia(kind, reason, t=media_t, duration_s=duration_s))

    def _stopped(self, why: str) -> None:
        log.warning("%s: demuxing stopped: %s", self.path, why)
        self.damage.demux_error = why

    @property
    def decode_errors(self) -> int:
        """Packets and frames that could not be used, and a demuxer that stopped early."""
        return sum(self.damage.lost.values()) + (self.damage.demux_error is not None)

    def _decode_container(self) -> Iterator[MediaItem]:
        """Video (and the container's own audio) in demux order."""
        video, audio = self._video, self._audio
        streams = [s for s in (video, audio) if s is not None]
        clock = _AudioClock() if audio is not None else None
        video_frames = 0
        last_video_t: float | None = None
        for frame in decode_frames(self._container, streams, self._lost, self._stopped):
            if isinstance(frame, av.VideoFrame):
                t = _seconds(frame.pts, frame.time_base or video.time_base)
                if t is None:
                    t = 0.0 if last_video_t is None else last_video_t + self._fallback_step
                else:
                    t = self._media_time(t)
                last_video_t = t
                image = frame.to_ndarray(format="rgb24")
                yield VideoFrame(t=t, index=video_frames, image=image)
                video_frames += 1
            elif clock is not None and isinstance(frame, av.AudioFrame):
                t = _seconds(frame.pts, frame.time_base or audio.time_base)
                lost_s, self._audio_lost_s = self._audio_lost_s, 0.0
                t = None if t is None else self._media_time(t)
                yield from clock.feed(frame, t, lost_s=lost_s)
        if clock is not None:
            yield from clock.feed(None, None)
        if video_frames == 0:
            raise CorruptMediaError(f"{self.path}: no video frame could be decoded{self._why()}")
        self._check_truncation("video", last_video_t, self._fallback_step)
        if clock is not None and clock.end_t is not None:
            self._check_truncation("audio", clock.end_t, 0.0)

    def _why(self) -> str:
        damage = self.damage
        parts = [f"{n} {kind} frames {reason}" for (kind, reason), n in damage.lost.items()]
        if damage.demux_error:
            parts.append(f"demuxing stopped: {damage.demux_error}")
        return f" ({'; '.join(parts)})" if parts else ""

    def _check_truncation(self, kind: str, last_t: float | None, step: float) -> None:
        """Data that ends well before the index says: the file was cut short."""
        stream = self._video if kind == "video" else self._audio
        format_name = self._container.format.name or ""
        if stream is None or last_t is None or not any(f in format_name for f in _INDEXED_FORMATS):
            return
        start = stream.start_time if stream.start_time is not None else 0
        end = _seconds(start + stream.duration, stream.time_base) if stream.duration else None
        if end is None:
            return
        last_t = max(last_t, self._last_seen.get(kind, last_t))
        missing = self._media_time(end) - (last_t + step)
        if missing > max(0.25, 3 * step):
            self.damage.truncated_s[kind] = round(missing, 3)
            frames = max(1, round(missing / step)) if step > 0 else 1
            self.damage.record(
                LostMedia(kind, "truncated", count=frames, t=last_t + step, duration_s=missing)
            )
            log.warning("%s: the %s ends %.2f s before its index says", self.path, kind, missing)

    def _pyav_audio(self, container: Any) -> Iterator[AudioChunk]:
        """A separate audio file decoded by PyAV; its own start is media time 0."""
        stream = container.streams.audio[0]
        clock = _AudioClock()
        audio_origin: float | None = _seconds(stream.start_time, stream.time_base)

        lost_s = 0.0  # since the last frame decoded

        def on_lost(kind: str, reason: str, t: float | None, duration_s: float | None) -> None:
            nonlocal lost_s
            lost_s += duration_s or 0.0
            origin = audio_origin or 0.0
            t = None if t is None else t - origin
            self.damage.record(LostMedia(kind, reason, t=t, duration_s=duration_s))

        for frame in decode_frames(container, [stream], on_lost, self._stopped):
            t = _seconds(frame.pts, frame.time_base or stream.time_base)
            if t is not None:
                if audio_origin is None:
                    audio_origin = t
                t -= audio_origin
            yield from clock.feed(frame, t, lost_s=lost_s)
            lost_s = 0.0
        yield from clock.feed(None, None)

    def _soundfile_audio(self, path: Path) -> Iterator[AudioChunk]:
        """wav/flac via soundfile, downmixed and resampled by the same resampler."""
        import soundfile

        clock = _AudioClock()
        try:
            with soundfile.SoundFile(str(path)) as sound:
                rate = int(sound.samplerate)
                block = max(1, int(rate * _SOUNDFILE_BLOCK_S))
                offset = 0
                while True:
                    data = sound.read(block, dtype="float32", always_2d=True)
                    if not len(data):
                        break
                    mono = np.ascontiguousarray(data.mean(axis=1, dtype=np.float32)[None, :])
                    frame = av.AudioFrame.from_ndarray(mono, format="flt", layout="mono")
                    frame.sample_rate = rate
                    frame.time_base = Fraction(1, rate)
                    frame.pts = offset
                    yield from clock.feed(frame, offset / rate)
                    offset += len(data)
        except (RuntimeError, soundfile.LibsndfileError) as exc:
            raise CorruptMediaError(f"{path}: audio cannot be decoded: {exc}") from exc
        yield from clock.feed(None, None)

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for container in (self._container, self._audio_container):
            if container is not None:
                container.close()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
