"""Decode a media file (optionally with a separate audio file) into timestamped media.

Everything lands on one media clock whose origin is the earliest start among the
streams used, so a container's real audio/video offset (an mp4 edit list, the
0.5 s preload of MPEG-PS) survives while both streams still start near zero.
Audio is resampled to 16 kHz mono float32 and timed by counting samples from the
first audio timestamp, which keeps chunks contiguous instead of accumulating
per-frame rounding.
"""

from __future__ import annotations

import heapq
import logging
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np

from monitor.errors import CorruptMediaError, MediaNotFoundError, MissingStreamError
from monitor.media import AUDIO_RATE, AudioChunk, StreamInfo, VideoFrame

log = logging.getLogger(__name__)

MediaItem = VideoFrame | AudioChunk

# Formats read with soundfile (exact sample counts, no container quirks); the rest via PyAV.
_SOUNDFILE_SUFFIXES = {".wav", ".flac"}
_SOUNDFILE_BLOCK_S = 1.0
# An input audio timestamp further than this from the sample count is a real gap: fill it.
_AUDIO_GAP_S = 0.1


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

    def feed(self, frame: av.AudioFrame | None, t: float | None) -> list[AudioChunk]:
        """One decoded frame (at media time ``t``), or None to flush at the end."""
        chunks: list[AudioChunk] = []
        if frame is not None:
            if self._t0 is None:
                self._t0 = t if t is not None else 0.0
            elif t is not None:
                gap = t - self._next_t()
                if gap > _AUDIO_GAP_S:
                    # A hole in the input: keep the clock honest with silence.
                    chunks.append(self._chunk(np.zeros(round(gap * AUDIO_RATE), np.float32)))
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
    Packets that fail to decode are skipped and counted in ``decode_errors``.
    """

    def __init__(
        self, path: str | os.PathLike[str], audio_path: str | os.PathLike[str] | None = None
    ):
        self.path = Path(path)
        self.audio_path = Path(audio_path) if audio_path is not None else None
        self.decode_errors = 0
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
        video.thread_type = "AUTO"
        self._video = video
        self._audio = None
        if self.audio_path is None and container.streams.audio:
            self._audio = container.streams.audio[0]

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

    def _decode_container(self) -> Iterator[MediaItem]:
        """Video (and the container's own audio) in demux order."""
        video, audio = self._video, self._audio
        streams = [s for s in (video, audio) if s is not None]
        clock = _AudioClock() if audio is not None else None
        video_frames = 0
        last_video_t: float | None = None
        packets = self._container.demux(*streams)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:
                # The demuxer cannot go on; flush what the decoders still hold.
                self.decode_errors += 1
                log.warning("%s: demuxing stopped: %s", self.path, exc)
                packet = None
            decoded = self._decode_packet(packet, streams)
            for frame in decoded:
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
                    yield from clock.feed(frame, None if t is None else self._media_time(t))
            if packet is None:
                break
        if clock is not None:
            yield from clock.feed(None, None)
        if video_frames == 0:
            raise CorruptMediaError(
                f"{self.path}: no video frame could be decoded ({self.decode_errors} decode errors)"
            )

    def _decode_packet(self, packet: Any, streams: list[Any]) -> list[Any]:
        if packet is not None:
            try:
                return list(packet.decode())
            except (av.error.FFmpegError, ValueError) as exc:
                self.decode_errors += 1
                log.debug("%s: skipped a bad %s packet: %s", self.path, packet.stream.type, exc)
                return []
        frames: list[Any] = []
        for stream in streams:
            try:
                frames.extend(stream.codec_context.decode(None))
            except (av.error.FFmpegError, ValueError):
                self.decode_errors += 1
        return frames

    def _pyav_audio(self, container: Any) -> Iterator[AudioChunk]:
        """A separate audio file decoded by PyAV; its own start is media time 0."""
        stream = container.streams.audio[0]
        clock = _AudioClock()
        audio_origin: float | None = _seconds(stream.start_time, stream.time_base)
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except (av.error.FFmpegError, ValueError):
                self.decode_errors += 1
                continue
            for frame in frames:
                t = _seconds(frame.pts, frame.time_base or stream.time_base)
                if t is not None:
                    if audio_origin is None:
                        audio_origin = t
                    t -= audio_origin
                yield from clock.feed(frame, t)
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
