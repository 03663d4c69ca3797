"""Shared pieces of the live-ingest tests: a media-recording analyzer, an alert listener,
a running server pair, synthetic offers, and leak checks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from websockets.asyncio.client import connect

from monitor.config import MonitorConfig, load_config
from monitor.events import validate_event
from monitor.live.ice import host_candidates_on
from monitor.live.session import MediaOnlyAnalyzer
from monitor.live.whip import LiveServer
from monitor.media import AudioChunk, VideoFrame
from monitor.sinks.websocket import AlertServer


class RecordingAnalyzer(MediaOnlyAnalyzer):
    """Stands in for SessionAnalyzer where a test checks the media, not the detectors.

    It keeps every frame time and chunk, and emits the same lifecycle events
    (session_started, session_ended, summary) so the event path is exercised.
    """

    instances: list[RecordingAnalyzer] = []

    def __init__(
        self, config: MonitorConfig, *, session: str, participant: str, emit: Callable
    ) -> None:
        super().__init__(config, session=session, participant=participant, emit=emit)
        self.video: list[VideoFrame] = []
        self.audio: list[AudioChunk] = []
        self.thread = threading.current_thread().name
        RecordingAnalyzer.instances.append(self)

    def add_video(self, frame: VideoFrame) -> None:
        self.video.append(frame)

    def add_audio(self, chunk: AudioChunk) -> None:
        self.audio.append(chunk)


@dataclass
class AlertListener:
    """A websocket client of /alerts that keeps every event with its receive time."""

    url: str
    token: str | None
    events: list[dict] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)  # time.time()
    _task: asyncio.Task | None = None
    _new: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        self._ws = await connect(self.url, additional_headers=headers)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        with contextlib.suppress(Exception):
            async for message in self._ws:
                self.events.append(json.loads(message))
                self.received_at.append(time.time())
                self._new.set()

    async def stop(self) -> None:
        await self._ws.close()
        if self._task is not None:
            await self._task

    def of(self, participant: str, kind: str | None = None) -> list[dict]:
        return [
            e
            for e in self.events
            if e["participant"] == participant and (kind is None or e["type"] == kind)
        ]

    async def wait_for(self, predicate: Callable[[], Any], timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while not (value := predicate()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                types = [(e["participant"], e["type"]) for e in self.events]
                raise AssertionError(f"timed out; events so far: {types}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), min(remaining, 0.25))
        return value


def live_config(**live: Any) -> MonitorConfig:
    return load_config(live=live) if live else load_config()


@contextlib.asynccontextmanager
async def running_servers(
    config: MonitorConfig, *, token: str | None = "s3cret", analyzer_factory: Any = None
) -> AsyncIterator[tuple[LiveServer, AlertServer, AlertListener]]:
    """A LiveServer and its AlertServer on free loopback ports, plus a listener."""
    alerts = AlertServer("127.0.0.1", 0, token=token, config=config.alerts)
    await alerts.start()
    kwargs = {} if analyzer_factory is None else {"analyzer_factory": analyzer_factory}
    server = LiveServer(config, token=token, sinks=[alerts.publish], **kwargs)
    await server.start("127.0.0.1", 0)
    listener = AlertListener(alerts.url, token)
    await listener.start()
    try:
        yield server, alerts, listener
    finally:
        await server.stop()
        await alerts.drain(2.0)
        await listener.stop()
        await alerts.stop()


def check_events(events: list[dict]) -> None:
    for event in events:
        validate_event(event)


async def make_offer(audio: int = 1, video: int = 1, direction: str = "sendonly") -> str:
    """A real aiortc offer with the given tracks (ICE gathered); the peer is closed."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for _ in range(audio):
        pc.addTransceiver(AudioStreamTrack(), direction=direction)
    for _ in range(video):
        pc.addTransceiver(VideoStreamTrack(), direction=direction)
    if not audio and not video:
        pc.createDataChannel("chat")
    with host_candidates_on(["127.0.0.1"]):
        await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def thread_names() -> set[str]:
    """Live threads other than those kept on purpose between sessions: aiortc's and asyncio's
    thread pools, and the one process-wide lip-sync inference thread (started by whichever
    session first needs the model)."""
    return {
        t.name
        for t in threading.enumerate()
        if not t.name.startswith(("ThreadPoolExecutor", "asyncio_", "dfmon-sync-inference"))
    }


def other_tasks() -> list[asyncio.Task]:
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not current and not t.done()]
