"""Detection metrics in numpy: ROC, AUC, EER, TPR at a fixed FPR, time to alert.

Convention: a higher score means "more likely manipulated"; a clip is called positive
when its score is >= the threshold, so tied scores move together along the ROC curve
(a tie between a genuine and a manipulated clip counts one half in the AUC).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.levels import ALARM_LEVELS


@dataclass(frozen=True)
class RocCurve:
    """Points of the ROC curve from (0, 0) to (1, 1), one per distinct threshold."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray  # thresholds[i] gives (fpr[i+1], tpr[i+1]); point 0 is +inf


def _split(negatives: Sequence[float], positives: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    neg = np.asarray(negatives, dtype=np.float64).reshape(-1)
    pos = np.asarray(positives, dtype=np.float64).reshape(-1)
    if len(neg) == 0 or len(pos) == 0:
        raise ValueError("ROC metrics need at least one negative and one positive score")
    if not (np.isfinite(neg).all() and np.isfinite(pos).all()):
        raise ValueError("scores must be finite")
    return neg, pos


def roc_curve(negatives: Sequence[float], positives: Sequence[float]) -> RocCurve:
    """The ROC curve of ``score >= threshold`` over every distinct score."""
    neg, pos = _split(negatives, positives)
    thresholds = np.unique(np.concatenate([neg, pos]))[::-1]
    # Counts of scores >= each threshold, via sorted search.
    neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
    fp = len(neg) - np.searchsorted(neg_sorted, thresholds, side="left")
    tp = len(pos) - np.searchsorted(pos_sorted, thresholds, side="left")
    fpr = np.concatenate([[0.0], fp / len(neg)])
    tpr = np.concatenate([[0.0], tp / len(pos)])
    return RocCurve(fpr=fpr, tpr=tpr, thresholds=thresholds)


def auc_or_nan(positives: Iterable[float], negatives: Iterable[float]) -> float:
    """:func:`roc_auc` of the finite scores, positives first as tables read them ("fakes
    vs reals"); nan when either side has none, for tables over small or partial sets."""
    pos = [float(v) for v in positives if v is not None and math.isfinite(v)]
    neg = [float(v) for v in negatives if v is not None and math.isfinite(v)]
    return roc_auc(neg, pos) if pos and neg else math.nan


def roc_auc(negatives: Sequence[float], positives: Sequence[float]) -> float:
    """P(score of a positive > score of a negative) + 0.5 P(tie): the Mann-Whitney AUC."""
    neg, pos = _split(negatives, positives)
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def equal_error_rate(negatives: Sequence[float], positives: Sequence[float]) -> float:
    """Where the false positive rate equals the miss rate on the piecewise-linear ROC curve.

    Along the curve ``fpr + tpr - 1`` never decreases (from -1 to 1); the EER is the
    ``fpr`` where it crosses 0, interpolated linearly inside the crossing segment.
    """
    curve = roc_curve(negatives, positives)
    gap = curve.fpr + curve.tpr - 1.0
    i = int(np.argmax(gap >= 0.0))  # first point at or past the crossing; gap[-1] == 1
    if i == 0 or gap[i] == 0.0:
        return float(curve.fpr[i])
    fraction = -gap[i - 1] / (gap[i] - gap[i - 1])
    return float(curve.fpr[i - 1] + fraction * (curve.fpr[i] - curve.fpr[i - 1]))


def tpr_at_fpr(
    negatives: Sequence[float], positives: Sequence[float], max_fpr: float = 0.01
) -> float:
    """The best true positive rate of any threshold whose false positive rate is <= max_fpr.

    With fewer than ``1 / max_fpr`` negatives this is the TPR at zero false positives.
    """
    curve = roc_curve(negatives, positives)
    allowed = curve.fpr <= max_fpr + 1e-12
    return float(curve.tpr[allowed].max())


def percentile(values: Iterable[float], q: float) -> float | None:
    """Linear-interpolated percentile; None for no values."""
    data = np.asarray(list(values), dtype=np.float64)
    return float(np.percentile(data, q)) if len(data) else None


def median(values: Iterable[float]) -> float | None:
    return percentile(values, 50.0)


def is_alarm(event: Mapping[str, Any]) -> bool:
    """An ``alert`` event that raises the level to suspicious or alert."""
    return event.get("type") == "alert" and event.get("level") in ALARM_LEVELS


def time_to_alert(events: Iterable[Mapping[str, Any]], onset_s: float) -> float | None:
    """Media seconds from the onset to the first alarm whose window ends after the onset.

    An alarm is raised when its window has been seen, so its ``t_end`` is the media time
    of the decision. Returns None when no alarm follows the onset.
    """
    for event in events:
        if is_alarm(event) and float(event["t_end"]) > onset_s:
            return float(event["t_end"]) - onset_s
    return None


def alarms_before(events: Iterable[Mapping[str, Any]], onset_s: float) -> int:
    """Alarms whose window ended at or before the onset: false alarms of a partial fake."""
    return sum(1 for e in events if is_alarm(e) and float(e["t_end"]) <= onset_s)


def count_alarms(events: Iterable[Mapping[str, Any]]) -> int:
    return sum(1 for e in events if is_alarm(e))


def per_hour(count: int, media_seconds: float) -> float:
    """A count per hour of media; NaN when there is no media."""
    return count * 3600.0 / media_seconds if media_seconds > 0 else math.nan
