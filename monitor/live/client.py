"""WHIP push client: publish a recorded call in real time, through the real live path.

Each track decodes its own stream of the file with PyAV (audio at its original quality,
resampled once to 48 kHz for Opus) on an executor thread, and releases every frame at
its media time on a clock shared by both tracks, so the receiver sees the audio/video
timing the recording has, as a live sender would produce it. ``PushStats`` keeps the
wall time of media time 0, which is what end-to-end latency is measured from.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import itertools
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp
import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from monitor.errors import AuthError, CorruptMediaError, InputError, MonitorError
from monitor.live.ice import address_towards, host_candidates_on
from monitor.sources.file import FileSource, decode_frames

log = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
AUDIO_RATE_OUT = 48000
AUDIO_FRAME_SAMPLES = 960  # 20 ms, what Opus packetizes
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE_OUT)
# Codecs whose packets aiortc sends as they are (PacketTrack).
PACKET_CODECS = {"video": ("vp8",), "audio": ("opus",)}
# After the last frame, wait this long so the tail reaches the server before DELETE.
TAIL_S = 0.3


class PublishError(MonitorError):
    """The WHIP server could not be used (unreachable, refused, no connection)."""


class ServerBusyError(PublishError):
    """The server refused the session for now (503 at capacity, 429 over a quota)."""

    def __init__(self, message: str, *, status: int, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass
class PushStats:
    video_frames: int = 0
    audio_frames: int = 0
    start_monotonic: float | None = None  # time.monotonic() of media time 0
    start_wall: float | None = None  # time.time() of media time 0
    late_frames: int = 0  # released more than one frame late (the sender could not keep up)
    decode_errors: int = 0  # packets of the file that could not be decoded (skipped)
    location: str | None = None
    ended_by: str = ""
    extra: dict = field(default_factory=dict)


class PacingClock:
    """Media time -> wall time, shared by the tracks of one publication."""

    def __init__(self, stats: PushStats) -> None:
        self.stats = stats

    async def wait_until(self, t: float, frame_s: float) -> None:
        now = time.monotonic()
        if self.stats.start_monotonic is None:
            self.stats.start_monotonic = now - max(t, 0.0)
            self.stats.start_wall = time.time() - max(t, 0.0)
        delay = self.stats.start_monotonic + t - now
        if delay > 0:
            await asyncio.sleep(delay)
        elif -delay > frame_s:
            self.stats.late_frames += 1


def _stream_origin(container: av.container.InputContainer) -> float:
    """The earliest start of the streams used, as FileSource defines media time 0."""
    starts = []
    for stream in (*container.streams.video[:1], *container.streams.audio[:1]):
        if stream.start_time is not None and stream.time_base is not None:
            starts.append(float(stream.start_time * stream.time_base))
    return min(starts) if starts else 0.0


def _decode(container: Any, stream: Any, stats: PushStats) -> Iterator[Any]:
    """The stream's usable frames; damage is skipped (sent as a gap) and counted."""

    def lost(kind: str, reason: str, t: float | None, duration_s: float | None) -> None:
        stats.decode_errors += 1

    def stopped(why: str) -> None:
        stats.decode_errors += 1
        log.warning("reading the %s stream stopped: %s", stream.type, why)

    return decode_frames(container, [stream], lost, stopped)


class _FileTrack(MediaStreamTrack):
    """Decodes one stream of ``path`` off the loop and paces its frames."""

    def __init__(self, path: Path, origin_s: float, clock: PacingClock, stats: PushStats) -> None:
        super().__init__()
        self._container = av.open(str(path))
        self._origin_s = origin_s
        self._clock = clock
        self._stats = stats
        self._frames = self._decode()
        self._decoding = threading.Lock()  # the container is closed only between decodes
        self.finished = asyncio.Event()

    def _decode(self) -> Iterator[tuple[float, av.AudioFrame | av.VideoFrame]]:
        raise NotImplementedError

    def _next(self) -> tuple[float, av.AudioFrame | av.VideoFrame] | None:
        with self._decoding:
            if self.finished.is_set():
                return None
            try:
                return next(self._frames)
            except StopIteration:
                return None
            except av.error.FFmpegError as exc:
                log.warning("decoding %s stopped: %s", self.kind, exc)
                return None

    def _end(self) -> None:
        """End the track (at the end of the file or when the publication stops)."""
        self.finished.set()
        with self._decoding:
            self._frames.close()
            self._container.close()
        self.stop()

    async def recv(self) -> av.AudioFrame | av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        item = await asyncio.get_running_loop().run_in_executor(None, self._next)
        if item is None:
            self._end()
            raise MediaStreamError
        t, frame = item
        await self._clock.wait_until(t, self._frame_s)
        self._count()
        return frame

    _frame_s = 0.04

    def _count(self) -> None:
        raise NotImplementedError


class FileVideoTrack(_FileTrack):
    kind = "video"

    def _decode(self) -> Iterator[tuple[float, av.VideoFrame]]:
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        step = 1.0 / float(rate) if rate else 0.04
        self._frame_s = step
        index = 0
        for frame in _decode(self._container, stream, self._stats):
            assert isinstance(frame, av.VideoFrame)
            t = frame.time - self._origin_s if frame.time is not None else index * step
            index += 1
            if t < 0:
                continue
            out = frame if frame.format.name == "yuv420p" else frame.reformat(format="yuv420p")
            out.pts = round(t * VIDEO_TIME_BASE.denominator)
            out.time_base = VIDEO_TIME_BASE
            yield t, out

    def _count(self) -> None:
        self._stats.video_frames += 1


class FileAudioTrack(_FileTrack):
    kind = "audio"
    _frame_s = AUDIO_FRAME_SAMPLES / AUDIO_RATE_OUT

    def _decode(self) -> Iterator[tuple[float, av.AudioFrame]]:
        stream = self._container.streams.audio[0]
        resampler = av.AudioResampler(
            format="s16", layout="stereo", rate=AUDIO_RATE_OUT, frame_size=AUDIO_FRAME_SAMPLES
        )
        first_sample: int | None = None  # 48 kHz sample index of the first output sample
        count = 0
        frames = _decode(self._container, stream, self._stats)
        for decoded in itertools.chain(frames, [None]):
            if first_sample is None and decoded is not None:
                t0 = decoded.time - self._origin_s if decoded.time is not None else 0.0
                first_sample = round(t0 * AUDIO_RATE_OUT)
            for out in resampler.resample(decoded):
                assert first_sample is not None
                pts = first_sample + count
                count += out.samples
                if pts + out.samples <= 0:
                    continue  # entirely before media time 0 (codec priming)
                if pts < 0:  # straddles media time 0: keep what follows it
                    out = _trim_s16_stereo(out, -pts)
                    pts = 0
                out.pts = pts
                out.time_base = AUDIO_TIME_BASE
                yield pts / AUDIO_RATE_OUT, out

    def _count(self) -> None:
        self._stats.audio_frames += 1


def _trim_s16_stereo(frame: av.AudioFrame, skip: int) -> av.AudioFrame:
    """Drop the first ``skip`` samples of a packed s16 stereo frame."""
    data = frame.to_ndarray()[:, 2 * skip :]
    trimmed = av.AudioFrame.from_ndarray(data.copy(), format="s16", layout="stereo")
    trimmed.sample_rate = frame.sample_rate
    return trimmed


class WhipClient:
    """The HTTP side of WHIP: POST the offer, DELETE the session."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        participant: str | None = None,
        call: str | None = None,
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InputError(f"--url must be http(s)://HOST:PORT/whip, not {url!r}")
        self.url = url
        query = {k: v for k, v in (("participant", participant), ("call", call)) if v}
        if query:
            sep = "&" if parts.query else "?"
            self.url = f"{url}{sep}{urlencode(query)}"
        self.token = token
        self.location: str | None = None
        self._http: aiohttp.ClientSession | None = None

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def __aenter__(self) -> WhipClient:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def post_offer(self, offer_sdp: str) -> str:
        """Returns the SDP answer; raises AuthError (401) or InputError (other refusals).

        A ``307`` (a gateway spreading sessions, RFC 9725 section 4.5) is followed with
        the offer; the session URL is then relative to where the offer was answered.
        """
        assert self._http is not None, "use WhipClient as an async context manager"
        try:
            async with self._http.post(
                self.url, data=offer_sdp.encode(), headers=self._headers("application/sdp")
            ) as response:
                body = await response.text()
                if response.status == 201:
                    location = response.headers.get("Location")
                    if not location:
                        raise PublishError("the WHIP server sent no Location header")
                    self.location = urljoin(str(response.url), location)
                    return body
                detail = _problem_detail(body) or response.reason or ""
        except aiohttp.ClientError as exc:
            raise InputError(f"cannot reach the WHIP server at {self.url}: {exc}") from exc
        if response.status == 401:
            raise AuthError(f"the WHIP server refused the token: {detail}")
        if response.status in (429, 503):
            retry_after = response.headers.get("Retry-After", "")
            raise ServerBusyError(
                f"the WHIP server cannot take this session now ({response.status}): {detail}"
                + (f"; retry after {retry_after} s" if retry_after else ""),
                status=response.status,
                retry_after_s=float(retry_after) if retry_after.isdigit() else None,
            )
        raise InputError(f"the WHIP server refused the offer ({response.status}): {detail}")

    async def negotiate(self, pc: RTCPeerConnection) -> None:
        """Offer ``pc``'s tracks, POST the offer, apply the answer.

        Host candidates are gathered only on the address that reaches the server (so
        loopback for a server on 127.0.0.1), not on every interface of this machine.
        """
        host = urlsplit(self.url).hostname or ""
        try:
            local = address_towards(host)
        except OSError as exc:
            raise InputError(f"cannot reach the WHIP server at {self.url}: {exc}") from exc
        with host_candidates_on([local]):
            await pc.setLocalDescription(await pc.createOffer())  # gathers all candidates
        answer = await self.post_offer(pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def delete(self) -> None:
        if self.location is None or self._http is None:
            return
        location, self.location = self.location, None
        try:
            async with self._http.delete(location, headers=self._headers()) as response:
                if response.status not in (200, 204, 404):
                    log.warning("DELETE %s answered %s", location, response.status)
        except aiohttp.ClientError as exc:
            log.warning("DELETE %s failed: %s", location, exc)


def _problem_detail(body: str) -> str | None:
    import json

    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:200] or None
    if not isinstance(data, dict):
        return None
    return str(data.get("detail") or data.get("title") or "")[:200]


async def push_file(
    path: str | Path,
    url: str,
    *,
    token: str | None = None,
    participant: str | None = None,
    call: str | None = None,
    stats: PushStats | None = None,
    connect_timeout_s: float = 15.0,
) -> PushStats:
    """Publish ``path`` to the WHIP endpoint ``url`` in real time, then DELETE the session.

    Cancelling the task (Ctrl-C) also DELETEs. Bad files raise the FileSource errors,
    a refused token :class:`AuthError`, other refusals :class:`InputError`.
    """
    path = Path(path)
    with FileSource(path) as probe:  # same checks and errors as replay
        has_audio = probe.info.has_audio
    stats = stats if stats is not None else PushStats()
    clock = PacingClock(stats)
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise CorruptMediaError(f"{path} cannot be opened: {exc}") from exc
    with container:
        origin_s = _stream_origin(container)
    tracks: list[_FileTrack] = [FileVideoTrack(path, origin_s, clock, stats)]
    if has_audio:
        tracks.append(FileAudioTrack(path, origin_s, clock, stats))

    return await _publish(tracks, url, token, participant, call, stats, connect_timeout_s)


async def _publish(
    tracks: list[_FileTrack] | list[PacketTrack],
    url: str,
    token: str | None,
    participant: str | None,
    call: str | None,
    stats: PushStats,
    connect_timeout_s: float,
) -> PushStats:
    """Send ``tracks`` to the WHIP endpoint until they finish, then DELETE the session."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    connected = asyncio.Event()
    broken = asyncio.Event()

    @pc.on("connectionstatechange")
    def _state() -> None:
        if pc.connectionState == "connected":
            connected.set()
        elif pc.connectionState in ("failed", "closed"):
            broken.set()

    for track in tracks:
        pc.addTransceiver(track, direction="sendonly")
    async with WhipClient(url, token=token, participant=participant, call=call) as whip:
        try:
            await whip.negotiate(pc)
            stats.location = whip.location
            await _wait_first(connected, broken, connect_timeout_s)
            if not connected.is_set():
                raise PublishError(f"no WebRTC connection to {url} ({pc.connectionState})")
            finished = asyncio.gather(*(t.finished.wait() for t in tracks))
            broken_wait = asyncio.ensure_future(broken.wait())
            done, _ = await asyncio.wait(
                {finished, broken_wait}, return_when=asyncio.FIRST_COMPLETED
            )
            broken_wait.cancel()
            if finished in done:
                stats.ended_by = "end_of_file"
                await asyncio.sleep(TAIL_S)
            else:
                finished.cancel()
                stats.ended_by = f"connection_{pc.connectionState}"
        except asyncio.CancelledError:
            stats.ended_by = "cancelled"
            raise
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(whip.delete()), 5.0)
            await pc.close()
            for track in tracks:
                if not track.finished.is_set():
                    track._end()
    return stats


class PacketTrack(MediaStreamTrack):
    """One stream of a VP8/Opus file sent as its encoded packets (no decoding, no
    encoding: a publisher that costs almost no CPU), looped up to ``seconds`` and paced
    on the clock shared with the other track."""

    def __init__(
        self, kind: str, path: Path, seconds: float, clock: PacingClock, stats: PushStats
    ) -> None:
        super().__init__()
        self.kind = kind
        self._clock = clock
        self._stats = stats
        self._seconds = seconds
        self._packets, self._clip_s = self._load(path)
        self._iter = self._generate()
        self.finished = asyncio.Event()

    def _load(self, path: Path) -> tuple[list[tuple[float, bytes, float]], float]:
        """(time, payload, duration) of every packet in seconds, and the clip's length."""
        with av.open(str(path)) as container:
            streams = container.streams.video if self.kind == "video" else container.streams.audio
            if not streams or streams[0].codec_context.name not in PACKET_CODECS[self.kind]:
                raise InputError(
                    f"{path}: packets can be sent only from {PACKET_CODECS[self.kind]} {self.kind}"
                )
            packets = []
            for packet in container.demux(streams[0]):
                if packet.size == 0 or packet.pts is None or packet.time_base is None:
                    continue
                tb = packet.time_base
                packets.append(
                    (float(packet.pts * tb), bytes(packet), float((packet.duration or 0) * tb))
                )
            clip_s = float(container.duration / av.time_base) if container.duration else 0.0
        if not packets or clip_s <= 0:
            raise CorruptMediaError(f"{path}: no {self.kind} packets to send")
        return packets, clip_s

    def _generate(self) -> Iterator[tuple[float, av.Packet]]:
        audio_samples = 0
        for loop in itertools.count():
            for t, payload, duration in self._packets:
                media_t = loop * self._clip_s + max(t, 0.0)
                if media_t >= self._seconds:
                    return
                packet = av.Packet(payload)
                if self.kind == "video":
                    packet.pts = round(media_t * VIDEO_TIME_BASE.denominator)
                    packet.time_base = VIDEO_TIME_BASE
                else:  # contiguous sample count: no rounding jitter from the ms time base
                    packet.pts = audio_samples
                    packet.time_base = AUDIO_TIME_BASE
                    audio_samples += round((duration or 0.02) * AUDIO_RATE_OUT)
                    media_t = packet.pts / AUDIO_RATE_OUT
                yield media_t, packet

    def _end(self) -> None:
        self.finished.set()
        self.stop()

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            media_t, packet = next(self._iter)
        except StopIteration:
            self._end()
            raise MediaStreamError from None
        await self._clock.wait_until(media_t, 0.04)
        if self.kind == "video":
            self._stats.video_frames += 1
        else:
            self._stats.audio_frames += 1
        return packet


async def publish_packets(
    path: str | Path,
    url: str,
    *,
    seconds: float,
    token: str | None = None,
    participant: str | None = None,
    call: str | None = None,
    stats: PushStats | None = None,
    connect_timeout_s: float = 15.0,
) -> PushStats:
    """Publish a VP8/Opus file's own packets for ``seconds`` (looping it), then DELETE.

    What a WebRTC sender puts on the wire, without its encoding cost: soak and capacity
    runs on a small machine measure the server, not the publishers.
    """
    path = Path(path)
    stats = stats if stats is not None else PushStats()
    clock = PacingClock(stats)
    tracks = [PacketTrack(kind, path, seconds, clock, stats) for kind in ("video", "audio")]
    return await _publish(tracks, url, token, participant, call, stats, connect_timeout_s)


async def _wait_first(a: asyncio.Event, b: asyncio.Event, timeout_s: float) -> None:
    waits = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
