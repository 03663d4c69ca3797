"""The calibrated sequential decision: window scores -> log-likelihood ratios -> session level.

Why likelihood ratios. Detectors score a window in [0, 1], each on its own scale: a
lip-sync 0.6 and a temporal 0.6 do not mean the same. Calibration (fitted by
``tools/calibrate_decision.py`` on held-out folds of genuine train-pool clips and their
manipulated variants) turns each detector's score into the log-likelihood ratio of
"manipulated" against "genuine" for that window, in nats, so the detectors add up on one
scale and a threshold means a known amount of evidence.

Why accumulate with a floor (CUSUM). One window is weak evidence and a genuine call has
thousands of them, so a per-window threshold raises false alarms at a steady rate. The
session sums the windows' evidence instead, and a level is raised when the sum crosses a
threshold chosen for a target false-alarm rate. The sum never goes below a floor (0), so
hours of genuine speech cannot bank innocence that would hide an attack starting later:
after any stretch of genuine windows, an attack needs the same evidence to raise an alarm
as at the start of the call. A ceiling bounds how long a past attack keeps the level up
once genuine evidence returns.

Why the overlap weight. Windows overlap (2 s windows every 0.5 s), so consecutive windows
see mostly the same media; each window's log-likelihood ratio is weighted by the share of
its media that no earlier window with evidence covered, so that the sum counts each stretch
of media once: ``hop / window`` in a steady run, all of it for the first window of a session
and for the first after a stretch without evidence (which would otherwise count only a
quarter of media no window has counted).

Why a forged face is read as one face (``attack_model = "per_face"``, the default). Audio
that does not belong to the lips can start at any moment: it is summed window by window.
A forged face is a property of the face, and a face reads alike in every window, so its
windows are no independent evidence about it: summed, a genuine face that reads a little
off climbs to an alarm over a long call. The face side of the recent windows is averaged
instead and read against how genuine and forged faces spread between one another
(:class:`FaceReadingCalibration`), a reading that saturates; the session's evidence is the
larger of the sum and that reading.

Levels and honesty. ``unknown`` until some detector that may clear a call (lip-sync, by
default) has given evidence of a genuine call: no evidence never reads as ``clear``. A
``clear`` call becomes ``unknown`` again after a stretch of windows without evidence.
``suspicious`` and ``alert`` follow the accumulated evidence only: they are raised by
manipulated-looking windows, lowered only by genuine-looking ones, and kept through
stretches without evidence, so an attacker cannot erase an alarm by hiding the face.
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from monitor.config import DecisionConfig, MonitorConfig
from monitor.detectors.base import Evidence
from monitor.levels import ALARM_LEVELS, LEVEL_RANK, UNKNOWN

log = logging.getLogger(__name__)

CALIBRATION_PATH = Path(__file__).resolve().parent / "models" / "decision_calibration.json"
# Scores are clamped this far from 0 and 1 before their logit is taken.
_SCORE_EPSILON = 1e-4
# Detectors already warned about (once per process, not once per session).
_WARNED_UNCALIBRATED: set[tuple[str, str | None]] = set()


def logit(score: float) -> float:
    p = min(1.0 - _SCORE_EPSILON, max(_SCORE_EPSILON, float(score)))
    return math.log(p / (1.0 - p))


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


@dataclass(frozen=True)
class ScoreCalibration:
    """One detector's window score -> log-likelihood ratio (nats), manipulated vs genuine.

    ``llr = slope * logit(score) + intercept`` (a class-balanced logistic fit, so its
    log-odds are the log-likelihood ratio), clamped to ``[llr_min, llr_max]``: the range
    the calibration data supported, beyond which a fit would only extrapolate.
    """

    slope: float
    intercept: float
    llr_min: float
    llr_max: float

    def __post_init__(self) -> None:
        if not self.llr_min <= self.llr_max:
            raise ValueError(f"llr_min {self.llr_min} > llr_max {self.llr_max}")

    def llr(self, score: float) -> float:
        value = self.slope * logit(score) + self.intercept
        return min(self.llr_max, max(self.llr_min, value))

    def to_dict(self) -> dict[str, float]:
        return {
            "slope": self.slope,
            "intercept": self.intercept,
            "llr_min": self.llr_min,
            "llr_max": self.llr_max,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreCalibration:
        return cls(
            float(data["slope"]),
            float(data["intercept"]),
            float(data["llr_min"]),
            float(data["llr_max"]),
        )


@dataclass(frozen=True)
class FaceClass:
    """How one class of faces (genuine or forged) reads on the face side, in nats a window.

    A face's windows scatter by ``within_sd`` around that face's own mean, and the faces'
    means scatter by ``between_sd`` around ``mean``: a face that reads a little forged does
    so in every window, so its windows are not independent evidence about it.
    """

    mean: float
    between_sd: float
    within_sd: float

    def __post_init__(self) -> None:
        if self.between_sd <= 0 or self.within_sd <= 0:
            raise ValueError("a face class needs positive spreads")

    def variance_of_mean(self, independent_windows: float) -> float:
        """The variance of one face's mean over that many independent windows."""
        return self.between_sd**2 + self.within_sd**2 / max(1.0, independent_windows)

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "between_sd": self.between_sd, "within_sd": self.within_sd}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaceClass:
        return cls(float(data["mean"]), float(data["between_sd"]), float(data["within_sd"]))


@dataclass(frozen=True)
class FaceReadingCalibration:
    """The face seen so far -> log-likelihood ratio (nats), forged face against genuine.

    Read from the mean face-side evidence of the recent windows: the ratio of the two
    classes' densities of that mean, whose variance shrinks with the windows only down to
    the spread between faces. So the reading saturates: a genuine face that reads a little
    forged window after window never climbs without bound, as a per-window sum would.
    Kept non-decreasing in the mean and clipped to ``[llr_min, llr_max]``, the range the
    calibration data supported.
    """

    genuine: FaceClass
    forged: FaceClass
    llr_min: float
    llr_max: float
    versions: dict[str, str] = field(default_factory=dict)  # face-side detector -> version

    def __post_init__(self) -> None:
        if not self.llr_min <= self.llr_max:
            raise ValueError(f"llr_min {self.llr_min} > llr_max {self.llr_max}")

    def fits(self, versions: Mapping[str, str]) -> bool:
        """Whether the session's face-side detectors are the versions this was fitted on."""
        return all(versions.get(name, v) == v for name, v in self.versions.items())

    def llr(self, mean: float, independent_windows: float) -> float:
        var_g = self.genuine.variance_of_mean(independent_windows)
        var_f = self.forged.variance_of_mean(independent_windows)
        if var_f != var_g:
            # Past the mean where the ratio of unequal Gaussians turns back, hold it: a face
            # further out reads no less forged (and none further in reads more).
            turn = (self.forged.mean * var_g - self.genuine.mean * var_f) / (var_g - var_f)
            mean = max(mean, turn) if var_f > var_g else min(mean, turn)
        forged = -0.5 * (mean - self.forged.mean) ** 2 / var_f - 0.5 * math.log(var_f)
        genuine = -0.5 * (mean - self.genuine.mean) ** 2 / var_g - 0.5 * math.log(var_g)
        return min(self.llr_max, max(self.llr_min, forged - genuine))

    def to_dict(self) -> dict[str, Any]:
        return {
            "genuine": self.genuine.to_dict(),
            "forged": self.forged.to_dict(),
            "llr_min": self.llr_min,
            "llr_max": self.llr_max,
            "versions": dict(sorted(self.versions.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaceReadingCalibration:
        return cls(
            FaceClass.from_dict(data["genuine"]),
            FaceClass.from_dict(data["forged"]),
            float(data["llr_min"]),
            float(data["llr_max"]),
            {str(k): str(v) for k, v in data.get("versions", {}).items()},
        )


@dataclass(frozen=True)
class EvidenceCalibration:
    """Every calibrated detector's map, keyed by detector name and version.

    A map is used only for the detector version it was fitted on: another version's scores
    mean something else, and reading them with a stale map would be a silent error.
    """

    detectors: dict[str, ScoreCalibration] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)  # detector -> version fitted on
    info: dict[str, Any] = field(default_factory=dict)  # how it was fitted, with figures
    # attack_model "per_face": the face-side evidence read as one face (None: not fitted)
    face_reading: FaceReadingCalibration | None = None

    def for_detector(self, name: str, version: str | None) -> ScoreCalibration | None:
        calibration = self.detectors.get(name)
        if calibration is None:
            return None
        fitted = self.versions.get(name)
        if fitted is not None and version is not None and fitted != version:
            return None
        return calibration

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "detectors": {
                name: {"version": self.versions.get(name), **cal.to_dict()}
                for name, cal in sorted(self.detectors.items())
            },
            "info": self.info,
        }
        if self.face_reading is not None:
            out["face_reading"] = self.face_reading.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvidenceCalibration:
        detectors, versions = {}, {}
        for name, entry in data.get("detectors", {}).items():
            detectors[name] = ScoreCalibration.from_dict(entry)
            if entry.get("version") is not None:
                versions[name] = str(entry["version"])
        face = data.get("face_reading")
        return cls(
            detectors,
            versions,
            dict(data.get("info", {})),
            None if face is None else FaceReadingCalibration.from_dict(face),
        )

    @classmethod
    def load(cls, path: str | Path) -> EvidenceCalibration:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")


@lru_cache(maxsize=4)
def _load_cached(path: str) -> EvidenceCalibration:
    return EvidenceCalibration.load(path)


def load_calibration(config: DecisionConfig) -> EvidenceCalibration:
    """The configured calibration file, else the packaged one (empty if none is packaged)."""
    path = Path(config.calibration_file) if config.calibration_file else CALIBRATION_PATH
    if not path.exists():
        if config.calibration_file:
            from monitor.errors import ConfigError

            raise ConfigError(f"decision calibration file not found: {path}")
        return EvidenceCalibration()
    return _load_cached(str(path))


# Where the levels start on the risk scale (``monitor.config.FusionConfig`` may move them).
SUSPICIOUS_RISK = 0.5
ALERT_RISK = 0.7


def evidence_risk(
    evidence_nats: float,
    config: DecisionConfig,
    suspicious_risk: float = SUSPICIOUS_RISK,
    alert_risk: float = ALERT_RISK,
) -> float:
    """Accumulated evidence as a risk in [0, 1] that keeps the levels' meaning.

    Piecewise monotone: 0 nats -> 0, the suspicious threshold -> ``suspicious_risk``
    (0.5), the alert threshold -> ``alert_risk`` (0.7), then towards 1. So the risk is at
    least 0.7 exactly when the evidence is at the alert level, whatever the thresholds.
    """
    s = max(0.0, evidence_nats)
    suspicious, alert = config.suspicious_nats, config.alert_nats
    if s < suspicious:
        return suspicious_risk * s / suspicious
    if s < alert:
        return suspicious_risk + (alert_risk - suspicious_risk) * (s - suspicious) / (
            alert - suspicious
        )
    tail = 1.0 - math.exp(-(s - alert) / (alert - suspicious))
    return alert_risk + (1.0 - alert_risk) * tail


@dataclass(frozen=True)
class FaceReading:
    """attack_model "per_face": the face of the recent windows, read as one face."""

    nats: float  # log-likelihood ratio, forged face against genuine
    mean_llr: float  # the windows' mean face-side evidence (nats a window)
    windows: int  # how many windows it reads
    genuine_mean: float  # what genuine faces give, and their spread between faces
    genuine_between_sd: float


@dataclass(frozen=True)
class WindowDecision:
    """What one window contributed and where the session stands after it."""

    contributions: dict[str, float]  # detector -> weighted log-likelihood ratio (nats)
    llr: float | None  # the window's log-likelihood ratio (combine(contributions)); None: none
    evidence_nats: float  # accumulated evidence for manipulation after this window
    support_nats: float  # accumulated evidence for a genuine call (what clearing needs)
    level: str
    previous_level: str
    uncalibrated: tuple[str, ...] = ()  # detectors read without a calibration map
    weight: float | None = None  # the overlap weight applied (media_weight); None: no evidence
    # (audio side, face side) nats that attack_model "either" combined; None: one side only
    sides: tuple[float, float] | None = None
    allowance_nats: float = 0.0  # the config's drift_allowance_nats, taken off llr
    # What the sum over windows read: llr, or under attack_model "per_face" its audio side
    # (None: no audio evidence); and the face reading after this window ("per_face")
    summed_llr: float | None = None
    face: FaceReading | None = None
    attack_model: str = "joint"  # the config's, for how the rationale reads the sides
    # The sum over windows alone; under per_face evidence_nats is the larger of it and face
    summed_nats: float = 0.0

    @property
    def weighted_llr(self) -> float | None:
        """After the drift allowance and the overlap weight: what was added to the sum."""
        if self.summed_llr is None or self.weight is None:
            return None
        return self.weight * (self.summed_llr - self.allowance_nats)

    @property
    def changed(self) -> bool:
        return self.level != self.previous_level

    @property
    def window_risk(self) -> float | None:
        """The window on its own as a probability of manipulation (equal priors)."""
        return None if self.llr is None else sigmoid(self.llr)


class SequentialDecision:
    """One session's accumulated log-evidence and its level; feed it one window at a time.

    :meth:`for_session` sets one up as a session needs it (the pipeline, replayed
    evaluations).

    ``window_weight`` is the overlap weight of a window in a steady run (``hop / window``)
    and of any window given without its span (:meth:`media_weight`). ``clear_requires`` names the
    detectors whose evidence can clear a call (the others can only raise it);
    ``unknown_after_windows`` windows in a row without evidence turn ``clear`` to ``unknown``.
    ``face_horizon_windows``: how many recent windows the face reading reads (``per_face``).
    """

    def __init__(
        self,
        config: DecisionConfig,
        calibration: EvidenceCalibration,
        *,
        window_weight: float,
        clear_requires: Sequence[str] = ("lip_sync",),
        unknown_after_windows: int = 8,
        weights: Mapping[str, float] | None = None,
        versions: Mapping[str, str] | None = None,
        risk_anchors: tuple[float, float] = (SUSPICIOUS_RISK, ALERT_RISK),
        face_horizon_windows: int = 120,
    ) -> None:
        if not 0 < window_weight <= 1:
            raise ValueError(f"window_weight must be in (0, 1], got {window_weight}")
        self.config = config
        self.calibration = calibration
        self.window_weight = window_weight
        self.clear_requires = tuple(clear_requires)
        self.unknown_after_windows = unknown_after_windows
        self.weights = dict(weights or {})
        self.versions = dict(versions or {})
        self.risk_anchors = risk_anchors  # where suspicious and alert start on the risk scale
        self.evidence_nats = config.floor_nats
        self.summed_nats = config.floor_nats  # the sum over windows (CUSUM) alone
        self.face: FaceReading | None = None
        self._face_llrs: deque[float] = deque(maxlen=max(1, face_horizon_windows))
        self._face_calibration = self._face_reading_calibration()
        self.support_nats = 0.0
        self.level = UNKNOWN
        self.peak_level = UNKNOWN
        self.peak_evidence_nats = config.floor_nats
        self.peak_window: int | None = None  # index (0-based, among updates) of the peak
        self.windows = 0
        self.windows_with_evidence = 0
        self.clearing_windows = 0  # windows with evidence from the clear_requires detectors
        self.total_llr = 0.0  # unweighted sum over every window with evidence
        self._insufficient_streak = 0
        self._counted_until = -math.inf  # media time the evidence so far covers

    @classmethod
    def for_session(
        cls,
        config: MonitorConfig,
        versions: Mapping[str, str],
        calibration: EvidenceCalibration | None = None,
    ) -> SequentialDecision:
        """The decision of one session: overlap weight from the window schedule, clearing
        detectors, weights and calibration from ``config``; ``versions`` of its detectors."""
        window = config.window
        return cls(
            config.decision,
            calibration if calibration is not None else load_calibration(config.decision),
            window_weight=window.hop_s / window.window_s,
            clear_requires=config.fusion.clear_requires,
            unknown_after_windows=max(1, round(2 * window.window_s / window.hop_s)),
            weights=config.detectors.weights,
            versions=versions,
            risk_anchors=(config.fusion.suspicious_threshold, config.fusion.alert_threshold),
            face_horizon_windows=max(1, round(config.decision.face_horizon_s / window.hop_s)),
        )

    def _face_reading_calibration(self) -> FaceReadingCalibration | None:
        if self.config.attack_model != "per_face":
            return None
        face = self.calibration.face_reading
        if face is not None and face.fits(self.versions):
            return face
        key = ("face_reading", None)
        if key not in _WARNED_UNCALIBRATED:
            _WARNED_UNCALIBRATED.add(key)
            log.warning(
                "attack_model per_face without a face reading fitted for these detector "
                "versions: the face side is summed with the audio side, as under joint"
            )
        return None

    # ----- per window -------------------------------------------------------------------

    def contributions(self, evidence: Sequence[Evidence]) -> tuple[dict[str, float], list[str]]:
        """Each sufficient detector's weighted log-likelihood ratio, and which were uncalibrated."""
        out: dict[str, float] = {}
        uncalibrated: list[str] = []
        for item in evidence:
            if item.score is None:
                continue
            weight = self.weights.get(item.detector, 1.0)
            if weight <= 0:
                continue
            calibration = self.calibration.for_detector(
                item.detector, self.versions.get(item.detector)
            )
            if calibration is None:
                # Read as a probability, and trusted only a little.
                limit = self.config.uncalibrated_llr_limit
                llr = max(-limit, min(limit, logit(item.score)))
                uncalibrated.append(item.detector)
                key = (item.detector, self.versions.get(item.detector))
                if key not in _WARNED_UNCALIBRATED:
                    _WARNED_UNCALIBRATED.add(key)
                    log.warning(
                        "detector %s has no decision calibration for its version; its scores "
                        "count as probabilities, clipped to +-%.1f nats",
                        item.detector,
                        limit,
                    )
            else:
                llr = calibration.llr(item.score)
            out[item.detector] = weight * llr
        return out, uncalibrated

    def media_weight(self, span: tuple[float, float] | None) -> float:
        """The share of a window's media (``span``: its start and end) that no earlier window
        with evidence covered, at least ``window_weight``; ``window_weight`` without a span."""
        if span is None or span[1] <= span[0]:
            return self.window_weight
        start, end = span
        fresh = end - max(start, self._counted_until)
        return min(1.0, max(self.window_weight, fresh / (end - start)))

    def split(self, contributions: Mapping[str, float]) -> tuple[float | None, float | None]:
        """The window's audio-attack nats and forged-face nats (None: no detector of that
        side gave evidence)."""
        audio_names = set(self.config.audio_attack_detectors)
        audio = [llr for name, llr in contributions.items() if name in audio_names]
        face = [llr for name, llr in contributions.items() if name not in audio_names]
        return (sum(audio) if audio else None), (sum(face) if face else None)

    def sides(self, contributions: Mapping[str, float]) -> tuple[float, float] | None:
        """(audio-attack nats, forged-face nats) when ``attack_model`` reads them apart
        ("either", "per_face") and the window has evidence of both kinds; None otherwise."""
        if self.config.attack_model == "joint":
            return None
        audio, face = self.split(contributions)
        return None if audio is None or face is None else (audio, face)

    def combine(self, contributions: Mapping[str, float]) -> float:
        """The window's log-likelihood ratio from its detectors' (``attack_model``)."""
        return self._combined(contributions, self.sides(contributions))

    def _combined(
        self, contributions: Mapping[str, float], sides: tuple[float, float] | None
    ) -> float:
        """:meth:`combine` with the window's :meth:`sides` already worked out."""
        if sides is None or self.config.attack_model != "either":
            return sum(contributions.values())
        # log(0.5 * LR_audio + 0.5 * LR_face): either attack, equal priors.
        return float(np.logaddexp(*sides) - math.log(2.0))

    def _read_face(self, face_llr: float | None) -> None:
        """attack_model "per_face": add the window's face-side nats to the face reading."""
        calibration = self._face_calibration
        if calibration is None or face_llr is None:
            return
        self._face_llrs.append(face_llr)
        mean = float(np.mean(self._face_llrs))
        independent = len(self._face_llrs) * self.window_weight
        self.face = FaceReading(
            nats=calibration.llr(mean, independent),
            mean_llr=mean,
            windows=len(self._face_llrs),
            genuine_mean=calibration.genuine.mean,
            genuine_between_sd=calibration.genuine.between_sd,
        )

    def update(
        self,
        evidence: Sequence[Evidence],
        active: set[str] | None = None,
        span: tuple[float, float] | None = None,
    ) -> WindowDecision:
        """Advance by one window's evidence. ``active``: the detectors running this session
        (default: those in ``evidence``); ``span``: the window's media start and end, for its
        weight (:meth:`media_weight`). Only a window with evidence from a detector in
        ``clear_requires`` counts towards clear; one of them not running (failed, hung, not
        enabled) means the session cannot be clear at all (issue 16)."""
        previous = self.level
        self.windows += 1
        running = active if active is not None else {item.detector for item in evidence}
        can_clear = all(name in running for name in self.clear_requires)
        contributions, uncalibrated = self.contributions(evidence)
        clearing = can_clear and (
            not self.clear_requires or any(name in contributions for name in self.clear_requires)
        )
        self._insufficient_streak = 0 if clearing else self._insufficient_streak + 1
        self.clearing_windows += clearing
        if self.level == "clear" and (
            not can_clear or self._insufficient_streak >= self.unknown_after_windows
        ):
            self.level = UNKNOWN
            self.support_nats = 0.0
        if not contributions:
            return self._step(previous, contributions, None, None, uncalibrated)
        self.windows_with_evidence += 1
        sides = self.sides(contributions)
        llr = self._combined(contributions, sides)
        self.total_llr += llr
        weight = self.media_weight(span)
        if span is not None:
            self._counted_until = span[1]
        config = self.config
        summed: float | None = llr
        if self._face_calibration is not None:  # per_face, with a reading that fits
            summed, face_llr = self.split(contributions)
            self._read_face(face_llr)
        if summed is not None:
            added = weight * (summed - config.drift_allowance_nats)
            self.summed_nats = min(
                config.ceiling_nats, max(config.floor_nats, self.summed_nats + added)
            )
            if clearing:
                self.support_nats = min(
                    config.clear_nats, max(0.0, self.support_nats - weight * summed)
                )
        self.evidence_nats = self.summed_nats
        if self.face is not None:
            self.evidence_nats = max(self.evidence_nats, self.face.nats)
        self._set_level()
        if self.evidence_nats > self.peak_evidence_nats or self.peak_window is None:
            self.peak_evidence_nats = self.evidence_nats
            self.peak_window = self.windows - 1
        return self._step(previous, contributions, llr, weight, uncalibrated, sides, summed)

    def _set_level(self) -> None:
        config = self.config
        s = self.evidence_nats
        target = (
            "alert"
            if s >= config.alert_nats
            else "suspicious"
            if s >= config.suspicious_nats
            else None
        )
        if target is not None and LEVEL_RANK[target] > LEVEL_RANK[self.level]:
            self.level = target
            return
        # Step down only past the hysteresis band of the level held.
        if self.level == "alert" and s < config.alert_nats - config.hysteresis_nats:
            self.level = "suspicious"
        # Clear only while the evidence for manipulation stays below where suspicious steps
        # down: a call that cleared early and builds evidence since is no longer clear.
        quiet = s < config.suspicious_nats - config.hysteresis_nats
        if self.level == "suspicious" and quiet:
            self.level = "clear" if self.support_nats >= config.clear_nats else UNKNOWN
        if self.level == "clear" and not quiet:
            self.level = UNKNOWN
        if self.level == UNKNOWN and quiet and self.support_nats >= config.clear_nats:
            self.level = "clear"

    def _step(
        self,
        previous: str,
        contributions: dict[str, float],
        llr: float | None,
        weight: float | None,
        uncalibrated: list[str],
        sides: tuple[float, float] | None = None,
        summed: float | None = None,
    ) -> WindowDecision:
        if LEVEL_RANK[self.level] > LEVEL_RANK[self.peak_level]:
            self.peak_level = self.level
        return WindowDecision(
            contributions=contributions,
            llr=llr,
            evidence_nats=self.evidence_nats,
            support_nats=self.support_nats,
            level=self.level,
            previous_level=previous,
            uncalibrated=tuple(uncalibrated),
            weight=weight,
            sides=sides,
            allowance_nats=self.config.drift_allowance_nats,
            summed_llr=summed,
            face=self.face,
            attack_model=self.config.attack_model,
            summed_nats=self.summed_nats,
        )

    # ----- session ----------------------------------------------------------------------

    def risk_of(self, evidence_nats: float) -> float:
        """Evidence (nats) on this session's risk scale (:func:`evidence_risk`)."""
        return evidence_risk(evidence_nats, self.config, *self.risk_anchors)

    @property
    def risk(self) -> float:
        return self.risk_of(self.evidence_nats)

    @property
    def peak_risk(self) -> float:
        return self.risk_of(self.peak_evidence_nats)

    @property
    def alarmed(self) -> bool:
        return self.peak_level in ALARM_LEVELS

    @property
    def verdict(self) -> str:
        """The session's decision: the highest level its evidence reached (``unknown``
        when no window ever had evidence). A sequential test decides once its evidence
        crosses a threshold; a later return to genuine speech is the final state, not a
        retraction."""
        return self.peak_level
