"""Replay a recorded call through the same pipeline a live call takes.

The file is decoded as fast as possible, or paced to the wall clock (``realtime``) as a
live call would arrive. Events go to the given sinks as they are produced.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.config import MonitorConfig
from monitor.events import EventSink
from monitor.media import AudioChunk, VideoFrame
from monitor.native_log import stderr_is_terminal
from monitor.pipeline import SessionAnalyzer, SessionStats

log = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    summary: dict[str, Any]
    stats: SessionStats
    media_seconds: float
    wall_seconds: float
    decode_seconds: float

    @property
    def x_realtime(self) -> float:
        return self.media_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, duration_s: float | None) -> None:
        self.duration_s = duration_s
        self.enabled = stderr_is_terminal() and bool(duration_s)
        self._last = 0.0

    def update(self, t: float) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.25:
            return
        self._last = now
        fraction = min(1.0, t / self.duration_s) if self.duration_s else 0.0
        bar = "#" * int(fraction * 30)
        sys.stderr.write(f"\r[{bar:<30}] {t:6.1f}/{self.duration_s:.1f} s")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def replay_file(
    path: str | Path,
    config: MonitorConfig,
    emit: EventSink,
    *,
    audio_path: str | Path | None = None,
    realtime: bool = False,
    session: str | None = None,
    participant: str | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> ReplayResult:
    """Run one recorded call end to end. Raises :class:`~monitor.errors.InputError` on bad input."""
    from monitor.sources.file import FileSource

    wall_started = time.perf_counter()
    # closing(): no detector thread outlives a replay that fails before finish().
    with (
        FileSource(path, audio_path=audio_path) as source,
        contextlib.closing(
            SessionAnalyzer(
                config,
                session=session or uuid.uuid4().hex[:12],
                participant=participant or Path(path).stem,
                emit=emit,
            )
        ) as analyzer,
    ):
        analyzer.start(source.info)
        progress = Progress(source.info.duration_s)
        media_t = 0.0
        decode_s = 0.0
        items = iter(source)
        reason = "end of input"
        while True:
            started = time.perf_counter()
            item = next(items, None)
            decode_s += time.perf_counter() - started
            # Damage found while decoding, before the windows it belongs to are cut.
            for lost in source.damage.take_lost():
                analyzer.note_lost(lost)
            if item is None:
                break
            if should_stop():
                reason = "stopped"
                break
            if realtime:
                delay = wall_started + item.t - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            if isinstance(item, VideoFrame):
                analyzer.add_video(item)
                media_t = max(media_t, item.t)
            elif isinstance(item, AudioChunk):
                analyzer.add_audio(item)
                media_t = max(media_t, item.t_end)
            progress.update(media_t)
        progress.close()
        summary = analyzer.finish(reason=reason)
    return ReplayResult(
        summary=summary,
        stats=analyzer.stats,
        media_seconds=media_t,
        wall_seconds=time.perf_counter() - wall_started,
        decode_seconds=decode_s,
    )


def log_stage_timings(result: ReplayResult) -> None:
    frames = max(1, result.stats.video_frames)
    stages = {"decode": result.decode_seconds, **result.stats.stage_seconds}
    per_frame = ", ".join(f"{name} {1000 * s / frames:.2f}" for name, s in stages.items())
    log.info(
        "replayed %.1f s of media in %.1f s (%.1fx real time); ms per frame: %s",
        result.media_seconds,
        result.wall_seconds,
        result.x_realtime,
        per_frame,
    )
