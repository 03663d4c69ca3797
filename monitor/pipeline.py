"""One session's pipeline: timestamped media in, explained events out.

:class:`SessionAnalyzer` owns everything of one participant's session: the face tracker,
its windower (:mod:`monitor.windows`), the detectors, the risk state.
It is synchronous and not thread-safe on purpose: one thread drives one session, so
file replay and live ingest share exactly the same code. The only other threads are one
worker per detector (:mod:`monitor.detectors.runner`), waited for one call at a time, so
that a detector that hangs is abandoned after its time budget instead of stalling the session.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from monitor.config import MonitorConfig
from monitor.detectors.base import Detector, Evidence
from monitor.detectors.runner import CallTimeout, DetectorRunner
from monitor.events import EventFactory, EventSink
from monitor.explain.live import compact_explanation
from monitor.features.types import FrameFeatures
from monitor.fusion import RiskState, fuse_evidence, gate_clearing
from monitor.levels import LEVEL_RANK, UNKNOWN
from monitor.media import AUDIO_RATE, AudioChunk, StreamInfo, VideoFrame
from monitor.windows import AnalysisWindow, Windower, WindowSchedule

if TYPE_CHECKING:
    from monitor.features.face import FaceTracker

log = logging.getLogger(__name__)


@dataclass
class SessionStats:
    video_frames: int = 0
    audio_seconds: float = 0.0
    frames_with_face: int = 0
    windows_scored: int = 0
    windows_insufficient: int = 0
    frames_dropped: dict[str, int] = field(default_factory=lambda: {"video": 0, "audio": 0})
    alerts: int = 0
    stage_seconds: dict[str, float] = field(
        default_factory=lambda: {
            "landmarks": 0.0,
            "audio_features": 0.0,
            "detectors": 0.0,
            "fusion": 0.0,
        }
    )
    detector_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def dropped_total(self) -> int:
        return sum(self.frames_dropped.values())

    def summary_counts(self) -> dict[str, Any]:
        """The counts a ``summary`` event reports."""
        return {
            "windows_scored": self.windows_scored,
            "windows_insufficient": self.windows_insufficient,
            "frames_dropped": self.dropped_total,
            "dropped_by_kind": dict(self.frames_dropped),
            "alerts": self.alerts,
            "video_frames": self.video_frames,
            "frames_with_face": self.frames_with_face,
        }


class SessionAnalyzer:
    """Source-agnostic analysis of one participant: feed media, get events through ``emit``."""

    def __init__(
        self,
        config: MonitorConfig,
        *,
        session: str,
        participant: str,
        emit: EventSink,
        face_tracker: FaceTracker | None = None,
        detectors: dict[str, Detector] | None = None,
    ) -> None:
        self.config = config
        self.events = EventFactory(session, participant)
        self.emit = emit
        if face_tracker is None:
            from monitor.features.face import create_face_tracker

            face_tracker = create_face_tracker(config.face)
        self.face_tracker: FaceTracker = face_tracker
        self.stats = SessionStats()
        self.detectors: dict[str, Detector] = (
            detectors if detectors is not None else self._create_detectors()
        )
        self._runners: dict[str, DetectorRunner] = {}  # started on a detector's first call
        windows_per_unknown = max(1, round(2 * config.window.window_s / config.window.hop_s))
        self.risk = RiskState(config.fusion, unknown_after_windows=windows_per_unknown)
        self._windower = Windower(
            WindowSchedule.from_config(config.window), config.audio, session=session
        )
        self._finished = False
        self._closed = False

    # ----- construction -------------------------------------------------------------------

    def _create_detectors(self) -> dict[str, Detector]:
        from monitor.detectors.registry import enabled_specs

        detectors: dict[str, Detector] = {}
        for spec in enabled_specs(self.config):
            try:
                detectors[spec.name] = spec.factory(self.config)
            except Exception as exc:
                log.exception("detector %s failed to start", spec.name)
                self._error(f"detector {spec.name} failed to start: {exc}", detector=spec.name)
        return detectors

    # ----- input --------------------------------------------------------------------------

    def start(self, info: StreamInfo) -> None:
        self._windower.has_audio = info.has_audio
        versions = {name: getattr(det, "version", "?") for name, det in self.detectors.items()}
        self.emit(self.events.session_started(info, self.config, versions))

    def add_video(self, frame: VideoFrame) -> None:
        started = time.perf_counter()
        face = self.face_tracker.track(frame)
        self.stats.stage_seconds["landmarks"] += time.perf_counter() - started
        self.stats.video_frames += 1
        self.stats.frames_with_face += face is not None
        height, width = frame.image.shape[:2]
        self._windower.add_frame(FrameFeatures(frame.t, frame.index, (height, width), face))
        self._pump()

    def add_audio(self, chunk: AudioChunk) -> None:
        self._windower.add_audio(chunk)
        self.stats.audio_seconds += len(chunk.samples) / AUDIO_RATE
        self._pump()

    def note_dropped(self, kind: str, count: int) -> None:
        self.stats.frames_dropped[kind] = self.stats.frames_dropped.get(kind, 0) + count

    def finish(self, reason: str | None = None) -> dict[str, Any]:
        """Score what is left, then emit ``session_ended`` (given a reason) and ``summary``."""
        if self._finished:
            raise RuntimeError("session already finished")
        self._finished = True
        self._windower.end_of_media()
        try:
            self._pump()
            if reason is not None:
                self.emit(self.events.make("session_ended", reason=reason))
            summary = self._summary()
            self.emit(summary)
        finally:
            self.close()
        return summary

    def close(self) -> None:
        """Release the detector threads and the face tracker; idempotent.

        :meth:`finish` calls it, even when it fails. A caller that gives a session up
        without finishing it (its input failed) calls it so that no worker thread is left.
        """
        if self._closed:
            return
        self._closed = True
        for runner in self._runners.values():
            runner.close()
        self._runners.clear()
        self.face_tracker.close()

    # ----- windows ------------------------------------------------------------------------

    def _pump(self) -> None:
        for window in self._windower.windows():
            self.stats.stage_seconds["audio_features"] = self._windower.audio_feature_seconds
            self._analyze(window)

    def _runner(self, name: str) -> DetectorRunner:
        runner = self._runners.get(name)
        if runner is None:
            if self._closed:  # a new thread now would never be stopped
                raise RuntimeError("session already closed")
            runner = self._runners[name] = DetectorRunner(name)
        return runner

    def _disable(self, name: str) -> None:
        """Drop a detector for the rest of the session and stop its thread (unless it hung)."""
        del self.detectors[name]
        runner = self._runners.pop(name, None)
        if runner is not None:
            runner.close()

    def _run_detectors(self, window: AnalysisWindow) -> list[Evidence]:
        """Each detector on its own thread, one after another, each given the time budget."""
        evidence = []
        budget = self.config.detectors.time_budget_s
        for name, detector in list(self.detectors.items()):
            started = time.perf_counter()
            try:
                item, elapsed = self._runner(name).call(partial(detector.analyze, window), budget)
            except CallTimeout:
                # Still running, maybe forever: abandon its thread rather than wait.
                log.warning("detector %s hung on window %d; abandoned", name, window.index)
                elapsed = time.perf_counter() - started
                took = f"more than {budget:.2f} s"
            except Exception as exc:
                log.exception("detector %s failed", name)
                self._disable(name)
                self._error(
                    f"detector {name} raised {type(exc).__name__}: {exc}; "
                    "disabled for this session",
                    detector=name,
                )
                continue
            else:
                # A result that came just past the deadline is over budget all the same.
                took = f"{elapsed:.2f} s" if elapsed > budget else None
            self.stats.detector_seconds[name] = self.stats.detector_seconds.get(name, 0.0) + elapsed
            if took is not None:
                self._disable(name)
                self._error(
                    f"detector {name} took {took} for one window (budget {budget:.2f} s); "
                    "disabled for this session",
                    detector=name,
                )
                continue
            evidence.append(item)
        return evidence

    def _analyze(self, window: AnalysisWindow) -> None:
        started = time.perf_counter()
        evidence = self._run_detectors(window)
        inference_s = time.perf_counter() - started
        self.stats.stage_seconds["detectors"] += inference_s
        started = time.perf_counter()
        window_risk = gate_clearing(
            fuse_evidence(evidence, self.config.detectors.weights),
            evidence,
            self.config.fusion,
            {item.detector for item in evidence},
        )
        change = self.risk.update(window_risk)
        if window_risk is None:
            self.stats.windows_insufficient += 1
        else:
            self.stats.windows_scored += 1
        score = self.events.score(
            window,
            evidence,
            risk=self.risk.smoothed_risk if self.risk.smoothed_risk is not None else 0.0,
            window_risk=window_risk,
            level=self.risk.level if window_risk is not None else UNKNOWN,
            session_level=self.risk.level,
            dropped_frames=self.stats.dropped_total,
            inference_s=inference_s,
        )
        self.stats.stage_seconds["fusion"] += time.perf_counter() - started
        self.emit(score)
        if change is None:
            return
        if change.previous_level == UNKNOWN and change.level == "clear" and not self.stats.alerts:
            return  # the first evidence establishing "clear" is not news
        self.stats.alerts += 1
        explanation = compact_explanation(window, evidence, self.config.detectors.weights)
        self.emit(self.events.alert(score, change, explanation))

    def _error(self, message: str, **fields: Any) -> None:
        self.emit(self.events.error(message, **fields))

    # ----- summary ------------------------------------------------------------------------

    def _summary(self) -> dict[str, Any]:
        session_evidence: list[Evidence] = []
        budget = self.config.detectors.time_budget_s
        for name, detector in self.detectors.items():
            summarize = getattr(detector, "summarize", None)
            if summarize is None:
                continue
            try:  # on the detector's thread, so a hung summarize cannot hang finish either
                item, _ = self._runner(name).call(summarize, budget)
            except CallTimeout:
                log.warning("detector %s hung in summarize; abandoned", name)
                self._error(
                    f"detector {name} took more than {budget:.2f} s to summarize; left out",
                    detector=name,
                )
                continue
            except Exception as exc:
                log.exception("detector %s failed to summarize", name)
                self._error(f"detector {name} failed to summarize: {exc}", detector=name)
                continue
            if item is not None:
                session_evidence.append(item)
        session_risk = gate_clearing(
            fuse_evidence(session_evidence, self.config.detectors.weights),
            session_evidence,
            self.config.fusion,
            set(self.detectors),
        )
        mean_risk = self.risk.mean_window_risk
        if session_risk is None:
            session_risk = mean_risk
        level = UNKNOWN
        if session_risk is not None:
            level = max(
                self.risk.peak_level, self.risk.level_for(session_risk), key=LEVEL_RANK.__getitem__
            )
        return self.events.summary(
            session_evidence,
            risk=session_risk,
            level=level,
            final_level=self.risk.level,
            peak_risk=self.risk.peak_risk,
            mean_window_risk=mean_risk,
            counts=self.stats.summary_counts(),
        )
