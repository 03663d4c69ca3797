"""One session's pipeline: timestamped media in, explained events out.

:class:`SessionAnalyzer` owns everything of one participant's session: the face tracker,
its windower (:mod:`monitor.windows`), the detectors, the sequential decision
(:mod:`monitor.decision`).
It is synchronous and not thread-safe on purpose: one thread drives one session, so
file replay and live ingest share exactly the same code. The only other threads are one
worker per detector (:mod:`monitor.detectors.runner`), waited for one call at a time, so
that a detector that hangs is abandoned after its time budget instead of stalling the session.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from monitor.config import MonitorConfig
from monitor.decision import SequentialDecision, load_calibration
from monitor.detectors.base import Detector, Evidence, format_span
from monitor.detectors.runner import CallTimeout, DetectorRunner
from monitor.events import EventFactory, EventSink
from monitor.explain.live import compact_explanation
from monitor.features.speaker import SpeakerChoice, SpeakerSelector, window_of_speaker
from monitor.features.types import FrameFeatures
from monitor.levels import UNKNOWN
from monitor.media import AUDIO_RATE, AudioChunk, LostMedia, StreamInfo, VideoFrame
from monitor.native_threads import limit_blas_threads
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
    # Frames lost on the way, by (kind, reason) (monitor.media.LostMedia)
    lost: Counter[tuple[str, str]] = field(default_factory=Counter)
    windows_below_minimum: int = 0  # too little media to score: unknown, detectors not run
    windows_thinned: int = 0  # scored, on media that had lost frames
    unknown_reasons: Counter[str] = field(default_factory=Counter)  # reason, numbers as #
    unknown_examples: dict[str, str] = field(default_factory=dict)  # the latest of each
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

    def note_unknown(self, reason: str) -> None:
        key = re.sub(r"[-+]?\d+(\.\d+)?", "#", reason)
        self.unknown_reasons[key] += 1
        self.unknown_examples[key] = reason


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
        live: bool = False,
    ) -> None:
        """``live``: media arrives as it happens (a camera may stop while the microphone
        goes on: those windows are cut and reported, not waited for)."""
        self.config = config
        self.events = EventFactory(session, participant)
        self.emit = emit
        if face_tracker is None:
            from monitor.features.face import create_face_tracker

            face_tracker = create_face_tracker(config.face)
        self.face_tracker: FaceTracker = face_tracker
        self.stats = SessionStats()
        # Detectors fusion needs to call a window clear, and why each is missing.
        self.unavailable: dict[str, str] = {}
        self.detectors: dict[str, Detector] = (
            detectors if detectors is not None else self._create_detectors()
        )
        for name in config.fusion.clear_requires:
            if name not in self.detectors and name not in self.unavailable:
                self.unavailable[name] = "not enabled for this session"
        self._runners: dict[str, DetectorRunner] = {}  # started on a detector's first call
        self.calibration = load_calibration(config.decision)
        self.decision = SequentialDecision.for_session(config, self._versions(), self.calibration)
        # The window where the accumulated evidence peaked: what the summary points to.
        self._peak: dict[str, Any] | None = None
        self._windower = Windower(
            WindowSchedule.from_config(config.window),
            config.audio,
            session=session,
            cut_stalled_video=live,
        )
        self._speakers: SpeakerSelector | None = None  # made when a second face shows up
        self._speakers_judge: Detector | None = None  # whose scorer the selector uses
        self._background_counted: dict[str, float] = {}  # per-frame seconds already counted
        self._finished = False
        self._closed = False
        limit_blas_threads()

    # ----- construction -------------------------------------------------------------------

    def _create_detectors(self) -> dict[str, Detector]:
        from monitor.detectors.registry import enabled_specs

        detectors: dict[str, Detector] = {}
        for spec in enabled_specs(self.config):
            try:
                detectors[spec.name] = spec.factory(self.config)
            except Exception as exc:
                log.exception("detector %s failed to start", spec.name)
                self._unavailable(spec.name, f"failed to start: {exc}")
                self._error(
                    f"detector {spec.name} failed to start: {exc}{self._clear_note(spec.name)}",
                    detector=spec.name,
                )
        return detectors

    def _unavailable(self, name: str, why: str) -> None:
        if name in self.config.fusion.clear_requires:
            self.unavailable.setdefault(name, why)

    def _clear_note(self, name: str) -> str:
        """What losing ``name`` means for the verdicts, for its error event."""
        if name not in self.config.fusion.clear_requires:
            return ""
        return (
            f"; {name} is needed to call a window clear (fusion.clear_requires), so for the "
            "rest of this session no window can be clear: unknown unless other detectors "
            "find trouble"
        )

    # ----- input --------------------------------------------------------------------------

    def _versions(self) -> dict[str, str]:
        versions = {}
        for name, detector in self.detectors.items():
            versions[name] = getattr(detector, "version", "?")
            versions.update(getattr(detector, "companion_versions", {}))
        return versions

    def start(self, info: StreamInfo) -> None:
        self._windower.has_audio = info.has_audio
        self._windower.set_frame_rate(info.fps)
        versions = self._versions()
        calibrated = [
            name
            for name, version in versions.items()
            if self.calibration.for_detector(name, version) is not None
        ]
        self.emit(
            self.events.session_started(
                info, self.config, versions, calibrated, dict(self.unavailable)
            )
        )

    def add(self, item: VideoFrame | AudioChunk) -> None:
        """A decoded item of a source, whichever kind it is."""
        if isinstance(item, VideoFrame):
            self.add_video(item)
        else:
            self.add_audio(item)

    def add_video(self, frame: VideoFrame) -> None:
        started = time.perf_counter()
        track_faces = getattr(self.face_tracker, "track_faces", None)
        if track_faces is not None:
            faces = tuple(track_faces(frame))
        else:  # a tracker of one face
            face = self.face_tracker.track(frame)
            faces = () if face is None else (face,)
        self.stats.stage_seconds["landmarks"] += time.perf_counter() - started
        self.stats.video_frames += 1
        self.stats.frames_with_face += bool(faces)
        height, width = frame.image.shape[:2]
        features = FrameFeatures(
            frame.t,
            frame.index,
            (height, width),
            faces[0] if faces else None,
            faces if len(faces) > 1 else (),
        )
        self._windower.add_frame(features)
        self._observe(features)
        self._pump()

    def _observe(self, frame: FrameFeatures) -> None:
        """Hand the frame to the detectors that work per frame, on their own threads."""
        for name, detector in self.detectors.items():
            observe = getattr(detector, "observe", None)
            if observe is not None:
                self._runner(name).submit(partial(observe, frame))

    def add_audio(self, chunk: AudioChunk) -> None:
        self._windower.add_audio(chunk)
        self.stats.audio_seconds += len(chunk.samples) / AUDIO_RATE
        self._pump()

    def note_lost(self, item: LostMedia) -> None:
        """Media that will never arrive (dropped, undecodable, cut off): counted for the
        session, and placed in its windows' quality when its time is known."""
        self.stats.lost[item.kind, item.reason] += item.count
        if item.reason == "dropped":
            self.stats.frames_dropped[item.kind] = (
                self.stats.frames_dropped.get(item.kind, 0) + item.count
            )
        self._windower.note_lost(item)

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
            if not any(
                getattr(d, "reads_window_face_crops", True) for d in self.detectors.values()
            ):
                # Every detector has measured this window's frames: later windows holding
                # them read the stores, so the frames need not keep their face crops.
                self._windower.frames.release_face_crops(window.t_end)

    def _runner(self, name: str) -> DetectorRunner:
        runner = self._runners.get(name)
        if runner is None:
            if self._closed:  # a new thread now would never be stopped
                raise RuntimeError("session already closed")
            runner = self._runners[name] = DetectorRunner(name)
        return runner

    def _count_background(self, name: str) -> None:
        """Add the time a detector spent on per-frame work since last asked to its total."""
        runner = self._runners.get(name)
        if runner is None:
            return
        done = runner.background_seconds
        counted = self._background_counted.get(name, 0.0)
        self.stats.detector_seconds[name] = (
            self.stats.detector_seconds.get(name, 0.0) + done - counted
        )
        self._background_counted[name] = done

    def _disable(self, name: str, why: str, at: AnalysisWindow) -> None:
        """Drop a detector for the rest of the session, stop its thread (unless it hung)
        and say so, with what it means for the verdicts."""
        del self.detectors[name]
        runner = self._runners.pop(name, None)
        if runner is not None:
            runner.close()
        self._unavailable(name, f"{why} at {format_span(at.t_start, at.t_end)}")
        self._error(
            f"detector {name} {why}; disabled for this session{self._clear_note(name)}",
            detector=name,
        )

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
                self._disable(name, f"raised {type(exc).__name__}: {exc}", window)
                continue
            else:
                # A result that came just past the deadline is over budget all the same.
                took = f"{elapsed:.2f} s" if elapsed > budget else None
            self.stats.detector_seconds[name] = self.stats.detector_seconds.get(name, 0.0) + elapsed
            self._count_background(name)
            if took is not None:
                why = f"took {took} for one window (budget {budget:.2f} s)"
                self._disable(name, why, window)
                continue
            evidence += [item, *item.companions]
        return evidence

    def _choose_speaker(
        self, window: AnalysisWindow
    ) -> tuple[AnalysisWindow, SpeakerChoice | None]:
        """With several faces in the window, the one to score (:mod:`monitor.features.speaker`),
        judged by the lip-sync detector where it offers a scorer (on its thread), else by
        mouth motion against loudness. Returns the window on that face, and the choice
        when there was one to make."""
        if not any(frame.faces for frame in window.frames):
            return window, None
        detector = self.detectors.get("lip_sync")
        make_scorer = getattr(detector, "speaker_scorer", None)
        if self._speakers is None or self._speakers_judge is not detector:
            scorer = make_scorer() if make_scorer is not None else None
            self._speakers = SpeakerSelector(scorer, self.config.window.min_face_fraction)
            self._speakers_judge = detector
        speech = (
            window.has_audio_stream
            and window.speech_fraction() >= self.config.window.min_speech_fraction
        )
        choose = partial(self._speakers.choose, window, speech)
        if make_scorer is None:
            choice = choose()
        else:
            budget = self.config.detectors.time_budget_s
            try:
                choice, _ = self._runner("lip_sync").call(choose, budget)
            except CallTimeout:
                why = f"took more than {budget:.2f} s to choose the speaking face"
                self._disable("lip_sync", why, window)
                choice = SpeakerChoice(None, 0, reason="choosing the speaking face timed out")
            except Exception as exc:  # the detector meets the same failure on the window
                log.warning("choosing the speaking face failed: %s", exc)
                choice = SpeakerChoice(None, 0, reason=f"choosing the speaking face failed: {exc}")
        # Only a choice among faces in view is news; a face glimpsed in a few frames is not.
        named = choice if choice.faces > 1 or choice.track_id is None else None
        return window_of_speaker(window, choice.track_id), named

    def _too_little_media(self, window: AnalysisWindow) -> str | None:
        """Why the window has too little media to be scored at all, or None."""
        quality = window.quality
        if quality is None:
            return None
        limits = self.config.window
        if quality.received_fraction < limits.min_frames_fraction:
            arrived = "no video arrived" if not quality.frames_received else "too little video"
            return (
                f"{arrived}: {quality.describe()}, "
                f"below the {limits.min_frames_fraction:.0%} needed"
            )
        window_s = window.t_end - window.t_start
        if (
            window.has_audio_stream
            and quality.audio_lost_s > (1 - limits.min_audio_fraction) * window_s
        ):
            return f"audio lost for {quality.audio_lost_s:.1f} s of the {window_s:.1f} s window"
        return None

    def _caveats(self, window: AnalysisWindow, window_llr: float | None) -> list[str]:
        """What a reader must know about the verdict: damaged media, missing detectors."""
        caveats = []
        quality = window.quality
        if window_llr is not None and quality is not None and quality.thinned:
            caveats.append(f"rests on thinned or damaged media: {quality.describe()}")
        for name, why in self.unavailable.items():
            caveats.append(f"{name} unavailable ({why}): no window can be clear")
        return caveats

    def _analyze(self, window: AnalysisWindow) -> None:
        too_little = self._too_little_media(window)
        started = time.perf_counter()
        speaker = None
        if too_little is None:
            window, speaker = self._choose_speaker(window)
        # No face chosen among several: insufficient evidence, the detectors not asked.
        unchosen = speaker.reason if speaker is not None and speaker.track_id is None else None
        evidence = [] if too_little or unchosen else self._run_detectors(window)
        inference_s = time.perf_counter() - started
        self.stats.stage_seconds["detectors"] += inference_s
        started = time.perf_counter()
        # A detector that is gone (failed, hung, not enabled) is not running: the decision
        # cannot clear without a required one (fusion.clear_requires).
        step = self.decision.update(evidence, set(self.detectors), (window.t_start, window.t_end))
        caveats = [too_little] if too_little else []
        caveats += self._caveats(window, step.llr)
        if step.llr is None:
            self.stats.windows_insufficient += 1
            self.stats.windows_below_minimum += too_little is not None
            self.stats.note_unknown(too_little or unchosen or self._first_reason(evidence))
        else:
            self.stats.windows_scored += 1
            self.stats.windows_thinned += bool(window.quality and window.quality.thinned)
        score = self.events.score(
            window,
            evidence,
            step,
            risk=self.decision.risk_of(step.evidence_nats),
            dropped_frames=self.stats.dropped_total,
            inference_s=inference_s,
            speaker=speaker,
            caveats=caveats,
        )
        if self.decision.peak_window == self.decision.windows - 1 and step.llr is not None:
            self._peak = {
                "level": step.level,
                "risk": score["risk"],
                "evidence_nats": step.evidence_nats,
                "t_start": window.t_start,
                "t_end": window.t_end,
                "rationale": score["rationale"],
            }
        self.stats.stage_seconds["fusion"] += time.perf_counter() - started
        self.emit(score)
        if not step.changed:
            return
        if step.previous_level == UNKNOWN and step.level == "clear" and not self.stats.alerts:
            return  # the first evidence establishing "clear" is not news
        self.stats.alerts += 1
        explanation = compact_explanation(window, evidence, step.contributions)
        self.emit(self.events.alert(score, step.previous_level, self.config, explanation))

    def _first_reason(self, evidence: list[Evidence]) -> str:
        """The reason an unknown window gives first: a required detector's, else any."""
        required = self.config.fusion.clear_requires
        for item in sorted(evidence, key=lambda e: e.detector not in required):
            if item.score is None:
                return item.rationale.removeprefix("insufficient evidence: ").split(" over ")[0]
        missing = [n for n in required if n in self.unavailable]
        if missing:
            return f"{missing[0]} unavailable ({self.unavailable[missing[0]]})"
        return "no detector gave evidence"

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
                session_evidence += [item, *item.companions]
        decision = self.decision
        verdict = decision.verdict
        if verdict == "clear" and self.unavailable:
            verdict = UNKNOWN  # what cleared the early windows is gone: the call is not clear
        return self.events.summary(
            session_evidence,
            verdict=verdict,
            risk=decision.peak_risk,
            peak=self._peak,
            final_level=decision.level,
            final_risk=decision.risk,
            evidence_nats=decision.evidence_nats,
            config=self.config,
            counts=self.stats.summary_counts(),
            quality=self._session_quality(),
            caveats=self._session_caveats(scored=decision.windows_with_evidence > 0),
            unavailable=dict(self.unavailable),
            clearing_windows=decision.clearing_windows,
        )

    def _session_quality(self) -> dict[str, Any]:
        """The session's media, frame by frame (windows overlap: their counts do not add)."""
        lost, stats = self.stats.lost, self.stats
        quality: dict[str, Any] = self._windower.media_quality(
            received=stats.video_frames,
            dropped=lost["video", "dropped"],
            undecodable=lost["video", "undecodable"] + lost["video", "damaged_reference"],
        ).as_event()
        quality.pop("speech_fraction")
        quality["faces_found"] = stats.frames_with_face
        quality["windows_below_minimum"] = stats.windows_below_minimum
        quality["windows_thinned"] = stats.windows_thinned
        quality["truncated_s"] = round(self._windower.truncated_s, 3)
        return quality

    def _session_caveats(self, *, scored: bool) -> list[str]:
        stats, caveats = self.stats, []
        if not scored and stats.unknown_reasons:
            key, n = stats.unknown_reasons.most_common(1)[0]
            total = stats.windows_insufficient
            caveats.append(
                f"{total} windows insufficient, {n} of them because: {stats.unknown_examples[key]}"
            )
        if scored and stats.windows_thinned:
            caveats.append(
                f"{stats.windows_thinned} of {stats.windows_scored} scored windows rest on "
                "thinned or damaged media"
            )
        if stats.windows_below_minimum:
            caveats.append(f"{stats.windows_below_minimum} windows had too little media to score")
        if self._windower.truncated_s > 0:
            caveats.append(
                f"the media ends {self._windower.truncated_s:.1f} s before its index says"
            )
        for name, why in self.unavailable.items():
            caveats.append(f"{name} unavailable ({why}): no window could be clear")
        return caveats
