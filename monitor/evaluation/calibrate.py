"""Fitting the sequential decision: score -> log-likelihood-ratio maps and level thresholds.

Maps. For each detector, a class-balanced logistic regression of "manipulated" on the
logit of its window score; with balanced classes the fitted log-odds are the
log-likelihood ratio. It is fitted on windows of genuine clips against windows of the
manipulations that detector is for (lip-sync: shifted and swapped audio; video detectors:
fake clips), and judged out of fold: clips are split into folds by source (clips of one
source may share a speaker), each fold's windows are scored by a map fitted on the others.

Thresholds. The out-of-fold log-likelihood ratios of genuine sessions are summed as the
decision sums them. A false alarm is an excursion of that sum above a threshold, and an
hour of calibration media cannot show a rate of one in ten hours directly, so the rate is
modelled: the peaks of the excursions above 1 nat are exponential beyond it (CUSUM
theory; checked against the counts in the report), which gives the threshold for each
level's target rate (:func:`tail_threshold`). The threshold is never below the lowest one
the counts themselves allow (:func:`choose_threshold`). Genuine sessions whose evidence
points to manipulation on average over their whole length (a recording whose audio is
really 150 ms early) are no noise excursion that a threshold could control: they are left
out of the tail fit, named in the report, and still counted in every false-alarm figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from monitor.decision import FaceClass, FaceReadingCalibration, ScoreCalibration, logit

# Map values are clamped to those at these quantiles of the fitting scores: no extrapolation.
RANGE_QUANTILES = (0.01, 0.99)
_L2 = 1e-3


def _logits(scores: Sequence[float]) -> np.ndarray:
    return np.array([logit(s) for s in scores], dtype=np.float64)


def fit_logistic_1d(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of the weighted logistic regression of ``y`` on ``x`` (Newton)."""
    design = np.stack([x, np.ones_like(x)], axis=1)
    w = np.zeros(2)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ w, -30, 30)))
        grad = design.T @ (weights * (p - y)) + _L2 * np.array([w[0], 0.0])
        hess = design.T @ (design * (weights * p * (1 - p))[:, None]) + _L2 * np.diag([1.0, 0.0])
        step = np.linalg.solve(hess + 1e-9 * np.eye(2), grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """Weights that give both classes the same total (so log-odds are likelihood ratios)."""
    positives = max(int(y.sum()), 1)
    negatives = max(int(len(y) - y.sum()), 1)
    return np.where(y == 1, 0.5 * len(y) / positives, 0.5 * len(y) / negatives)


def fit_score_calibration(scores: Sequence[float], manipulated: Sequence[bool]) -> ScoreCalibration:
    """The detector's map from its window score to a log-likelihood ratio.

    A detector whose scores do not rise with manipulation (slope <= 0) gets a map that
    says nothing (0 nats), rather than evidence pointing the wrong way. The range is
    also bounded by what the counts can show: n windows of a class cannot tell a
    likelihood ratio beyond about n, so the map stays within [-ln n_manipulated,
    ln n_genuine].
    """
    x = _logits(scores)
    y = np.asarray(manipulated, dtype=np.float64)
    if len(x) == 0 or y.min() == y.max():
        raise ValueError("a map needs windows of both classes")
    slope, intercept = fit_logistic_1d(x, y, balanced_weights(y))
    if slope <= 0:
        return ScoreCalibration(0.0, 0.0, 0.0, 0.0)
    lo, hi = np.quantile(x, RANGE_QUANTILES)
    llr_min = max(slope * lo + intercept, -math.log(max(int(y.sum()), 2)))
    llr_max = min(slope * hi + intercept, math.log(max(int(len(y) - y.sum()), 2)))
    return ScoreCalibration(slope, intercept, min(llr_min, llr_max), llr_max)


# The least spread between faces a fit may give (nats a window): a class's faces never
# all read alike, and a zero spread would make the reading's ratio unbounded in the mean.
MIN_BETWEEN_SD = 0.05


def fit_face_class(faces: Sequence[Sequence[float]], window_weight: float) -> FaceClass:
    """One class's spreads from its faces' window face-side nats (each a session of one
    face): within a face, pooled; between faces, the spread of their means less the part
    their own windows' noise explains (windows overlap: a face's ``n`` windows count as
    ``n * window_weight`` independent ones)."""
    kept = [np.asarray(x, dtype=np.float64) for x in faces if len(x) >= 2]
    if len(kept) < 2:
        raise ValueError("a face class needs at least two faces of two windows or more")
    means = np.array([x.mean() for x in kept])
    squares = sum(float(((x - x.mean()) ** 2).sum()) for x in kept)
    within_var = squares / (sum(len(x) for x in kept) - len(kept))
    independent = np.array([max(1.0, len(x) * window_weight) for x in kept])
    between_var = float(means.var(ddof=1) - np.mean(within_var / independent))
    return FaceClass(
        float(means.mean()),
        max(MIN_BETWEEN_SD, math.sqrt(max(0.0, between_var))),
        max(MIN_BETWEEN_SD, math.sqrt(within_var)),
    )


def fit_face_reading(
    genuine: Sequence[Sequence[float]],
    forged: Sequence[Sequence[float]],
    window_weight: float,
    versions: dict[str, str],
) -> FaceReadingCalibration:
    """The face reading of attack_model "per_face" from genuine and forged faces' window
    face-side nats. As for the maps, n faces of a class cannot show a likelihood ratio
    beyond about n: the reading stays within [-ln n_forged, ln n_genuine]."""
    return FaceReadingCalibration(
        fit_face_class(genuine, window_weight),
        fit_face_class(forged, window_weight),
        -math.log(max(len(forged), 2)),
        math.log(max(len(genuine), 2)),
        dict(versions),
    )


def group_folds(groups: Sequence[str], folds: int) -> np.ndarray:
    """A fold index per sample; every group in one fold, folds of similar size (greedy)."""
    counts: dict[str, int] = {}
    for group in groups:
        counts[group] = counts.get(group, 0) + 1
    sizes = [0] * folds
    assignment: dict[str, int] = {}
    for group in sorted(counts, key=lambda g: (-counts[g], g)):
        fold = int(np.argmin(sizes))
        assignment[group] = fold
        sizes[fold] += counts[group]
    return np.array([assignment[g] for g in groups], dtype=int)


def out_of_fold_llr(
    scores: Sequence[float], manipulated: Sequence[bool], groups: Sequence[str], folds: int
) -> tuple[np.ndarray, list[ScoreCalibration]]:
    """Each sample's log-likelihood ratio from a map fitted without its fold."""
    fold_of = group_folds(groups, folds)
    scores_arr = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(manipulated, dtype=bool)
    out = np.zeros(len(scores_arr))
    maps = []
    for fold in range(folds):
        held = fold_of == fold
        if not held.any():
            continue
        fitted = fit_score_calibration(scores_arr[~held], labels[~held])
        maps.append(fitted)
        out[held] = [fitted.llr(s) for s in scores_arr[held]]
    return out, maps


def auc(negatives: Sequence[float], positives: Sequence[float]) -> float:
    neg = np.asarray(negatives, dtype=np.float64)[None, :]
    pos = np.asarray(positives, dtype=np.float64)[:, None]
    if neg.size == 0 or pos.size == 0:
        return math.nan
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def reliability(llr: np.ndarray, manipulated: np.ndarray, bins: int = 6) -> list[dict[str, float]]:
    """Predicted against observed (class-balanced) probability of manipulation, in LLR bins.

    A calibrated map puts each bin's observed share on its predicted one."""
    y = np.asarray(manipulated, dtype=np.float64)
    weights = balanced_weights(y)
    edges = np.quantile(llr, np.linspace(0, 1, bins + 1))
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (llr >= lo) & (llr <= hi)
        if not inside.any():
            continue
        w = weights[inside]
        rows.append(
            {
                "llr_from": round(float(lo), 2),
                "llr_to": round(float(hi), 2),
                "windows": int(inside.sum()),
                "predicted": round(float(np.average(1 / (1 + np.exp(-llr[inside])), weights=w)), 3),
                "observed": round(float(np.average(y[inside], weights=w)), 3),
            }
        )
    return rows


def balanced_log_loss(llr: np.ndarray, manipulated: np.ndarray) -> float:
    y = np.asarray(manipulated, dtype=np.float64)
    p = np.clip(1 / (1 + np.exp(-llr)), 1e-6, 1 - 1e-6)
    losses = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(np.average(losses, weights=balanced_weights(y)))


# ----- thresholds ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdChoice:
    level: str
    target_per_hour: float
    threshold_nats: float
    raises: int  # false raises at that threshold on the genuine sessions
    hours: float  # of genuine media they rest on
    capped: bool  # no grid value met the target: the largest was taken

    @property
    def rate_per_hour(self) -> float:
        return self.raises / self.hours if self.hours > 0 else math.nan


def excursion_peaks(paths: Sequence[Sequence[float | None]], floor: float = 0.0) -> list[float]:
    """The peak of every excursion of each path's floored sum above the floor."""
    peaks = []
    for path in paths:
        s, peak = floor, floor
        for step in path:
            if step is None:
                continue
            s = max(floor, s + step)
            if s > floor:
                peak = max(peak, s)
            elif peak > floor:
                peaks.append(peak - floor)
                peak = floor
        if peak > floor:
            peaks.append(peak - floor)
    return peaks


@dataclass(frozen=True)
class TailModel:
    """Excursion peaks above ``base`` nats: ``rate_per_hour`` of them, exponential beyond."""

    base: float
    rate_per_hour: float  # excursions per hour whose peak exceeds ``base``
    decay_per_nat: float  # the exponential's rate (MLE: 1 / mean excess)
    exceedances: int

    def rate(self, threshold: float) -> float:
        """Modelled excursions per hour that reach ``threshold``."""
        return self.rate_per_hour * math.exp(-self.decay_per_nat * max(0.0, threshold - self.base))

    def threshold_for(self, target_per_hour: float) -> float:
        if self.rate_per_hour <= target_per_hour:
            return self.base
        return self.base + math.log(self.rate_per_hour / target_per_hour) / self.decay_per_nat


def fit_tail(peaks: Sequence[float], hours: float, base: float = 1.0) -> TailModel | None:
    """The exponential tail of excursion peaks above ``base``; None with fewer than 3."""
    excess = np.array([p - base for p in peaks if p > base])
    if len(excess) < 3 or hours <= 0:
        return None
    return TailModel(base, len(excess) / hours, 1.0 / float(excess.mean()), len(excess))


def choose_threshold(
    count_raises: Callable[[float], int],
    hours: float,
    target_per_hour: float,
    grid: Sequence[float],
    level: str,
) -> ThresholdChoice:
    """The lowest grid threshold whose false raises per hour are within the target.

    ``count_raises(h)`` replays the genuine sessions with threshold ``h`` and counts the
    raises. With few hours, "within the target" means no raise at all: the choice is then
    the lowest threshold that no genuine session reached."""
    allowed = math.floor(target_per_hour * hours + 1e-9)
    for h in sorted(grid):
        raises = count_raises(h)
        if raises <= allowed:
            return ThresholdChoice(level, target_per_hour, float(h), raises, hours, False)
    h = float(max(grid))
    return ThresholdChoice(level, target_per_hour, h, count_raises(h), hours, True)


def count_rises(
    paths: Sequence[Sequence[float | None]],
    threshold: float,
    hysteresis: float,
    floor: float,
    ceiling: float,
) -> int:
    """Rises of the floored, capped sum of ``paths`` (chained) through ``threshold``: a rise
    counts when the sum reaches it after having been ``hysteresis`` below it."""
    s, above, rises = floor, False, 0
    for path in paths:
        for step in path:
            if step is None:
                continue
            s = min(ceiling, max(floor, s + step))
            if not above and s >= threshold:
                above, rises = True, rises + 1
            elif above and s < threshold - hysteresis:
                above = False
    return rises


def chained(paths: list, orders: int, seed: int) -> list[list]:
    """``orders`` seeded random orders of ``paths`` (sessions chained into one long call)."""
    rng = np.random.default_rng(seed)
    return [[paths[i] for i in rng.permutation(len(paths))] for _ in range(orders)]


# ----- from session records to maps and thresholds -------------------------------------------


@dataclass(frozen=True)
class WindowRow:
    detector: str
    score: float
    manipulated: bool
    group: str  # the clip's source: folds never split one
    clip: str


def window_rows(records: Sequence, clips: dict, targets: dict[str, str]) -> list[WindowRow]:
    """Each sufficient window score of each session, labelled for its detector.

    ``targets`` says what each detector is calibrated against: ``"audio"`` (genuine
    sessions against manipulated audio of real clips) or ``"video"`` (genuine sessions
    against fake clips). A detector sees only its own manipulation, so audio variants do
    not enter a video detector's map (their video is genuine) and fake clips do not enter
    lip-sync's (a lip-sync fake is in sync by design).
    """
    rows = []
    for record in records:
        clip = clips[record.clip]
        fake_clip = clip.label == "fake"
        for window in record.windows:
            for name, item in window["evidence"].items():
                score = item.get("score")
                target = targets.get(name)
                if score is None or target is None:
                    continue
                if target == "audio":
                    if fake_clip:
                        continue
                    label = record.manipulated
                else:
                    if record.manipulated:
                        continue
                    label = fake_clip
                rows.append(WindowRow(name, float(score), bool(label), clip.group, record.clip))
    return rows
