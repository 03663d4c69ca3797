"""One live WHIP session: track readers, bounded buffers, clock alignment, analysis worker.

Threads and tasks, and why:

- one reader task per track drains aiortc's (unbounded) receive queue as fast as frames
  arrive, stamps each with its arrival time and puts it in a bounded buffer that drops
  the oldest frame when full (counted). Reading continuously keeps arrival times honest
  and memory bounded even when analysis is slow;
- one worker thread per session converts frames (RGB, 16 kHz mono), puts them on the
  common media clock and drives the synchronous :class:`~monitor.pipeline.SessionAnalyzer`.
  Inference never runs on the event loop; if the worker falls behind, the buffers drop
  frames instead of letting the lag grow;
- one watchdog task ends the session when media stops arriving (a client that vanished).

Everything a session owns is released by :meth:`LiveSession.close`, which is idempotent
and runs whatever ends the session first: DELETE, ICE/DTLS failure, media timeout,
server shutdown, or an analyzer error. One session's failure never touches another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import av
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from monitor.config import MonitorConfig
from monitor.events import EventFactory, EventSink
from monitor.live.align import SessionClock
from monitor.live.convert import AudioConverter, frame_seconds, to_video_frame
from monitor.live.metrics import LiveMetrics
from monitor.media import AudioChunk, StreamInfo

log = logging.getLogger(__name__)

# A frame waits at most this long (wall seconds) for the other track before it is fed,
# so the analyzer sees audio and video in (nearly) time order.
MERGE_HOLD_S = 0.1
# A session whose client never sends media is ended after this many seconds.
CONNECT_TIMEOUT_S = 20.0
WATCHDOG_PERIOD_S = 0.25


class Analyzer(Protocol):
    """What the worker drives: :class:`monitor.pipeline.SessionAnalyzer`'s interface."""

    def start(self, info: StreamInfo) -> None: ...
    def add_video(self, frame: Any) -> None: ...
    def add_audio(self, chunk: AudioChunk) -> None: ...
    def note_dropped(self, kind: str, count: int) -> None: ...
    def finish(self, reason: str | None = None) -> dict: ...


# (config, session=..., participant=..., emit=...) -> Analyzer
AnalyzerFactory = Callable[..., Analyzer]


def default_analyzer_factory(
    config: MonitorConfig, *, session: str, participant: str, emit: EventSink
) -> Analyzer:
    from monitor.pipeline import SessionAnalyzer

    return SessionAnalyzer(config, session=session, participant=participant, emit=emit)


@dataclass(slots=True)
class Arrival:
    """A decoded frame as it came off a track, before conversion."""

    pts_s: float  # on the track's own clock
    arrival_s: float  # time.monotonic() when the reader got it
    frame: av.AudioFrame | av.VideoFrame


class TrackBuffer:
    """Bounded FIFO between a reader task (loop thread) and the worker thread."""

    def __init__(self, kind: str, maxlen: int) -> None:
        self.kind = kind
        self._items: deque[Arrival] = deque()
        self._maxlen = maxlen
        self._lock = threading.Lock()
        self.received = 0
        self.dropped = 0
        self.ended = False  # the track ended: nothing more will come

    def push(self, item: Arrival) -> bool:
        """Append; returns True when the oldest frame had to be dropped."""
        with self._lock:
            self.received += 1
            dropped = len(self._items) >= self._maxlen
            if dropped:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            return dropped

    def peek(self) -> Arrival | None:
        with self._lock:
            return self._items[0] if self._items else None

    def pop(self) -> Arrival | None:
        with self._lock:
            return self._items.popleft() if self._items else None

    def drop_older(self, arrived_before: float, not_before: float) -> int:
        """Drop head frames that arrived before ``arrived_before`` (but not before
        ``not_before``: the backlog of the warm-up is caught up, not dropped)."""
        dropped = 0
        with self._lock:
            while self._items and not_before <= self._items[0].arrival_s < arrived_before:
                self._items.popleft()
                dropped += 1
            self.dropped += dropped
        return dropped

    def __len__(self) -> int:
        return len(self._items)


class LiveSession:
    """A participant's WebRTC session from accepted offer to ``summary``."""

    def __init__(
        self,
        *,
        config: MonitorConfig,
        session_id: str,
        participant: str,
        pc: RTCPeerConnection,
        kinds: tuple[str, ...],
        codecs: dict[str, str],
        dispatch: EventSink,
        metrics: LiveMetrics,
        analyzer_factory: AnalyzerFactory = default_analyzer_factory,
        on_closed: Callable[[LiveSession], None] | None = None,
    ) -> None:
        self.config = config
        self.id = session_id
        self.participant = participant
        self.pc = pc
        self.kinds = kinds
        self.codecs = codecs
        self.metrics = metrics
        self.reason: str | None = None
        self.summary: dict | None = None
        self.created_s = time.monotonic()
        self.last_media_s: float | None = None
        self.video_pts_head: list[float] = []  # first video pts, for the frame rate
        live = config.live
        self.buffers = {
            "video": TrackBuffer("video", live.video_buffer_frames),
            "audio": TrackBuffer("audio", live.audio_buffer_frames),
        }
        self.clock = SessionClock(kinds, warmup_s=live.align_warmup_s)
        self._clock_lock = threading.Lock()
        self._dispatch = dispatch
        self._analyzer_factory = analyzer_factory
        self._on_closed = on_closed
        self._events = EventFactory(session_id, participant)
        self._loop = asyncio.get_running_loop()
        self._readers: list[asyncio.Task] = []
        self._watchdog: asyncio.Task | None = None
        self._closing: asyncio.Task | None = None
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._worker_done: asyncio.Future[None] = self._loop.create_future()
        self._disconnected: asyncio.Future[None] = self._loop.create_future()
        self._worker = threading.Thread(
            target=self._work, name=f"dfmon-session-{session_id}", daemon=True
        )
        pc.on("connectionstatechange", self._on_connection_state)

    # ----- lifecycle (event loop) ---------------------------------------------------------

    def start(self) -> None:
        self._worker.start()
        self._watchdog = self._loop.create_task(self._watch(), name=f"watchdog-{self.id}")

    def add_track(self, track: MediaStreamTrack) -> None:
        if track.kind not in self.buffers:
            return
        task = self._loop.create_task(self._read(track), name=f"read-{track.kind}-{self.id}")
        self._readers.append(task)

    @property
    def closed(self) -> bool:
        return self._closing is not None

    def request_close(self, reason: str) -> asyncio.Task:
        """Start closing (once); the first reason given wins."""
        if self._closing is None:
            self.reason = reason
            self._closing = self._loop.create_task(self._close(reason), name=f"close-{self.id}")
        return self._closing

    async def close(self, reason: str) -> dict | None:
        """End the session and wait until everything is freed; returns the summary."""
        await asyncio.shield(self.request_close(reason))
        return self.summary

    async def request_disconnect(self, reason: str) -> None:
        """Start closing and wait until the peer connection is closed (not the analysis)."""
        self.request_close(reason)
        await asyncio.shield(self._disconnected)

    async def _close(self, reason: str) -> None:
        log.info("session %s (%s) ending: %s", self.id, self.participant, reason)
        current = asyncio.current_task()
        tasks = [t for t in [*self._readers, self._watchdog] if t is not None and t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.pc.close()
        except Exception:  # a broken transport must not keep the session alive
            log.exception("session %s: closing the peer connection failed", self.id)
        self._disconnected.set_result(None)
        for buffer in self.buffers.values():
            buffer.ended = True
        self._stop.set()
        self._wakeup.set()
        await self._worker_done
        self._worker.join()
        if self._on_closed is not None:
            self._on_closed(self)

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state in ("failed", "closed") and not self.closed:
            self.request_close(f"connection_{state}")

    async def _read(self, track: MediaStreamTrack) -> None:
        kind = track.kind
        buffer = self.buffers[kind]
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if frame.pts is None or frame.time_base is None:
                    continue
                pts_s = frame_seconds(frame)
                with self._clock_lock:
                    self.clock.observe(kind, pts_s, now)
                self.last_media_s = now
                if kind == "video" and len(self.video_pts_head) < 25:
                    self.video_pts_head.append(pts_s)
                self.metrics.frames_in[kind] += 1
                if buffer.push(Arrival(pts_s, now, frame)):
                    self.metrics.frames_dropped[kind] += 1
                self._wakeup.set()
        except MediaStreamError:
            buffer.ended = True
            self._wakeup.set()
            live = [k for k in self.kinds if not self.buffers[k].ended]
            if not live and not self.closed:
                self.request_close("media_ended")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session %s: reading %s failed", self.id, kind)
            self.request_close("error")

    async def _watch(self) -> None:
        timeout = self.config.live.no_media_timeout_s
        while True:
            await asyncio.sleep(WATCHDOG_PERIOD_S)
            now = time.monotonic()
            if self.last_media_s is None:
                if now - self.created_s > CONNECT_TIMEOUT_S:
                    self.request_close("no_media")
                    return
            elif now - self.last_media_s > timeout:
                self.request_close("no_media")
                return

    # ----- worker thread ------------------------------------------------------------------

    def _emit(self, event: dict) -> None:
        """Called on the worker thread; hands the event to the loop."""
        with contextlib.suppress(RuntimeError):  # loop already closed: nobody listens
            self._loop.call_soon_threadsafe(self._dispatch, event)

    def _count_stale(self, kind: str, count: int) -> None:
        """Called on the worker thread: metrics live on the loop."""
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._add_dropped, kind, count)

    def _add_dropped(self, kind: str, count: int) -> None:
        self.metrics.frames_dropped[kind] += count

    def _finish_worker(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._set_worker_done)

    def _set_worker_done(self) -> None:
        if not self._worker_done.done():
            self._worker_done.set_result(None)

    def _work(self) -> None:
        analyzer: Analyzer | None = None
        try:
            analyzer = self._analyzer_factory(
                self.config, session=self.id, participant=self.participant, emit=self._emit
            )
            feeder = _Feeder(self, analyzer)
            feeder.run()
            self.summary = analyzer.finish(self.reason or "closed")
        except Exception as exc:
            log.exception("session %s: analysis failed", self.id)
            self._emit(
                self._events.make("error", message=f"analysis failed: {type(exc).__name__}: {exc}")
            )
            try:  # still close the session's record with session_ended and summary
                self.summary = analyzer.finish("error") if analyzer is not None else None
            except Exception:
                log.exception("session %s: finishing the analysis failed", self.id)
            if self.summary is None:
                self._emit(self._events.make("session_ended", reason="error"))
            if not self._stop.is_set():
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self.request_close, "error")
                self._stop.wait()
        finally:
            self._finish_worker()

    def stream_info(self) -> StreamInfo:
        """What is known about the media when analysis starts."""
        width = height = None
        fps = None
        head = list(self.video_pts_head)  # the reader task may still append
        if len(head) >= 3:
            intervals = sorted(b - a for a, b in zip(head, head[1:], strict=False))
            median = intervals[len(intervals) // 2]
            fps = round(1.0 / median, 2) if median > 0 else None
        video = self.buffers["video"].peek()
        if video is not None:
            width, height = video.frame.width, video.frame.height
        return StreamInfo(
            source="whip",
            fps=fps,
            width=width,
            height=height,
            sample_rate=48000 if "audio" in self.kinds else None,
            duration_s=None,
            video_codec=self.codecs.get("video"),
            audio_codec=self.codecs.get("audio"),
        )


class _Feeder:
    """The worker's loop: waits for the clocks, then feeds frames in media-time order."""

    def __init__(self, session: LiveSession, analyzer: Analyzer) -> None:
        self.s = session
        self.analyzer = analyzer
        self.audio = AudioConverter()
        self.video_index = 0
        self.last_video_t = -math.inf
        self.reported_drops = {"video": 0, "audio": 0}
        self.started = False
        self.started_at = math.inf  # monotonic time the analyzer started
        self.max_age_s = session.config.live.max_frame_age_s

    def ready(self, kind: str, now: float) -> bool:
        if kind not in self.s.kinds:
            return False
        with self.s._clock_lock:
            return self.s.clock.ready(kind, now)

    def media_time(self, kind: str, pts_s: float) -> float:
        with self.s._clock_lock:
            return self.s.clock.media_time(kind, pts_s)

    def run(self) -> None:
        s = self.s
        while True:
            stopping = s._stop.is_set()
            # When stopping, freeze whatever estimate exists so buffered frames still count.
            now = math.inf if stopping else time.monotonic()
            if not self.started:
                if any(self.ready(k, now) for k in s.kinds) or stopping:
                    self.analyzer.start(s.stream_info())
                    self.started = True
                    self.started_at = time.monotonic()
                else:
                    s._wakeup.wait(0.05)
                    s._wakeup.clear()
                    continue
            s._wakeup.clear()
            fed = 0
            while True:
                if not stopping:
                    now = time.monotonic()
                    self.drop_stale(now)
                kind = self.pick(now, stopping)
                if kind is None:
                    break
                self.feed(kind)
                self.report_drops()
                fed += 1
            self.report_drops()
            if stopping:
                return
            if not fed:
                s._wakeup.wait(0.05)

    def drop_stale(self, now: float) -> None:
        """Video frames that waited too long are dropped, so the analysis lag stays bounded.

        Only video: it is what costs (face tracking per frame), while audio is cheap and
        a window without its audio could not be scored at all.
        """
        dropped = self.s.buffers["video"].drop_older(now - self.max_age_s, self.started_at)
        if dropped:
            self.s._count_stale("video", dropped)

    def pick(self, now: float, stopping: bool) -> str | None:
        """The kind whose head frame is earliest in media time, or None to wait."""
        heads: dict[str, tuple[float, Arrival]] = {}
        for kind in self.s.kinds:
            item = self.s.buffers[kind].peek()
            if item is not None and self.ready(kind, now):
                heads[kind] = (self.media_time(kind, item.pts_s), item)
        if not heads:
            return None
        kind = min(heads, key=lambda k: heads[k][0])
        if len(heads) == 1 and not stopping:
            others_live = any(not self.s.buffers[k].ended for k in self.s.kinds if k != kind)
            if others_live and now - heads[kind][1].arrival_s < MERGE_HOLD_S:
                return None
        return kind

    def feed(self, kind: str) -> None:
        item = self.s.buffers[kind].pop()
        if item is None:
            return
        t = self.media_time(kind, item.pts_s)
        if kind == "video":
            if t < 0 or t <= self.last_video_t:
                return  # before the call's origin, or out of order
            self.last_video_t = t
            assert isinstance(item.frame, av.VideoFrame)
            self.analyzer.add_video(to_video_frame(item.frame, t, self.video_index))
            self.video_index += 1
        else:
            assert isinstance(item.frame, av.AudioFrame)
            for chunk in self.audio.convert(item.frame, item.pts_s, t):
                if chunk.t_end <= 0:
                    continue
                if chunk.t < 0:
                    skip = round(-chunk.t * 16000)
                    chunk = AudioChunk(t=chunk.t + skip / 16000, samples=chunk.samples[skip:])
                self.analyzer.add_audio(chunk)

    def report_drops(self) -> None:
        for kind, buffer in self.s.buffers.items():
            new = buffer.dropped - self.reported_drops[kind]
            if new > 0:
                self.analyzer.note_dropped(kind, new)
                self.reported_drops[kind] = buffer.dropped
