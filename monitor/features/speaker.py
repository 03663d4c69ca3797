"""Which face is speaking, when several are in view: the one whose lips go with the speech.

Active-speaker detection asks which face's mouth matches the audio. The best judge here
is the learned sync model itself (as SyncNet is used for active-speaker detection): the
speaking face's lag curve has a clear minimum, another face's does not. On two real
speakers side by side from the training pool (tools/eval_speaker.py) its sync confidence
put the speaker above the other speaking face in 99% of the windows (median 3.2 against
0.55), where the correlation of mouth opening with loudness managed 60%. That
correlation is kept as the fallback scorer for lip-sync detectors without a confidence.

The choice uses the mean over the last few windows per face, so that one window's chance
match does not flip it. When no face stands out, no face is chosen and the window is
insufficient evidence: a guess could score the wrong person's lips against the speech and
raise a false alarm on a genuine call.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from monitor.features.types import AudioFeatures, FaceObservation, FrameFeatures

if TYPE_CHECKING:
    from monitor.windows import AnalysisWindow

# Lags searched (seconds, either way) by the correlation scorer: the sync detectors' range.
MAX_LAG_S = 0.6
LAG_STEP_S = 0.04
# Loudness below this (dBFS) counts as this: pauses are quiet, whatever the noise is.
LOUDNESS_FLOOR_DB = -60.0
# A mouth whose opening varies less than this (face heights) does not move.
MIN_APERTURE_STD = 0.002
# Windows with speech whose scores are averaged per face.
HISTORY_WINDOWS = 4


@dataclass(frozen=True, slots=True)
class TrackScorer:
    """How well a window's face goes with its speech (higher: better); the window given
    has ``face`` set to one track's face in every frame.

    ``min_score``: what the speaking face reaches; ``min_margin``: how far it must lead
    the next face. Both on the scale of ``score``, set on training-pool composites.
    """

    label: str
    score: Callable[[AnalysisWindow], float | None]
    min_score: float
    min_margin: float


@dataclass(frozen=True, slots=True)
class SpeakerChoice:
    """The face a window is scored on, and why."""

    track_id: int | None  # None: no face could be chosen
    faces: int  # face tracks in view for most of the window
    scores: dict[int, float] = field(default_factory=dict)  # track -> mean score
    reason: str = ""
    # track -> its face box (x0, y0, x1, y1, frame pixels) in its last frame of the window
    boxes: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "track": self.track_id,
            "faces": self.faces,
            "scores": {str(k): round(v, 3) for k, v in self.scores.items()},
            "boxes": {str(k): [round(x, 1) for x in box] for k, box in self.boxes.items()},
            "reason": self.reason,
        }


def mouth_speech_correlation(
    times: np.ndarray, aperture: np.ndarray, audio: AudioFeatures, max_lag_s: float = MAX_LAG_S
) -> float:
    """Best Pearson correlation of mouth opening with loudness over lags of +-``max_lag_s``
    (positive lag: the audio later than the lips); 0 for a mouth that does not move."""
    if len(times) < 8 or len(audio) < 8 or float(np.std(aperture)) < MIN_APERTURE_STD:
        return 0.0
    loudness = np.maximum(audio.loudness_db.astype(np.float64), LOUDNESS_FLOOR_DB)
    audio_times = audio.times
    mouth = (aperture - aperture.mean()) / aperture.std()
    best = -1.0
    for lag in np.arange(-max_lag_s, max_lag_s + 1e-9, LAG_STEP_S):
        at = times + lag
        inside = (at >= audio_times[0]) & (at <= audio_times[-1])
        if inside.sum() < 8:
            continue
        speech = np.interp(at[inside], audio_times, loudness)
        if float(speech.std()) < 1e-6:
            continue
        m = mouth[inside] - mouth[inside].mean()
        s = speech - speech.mean()
        r = float((m * s).sum() / math.sqrt(float((m * m).sum() * (s * s).sum()) + 1e-12))
        best = max(best, r)
    return max(best, 0.0)


def face_tracks(frames: Sequence[FrameFeatures]) -> dict[int, list[tuple[float, FaceObservation]]]:
    """Track id -> (time, observation) of every frame it is in."""
    tracks: dict[int, list[tuple[float, FaceObservation]]] = {}
    for frame in frames:
        for face in frame.faces or ((frame.face,) if frame.face is not None else ()):
            tracks.setdefault(face.track_id, []).append((frame.t, face))
    return tracks


def _side(face: FaceObservation, width: int) -> str:
    x0, _, x1, _ = face.face_box
    centre = (x0 + x1) / 2.0 / max(width, 1)
    return "left" if centre < 0.4 else "right" if centre > 0.6 else "middle"


def correlation_scorer() -> TrackScorer:
    """Mouth opening against loudness: for lip-sync detectors without a sync confidence."""

    def score(window: AnalysisWindow) -> float:
        faces = [(f.t, f.face) for f in window.frames if f.face is not None]
        times = np.array([t for t, _ in faces])
        apertures = np.array([face.aperture for _, face in faces])
        return mouth_speech_correlation(times, apertures, window.audio)

    return TrackScorer("mouth-speech correlation", score, min_score=0.3, min_margin=0.15)


class SpeakerSelector:
    """Per-session choice of the face to score in each window."""

    def __init__(self, scorer: TrackScorer | None = None, min_face_fraction: float = 0.6) -> None:
        self.scorer = scorer or correlation_scorer()
        self.min_face_fraction = min_face_fraction
        self._scores: dict[int, deque[float]] = {}
        self.chosen: int | None = None

    def choose(self, window: AnalysisWindow, speech: bool) -> SpeakerChoice:
        """The window's speaking face. ``speech``: the window has enough speech to tell."""
        frames = window.frames
        tracks = face_tracks(frames)
        needed = self.min_face_fraction * max(len(frames), 1)
        present = sorted(tid for tid, obs in tracks.items() if len(obs) >= needed)
        if len(present) <= 1:
            track_id = present[0] if present else None
            if track_id is None and tracks:  # faces come and go: the one seen most
                track_id = max(tracks, key=lambda t: len(tracks[t]))
            self.chosen = track_id if track_id is not None else self.chosen
            return SpeakerChoice(track_id, len(present), reason="one face in view")
        if speech:
            for track_id in present:
                value = self.scorer.score(window_of_speaker(window, track_id))
                if value is not None and math.isfinite(value):
                    history = self._scores.setdefault(track_id, deque(maxlen=HISTORY_WINDOWS))
                    history.append(float(value))
        scores = {
            tid: float(np.mean(self._scores[tid])) if self._scores.get(tid) else 0.0
            for tid in present
        }
        ranked = sorted(present, key=scores.__getitem__, reverse=True)
        best, second = ranked[0], ranked[1]
        width = frames[0].frame_size[1] if frames else 1
        sides = {tid: _side(tracks[tid][-1][1], width) for tid in present}
        boxes = {tid: tracks[tid][-1][1].face_box for tid in present}
        label, n = self.scorer.label, len(present)
        if (
            scores[best] >= self.scorer.min_score
            and scores[best] - scores[second] >= self.scorer.min_margin
        ):
            self.chosen = best
            reason = (
                f"{n} faces in view: scored the {sides[best]} face (track {best}), whose lips "
                f"go with the speech ({label} {scores[best]:.2f} against {scores[second]:.2f})"
            )
            return SpeakerChoice(best, n, scores, reason, boxes)
        if not speech and self.chosen in present:
            reason = (
                f"{n} faces in view: kept the {sides[self.chosen]} face "
                f"(track {self.chosen}) chosen earlier"
            )
            return SpeakerChoice(self.chosen, n, scores, reason, boxes)
        reason = (
            f"{n} faces in view and none goes with the speech clearly enough to tell which "
            f"one speaks ({label} {scores[best]:.2f} against {scores[second]:.2f})"
        )
        return SpeakerChoice(None, n, scores, reason, boxes)


def window_of_speaker(window: AnalysisWindow, track_id: int | None) -> AnalysisWindow:
    """The window with every frame's ``face`` set to that track's (None where it is not)."""
    return replace(window, frames=frames_of_speaker(window.frames, track_id))


def frames_of_speaker(
    frames: Sequence[FrameFeatures], track_id: int | None
) -> tuple[FrameFeatures, ...]:
    """The frames with ``face`` set to the chosen track's face (None where it is not seen)."""
    out = []
    for frame in frames:
        faces = frame.faces or ((frame.face,) if frame.face is not None else ())
        face = next((f for f in faces if f.track_id == track_id), None)
        out.append(frame if face is frame.face else replace(frame, face=face))
    return tuple(out)
