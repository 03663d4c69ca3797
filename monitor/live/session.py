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

from monitor.config import LiveConfig, MonitorConfig
from monitor.events import EventFactory, EventSink
from monitor.live.admission import BusyMeter, SessionLoad
from monitor.live.align import SessionClock
from monitor.live.convert import AudioConverter, frame_seconds, to_video_frame
from monitor.live.metrics import LiveMetrics
from monitor.media import AudioChunk, LostMedia, StreamInfo

log = logging.getLogger(__name__)

# A frame waits at most this long (wall seconds) for the other track before it is fed,
# so the analyzer sees audio and video in (nearly) time order.
MERGE_HOLD_S = 0.1
WATCHDOG_PERIOD_S = 0.25


class Analyzer(Protocol):
    """What the worker drives: :class:`monitor.pipeline.SessionAnalyzer`'s interface."""

    def start(self, info: StreamInfo) -> None: ...
    def add_video(self, frame: Any) -> None: ...
    def add_audio(self, chunk: AudioChunk) -> None: ...
    def note_lost(self, item: LostMedia) -> None: ...
    def finish(self, reason: str | None = None) -> dict: ...


# (config, session=..., participant=..., emit=...) -> Analyzer
AnalyzerFactory = Callable[..., Analyzer]


def default_analyzer_factory(
    config: MonitorConfig, *, session: str, participant: str, emit: EventSink
) -> Analyzer:
    from monitor.pipeline import SessionAnalyzer

    return SessionAnalyzer(config, session=session, participant=participant, emit=emit, live=True)


class MediaOnlyAnalyzer:
    """Takes a session's media and analyses none of it, emitting the lifecycle events
    (session_started, session_ended, summary) that clients wait for: what the live path
    costs without analysis (``tools/bench_live.py capacity --analysis none``), and the
    base of the tests' recording analyzer."""

    def __init__(
        self, config: MonitorConfig, *, session: str, participant: str, emit: EventSink
    ) -> None:
        self.events = EventFactory(session, participant)
        self.emit = emit
        self.info: StreamInfo | None = None
        self.dropped: dict[str, int] = {}  # frames dropped before analysis, by kind

    def start(self, info: StreamInfo) -> None:
        self.info = info
        self.emit(self.events.make("session_started", **info.as_event_fields()))

    def add_video(self, frame: Any) -> None:
        pass

    def add_audio(self, chunk: AudioChunk) -> None:
        pass

    def note_lost(self, item: LostMedia) -> None:
        if item.reason == "dropped":
            self.dropped[item.kind] = self.dropped.get(item.kind, 0) + item.count

    def finish(self, reason: str | None = None) -> dict:
        if reason is not None:
            self.emit(self.events.make("session_ended", reason=reason))
        summary = self.events.make(
            "summary",
            verdict="unknown",
            risk=0.0,
            peak=None,
            final_level="unknown",
            windows_scored=0,
            windows_insufficient=0,
            frames_dropped=sum(self.dropped.values()),
        )
        self.emit(summary)
        return summary


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
        self.last_drop_s: float | None = None  # time.monotonic() of the latest drop
        self.ended = False  # the track ended: nothing more will come
        # What was dropped, for the analysis to place: (pts on the track clock, seconds);
        # the worker takes them every frame, so a little more than the buffer is plenty.
        self._dropped_items: deque[tuple[float, float]] = deque(maxlen=2 * maxlen + 64)

    def _drop(self, item: Arrival) -> None:
        frame = item.frame
        seconds = frame.samples / frame.sample_rate if isinstance(frame, av.AudioFrame) else 0.0
        self._dropped_items.append((item.pts_s, seconds))

    def push(self, item: Arrival) -> bool:
        """Append; returns True when the oldest frame had to be dropped."""
        with self._lock:
            self.received += 1
            dropped = len(self._items) >= self._maxlen
            if dropped:
                self._drop(self._items.popleft())
                self.dropped += 1
                self.last_drop_s = item.arrival_s
            self._items.append(item)
            return dropped

    def take_dropped(self) -> list[tuple[float, float]]:
        """(pts, seconds) of the frames dropped since the last call (the most recent of
        them, should the worker not have taken them for long: ``dropped`` stays exact)."""
        with self._lock:
            items = list(self._dropped_items)
            self._dropped_items.clear()
            return items

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
                self._drop(self._items.popleft())
                dropped += 1
            if dropped:
                self.dropped += dropped
                self.last_drop_s = time.monotonic()
        return dropped

    def __len__(self) -> int:
        return len(self._items)


class MediaIntake:
    """What the reader tasks (event loop) hand the worker thread, and nothing else:
    one bounded buffer per track, the clock that puts them on media time, and the
    events that wake the worker and tell it to stop. Every method is thread-safe."""

    def __init__(self, kinds: tuple[str, ...], live: LiveConfig) -> None:
        self.kinds = kinds
        self.buffers = {
            "video": TrackBuffer("video", live.video_buffer_frames),
            "audio": TrackBuffer("audio", live.audio_buffer_frames),
        }
        self.wakeup = threading.Event()
        self.stop = threading.Event()
        self._clock = SessionClock(kinds, warmup_s=live.align_warmup_s)
        self._clock_lock = threading.Lock()
        self._video_pts_head: list[float] = []  # first video pts, for the frame rate

    def push(self, kind: str, pts_s: float, arrival_s: float, frame: Any) -> bool:
        """A frame from a reader; returns True when the buffer dropped its oldest."""
        with self._clock_lock:
            self._clock.observe(kind, pts_s, arrival_s)
            if kind == "video" and len(self._video_pts_head) < 25:
                self._video_pts_head.append(pts_s)
        dropped = self.buffers[kind].push(Arrival(pts_s, arrival_s, frame))
        self.wakeup.set()
        return dropped

    def end(self, kind: str) -> None:
        self.buffers[kind].ended = True
        self.wakeup.set()

    def live_kinds(self) -> list[str]:
        """The tracks that may still deliver frames."""
        return [k for k in self.kinds if not self.buffers[k].ended]

    def ready(self, kind: str, now: float) -> bool:
        if kind not in self.kinds:
            return False
        with self._clock_lock:
            return self._clock.ready(kind, now)

    def media_time(self, kind: str, pts_s: float) -> float:
        with self._clock_lock:
            return self._clock.media_time(kind, pts_s)

    def last_drop_s(self) -> float | None:
        drops = [b.last_drop_s for b in self.buffers.values() if b.last_drop_s is not None]
        return max(drops) if drops else None

    def frame_rate(self) -> float | None:
        """From the median interval of the first video timestamps."""
        with self._clock_lock:
            head = list(self._video_pts_head)
        if len(head) < 3:
            return None
        intervals = sorted(b - a for a, b in zip(head, head[1:], strict=False))
        median = intervals[len(intervals) // 2]
        return round(1.0 / median, 2) if median > 0 else None

    def frame_size(self) -> tuple[int | None, int | None]:
        video = self.buffers["video"].peek()
        return (video.frame.width, video.frame.height) if video is not None else (None, None)


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
        quota_key: str = "",
    ) -> None:
        self.config = config
        self.id = session_id
        self.participant = participant
        self.pc = pc
        self.kinds = kinds
        self.codecs = codecs
        self.metrics = metrics
        self.quota_key = quota_key
        self.reason: str | None = None
        self.summary: dict | None = None
        self.created_s = time.monotonic()
        self.last_media_s: float | None = None
        self.intake = MediaIntake(kinds, config.live)
        self.busy = BusyMeter()
        self._dispatch = dispatch
        self._analyzer_factory = analyzer_factory
        self._on_closed = on_closed
        self._events = EventFactory(session_id, participant)
        self._loop = asyncio.get_running_loop()
        self._readers: list[asyncio.Task] = []
        self._watchdog: asyncio.Task | None = None
        self._closing: asyncio.Task | None = None
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
        if track.kind not in self.intake.buffers:
            return
        task = self._loop.create_task(self._read(track), name=f"read-{track.kind}-{self.id}")
        self._readers.append(task)

    @property
    def closed(self) -> bool:
        return self._closing is not None

    def load(self, now: float) -> SessionLoad:
        """What admission control sees of this session."""
        last_drop = self.intake.last_drop_s()
        return SessionLoad(
            key=self.quota_key,
            has_media=self.last_media_s is not None,
            busy=self.busy.fraction(now),
            dropped_recently=(
                last_drop is not None and now - last_drop < self.config.live.overload_hold_s
            ),
        )

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
        for kind in self.intake.buffers:
            self.intake.end(kind)
        self.intake.stop.set()
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
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if frame.pts is None or frame.time_base is None:
                    continue
                self.last_media_s = now
                self.metrics.frames_in[kind] += 1
                if self.intake.push(kind, frame_seconds(frame), now, frame):
                    self.metrics.frames_dropped[kind] += 1
        except MediaStreamError:
            self.intake.end(kind)
            if not self.intake.live_kinds() and not self.closed:
                self.request_close("media_ended")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session %s: reading %s failed", self.id, kind)
            self.request_close("error")

    async def _watch(self) -> None:
        live = self.config.live
        while True:
            await asyncio.sleep(WATCHDOG_PERIOD_S)
            now = time.monotonic()
            if self.last_media_s is None:
                if now - self.created_s > live.connect_timeout_s:
                    self.request_close("no_media")
                    return
            elif now - self.last_media_s > live.no_media_timeout_s:
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
            feeder = _Feeder(
                self.intake,
                analyzer,
                info=self.stream_info,
                max_frame_age_s=self.config.live.max_frame_age_s,
                on_stale=self._count_stale,
                busy=self.busy,
            )
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
            if not self.intake.stop.is_set():
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self.request_close, "error")
                self.intake.stop.wait()
        finally:
            self._finish_worker()

    def stream_info(self) -> StreamInfo:
        """What is known about the media when analysis starts."""
        width, height = self.intake.frame_size()
        return StreamInfo(
            source="whip",
            fps=self.intake.frame_rate(),
            width=width,
            height=height,
            sample_rate=48000 if "audio" in self.kinds else None,
            duration_s=None,
            video_codec=self.codecs.get("video"),
            audio_codec=self.codecs.get("audio"),
        )


class _Feeder:
    """The worker's loop: waits for the clocks, then feeds frames in media-time order.

    It owns the conversion state (audio resampling, video numbering, the last video time)
    and sees the session only through its :class:`MediaIntake` and the callbacks given.
    """

    def __init__(
        self,
        intake: MediaIntake,
        analyzer: Analyzer,
        *,
        info: Callable[[], StreamInfo],
        max_frame_age_s: float,
        on_stale: Callable[[str, int], None] = lambda kind, count: None,
        busy: BusyMeter | None = None,
    ) -> None:
        self.intake = intake
        self.analyzer = analyzer
        self.info = info
        self.max_frame_age_s = max_frame_age_s
        self.on_stale = on_stale
        self.busy = busy if busy is not None else BusyMeter()
        self.audio = AudioConverter()
        self.video_index = 0
        self.last_video_t = -math.inf
        self.reported_drops = {"video": 0, "audio": 0}
        self.started = False
        self.started_at = math.inf  # monotonic time the analyzer started

    def run(self) -> None:
        intake = self.intake
        while True:
            stopping = intake.stop.is_set()
            # When stopping, freeze whatever estimate exists so buffered frames still count.
            now = math.inf if stopping else time.monotonic()
            if not self.started:
                if any(intake.ready(k, now) for k in intake.kinds) or stopping:
                    self.analyzer.start(self.info())
                    self.started = True
                    self.started_at = time.monotonic()
                else:
                    intake.wakeup.wait(0.05)
                    intake.wakeup.clear()
                    continue
            intake.wakeup.clear()
            fed = 0
            while True:
                if not stopping and intake.stop.is_set():
                    # The session ended while a frame was being analysed: what is
                    # buffered now is the call's tail, to be analysed, not dropped.
                    stopping, now = True, math.inf
                if not stopping:
                    now = time.monotonic()
                    self.drop_stale(now)
                kind = self.pick(now, stopping)
                if kind is None:
                    break
                began = time.monotonic()
                self.feed(kind)
                self.report_drops()
                self.busy.add(time.monotonic() - began)
                fed += 1
            self.report_drops()
            if stopping:
                return
            if not fed:
                intake.wakeup.wait(0.05)

    def drop_stale(self, now: float) -> None:
        """Video frames that waited too long are dropped, so the analysis lag stays bounded.

        Only video: it is what costs (face tracking per frame), while audio is cheap and
        a window without its audio could not be scored at all.
        """
        video = self.intake.buffers["video"]
        dropped = video.drop_older(now - self.max_frame_age_s, self.started_at)
        if dropped:
            self.on_stale("video", dropped)

    def pick(self, now: float, stopping: bool) -> str | None:
        """The kind whose head frame is earliest in media time, or None to wait."""
        intake = self.intake
        heads: dict[str, tuple[float, Arrival]] = {}
        for kind in intake.kinds:
            item = intake.buffers[kind].peek()
            if item is not None and intake.ready(kind, now):
                heads[kind] = (intake.media_time(kind, item.pts_s), item)
        if not heads:
            return None
        kind = min(heads, key=lambda k: heads[k][0])
        if len(heads) == 1 and not stopping:
            others_live = any(k != kind for k in intake.live_kinds())
            if others_live and now - heads[kind][1].arrival_s < MERGE_HOLD_S:
                return None
        return kind

    def feed(self, kind: str) -> None:
        item = self.intake.buffers[kind].pop()
        if item is None:
            return
        t = self.intake.media_time(kind, item.pts_s)
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
        """Tell the analysis what was dropped, where in media time when the clock knows."""
        for kind, buffer in self.intake.buffers.items():
            new = buffer.dropped - self.reported_drops[kind]
            if new <= 0:
                continue
            self.reported_drops[kind] = buffer.dropped
            placed = buffer.take_dropped()
            timed = self.started and self.intake.ready(kind, math.inf)
            for pts_s, seconds in placed:
                t = self.intake.media_time(kind, pts_s) if timed else None
                self.analyzer.note_lost(LostMedia(kind, "dropped", t=t, duration_s=seconds))
            if new > len(placed):  # more than the buffer remembered: counted, not placed
                self.analyzer.note_lost(LostMedia(kind, "dropped", count=new - len(placed)))
        for t, seconds in self.audio.take_gaps():
            self.analyzer.note_lost(LostMedia("audio", "missing", t=t, duration_s=seconds))
