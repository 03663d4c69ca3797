"""Which face is speaking, when several are in view: the one whose mouth moves with the speech.

Active-speaker detectors look for the face whose mouth motion goes with the audio. Here
that is the correlation between a face track's mouth opening (inner-lip gap / face
height, per frame) and the speech loudness at the same instants, at the best lag within
the sync detectors' search range (a dubbed or shifted call still has its speaker's mouth
following the speech, only late or early). A still face (a photo beside the speaker)
does not move; another person's genuine speech moves the mouth, but not with this audio.

The choice uses the last few windows' correlations, not one window's: over 2 s two
unrelated signals can correlate by chance. When no face stands out, no face is chosen
and the window is insufficient evidence; a guess could score the wrong person's lips
against the speech and raise a false alarm on a genuine call.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from monitor.features.types import AudioFeatures, FaceObservation, FrameFeatures

# Lags searched (seconds, either way): the sync detectors' range.
MAX_LAG_S = 0.6
LAG_STEP_S = 0.04
# Loudness below this (dBFS) counts as this: pauses are quiet, whatever the noise is.
LOUDNESS_FLOOR_DB = -60.0
# A mouth whose opening varies less than this (face heights) does not move.
MIN_APERTURE_STD = 0.002
# Windows whose correlations are averaged per track.
HISTORY_WINDOWS = 4
# The speaking face needs at least this mean correlation, and this much more than the
# next face. Set on composites of training-pool clips (tools/eval_speaker.py).
MIN_SCORE = 0.2
MIN_MARGIN = 0.1


@dataclass(frozen=True, slots=True)
class SpeakerChoice:
    """The face a window is scored on, and why."""

    track_id: int | None  # None: no face could be chosen
    faces: int  # face tracks in view for most of the window
    scores: dict[int, float] = field(default_factory=dict)  # track -> mean correlation
    reason: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "track": self.track_id,
            "faces": self.faces,
            "mouth_speech_correlation": {str(k): round(v, 3) for k, v in self.scores.items()},
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


class SpeakerSelector:
    """Per-session choice of the face to score in each window."""

    def __init__(self, min_face_fraction: float = 0.6) -> None:
        self.min_face_fraction = min_face_fraction
        self._scores: dict[int, deque[float]] = {}
        self.chosen: int | None = None

    def choose(
        self, frames: Sequence[FrameFeatures], audio: AudioFeatures, speech: bool
    ) -> SpeakerChoice:
        """The window's speaking face. ``speech``: the window has enough speech to tell."""
        tracks = face_tracks(frames)
        needed = self.min_face_fraction * max(len(frames), 1)
        present = {tid: obs for tid, obs in tracks.items() if len(obs) >= needed}
        if len(present) <= 1:
            track_id = next(iter(present), None)
            if track_id is None and tracks:  # faces come and go: the one seen most
                track_id = max(tracks, key=lambda t: len(tracks[t]))
            self.chosen = track_id if track_id is not None else self.chosen
            return SpeakerChoice(track_id, len(present), reason="one face in view")
        for track_id, observations in present.items():
            times = np.array([t for t, _ in observations])
            aperture = np.array([face.aperture for _, face in observations])
            if speech:
                history = self._scores.setdefault(track_id, deque(maxlen=HISTORY_WINDOWS))
                history.append(mouth_speech_correlation(times, aperture, audio))
        scores = {
            tid: float(np.mean(self._scores[tid])) if self._scores.get(tid) else 0.0
            for tid in present
        }
        ranked = sorted(scores, key=scores.__getitem__, reverse=True)
        best, second = ranked[0], ranked[1]
        width = frames[0].frame_size[1] if frames else 1
        sides = {tid: _side(present[tid][-1][1], width) for tid in present}
        if scores[best] >= MIN_SCORE and scores[best] - scores[second] >= MIN_MARGIN:
            self.chosen = best
            reason = (
                f"{len(present)} faces in view: scored the {sides[best]} face (track {best}), "
                f"whose mouth moves with the speech (correlation {scores[best]:.2f} against "
                f"{scores[second]:.2f})"
            )
            return SpeakerChoice(best, len(present), scores, reason)
        if not speech and self.chosen in present:
            reason = (
                f"{len(present)} faces in view: kept the {sides[self.chosen]} face "
                f"(track {self.chosen}) chosen earlier"
            )
            return SpeakerChoice(self.chosen, len(present), scores, reason)
        reason = (
            f"{len(present)} faces in view and none moves with the speech clearly enough to "
            f"tell which one speaks (correlation {scores[best]:.2f} against {scores[second]:.2f})"
        )
        return SpeakerChoice(None, len(present), scores, reason)


def frames_of_speaker(
    frames: Sequence[FrameFeatures], track_id: int | None
) -> tuple[FrameFeatures, ...]:
    """The frames with ``face`` set to the chosen track's face (None where it is not seen)."""
    from dataclasses import replace

    out = []
    for frame in frames:
        faces = frame.faces or ((frame.face,) if frame.face is not None else ())
        face = next((f for f in faces if f.track_id == track_id), None)
        out.append(frame if face is frame.face else replace(frame, face=face))
    return tuple(out)
