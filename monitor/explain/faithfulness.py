"""Is an attribution faithful to the model? The deletion test, against random deletion.

Remove the top-ranked units (replace them with the baseline), score again, and see how
much of the sync-mismatch score is gone; do the same with the same number of units
picked at random. A faithful attribution removes more of the score than random does.

Why against random, not alone: replacing evidence with a baseline makes an input the
model never saw, and that alone moves the score (Gowrisankar & Thing's objection to
deletion metrics on deepfake detectors). Random deletion of the same amount of evidence
suffers the same shift, so the *difference* is what the ranking is worth.

``faithfulness`` = mean over the deletion fractions of (share of the score removed by
the top-ranked units - share removed by random units). 0: no better than random;
1: the top units carry the whole score and random ones none of it.

Two removal operators: ``baseline`` (what occlusion itself does, so it favours
occlusion by construction) and ``swap`` (time units get real content of the same
modality from half a window away: in-distribution, and neither method's own operator).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from monitor.explain.attribution import DEFAULT_BATCH, Inputs, ScoreFn, score_inputs
from monitor.explain.inputs import AVExample, Unit, occluded, swapped

DELETION_FRACTIONS = (0.1, 0.2, 0.3, 0.5)
RANDOM_ORDERS = 8
# Scores closer to zero than this carry nothing to explain: no faithfulness is computed.
MIN_SCORE = 1e-6


@dataclass
class DeletionResult:
    family: str  # which units were deleted ("time" or "region")
    fractions: list[float]
    counts: list[int]  # units removed at each fraction
    score: float  # score of the intact input
    method_scores: list[float]
    random_scores: list[float]  # mean over random orders
    random_std: list[float]
    operator: str = "baseline"  # how units were removed: "baseline" or "swap"

    def _removed(self, scores: Sequence[float]) -> list[float] | None:
        if abs(self.score) < MIN_SCORE:
            return None
        return [(self.score - s) / abs(self.score) for s in scores]

    @property
    def removed_by_method(self) -> list[float] | None:
        """Share of the score removed at each fraction by the top-ranked units."""
        return self._removed(self.method_scores)

    @property
    def removed_by_random(self) -> list[float] | None:
        return self._removed(self.random_scores)

    @property
    def faithfulness(self) -> float | None:
        method, random = self.removed_by_method, self.removed_by_random
        if method is None or random is None:
            return None
        return float(np.mean(np.array(method) - np.array(random)))

    def to_json(self) -> dict[str, object]:
        def rounded(values: Sequence[float] | None) -> list[float] | None:
            return None if values is None else [round(float(v), 4) for v in values]

        faith = self.faithfulness
        return {
            "family": self.family,
            "operator": self.operator,
            "fractions": list(self.fractions),
            "counts": list(self.counts),
            "score": round(self.score, 5),
            "method_scores": rounded(self.method_scores),
            "random_scores": rounded(self.random_scores),
            "removed_by_method": rounded(self.removed_by_method),
            "removed_by_random": rounded(self.removed_by_random),
            "faithfulness": None if faith is None else round(faith, 4),
        }


def deletion_test(
    score_fn: ScoreFn,
    example: AVExample,
    units: Sequence[Unit],
    attributions: np.ndarray,
    *,
    family: str,
    fractions: Sequence[float] = DELETION_FRACTIONS,
    n_random: int = RANDOM_ORDERS,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH,
    score: float | None = None,
    operator: str = "baseline",
) -> DeletionResult:
    """Delete the top ``fraction`` of ``units`` by ``attributions`` and random sets alike;
    ``operator``: "baseline" (replace by the baseline) or "swap" (see the module doc)."""
    if len(units) != len(attributions):
        raise ValueError(f"{len(units)} units but {len(attributions)} attributions")
    n = len(units)
    counts = [max(1, min(n, math.ceil(f * n))) for f in fractions]
    order = np.argsort(-np.asarray(attributions, dtype=np.float64), kind="stable")
    rng = np.random.default_rng(seed)
    random_orders = [rng.permutation(n) for _ in range(n_random)]

    remove = {"baseline": occluded, "swap": swapped}[operator]
    inputs: list[Inputs] = []
    if score is None:
        inputs.append((example.mouth, example.mel, example.lips))
    for k in counts:
        inputs.append(remove(example, [units[i] for i in order[:k]]))
    for perm in random_orders:
        for k in counts:
            inputs.append(remove(example, [units[i] for i in perm[:k]]))
    scores = score_inputs(score_fn, inputs, batch_size)
    if score is None:
        score, scores = float(scores[0]), scores[1:]
    method_scores = scores[: len(counts)]
    random_scores = scores[len(counts) :].reshape(n_random, len(counts))
    return DeletionResult(
        family=family,
        fractions=[float(f) for f in fractions],
        counts=counts,
        score=float(score),
        method_scores=[float(s) for s in method_scores],
        random_scores=[float(s) for s in random_scores.mean(axis=0)],
        random_std=[float(s) for s in random_scores.std(axis=0)],
        operator=operator,
    )


def rank_agreement(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation of two attributions over the same units."""
    if len(a) < 3:
        return None
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(float)
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(float)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])
